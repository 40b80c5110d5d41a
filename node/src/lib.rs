//! The shoal daemon.

pub mod store;
