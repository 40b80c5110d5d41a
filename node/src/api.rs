//! The local control API (§4): HTTP+JSON on a Unix socket, used by the CLI.
//!
//! The daemon never holds a member's private key. A write goes in two steps:
//! `POST /v1/teams/{team}/prepare` returns the unsigned op body made against
//! the current state, the CLI signs it with the profile key, and
//! `POST /v1/teams/{team}/ops` verifies and commits the signed op.
//!
//! Every route is under `/v1`; every error is `{ "error": "..." }`. The
//! reference is `docs/api.md`.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_protocol::action::NewMember;
use shoal_protocol::model::{Runtime, TeamState};
use shoal_protocol::replica::PrepareError;
use shoal_protocol::ticket::Ticket;
use shoal_protocol::{Action, Op, PublicKey, Report, TeamId};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::join::JoinError;
use crate::query::{Answer as QueryAnswer, Query};
use crate::sync::SyncError;
use crate::teams::{ServiceError, ServiceHandle, TeamEntry, TeamMap};

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

impl ApiState {
    /// A copy of the live team table (entries are cheap handles).
    fn teams(&self) -> BTreeMap<TeamId, TeamEntry> {
        self.teams.read().map(|m| m.clone()).unwrap_or_default()
    }
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
        .route("/v1/node", get(node))
        .route("/v1/teams", get(teams).post(create_team))
        .route("/v1/teams/genesis", post(genesis))
        .route("/v1/teams/{team}", get(team))
        .route("/v1/teams/{team}/bootstrap", get(bootstrap))
        .route("/v1/teams/{team}/ids", post(ids))
        .route("/v1/teams/{team}/peers", get(peers))
        .route("/v1/teams/{team}/status", get(status))
        .route("/v1/teams/{team}/nodes/{node}/containers", get(containers))
        .route(
            "/v1/teams/{team}/nodes/{node}/containers/{name}/logs",
            get(container_logs),
        )
        .route(
            "/v1/teams/{team}/nodes/{node}/containers/{name}/inspect",
            get(container_inspect),
        )
        .route(
            "/v1/teams/{team}/nodes/{node}/containers/{name}/follow",
            get(container_follow),
        )
        .route(
            "/v1/teams/{team}/nodes/{node}/deployments/{deployment}/progress",
            get(deployment_progress),
        )
        .route("/v1/join", post(join))
        .route("/v1/join/{team}", post(finish_join))
        .route("/v1/teams/{team}/members", get(members))
        .route("/v1/teams/{team}/nodes", get(nodes))
        .route("/v1/teams/{team}/prepare", post(prepare))
        .route("/v1/teams/{team}/ops", post(submit))
        .merge(crate::api_domain::routes())
        .merge(crate::api_ops::routes())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(state))
}

pub(crate) type Shared = State<Arc<ApiState>>;

/// An error answer: a status and `{ "error": message }`.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
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

pub(crate) type Answer = Result<(StatusCode, axum::Json<Value>), Fail>;

pub(crate) fn ok(v: Value) -> Answer {
    Ok((StatusCode::OK, axum::Json(v)))
}

async fn not_found() -> Fail {
    Fail(
        StatusCode::NOT_FOUND,
        "no such route: see docs/api.md for the routes under /v1".into(),
    )
}

fn team_name(state: &TeamState, fallback: &str) -> String {
    state
        .info()
        .map(|i| i.name.clone())
        .unwrap_or_else(|| fallback.to_string())
}

