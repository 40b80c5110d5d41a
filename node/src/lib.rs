//! The shoal daemon.

pub mod api;
pub mod daemon;
pub mod mesh;
pub mod runtime;
pub mod store;
pub mod sync;
