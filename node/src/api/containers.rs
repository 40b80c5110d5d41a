//! A node's containers, asked of that node (this node answers itself,
//! another is asked over the mesh): the list, logs, follow sessions,
//! inspect, and a deployment's progress lines.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use shoal_api::containers::{
    CommandResult, ContainerInfo, ContainerList, ContainersQuery, FollowChunk, FollowQuery,
    Inspect, LogLines, LogsQuery, ProgressLine, ProgressLines, ProgressQuery, PublishedPort,
};
use shoal_protocol::PublicKey;
use shoal_protocol::model::Node;

use super::common::{Answer, Api, Fail, Shared, ok, resolve};
use crate::query::{Answer as QueryAnswer, Query};
use crate::sync::SyncError;

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
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
        .route(
            "/v1/teams/{team}/nodes/{node}/commands/{id}",
            get(command_result),
        )
}

/// Asks node `node` (name or key prefix) of the team a container question;
/// answers the node's name with its answer. A node that could not answer
/// is a 502, one that did not answer a 504.
async fn ask_node(
    api: &Api,
    team: &str,
    node: &str,
    q: Query,
) -> Result<(String, QueryAnswer), Fail> {
    let team = resolve(api, team).await?;
    let state = team.state().await?;
    let live: Vec<&Node> = state
        .nodes
        .values()
        .filter(|n| n.removed.is_none())
        .collect();
    let by_key: Vec<&&Node> = live
        .iter()
        .filter(|n| node.len() >= 4 && n.key.starts_with(node))
        .collect();
    let target = match live.iter().find(|n| n.name == node) {
        Some(n) => *n,
        None if by_key.len() == 1 => *by_key[0],
        None => {
            return Err(Fail::not_found(format!(
                "no node {node:?} in this team: see `shoal node list`"
            )));
        }
    };
    let answer = if target.key == api.node.to_hex() {
        (team.entry.queries)(q).await
    } else {
        let key: PublicKey = target
            .key
            .parse()
            .map_err(|_| Fail::internal("a node key does not parse"))?;
        let peer = crate::mesh::peer_id_from_key(&key).map_err(Fail::internal)?;
        match team.entry.sync.ask(peer, q).await {
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
        QueryAnswer::Error(why) => Err(Fail(
            StatusCode::BAD_GATEWAY,
            format!("node {} could not answer: {why}", target.name),
        )),
        answer => Ok((target.name.clone(), answer)),
    }
}

/// The containers of `node` (name or key) from its latest heartbeat, when
/// it is another node, the heartbeat is fresh and its list is complete.
async fn from_heartbeat(
    api: &Api,
    team: &str,
    node: &str,
    prefix: Option<&str>,
) -> Result<Option<ContainerList>, Fail> {
    let team = resolve(api, team).await?;
    let state = team.state().await?;
    let me = api.node.to_hex();
    // As `ask_node` finds it: by name, else by a unique key prefix.
    let live_nodes = || state.nodes.values().filter(|n| n.removed.is_none());
    let by_key: Vec<&Node> = live_nodes()
        .filter(|n| node.len() >= 4 && n.key.starts_with(node))
        .collect();
    let target = live_nodes()
        .find(|n| n.name == node)
        .or_else(|| (by_key.len() == 1).then(|| by_key[0]));
    let Some(target) = target.filter(|n| n.key != me) else {
        return Ok(None);
    };
    let beats = team.entry.sync.status().await?;
    let live = beats
        .into_iter()
        .find(|b| b.key.to_hex() == target.key && b.connected)
        .and_then(|b| b.live)
        .filter(|l| !l.truncated);
    // A node whose runtime did not answer is asked, so the error is its own.
    let Some(live) = live.filter(|l| l.runtime) else {
        return Ok(None);
    };
    let mut list: ContainerList = live
        .containers
        .iter()
        .filter(|c| prefix.is_none_or(|p| c.prefix == p))
        .map(|c| container_info(crate::runtime::listed_container(c)))
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(list))
}

/// A node answered another question than the one asked.
fn mismatch(node: &str) -> Fail {
    Fail(
        StatusCode::BAD_GATEWAY,
        format!("node {node} answered another question than the one asked"),
    )
}

fn container_info(c: crate::runtime::ContainerInfo) -> ContainerInfo {
    ContainerInfo {
        name: c.name,
        id: c.id,
        prefix: c.prefix,
        container: c.container,
        deployment: c.deployment,
        version: c.version,
        try_number: c.try_number,
        init: c.init,
        state: c.state,
        status: c.status,
        ports: c
            .ports
            .into_iter()
            .map(|p| PublishedPort {
                internal: p.internal,
                protocol: p.protocol,
                host_ip: p.host_ip,
                host_port: p.host_port,
            })
            .collect(),
    }
}