/// Finds a team by id (hex) or by name.
pub(crate) async fn resolve(
    api: &ApiState,
    arg: &str,
) -> Result<(TeamId, TeamState, TeamEntry), Fail> {
    let teams = api.teams();
    if let Ok(id) = arg.parse::<TeamId>()
        && let Some(t) = teams.get(&id)
    {
        let state = t.sync.state().await?;
        return Ok((id, state, t.clone()));
    }
    let mut found = Vec::new();
    for (id, t) in &teams {
        let state = t.sync.state().await?;
        if team_name(&state, &t.name) == arg {
            found.push((*id, state, t.clone()));
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

async fn node(State(api): Shared) -> Answer {
    ok(json!({
        "key": api.node.to_hex(),
        "name": api.name,
        "runtime": api.runtime.to_string(),
        "agent_version": api.agent_version,
        "teams": api.teams().len(),
    }))
}

async fn teams(State(api): Shared) -> Answer {
    let mut list = Vec::new();
    for (id, t) in &api.teams() {
        let state = t.sync.state().await?;
        list.push(json!({
            "id": id.to_hex(),
            "name": team_name(&state, &t.name),
            "ops": t.sync.op_count().await?,
        }));
    }
    ok(Value::Array(list))
}

async fn team(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer {
    let (id, state, entry) = resolve(&api, &arg).await?;
    let sync = &entry.sync;
    ok(json!({
        "id": id.to_hex(),
        "name": team_name(&state, &entry.name),
        "members": state.members.values().filter(|m| m.removed.is_none()).count(),
        "nodes": state.nodes.values().filter(|n| n.removed.is_none()).count(),
        "ops": sync.op_count().await?,
        "heads": sync.heads().await?,
        "state_hash": hex::encode(sync.state_hash().await?),
    }))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, Fail> {
    serde_json::to_value(v).map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn members(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer {
    let (_, state, _) = resolve(&api, &arg).await?;
    let list: Vec<_> = state.members.values().collect();
    ok(to_json(&list)?)
}

async fn nodes(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer {
    let (_, state, _) = resolve(&api, &arg).await?;
    let list: Vec<_> = state.nodes.values().collect();
    ok(to_json(&list)?)
}

pub(crate) fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            format!("the request body is not the JSON this route takes ({e}): see docs/api.md"),
        )
    })
}

#[derive(Deserialize)]
struct PrepareRequest {
    author: String,
    action: Action,
}

async fn prepare(State(api): Shared, UrlPath(arg): UrlPath<String>, body: Bytes) -> Answer {
    let (_, _, entry) = resolve(&api, &arg).await?;
    let sync = entry.sync;
    let req: PrepareRequest = parse_body(&body)?;
    let author: PublicKey = req.author.parse().map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            format!(
                "author {:?} is not a public key ({e}): send the profile's 64-hex key",
                req.author
            ),
        )
    })?;
    let op_body = sync.prepare(author, req.action).await?;
    let bytes = postcard::to_stdvec(&op_body)
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    ok(json!({ "body": hex::encode(bytes) }))
}

#[derive(Deserialize)]
struct OpRequest {
    op: String,
}

fn report_json(r: &Report) -> Value {
    json!({
        "applied": r.applied.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        "rejected": r.rejected.iter().map(|(h, why)| json!({
            "op": h.to_hex(),
            "reason": why.to_string(),
        })).collect::<Vec<_>>(),
        "waiting": r.waiting.iter().map(|(h, why)| json!({
            "op": h.to_hex(),
            "reason": format!("{why:?}"),
        })).collect::<Vec<_>>(),
        "duplicate": r.duplicate,
    })
}

async fn submit(State(api): Shared, UrlPath(arg): UrlPath<String>, body: Bytes) -> Answer {
    let (_, _, entry) = resolve(&api, &arg).await?;
    let sync = entry.sync;
    let req: OpRequest = parse_body(&body)?;
    let op = decode_op(&req.op)?;
    let hash = op.hash();
    match sync.submit(op).await {
        Ok(report) => {
            let status = if report.rejected.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            Ok((status, axum::Json(report_json(&report))))
        }
        Err(SyncError::Rejected(why)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({
                "error": format!("the op was refused: {why}"),
                "applied": [],
                "rejected": [{ "op": hash.to_hex(), "reason": why.to_string() }],
                "waiting": [],
                "duplicate": false,
            })),
        )),
        Err(e) => Err(e.into()),
    }
}

fn decode_op(hex_op: &str) -> Result<Op, Fail> {
    let bytes = hex::decode(hex_op.trim()).map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            format!("op is not hex ({e}): send hex of the encoded signed op"),
        )
    })?;
    Op::decode(&bytes).map_err(|e| Fail(StatusCode::BAD_REQUEST, e.to_string()))
}

fn body_hex(body: &shoal_protocol::OpBody) -> Result<String, Fail> {
    postcard::to_stdvec(body)
        .map(hex::encode)
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Deserialize)]
struct GenesisRequest {
    name: String,
    owner: NewMember,
}

async fn genesis(State(api): Shared, body: Bytes) -> Answer {
    let req: GenesisRequest = parse_body(&body)?;
    let op_body = api.service.genesis_body(req.name, req.owner).await?;
    ok(json!({ "body": body_hex(&op_body)? }))
}

async fn create_team(State(api): Shared, body: Bytes) -> Answer {
    let req: OpRequest = parse_body(&body)?;
    let op = decode_op(&req.op)?;
    let (id, name) = api.service.create_team(op).await?;
    ok(json!({ "id": id.to_hex(), "name": name }))
}

