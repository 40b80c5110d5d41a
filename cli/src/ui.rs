//! `shoal ui`: the web dashboard, served by the member's CLI process on
//! loopback.
//!
//! This process holds the profile key; the page never does. Reads are the
//! daemon's own answers, passed through for the routes `reads` names.
//! Writes are typed intents (`intent`) carried out by the CLI command that
//! does the same, so they are prepared by the daemon under a write lease,
//! checked, signed here and submitted exactly as `shoal` does. Access: a
//! one-time login token printed in the URL, exchanged for an HttpOnly,
//! SameSite=Strict session cookie; writes also need the dashboard's origin
//! and an anti-forgery token (`auth`). The assets are plain files of
//! `cli/ui/` compiled into the binary.
//!
//! Live updates are server-sent events: the change feed (`reads::feed`, a
//! long poll of the daemon's op count) and a deployment's log feed
//! (`logs`, the follow sessions `deploy logs --follow` reads).
//!
//! One task serves until Ctrl-C or SIGTERM; the cancellation token then
//! ends every change feed and log feed so the server can stop.

mod auth;
mod intent;
mod logs;
mod reads;
mod runner;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_api::teams::TeamInfo;
use shoal_api::{ErrorBody, node};
use tokio_util::sync::CancellationToken;

use crate::client::ClientError;
use crate::ctx::Ctx;
use crate::error::Usage;
use crate::output::Output;
use crate::profile;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/style.css");
const ICON: &str = include_str!("../ui/icon.svg");

/// Nothing runs but the dashboard's own script and style: no inline code,
/// no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One running dashboard.
#[derive(Debug)]
pub struct Ui {
    /// Pinned to the team's id, resolved at start.
    ctx: Ctx,
    /// `/v1/teams/<team id>`.
    base: String,
    auth: auth::Auth,
    team_id: String,
    team_name: String,
    me_name: String,
    me_key: String,
    stop: CancellationToken,
    /// Where the CLI's commands run (`runner`).
    runner: runner::Runner,
}

