//! The shoal daemon.
