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

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use shoal_api::ErrorBody;
use shoal_protocol::model::{Runtime, TeamState};
use shoal_protocol::replica::PrepareError;
use shoal_protocol::{PublicKey, TeamId};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::join::JoinError;
use crate::sync::SyncError;
use crate::teams::{ServiceError, ServiceHandle, TeamEntry, TeamMap};

mod audit;
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
mod writes;

pub use deployments::DEPLOYMENT_WAIT_MAX;

/// Largest request body accepted (an op is at most 4 MiB, twice that in hex).
const MAX_BODY: usize = 9 * 1024 * 1024;

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

/// What the API serves: the node, its teams and the service that runs them.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub node: PublicKey,
    /// This node's name in teams it creates or joins.
    pub name: String,
    pub runtime: Runtime,
    /// Sent as `agent_version` by `GET /v1/node`.
    pub agent_version: String,
    pub teams: TeamMap,
    pub service: ServiceHandle,
    /// The node's store (for `GET /v1/node/store`).
    pub store: Arc<crate::store::Store>,
    /// The cluster client of a kubernetes node (for `GET /v1/node/health`).
    pub kube: Option<crate::runtime::KubernetesRuntime>,
}

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
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    });
    Ok(ApiServer {
        path: path.to_path_buf(),
        task,
    })
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
        .with_state(Arc::new(Api {
            state,
            names: Mutex::default(),
        }))
}

/// The state the handlers share: the daemon's [`ApiState`] and a cache of
/// team names, so resolving a name does not read every team's state.
#[derive(Debug)]
pub(crate) struct Api {
    state: ApiState,
    /// Each team's name, with the team's change counter when it was read.
    names: Mutex<HashMap<TeamId, (u64, String)>>,
}

impl Deref for Api {
    type Target = ApiState;

    fn deref(&self) -> &ApiState {
        &self.state
    }
}

impl Api {
    /// A copy of the live team table (entries are cheap handles).
    pub(crate) fn teams(&self) -> BTreeMap<TeamId, TeamEntry> {
        self.state
            .teams
            .read()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    fn name_cache(&self) -> std::sync::MutexGuard<'_, HashMap<TeamId, (u64, String)>> {
        // The map holds no invariant a panicked holder could have broken.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A team's current name. It is read from the replica (the name alone,
    /// not a copy of the state) only when the team changed since it was
    /// last read: its change counter counts the applied ops, and only an op
    /// renames a team.
    pub(crate) async fn team_name(&self, id: TeamId, entry: &TeamEntry) -> Result<String, Fail> {
        let counter = *entry.sync.subscribe().borrow();
        if let Some((seen, name)) = self.name_cache().get(&id)
            && *seen == counter
        {
            return Ok(name.clone());
        }
        let fallback = entry.name.clone();
        let name = entry
            .sync
            .read(move |r| r.state().info().map(|i| i.name.clone()).unwrap_or(fallback))
            .await?;
        self.name_cache().insert(id, (counter, name.clone()));
        Ok(name)
    }

    /// Drops the cached names of teams the daemon no longer runs.
    pub(crate) fn forget_others(&self, live: &BTreeMap<TeamId, TeamEntry>) {
        self.name_cache().retain(|id, _| live.contains_key(id));
    }
}

pub(crate) type Shared = State<Arc<Api>>;

/// An error answer: a status and `{ "error": message }` ([`ErrorBody`]).
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) StatusCode, pub(crate) String);

impl Fail {
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    pub(crate) fn not_found(msg: String) -> Self {
        Fail(StatusCode::NOT_FOUND, msg)
    }

    pub(crate) fn bad_request(msg: String) -> Self {
        Fail(StatusCode::BAD_REQUEST, msg)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody::new(self.1))).into_response()
    }
}