fn progress_lines(lines: Vec<crate::query::ProgressLine>) -> ProgressLines {
    ProgressLines {
        lines: lines
            .into_iter()
            .map(|l| ProgressLine {
                attempt: l.attempt,
                seq: l.seq,
                text: l.text,
            })
            .collect(),
    }
}

/// Another node's list comes from the live state of its latest heartbeat
/// when that is fresh and complete, without a round trip; otherwise (and
/// for this node, whose runtime is at hand) the node is asked.
async fn containers(
    State(api): Shared,
    UrlPath((team, node)): UrlPath<(String, String)>,
    UrlQuery(q): UrlQuery<ContainersQuery>,
) -> Answer<ContainerList> {
    if !q.fresh
        && let Some(list) = from_heartbeat(&api, &team, &node, q.prefix.as_deref()).await?
    {
        return ok(list);
    }
    match ask_node(&api, &team, &node, Query::Containers { prefix: q.prefix }).await? {
        (_, QueryAnswer::Containers(list)) => ok(list.into_iter().map(container_info).collect()),
        (node, _) => Err(mismatch(&node)),
    }
}

async fn container_logs(
    State(api): Shared,
    UrlPath((team, node, name)): UrlPath<(String, String, String)>,
    UrlQuery(q): UrlQuery<LogsQuery>,
) -> Answer<LogLines> {
    let query = Query::Logs {
        container: name,
        tail: q.tail,
    };
    match ask_node(&api, &team, &node, query).await? {
        (_, QueryAnswer::Logs(lines)) => ok(LogLines { lines }),
        (node, _) => Err(mismatch(&node)),
    }
}

async fn container_inspect(
    State(api): Shared,
    UrlPath((team, node, name)): UrlPath<(String, String, String)>,
) -> Answer<Inspect> {
    match ask_node(&api, &team, &node, Query::Inspect { container: name }).await? {
        (_, QueryAnswer::Inspect(text)) => ok(serde_json::from_str(&text).map_err(|e| {
            Fail(
                StatusCode::BAD_GATEWAY,
                format!("malformed inspect output: {e}"),
            )
        })?),
        (node, _) => Err(mismatch(&node)),
    }
}

/// The next lines of a follow session (one long poll; see `query`).
async fn container_follow(
    State(api): Shared,
    UrlPath((team, node, name)): UrlPath<(String, String, String)>,
    UrlQuery(q): UrlQuery<FollowQuery>,
) -> Answer<FollowChunk> {
    let query = Query::Follow {
        container: name,
        tail: q.tail,
        session: q.session,
        after: q.after,
    };
    match ask_node(&api, &team, &node, query).await? {
        (_, QueryAnswer::Follow(c)) => ok(FollowChunk {
            session: c.session,
            first: c.first,
            lines: c.lines,
            dropped: c.dropped,
            ended: c.ended,
        }),
        (node, _) => Err(mismatch(&node)),
    }
}

/// What became of a command, as the node that carries it out recorded it.
async fn command_result(
    State(api): Shared,
    UrlPath((team, node, id)): UrlPath<(String, String, String)>,
) -> Answer<CommandResult> {
    let query = Query::CommandResult { id: id.clone() };
    match ask_node(&api, &team, &node, query).await? {
        (_, QueryAnswer::CommandResult(result)) => ok(CommandResult { id, result }),
        (node, _) => Err(mismatch(&node)),
    }
}

/// A deployment's progress lines, kept by its target node.
async fn deployment_progress(
    State(api): Shared,
    UrlPath((team, node, deployment)): UrlPath<(String, String, String)>,
    UrlQuery(q): UrlQuery<ProgressQuery>,
) -> Answer<ProgressLines> {
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => {
            let parsed = a
                .split_once('/')
                .and_then(|(t, l)| Some((t.parse().ok()?, l.parse().ok()?)));
            Some(parsed.ok_or_else(|| {
                Fail::bad_request(format!("after={a:?}: expected TRY/LINE, such as 2/14"))
            })?)
        }
    };
    let query = Query::Progress {
        deployment,
        after,
        wait: q.wait,
    };
    match ask_node(&api, &team, &node, query).await? {
        (_, QueryAnswer::Progress(lines)) => ok(progress_lines(lines)),
        (node, _) => Err(mismatch(&node)),
    }
}
