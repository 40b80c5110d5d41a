//! What every route module shares: the handlers' state and team
//! resolution, the error answer ([`Fail`]) and the helpers that read bodies
//! and build answers. The routes sit above this file and the server
//! (`mod.rs`) above them, so no route imports the server.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shoal_api::ErrorBody;
use shoal_protocol::model::{Runtime, TeamState};
use shoal_protocol::replica::PrepareError;
use shoal_protocol::{PublicKey, TeamId};

use crate::join::JoinError;
use crate::lease::LeaseError;
use crate::sync::SyncError;
use crate::teams::{ServiceError, ServiceHandle, TeamEntry, TeamMap};

/// Largest request body accepted (an op is at most 4 MiB, twice that in hex).
pub(super) const MAX_BODY: usize = 9 * 1024 * 1024;

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

/// The state the handlers share: the daemon's [`ApiState`] and a cache of
/// team names, so resolving a name does not read every team's state.
#[derive(Debug)]
pub(crate) struct Api {
    state: ApiState,
    /// Each team's name, with the team's change counter when it was read.
    names: Mutex<HashMap<TeamId, (u64, String)>>,
}

impl Api {
    pub(super) fn new(state: ApiState) -> Api {
        Api {
            state,
            names: Mutex::default(),
        }
    }
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
            SyncError::Lease(LeaseError::Lapsed) => StatusCode::CONFLICT,
            SyncError::Lease(LeaseError::Busy | LeaseError::Timeout) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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

pub(super) async fn not_found() -> Fail {
    Fail(
        StatusCode::NOT_FOUND,
        "no such route: see docs/api.md for the routes under /v1".into(),
    )
}

pub(super) async fn method_not_allowed() -> Fail {
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
