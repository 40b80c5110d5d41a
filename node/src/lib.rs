//! The shoal daemon.

pub mod api;
pub mod daemon;
pub mod mesh;
pub mod registry;
pub mod store;
pub mod sync;
