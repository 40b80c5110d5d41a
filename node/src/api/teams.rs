//! Team routes: the list, one team's summary, creating a team (genesis,
//! then the signed op), what a ticket needs, new entity ids and the peers
//! connected now.

use std::sync::Arc;

use axum::Router;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use shoal_api::ops::{OpRequest, PreparedBody};
use shoal_api::teams::{
    Bootstrap, GenesisRequest, Ids, IdsRequest, Peers, TeamCreated, TeamInfo, TeamList,
    TeamListItem, TeamWait,
};
use shoal_protocol::PublicKey;

use super::common::{
    Answer, Api, Fail, RawBody, Shared, ok, parse_author, parse_body, resolve, state_name,
};
use super::writes::{body_hex, decode_op};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams", get(teams).post(create_team))
        .route("/v1/teams/genesis", post(genesis))
        .route("/v1/teams/{team}", get(team))
        .route("/v1/teams/{team}/bootstrap", get(bootstrap))
        .route("/v1/teams/{team}/ids", post(ids))
        .route("/v1/teams/{team}/peers", get(peers))
}

async fn teams(State(api): Shared) -> Answer<TeamList> {
    let live = api.teams();
    api.forget_others(&live);
    let mut list = Vec::new();
    for (id, t) in &live {
        list.push(TeamListItem {
            id: id.to_hex(),
            name: api.team_name(*id, t).await?,
            ops: t.sync.op_count().await? as u64,
        });
    }
    ok(list)
}

/// Longest wait of one `GET /v1/teams/{team}?unless_ops=` long poll; short
/// so the daemon's graceful shutdown never waits long on one.
pub const TEAM_WAIT_MAX: Duration = Duration::from_secs(10);

/// The team's summary; with `unless_ops`, answers once the op count differs
/// from it or `wait_ms` passed (what a dashboard's change feed waits on:
/// one idle request per wait, the answer as soon as an op lands).
async fn team(
    State(api): Shared,
    UrlPath(arg): UrlPath<String>,
    Query(q): Query<TeamWait>,
) -> Answer<TeamInfo> {
    let team = resolve(&api, &arg).await?;
    let sync = &team.entry.sync;
    if let Some(seen) = q.unless_ops {
        let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(TEAM_WAIT_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = sync.subscribe();
        loop {
            // Marked seen before the count is read, so no change is missed.
            changes.borrow_and_update();
            if sync.op_count().await? as u64 != seen {
                break;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                // Timed out, or the team's sync engine stopped.
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    let state = team.state().await?;
    ok(TeamInfo {
        id: team.id.to_hex(),
        name: state_name(&state, &team.entry),
        members: state
            .members
            .values()
            .filter(|m| m.removed.is_none())
            .count() as u64,
        nodes: state.nodes.values().filter(|n| n.removed.is_none()).count() as u64,
        ops: sync.op_count().await? as u64,
        heads: sync.heads().await?,
        state_hash: hex::encode(sync.state_hash().await?),
    })
}

async fn genesis(State(api): Shared, RawBody(body): RawBody) -> Answer<PreparedBody> {
    let req: GenesisRequest = parse_body(&body)?;
    let op_body = api.service.genesis_body(req.name, req.owner).await?;
    ok(PreparedBody {
        body: body_hex(&op_body)?,
    })
}

async fn create_team(State(api): Shared, RawBody(body): RawBody) -> Answer<TeamCreated> {
    let req: OpRequest = parse_body(&body)?;
    let op = decode_op(&req.op)?;
    let (id, name) = api.service.create_team(op).await?;
    ok(TeamCreated {
        id: id.to_hex(),
        name,
    })
}

/// What a ticket needs from this node: the team's network key and where to
/// reach it (this node first, then other nodes the team knows addresses of).
async fn bootstrap(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<Bootstrap> {
    let team = resolve(&api, &arg).await?;
    let state = team.state().await?;
    let entry = &team.entry;
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
    ok(Bootstrap {
        id: team.id.to_hex(),
        name: state_name(&state, entry),
        psk: hex::encode(entry.psk),
        bootstrap: addrs,
    })
}

/// The ids the next op of `author` on this node will give the entities it
/// creates (ids derive from the op's log and seq).
async fn ids(
    State(api): Shared,
    UrlPath(arg): UrlPath<String>,
    RawBody(body): RawBody,
) -> Answer<Ids> {
    let team = resolve(&api, &arg).await?;
    let req: IdsRequest = parse_body(&body)?;
    let author = parse_author(&req.author, "")?;
    let (ctx, lease) = if req.lease {
        let (ctx, token) = team.entry.sync.lease(author).await?;
        (ctx, Some(token.to_string()))
    } else {
        (team.entry.sync.next_context(author).await?, None)
    };
    ok(Ids {
        ids: (0..req.count.min(64)).map(|k| ctx.new_id(k)).collect(),
        lease,
    })
}

/// The team's peers this node is connected to, as node keys.
async fn peers(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<Peers> {
    let team = resolve(&api, &arg).await?;
    let peers = team
        .entry
        .mesh
        .peers()
        .await
        .map_err(|e| Fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    ok(Peers {
        peers: peers
            .iter()
            .filter_map(|p| crate::mesh::key_from_peer_id(p).ok())
            .map(|k| k.to_hex())
            .collect(),
    })
}
