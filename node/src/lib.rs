//! The shoal daemon.

pub mod api;
pub mod daemon;
pub mod executor;
pub mod heads;
pub mod health;
pub mod join;
pub mod keeper;
pub mod lease;
pub mod live;
pub mod mesh;
pub mod metrics;
pub mod progress;
pub mod query;
pub mod registry;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod socket;
pub mod store;
pub mod sync;
pub mod teams;
