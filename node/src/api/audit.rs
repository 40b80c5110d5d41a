//! The audit log and its verification.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::get;
use shoal_api::audit::{AuditEntry, AuditList, AuditQuery, AuditVerify, Problem, ProblemKind};
use shoal_protocol::audit::{self, Filter, Problem as ChainProblem};
use shoal_protocol::{Op, view};

use super::common::{Answer, Api, Shared, blocking, ok, resolve};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams/{team}/audit", get(audit_list))
        .route("/v1/teams/{team}/audit/verify", get(audit_verify))
}

/// Oldest first by hybrid logical clock, refused ops included.
async fn audit_list(
    State(api): Shared,
    UrlPath(team): UrlPath<String>,
    Query(q): Query<AuditQuery>,
) -> Answer<AuditList> {
    let team = resolve(&api, &team).await?;
    let s = team.state().await?;
    let nonempty = |x: Option<String>| x.filter(|x| !x.is_empty());
    // A member or node name is matched as such; anything else as a key prefix.
    let author = nonempty(q.author).map(|a| {
        view::member_by_name(&s, &a)
            .map(|m| m.key.clone())
            .or_else(|| view::node_by_name(&s, &a).map(|n| n.key.clone()))
            .unwrap_or(a)
    });
    // Names of registries, products and nodes are accepted as targets.
    let target = nonempty(q.target).map(|t| {
        view::product_by_name(&s, &t)
            .map(|p| p.id.clone())
            .or_else(|| view::registry_by_name(&s, &t).map(|r| r.id.clone()))
            .or_else(|| view::node_by_name(&s, &t).map(|n| n.key.clone()))
            .or_else(|| view::member_by_name(&s, &t).map(|m| m.key.clone()))
            .unwrap_or(t)
    });
    let filter = Filter {
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        author,
        action: nonempty(q.action),
        target,
    };
    let list = team
        .entry
        .sync
        .read(move |r| audit::list(r, &filter))
        .await?;
    ok(list
        .into_iter()
        .map(|e| AuditEntry {
            hash: e.hash,
            time_ms: e.time_ms,
            hlc: e.hlc,
            action: e.action.to_string(),
            author: e.author,
            author_name: e.author_name,
            origin: e.origin,
            origin_name: e.origin_name,
            seq: e.seq,
            targets: e.targets,
            what: e.what,
            status: e.status,
        })
        .collect())
}

fn problem(p: &ChainProblem) -> Problem {
    let kind = match p {
        ChainProblem::BadSignature { .. } => ProblemKind::BadSignature,
        ChainProblem::WrongTeam { .. } => ProblemKind::WrongTeam,
        ChainProblem::Gap { .. } => ProblemKind::Gap,
        ChainProblem::Fork { .. } => ProblemKind::Fork,
        ChainProblem::BrokenLink { .. } => ProblemKind::BrokenLink,
        ChainProblem::Quarantined { .. } => ProblemKind::Refused,
    };
    Problem {
        kind,
        message: p.to_string(),
    }
}

/// Verifies every log's chain and every signature, twice: over the ops this
/// replica applied (and reports the ops it refused), and over the ops as
/// they are stored on disk.
async fn audit_verify(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer<AuditVerify> {
    let team = resolve(&api, &team).await?;
    let id = team.id;
    let live = team.entry.sync.read(audit::verify).await?;
    let store = Arc::clone(team.entry.sync.store());
    let stored = blocking(move || store.ops_in_order(id)).await?;
    let mut problems: Vec<Problem> = live.problems.iter().map(problem).collect();
    let mut decoded = Vec::new();
    for (i, bytes) in stored.iter().enumerate() {
        match Op::decode(bytes) {
            Ok(op) => decoded.push(op),
            Err(e) => problems.push(Problem {
                kind: ProblemKind::Unreadable,
                message: format!("stored op #{i} cannot be read: {e}"),
            }),
        }
    }
    let on_disk = audit::verify_ops(id, decoded.iter());
    for p in &on_disk.problems {
        let p = problem(p);
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    let mut counts: BTreeMap<ProblemKind, u64> = BTreeMap::new();
    for p in &problems {
        *counts.entry(p.kind).or_default() += 1;
    }
    ok(AuditVerify {
        ok: problems.is_empty(),
        ops: live.ops as u64,
        logs: live.logs as u64,
        stored_ops: stored.len() as u64,
        problems,
        counts,
    })
}
