//! The local control API (§4): HTTP+JSON on a Unix socket, used by the CLI.
//!
//! The daemon never holds a member's private key. A write goes in two steps:
//! `POST /v1/teams/{team}/prepare` returns the unsigned op body made against
//! the current state, the CLI signs it with the profile key, and
//! `POST /v1/teams/{team}/ops` verifies and commits the signed op.
//!
//! Every route is under `/v1`; every error is `{ "error": "..." }`. The
//! request and answer bodies are the types of the `shoal-api` crate, which
//! the CLI reads them back with. The reference is `docs/api.md`.
//!
//! This module holds the server, the shared state, the error type and team
//! resolution; the routes are in one submodule per resource.

use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod audit;
mod common;
mod containers;
mod deployments;
mod join;
mod keys;
mod lookup;
mod members;
mod nodes;
mod ops;
mod products;
mod registries;
mod teams;
mod views;
mod writes;

pub use deployments::DEPLOYMENT_WAIT_MAX;

/// Where the daemon listens when no `--socket` is given:
/// `$XDG_RUNTIME_DIR/shoal/shoal.sock` when `XDG_RUNTIME_DIR` is set,
/// `/run/shoal/shoal.sock` for root without it, and
/// `$TMPDIR/shoal-$UID/shoal.sock` for anyone else.
pub fn default_socket_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("shoal").join("shoal.sock");
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    match uid {
        Some(0) => PathBuf::from("/run/shoal/shoal.sock"),
        Some(uid) => std::env::temp_dir()
            .join(format!("shoal-{uid}"))
            .join("shoal.sock"),
        None => std::env::temp_dir().join("shoal").join("shoal.sock"),
    }
}

pub use crate::socket::ApiError;
pub use common::ApiState;
use common::{Api, MAX_BODY, method_not_allowed, not_found};

/// The running control API.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    task: JoinHandle<io::Result<()>>,
}

impl ApiServer {
    /// The socket the API listens on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the server to stop (after its cancel token fired and open
    /// requests finished), then removes the socket file.
    pub async fn join(self) -> Result<(), ApiError> {
        let res = self.task.await;
        let _ = std::fs::remove_file(&self.path);
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::Task(e.to_string())),
            Err(e) => Err(ApiError::Task(e.to_string())),
        }
    }
}

/// Binds `path` (parent dir created 0700, a stale socket replaced, the new
/// one set to 0600) and serves the API until `cancel` fires.
pub async fn serve(
    path: &Path,
    state: ApiState,
    cancel: CancellationToken,
) -> Result<ApiServer, ApiError> {
    let listener = bind(path).await?;
    let app = router(state);
    let task = tokio::spawn(accept_loop(listener, app, cancel));
    Ok(ApiServer {
        path: path.to_path_buf(),
        task,
    })
}

/// How long a client may take to send a request's headers: one that sends
/// half a request and stalls is cut off instead of holding a connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's body, from the end of
/// its headers.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `cancel` fires, then lets open requests
/// finish. Each connection reads headers within [`HEADER_READ_TIMEOUT`].
async fn accept_loop(
    listener: UnixListener,
    app: Router,
    cancel: CancellationToken,
) -> io::Result<()> {
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // A transient failure (too many open files): back off.
                    tracing::warn!("control API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                tracing::debug!("control API connection ended: {e}");
            }
        });
    }
    conns.close();
    conns.wait().await;
    Ok(())
}

/// Gives a request's body [`BODY_READ_TIMEOUT`] to arrive: past it, reading
/// the body fails, so the handler answers and the connection closes.
async fn body_deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures::StreamExt as _;
    let (parts, body) = req.into_parts();
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    let stream = futures::stream::unfold(Some(body.into_data_stream()), move |st| async move {
        let mut st = st?;
        match tokio::time::timeout_at(deadline, st.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(st))),
            Ok(Some(Err(e))) => Some((Err(io::Error::other(e.to_string())), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body was not sent in time",
                )),
                None,
            )),
        }
    });
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from_stream(stream));
    next.run(req).await
}

async fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| ApiError::Dir {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(ApiError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(|source| ApiError::Bind {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => return Err(ApiError::NotSocket(path.to_path_buf())),
        Err(_) => {}
    }
    let bind_err = |source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// The routes, for serving on any listener.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(ops::routes())
        .merge(teams::routes())
        .merge(members::routes())
        .merge(nodes::routes())
        .merge(join::routes())
        .merge(writes::routes())
        .merge(containers::routes())
        .merge(registries::routes())
        .merge(products::routes())
        .merge(deployments::routes())
        .merge(keys::routes())
        .merge(audit::routes())
        .fallback(not_found)
        // After the routes: it applies to the routes added before it.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(body_deadline))
        .with_state(Arc::new(Api::new(state)))
}