/// What a ticket needs from this node: the team's network key and where to
/// reach it (this node first, then other nodes the team knows addresses of).
async fn bootstrap(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer {
    let (id, state, entry) = resolve(&api, &arg).await?;
    let mut addrs = entry.addrs.clone();
    let me = api.node.to_hex();
    for n in state.nodes.values() {
        if n.removed.is_some() || n.key == me {
            continue;
        }
        let Ok(key) = n.key.parse::<PublicKey>() else {
            continue;
        };
        let Ok(peer) = crate::mesh::peer_id_from_key(&key) else {
            continue;
        };
        addrs.extend(
            n.addresses
                .iter()
                .take(2)
                .map(|a| format!("{a}/p2p/{peer}")),
        );
        if addrs.len() >= 8 {
            break;
        }
    }
    ok(json!({
        "id": id.to_hex(),
        "name": team_name(&state, &entry.name),
        "psk": hex::encode(entry.psk),
        "bootstrap": addrs,
    }))
}

#[derive(Deserialize)]
struct IdsRequest {
    author: String,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

/// The ids the next op of `author` on this node will give the entities it
/// creates (ids derive from the op's log and seq).
async fn ids(State(api): Shared, UrlPath(arg): UrlPath<String>, body: Bytes) -> Answer {
    let (_, _, entry) = resolve(&api, &arg).await?;
    let req: IdsRequest = parse_body(&body)?;
    let author: PublicKey = req.author.parse().map_err(|e| {
        Fail(
            StatusCode::BAD_REQUEST,
            format!("author {:?} is not a public key ({e})", req.author),
        )
    })?;
    let ctx = entry.sync.next_context(author).await?;
    let ids: Vec<String> = (0..req.count.min(64)).map(|k| ctx.new_id(k)).collect();
    ok(json!({ "ids": ids }))
}

/// The team's peers this node is connected to, as node keys.
async fn peers(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer {
    let (_, _, entry) = resolve(&api, &arg).await?;
    let peers = entry
        .mesh
        .peers()
        .await
        .map_err(|e| Fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let keys: Vec<String> = peers
        .iter()
        .filter_map(|p| crate::mesh::key_from_peer_id(p).ok())
        .map(|k| k.to_hex())
        .collect();
    ok(json!({ "peers": keys }))
}

#[derive(Deserialize)]
struct JoinRequestBody {
    ticket: String,
    #[serde(default)]
    member: Option<NewMember>,
}

async fn join(State(api): Shared, body: Bytes) -> Answer {
    let req: JoinRequestBody = parse_body(&body)?;
    let ticket =
        Ticket::decode(&req.ticket).map_err(|e| Fail(StatusCode::BAD_REQUEST, e.to_string()))?;
    let step = api.service.join(ticket, req.member).await?;
    let body = match &step.body {
        Some(b) => Value::String(body_hex(b)?),
        None => Value::Null,
    };
    ok(json!({ "team": step.team.to_hex(), "name": step.name, "body": body }))
}

async fn finish_join(State(api): Shared, UrlPath(arg): UrlPath<String>, body: Bytes) -> Answer {
    let team: TeamId = arg
        .parse()
        .map_err(|_| Fail(StatusCode::BAD_REQUEST, format!("{arg:?} is not a team id")))?;
    let req: OpRequest = parse_body(&body)?;
    let op = decode_op(&req.op)?;
    let step = api.service.finish_join(team, op).await?;
    ok(json!({ "team": step.team.to_hex(), "name": step.name }))
}

/// Every node of the team with its liveness from heartbeats: `connected`
/// (fresh heartbeat), `unreachable` (stale or none), `outdated` (speaks an
/// older protocol), `removed`.
async fn status(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer {
    let (_, state, entry) = resolve(&api, &arg).await?;
    let beats = entry.sync.status().await?;
    let mut list = Vec::new();
    for n in state.nodes.values() {
        let beat = beats.iter().find(|b| b.key.to_hex() == n.key);
        let status = if n.removed.is_some() {
            "removed"
        } else if beat.is_some_and(|b| b.protocol_version < shoal_protocol::PROTOCOL_VERSION)
            || n.protocol_version < shoal_protocol::PROTOCOL_VERSION
        {
            "outdated"
        } else if beat.is_some_and(|b| b.connected) {
            "connected"
        } else {
            "unreachable"
        };
        list.push(json!({
            "key": n.key,
            "name": n.name,
            "status": status,
            "this_node": n.key == api.node.to_hex(),
            "seen_ms_ago": beat.map(|b| b.seen_ms_ago),
            "agent_version": beat.map_or(n.agent_version.clone(), |b| b.agent_version.clone()),
            "addresses": beat.map_or(n.addresses.clone(), |b| b.addresses.clone()),
        }));
    }
    ok(Value::Array(list))
}

/// Asks node `node` (name or key prefix) of the team a container question:
/// this node answers itself, another is asked over the mesh.
async fn ask_node(api: &ApiState, team: &str, node: &str, q: Query) -> Result<Value, Fail> {
    let (_, state, entry) = resolve(api, team).await?;
    let live: Vec<&shoal_protocol::model::Node> = state
        .nodes
        .values()
        .filter(|n| n.removed.is_none())
        .collect();
    let by_key: Vec<&&shoal_protocol::model::Node> = live
        .iter()
        .filter(|n| node.len() >= 4 && n.key.starts_with(node))
        .collect();
    let target = match live.iter().find(|n| n.name == node) {
        Some(n) => *n,
        None if by_key.len() == 1 => *by_key[0],
        None => {
            return Err(Fail(
                StatusCode::NOT_FOUND,
                format!("no node {node:?} in this team: see `shoal node list`"),
            ));
        }
    };
    let answer = if target.key == api.node.to_hex() {
        (entry.queries)(q).await
    } else {
        let key: PublicKey = target.key.parse().map_err(|_| {
            Fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a node key does not parse".into(),
            )
        })?;
        let peer = crate::mesh::peer_id_from_key(&key)
            .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        match entry.sync.ask(peer, q).await {
            Ok(answer) => answer,
            // A 5xx other than 502: the node may answer later (followers retry).
            Err(SyncError::Unanswered(why)) => {
                return Err(Fail(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "node {} did not answer: {why} (is it online? see `shoal node list`)",
                        target.name
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    };
    match answer {
        QueryAnswer::Containers(list) => to_json(&list),
        QueryAnswer::Logs(lines) => Ok(json!({ "lines": lines })),
        QueryAnswer::Follow(chunk) => to_json(&chunk),
        QueryAnswer::Progress(lines) => Ok(json!({ "lines": lines })),
        QueryAnswer::Inspect(text) => serde_json::from_str(&text).map_err(|e| {
            Fail(
                StatusCode::BAD_GATEWAY,
                format!("malformed inspect output: {e}"),
            )
        }),
        QueryAnswer::Error(why) => Err(Fail(
            StatusCode::BAD_GATEWAY,
            format!("node {} could not answer: {why}", target.name),
        )),
    }
}

#[derive(Deserialize)]
struct ContainersQuery {
    prefix: Option<String>,
}

async fn containers(
    State(api): Shared,
    UrlPath((team, node)): UrlPath<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ContainersQuery>,
) -> Answer {
    ok(ask_node(&api, &team, &node, Query::Containers { prefix: q.prefix }).await?)
}

#[derive(Deserialize)]
struct LogsQuery {
    tail: Option<u64>,
}

async fn container_logs(
    State(api): Shared,
    UrlPath((team, node, name)): UrlPath<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Answer {
    let query = Query::Logs {
        container: name,
        tail: q.tail,
    };
    ok(ask_node(&api, &team, &node, query).await?)
}

async fn container_inspect(
    State(api): Shared,
    UrlPath((team, node, name)): UrlPath<(String, String, String)>,
) -> Answer {
    ok(ask_node(&api, &team, &node, Query::Inspect { container: name }).await?)
}

#[derive(Deserialize)]
struct FollowQuery {
    tail: Option<u64>,
    session: Option<u64>,
    #[serde(default)]
    after: u64,
}

/// The next lines of a follow session (one long poll; see `query`).
async fn container_follow(
    State(api): Shared,
    UrlPath((team, node, name)): UrlPath<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<FollowQuery>,
) -> Answer {
    let query = Query::Follow {
        container: name,
        tail: q.tail,
        session: q.session,
        after: q.after,
    };
    ok(ask_node(&api, &team, &node, query).await?)
}

#[derive(Deserialize)]
struct ProgressQuery {
    /// `TRY/LINE` of the last line seen.
    after: Option<String>,
    #[serde(default)]
    wait: bool,
}

/// A deployment's progress lines, kept by its target node.
async fn deployment_progress(
    State(api): Shared,
    UrlPath((team, node, deployment)): UrlPath<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<ProgressQuery>,
) -> Answer {
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => {
            let parsed = a
                .split_once('/')
                .and_then(|(t, l)| Some((t.parse().ok()?, l.parse().ok()?)));
            Some(parsed.ok_or_else(|| {
                Fail(
                    StatusCode::BAD_REQUEST,
                    format!("after={a:?}: expected TRY/LINE, such as 2/14"),
                )
            })?)
        }
    };
    let query = Query::Progress {
        deployment,
        after,
        wait: q.wait,
    };
    ok(ask_node(&api, &team, &node, query).await?)
}
