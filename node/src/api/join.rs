//! Joining a team with a ticket: the daemon reaches a node of the ticket
//! and prepares the join op (`POST /v1/join`); a member's signed op
//! finishes it (`POST /v1/join/{team}`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use shoal_api::join::{JoinRequest, JoinStep, Joined};
use shoal_api::ops::OpRequest;
use shoal_protocol::TeamId;
use shoal_protocol::ticket::Ticket;

use super::common::{Answer, Api, Fail, RawBody, Shared, ok, parse_body};
use super::writes::{body_hex, decode_op};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/join", post(join))
        .route("/v1/join/{team}", post(finish_join))
}

async fn join(State(api): Shared, RawBody(body): RawBody) -> Answer<JoinStep> {
    let req: JoinRequest = parse_body(&body)?;
    let ticket = Ticket::decode(&req.ticket).map_err(|e| Fail::bad_request(e.to_string()))?;
    let step = api.service.join(ticket, req.member).await?;
    let body = match &step.body {
        Some(b) => Some(body_hex(b)?),
        None => None,
    };
    ok(JoinStep {
        team: step.team.to_hex(),
        name: step.name,
        body,
    })
}

async fn finish_join(
    State(api): Shared,
    UrlPath(arg): UrlPath<String>,
    RawBody(body): RawBody,
) -> Answer<Joined> {
    let team: TeamId = arg
        .parse()
        .map_err(|_| Fail::bad_request(format!("{arg:?} is not a team id")))?;
    let req: OpRequest = parse_body(&body)?;
    let op = decode_op(&req.op)?;
    let step = api.service.finish_join(team, op).await?;
    ok(Joined {
        team: step.team.to_hex(),
        name: step.name,
    })
}