/// Serves the dashboard on `listen` (a loopback address) until Ctrl-C or
/// SIGTERM; prints its URL with the login token as the last line.
pub async fn serve(ctx: &Ctx, listen: SocketAddr, open: bool, out: &mut impl Write) -> Result<()> {
    if !listen.ip().is_loopback() {
        return Err(Usage(format!(
            "--listen {listen}: the dashboard signs with your key, so it serves on loopback only (127.0.0.1 or [::1])"
        ))
        .into());
    }
    let me = profile::load(&ctx.dir)?;
    let info: TeamInfo = ctx.client.get(&ctx.base().await?).await?;
    let pinned = Ctx::new(
        ctx.client.clone(),
        ctx.dir.clone(),
        Some(info.id.clone()),
        Output::Table,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    // Whatever way this function returns, the runner's thread ends.
    let _stop_on_return = stop.clone().drop_guard();
    let (runner, commands) = runner::start(stop.clone())?;
    let ui = Arc::new(Ui {
        base: pinned.base().await?,
        ctx: pinned,
        auth: auth::Auth::new(addr)?,
        team_id: info.id.clone(),
        team_name: info.name.clone(),
        me_name: me.name.clone(),
        me_key: me.public().to_hex(),
        stop: stop.clone(),
        runner,
    });
    let Some(token) = ui.auth.login_token() else {
        bail!("no login token was made");
    };
    let url = format!("{}/login?token={token}", ui.auth.origin());
    writeln!(
        out,
        "serving the dashboard of team {} as {} at {}/ (Ctrl-C stops it)",
        info.name,
        me.name,
        ui.auth.origin()
    )?;
    writeln!(
        out,
        "open this URL; it logs in one browser, once, and should not be shared:"
    )?;
    writeln!(out, "{url}")?;
    out.flush()?;
    if open {
        open_browser(url);
    }
    let served = axum::serve(listener, router(ui))
        .with_graceful_shutdown({
            let stop = stop.clone();
            async move {
                stopped().await;
                stop.cancel();
            }
        })
        .await
        .context("the dashboard's server failed");
    stop.cancel();
    let _ = commands.join();
    served
}

/// Waits for Ctrl-C or SIGTERM.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Hands the URL to the desktop's browser; says so when there is none.
fn open_browser(url: String) {
    tokio::task::spawn_blocking(move || {
        let r = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !r.is_ok_and(|s| s.success()) {
            eprintln!("could not open a browser (xdg-open): open the URL above yourself");
        }
    });
}

fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(|| asset(INDEX, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/style.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .route("/icon.svg", get(|| asset(ICON, "image/svg+xml")))
        .route("/login", get(login))
        .route("/api/session", get(session))
        .route("/api/events", get(events))
        .route("/api/node", get(node))
        .route("/api/team", get(read))
        .route("/api/team/{*tail}", get(read))
        .route("/api/logs/{deployment}", get(logs))
        .route("/api/act", post(act))
        .fallback(|uri: Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("the dashboard has no {}", uri.path()),
            )
        })
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Checks every request (`auth::Auth::check`) and sets the security
/// headers on every answer.
async fn guard(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    let mut resp = match ui.auth.check(req.method(), req.uri().path(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => {
            let status = match r {
                auth::Refusal::NoSession => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            error(status, r.to_string())
        }
    };
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody::new(message))).into_response()
}

/// An error of a CLI command or of the daemon, as the page shows it: the
/// daemon's status and message (a refused op's is the rule's), 400 for
/// anything else the request asked that cannot be done.
fn failure(e: &anyhow::Error) -> Response {
    let status = match e.downcast_ref::<ClientError>() {
        Some(ClientError::Status { status, .. }) => *status,
        Some(_) => StatusCode::BAD_GATEWAY,
        None => StatusCode::BAD_REQUEST,
    };
    error(status, format!("{e:#}"))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// Exchanges the login token for the session cookie, then shows the
/// dashboard (the token leaves the address bar with the redirect).
async fn login(
    State(ui): State<Arc<Ui>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if let Some(token) = q.token
        && ui.auth.exchange(&token).is_some()
    {
        let mut r = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&ui.auth.cookie()) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    if ui.auth.has_session(&headers) {
        return Redirect::to("/").into_response();
    }
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "This login link was already used or is wrong. Stop `shoal ui` and start it again for a new one.\n",
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct SessionInfo<'a> {
    csrf: &'a str,
    team_id: &'a str,
    team_name: &'a str,
    me_name: &'a str,
    me_key: &'a str,
}

async fn session(State(ui): State<Arc<Ui>>) -> Response {
    Json(SessionInfo {
        csrf: ui.auth.csrf(),
        team_id: &ui.team_id,
        team_name: &ui.team_name,
        me_name: &ui.me_name,
        me_key: &ui.me_key,
    })
    .into_response()
}

async fn events(State(ui): State<Arc<Ui>>) -> Response {
    Sse::new(reads::feed(ui))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The daemon's answer to `GET route`, read as `T` and sent on.
async fn pass<T: DeserializeOwned + Serialize>(ui: &Ui, route: &str) -> Response {
    match ui.ctx.client.try_get::<T>(route).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => failure(&e.into()),
    }
}

async fn node(State(ui): State<Arc<Ui>>) -> Response {
    pass::<node::NodeInfo>(&ui, "/v1/node").await
}

/// `GET /api/team/<tail>`: the daemon's `GET /v1/teams/<team>/<tail>`,
/// for the reads [`reads::read_of`] names, each read as its API type.
async fn read(State(ui): State<Arc<Ui>>, uri: Uri) -> Response {
    let path = uri.path();
    let tail = path
        .strip_prefix("/api/team/")
        .or_else(|| path.strip_prefix("/api/team").filter(|t| t.is_empty()))
        .unwrap_or(path);
    let q = uri.query().unwrap_or_default();
    let kind = match reads::read_of(tail) {
        Some(k) if reads::clean_query(q) => k,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("the dashboard does not read {path}"),
            );
        }
    };
    let mut route = ui.base.clone();
    if !tail.is_empty() {
        route = format!("{route}/{tail}");
    }
    if !q.is_empty() {
        route = format!("{route}?{q}");
    }
    use reads::Read as R;
    use shoal_api::{audit, containers as c, deployments as d, members as m};
    use shoal_api::{nodes as n, products as p, registries as r, sync as s, teams as t};
    match kind {
        R::Team => pass::<t::TeamInfo>(&ui, &route).await,
        R::Status => pass::<n::StatusList>(&ui, &route).await,
        R::Nodes => pass::<n::NodeList>(&ui, &route).await,
        R::Members => pass::<m::MemberList>(&ui, &route).await,
        R::Invites => pass::<m::InviteList>(&ui, &route).await,
        R::Sync => pass::<s::TeamSync>(&ui, &route).await,
        R::Registries => pass::<r::RegistryList>(&ui, &route).await,
        R::Registry => pass::<r::Registry>(&ui, &route).await,
        R::Tags => pass::<r::Tags>(&ui, &route).await,
        R::Products => pass::<p::ProductList>(&ui, &route).await,
        R::Product => pass::<p::ProductDetail>(&ui, &route).await,
        R::Versions => pass::<p::VersionList>(&ui, &route).await,
        R::Version => pass::<p::VersionDetail>(&ui, &route).await,
        R::Rollback | R::Deployment => pass::<d::DeploymentDetail>(&ui, &route).await,
        R::Deployments => pass::<d::DeploymentList>(&ui, &route).await,
        R::Containers => pass::<c::ContainerList>(&ui, &route).await,
        R::Logs => pass::<c::LogLines>(&ui, &route).await,
        R::Progress => pass::<c::ProgressLines>(&ui, &route).await,
        R::Audit => pass::<audit::AuditList>(&ui, &route).await,
        R::AuditVerify => pass::<audit::AuditVerify>(&ui, &route).await,
    }
}

/// A deployment's progress and its containers' output, followed live as
/// `deploy logs --follow` does (`logs`).
async fn logs(State(ui): State<Arc<Ui>>, Path(deployment): Path<String>) -> Response {
    match logs::open(&ui, deployment).await {
        Ok(events) => Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response(),
        Err(e) => failure(&e),
    }
}

#[derive(Debug, Serialize)]
struct Done {
    output: String,
}

/// `POST /api/act`: one intent, carried out as its CLI command.
async fn act(
    State(ui): State<Arc<Ui>>,
    body: Result<Json<intent::Intent>, JsonRejection>,
) -> Response {
    let intent = match body {
        Ok(Json(i)) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let done = ui
        .runner
        .run(
            &ui,
            move |ui| async move { intent::run(&ui.ctx, intent).await },
        )
        .await;
    match done {
        Ok(output) => Json(Done { output }).into_response(),
        Err(e) => failure(&e),
    }
}
