//! Errors of the control socket: binding it and serving on it. Kept apart
//! from the API's routes because the service's error type names them, and
//! the routes name the service's error type.

use std::io;
use std::path::PathBuf;

/// Errors starting the control API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot create the socket directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("another shoal daemon answers on {0}: stop it first, or pass --socket")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket: move it away, or pass --socket")]
    NotSocket(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("the control API task failed: {0}")]
    Task(String),
}