impl From<ServiceError> for Fail {
    fn from(e: ServiceError) -> Self {
        let status = match &e {
            ServiceError::Ticket(_) | ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::AlreadyIn(_) => StatusCode::CONFLICT,
            ServiceError::NoPendingJoin(_) => StatusCode::NOT_FOUND,
            ServiceError::Join(JoinError::Refused(_) | JoinError::WrongTeam) => {
                StatusCode::FORBIDDEN
            }
            ServiceError::Join(_) => StatusCode::BAD_GATEWAY,
            ServiceError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ServiceError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Sync(SyncError::Prepare(PrepareError::Rule(_)))
            | ServiceError::Daemon(crate::daemon::DaemonError::Prepare(PrepareError::Rule(_))) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Fail(status, e.to_string())
    }
}

impl From<SyncError> for Fail {
    fn from(e: SyncError) -> Self {
        let status = match &e {
            SyncError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            SyncError::Unanswered(_) => StatusCode::GATEWAY_TIMEOUT,
            SyncError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SyncError::Prepare(PrepareError::Rule(_)) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Fail(status, e.to_string())
    }
}

/// A route's answer: 200 with a `shoal-api` body, or an error.
pub(crate) type Answer<T> = Result<Json<T>, Fail>;

pub(crate) fn ok<T>(v: T) -> Answer<T> {
    Ok(Json(v))
}

/// Runs blocking store work off the async threads; both failures are 500s.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Fail>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Fail::internal)?
        .map_err(Fail::internal)
}

async fn not_found() -> Fail {
    Fail(
        StatusCode::NOT_FOUND,
        "no such route: see docs/api.md for the routes under /v1".into(),
    )
}

async fn method_not_allowed() -> Fail {
    Fail(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method: see docs/api.md for the routes under /v1".into(),
    )
}

/// A request body, read whole; a body over [`MAX_BODY`] (or one that cannot
/// be read) is refused with the API's error body instead of axum's text.
pub(crate) struct RawBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Fail;

    async fn from_request(req: Request, state: &S) -> Result<Self, Fail> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the {} MiB this API takes",
                    MAX_BODY / (1024 * 1024)
                ),
            )),
            Err(e) => Err(Fail(e.status(), e.body_text())),
        }
    }
}

/// Parses a request body into the route's `shoal-api` request type.
pub(crate) fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            format!("the request body is not the JSON this route takes ({e}): see docs/api.md"),
        )
    })
}

/// The team's name in `state`, or the name it started with.
pub(crate) fn state_name(state: &TeamState, entry: &TeamEntry) -> String {
    state
        .info()
        .map(|i| i.name.clone())
        .unwrap_or_else(|| entry.name.clone())
}

/// A team a route names.
#[derive(Debug)]
pub(crate) struct Team {
    pub(crate) id: TeamId,
    pub(crate) entry: TeamEntry,
}

impl Team {
    /// A copy of the team's current state.
    pub(crate) async fn state(&self) -> Result<TeamState, Fail> {
        Ok(self.entry.sync.state().await?)
    }
}

/// Finds a team by id (hex), by name, or as the daemon's only team
/// ([`shoal_api::ONLY_TEAM`]). Names come from the name cache: no team's
/// state is copied.
pub(crate) async fn resolve(api: &Api, arg: &str) -> Result<Team, Fail> {
    let teams = api.teams();
    if arg == shoal_api::ONLY_TEAM {
        return match teams.into_iter().collect::<Vec<_>>().as_slice() {
            [(id, entry)] => Ok(Team {
                id: *id,
                entry: entry.clone(),
            }),
            [] => Err(Fail(
                StatusCode::NOT_FOUND,
                "this daemon holds no team: create one with `shoal team create NAME` or join one with `shoal team join TICKET`".into(),
            )),
            many => {
                let mut names = Vec::new();
                for (id, entry) in many {
                    names.push(api.team_name(*id, entry).await?);
                }
                Err(Fail(
                    StatusCode::CONFLICT,
                    format!(
                        "this daemon holds several teams ({}): pass --team NAME",
                        names.join(", ")
                    ),
                ))
            }
        };
    }
    if let Ok(id) = arg.parse::<TeamId>()
        && let Some(entry) = teams.get(&id)
    {
        return Ok(Team {
            id,
            entry: entry.clone(),
        });
    }
    let mut found = Vec::new();
    for (id, entry) in &teams {
        if api.team_name(*id, entry).await? == arg {
            found.push(Team {
                id: *id,
                entry: entry.clone(),
            });
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Fail(
            StatusCode::NOT_FOUND,
            format!("this daemon holds no team {arg:?}: see `shoal team list`"),
        )),
        _ => Err(Fail(
            StatusCode::CONFLICT,
            format!("several teams are named {arg:?}: give the team id instead"),
        )),
    }
}

/// A public key given in a request (`author`), or a 400 saying what to send.
pub(crate) fn parse_author(author: &str, hint: &str) -> Result<PublicKey, Fail> {
    author.parse().map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            format!("author {author:?} is not a public key ({e}){hint}"),
        )
    })
}
