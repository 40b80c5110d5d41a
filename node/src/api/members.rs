//! `GET /v1/teams/{team}/members`: every member as the state holds it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use shoal_api::members::MemberList;

use super::common::{Answer, Api, Shared, ok, resolve};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new().route("/v1/teams/{team}/members", get(members))
}

/// Removed members included, in key order.
async fn members(State(api): Shared, UrlPath(arg): UrlPath<String>) -> Answer<MemberList> {
    let state = resolve(&api, &arg).await?.state().await?;
    ok(state.members.into_values().collect())
}
