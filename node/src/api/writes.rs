//! The write path: `prepare` returns the unsigned op body made against the
//! current state, the client signs it, and `ops` verifies, applies and
//! spreads the signed op.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use shoal_api::ops::{OpReason, OpRequest, PrepareRequest, PreparedBody, SubmitReport};
use shoal_protocol::{Op, OpBody, Report};

use super::common::{Answer, Api, Fail, RawBody, Shared, ok, parse_author, parse_body, resolve};
use crate::sync::SyncError;

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/teams/{team}/prepare", post(prepare))
        .route("/v1/teams/{team}/ops", post(submit))
}

/// Hex of an unsigned op body, as clients sign it.
pub(super) fn body_hex(body: &OpBody) -> Result<String, Fail> {
    postcard::to_stdvec(body)
        .map(hex::encode)
        .map_err(Fail::internal)
}

/// A signed op sent as hex of `Op::encode()`.
pub(super) fn decode_op(hex_op: &str) -> Result<Op, Fail> {
    let bytes = hex::decode(hex_op.trim()).map_err(|e| {
        Fail::bad_request(format!(
            "op is not hex ({e}): send hex of the encoded signed op"
        ))
    })?;
    Op::decode(&bytes).map_err(|e| Fail::bad_request(e.to_string()))
}

async fn prepare(
    State(api): Shared,
    UrlPath(arg): UrlPath<String>,
    RawBody(body): RawBody,
) -> Answer<PreparedBody> {
    let team = resolve(&api, &arg).await?;
    let req: PrepareRequest = parse_body(&body)?;
    let author = parse_author(&req.author, ": send the profile's 64-hex key")?;
    let op_body = match req.lease {
        None => team.entry.sync.prepare(author, req.action).await?,
        Some(token) => {
            let token: u64 = token.parse().map_err(|_| {
                Fail(
                    StatusCode::BAD_REQUEST,
                    format!("lease {token:?} is not a lease token: send the one `ids` answered"),
                )
            })?;
            team.entry
                .sync
                .prepare_leased(author, req.action, token)
                .await?
        }
    };
    ok(PreparedBody {
        body: body_hex(&op_body)?,
    })
}

fn report(r: &Report) -> SubmitReport {
    SubmitReport {
        error: None,
        applied: r.applied.iter().map(|h| h.to_hex()).collect(),
        rejected: r
            .rejected
            .iter()
            .map(|(h, why)| OpReason {
                op: h.to_hex(),
                reason: why.to_string(),
            })
            .collect(),
        waiting: r
            .waiting
            .iter()
            .map(|(h, why)| OpReason {
                op: h.to_hex(),
                reason: format!("{why:?}"),
            })
            .collect(),
        duplicate: r.duplicate,
    }
}

/// 200 with the report, or 422 when an op was refused.
async fn submit(
    State(api): Shared,
    UrlPath(arg): UrlPath<String>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<SubmitReport>), Fail> {
    let team = resolve(&api, &arg).await?;
    let req: OpRequest = parse_body(&body)?;
    let op = decode_op(&req.op)?;
    let hash = op.hash();
    match team.entry.sync.submit(op).await {
        Ok(r) => {
            let status = if r.rejected.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            Ok((status, Json(report(&r))))
        }
        Err(SyncError::Rejected(why)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(SubmitReport {
                error: Some(format!("the op was refused: {why}")),
                applied: vec![],
                rejected: vec![OpReason {
                    op: hash.to_hex(),
                    reason: why.to_string(),
                }],
                waiting: vec![],
                duplicate: false,
            }),
        )),
        Err(e) => Err(e.into()),
    }
}
