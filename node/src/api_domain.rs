//! Read routes of the control API for the team's domain: registries (and
//! their tags), products, versions, deployments, the audit log and its
//! verification. Names are accepted wherever ids are; every answer is
//! derived from the typed state with the views every replica computes
//! alike. No route ever answers a secret value: sealed values are named by
//! their keys (deployment secrets) or by the nodes they are sealed for
//! (registry passwords). Reference: `docs/api.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_protocol::audit::{self, Filter, Problem};
use shoal_protocol::effect::copy_sources;
use shoal_protocol::model::{
    Deployment, DeploymentStatus, Image, Product, Registry, TeamState, Version, VersionKind,
    parse_team_recipient,
};
use shoal_protocol::{Op, rules, view};

use crate::api::{Answer, ApiState, Fail, Shared, ok, resolve};
use crate::daemon::Node;
use crate::registry::{Credentials, RegistryClient, RegistrySpec, TagsError};
use crate::secrets;

/// The domain routes, merged into [`crate::api::router`].
pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/teams/{team}/registries", get(registries))
        .route("/v1/teams/{team}/registries/{registry}", get(registry))
        .route("/v1/teams/{team}/registries/{registry}/tags", get(tags))
        .route("/v1/teams/{team}/products", get(products))
        .route("/v1/teams/{team}/products/{product}", get(product))
        .route(
            "/v1/teams/{team}/products/{product}/versions",
            get(versions),
        )
        .route(
            "/v1/teams/{team}/products/{product}/versions/{version}",
            get(version),
        )
        .route(
            "/v1/teams/{team}/products/{product}/rollback",
            get(rollback),
        )
        .route("/v1/teams/{team}/deployments", get(deployments))
        .route("/v1/teams/{team}/deployments/{deployment}", get(deployment))
        .route(
            "/v1/teams/{team}/deployments/{deployment}/sealed",
            get(deployment_sealed),
        )
        .route("/v1/teams/{team}/keys", get(keys))
        .route("/v1/teams/{team}/keys/rotation", post(key_rotation))
        .route("/v1/teams/{team}/audit", get(audit_list))
        .route("/v1/teams/{team}/audit/verify", get(audit_verify))
}

fn not_found(msg: String) -> Fail {
    Fail(StatusCode::NOT_FOUND, msg)
}

fn bad_request(msg: String) -> Fail {
    Fail(StatusCode::BAD_REQUEST, msg)
}

fn node_name(s: &TeamState, key: &str) -> String {
    s.nodes
        .get(key)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| key.chars().take(8).collect())
}

fn member_name(s: &TeamState, key: &str) -> String {
    s.members
        .get(key)
        .map(|m| m.name.clone())
        .or_else(|| s.nodes.get(key).map(|n| format!("node {}", n.name)))
        .unwrap_or_else(|| key.chars().take(8).collect())
}

fn find_registry<'a>(s: &'a TeamState, arg: &str) -> Result<&'a Registry, Fail> {
    view::registry_by_name(s, arg).ok_or_else(|| {
        not_found(format!(
            "no registry {arg:?} in this team: see `shoal registry list`"
        ))
    })
}

fn find_product<'a>(s: &'a TeamState, arg: &str) -> Result<&'a Product, Fail> {
    view::product_by_name(s, arg).ok_or_else(|| {
        not_found(format!(
            "no product {arg:?} in this team: see `shoal product list`"
        ))
    })
}

fn find_version<'a>(s: &'a TeamState, p: &Product, arg: &str) -> Result<&'a Version, Fail> {
    view::version_by_name(s, &p.id, arg).ok_or_else(|| {
        not_found(format!(
            "product {} has no version {arg:?}: see `shoal version list {}`",
            p.name, p.name
        ))
    })
}

fn find_node_key(s: &TeamState, arg: &str) -> Result<String, Fail> {
    view::node_by_name(s, arg)
        .map(|n| n.key.clone())
        .ok_or_else(|| {
            not_found(format!(
                "no node {arg:?} in this team: see `shoal node list`"
            ))
        })
}

/// A deployment by id or by a unique prefix of its id (4 characters at least).
fn find_deployment<'a>(s: &'a TeamState, arg: &str) -> Result<&'a Deployment, Fail> {
    if let Some(d) = s.deployments.get(arg) {
        return Ok(d);
    }
    let matches: Vec<&Deployment> = if arg.len() >= 4 {
        s.deployments
            .values()
            .filter(|d| d.id.starts_with(arg))
            .collect()
    } else {
        Vec::new()
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(not_found(format!(
            "no deployment {arg:?} in this team: give its id or the first characters of it (see `shoal deploy list`)"
        ))),
        many => Err(Fail(
            StatusCode::CONFLICT,
            format!(
                "{} deployments start with {arg:?}: give more of the id",
                many.len()
            ),
        )),
    }
}

/// How many images (their own ref, config ref or init containers) use a registry.
fn registry_uses(s: &TeamState, id: &str) -> usize {
    s.versions
        .values()
        .flat_map(|v| v.images.iter())
        .filter(|i| {
            i.image.registry == id
                || i.config.image.as_ref().is_some_and(|x| x.registry == id)
                || i.config
                    .init_containers
                    .iter()
                    .any(|c| c.image.registry == id)
        })
        .count()
}

fn registry_json(s: &TeamState, r: &Registry) -> Value {
    // The nodes that can open the password.
    let sealed_for: Option<Vec<String>> = r.password.as_ref().map(|p| {
        if p.recipient.starts_with(secrets::TEAM_RECIPIENT_PREFIX) {
            secrets::team_key_holders(s, &p.recipient)
                .iter()
                .map(|k| node_name(s, k))
                .collect()
        } else {
            secrets::sealed_set(p)
                .map(|set| set.keys().map(|k| node_name(s, k)).collect())
                .unwrap_or_else(|_| vec![p.recipient.clone()])
        }
    });
    let key_epoch = r
        .password
        .as_ref()
        .and_then(|p| parse_team_recipient(&p.recipient))
        .map(|(epoch, _)| epoch);
    json!({
        "id": r.id,
        "name": r.name,
        "key_epoch": key_epoch,
        "kind": r.kind.as_str(),
        "url": r.url,
        "namespace": r.namespace,
        "user": r.user,
        "password": r.password.is_some(),
        "sealed_for": sealed_for,
        "images": registry_uses(s, &r.id),
        "builtin": r.id == shoal_protocol::model::HUB_REGISTRY_ID,
        "created_ms": r.created.ms,
    })
}

fn image_json(s: &TeamState, i: &Image) -> Value {
    let registry = s
        .registries
        .get(&i.image.registry)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| i.image.registry.clone());
    json!({
        "name": i.name,
        "registry": registry,
        "registry_id": i.image.registry,
        "image": i.image.name,
        "tag": i.image.tag,
        "ref": i.image.to_string(),
        "config": i.config,
    })
}

fn product_json(s: &TeamState, p: &Product) -> Value {
    let default = p.default_version.as_ref().and_then(|v| s.versions.get(v));
    json!({
        "id": p.id,
        "name": p.name,
        "kind": p.kind,
        "description": p.description,
        "default_version": default.map(|v| v.name.clone()),
        "default_version_id": p.default_version,
        "versions": s.versions.values().filter(|v| v.product == p.id).count(),
        "deployments": s.deployments.values().filter(|d| d.product == p.id).count(),
        "created_ms": p.created.ms,
    })
}

fn version_json(s: &TeamState, v: &Version, images: bool) -> Value {
    let p = s.products.get(&v.product);
    let name_of = |id: &Option<String>| {
        id.as_ref().map(|i| {
            s.versions
                .get(i)
                .map(|v| v.name.clone())
                .unwrap_or(i.clone())
        })
    };
    let copies = if v.auto_copy && v.kind == VersionKind::Incremental {
        copy_sources(s, v).len()
    } else {
        0
    };
    let mut out = json!({
        "id": v.id,
        "product": p.map(|p| p.name.clone()),
        "product_id": v.product,
        "name": v.name,
        "kind": v.kind,
        "changelog": v.changelog,
        "auto_copy": v.auto_copy,
        "default": p.is_some_and(|p| p.default_version.as_deref() == Some(v.id.as_str())),
        "frozen": rules::version_frozen(s, v),
        "parent": name_of(&v.parent),
        "child": name_of(&v.child),
        "images": v.images.len(),
        "deployments": s.deployments.values().filter(|d| d.version == v.id).count(),
        "copies": copies,
        "created_ms": v.created.ms,
    });
    if images {
        out["images"] = Value::Array(v.images.iter().map(|i| image_json(s, i)).collect());
    }
    out
}

fn deployment_json(s: &TeamState, d: &Deployment, full: bool) -> Value {
    let v = s.versions.get(&d.version);
    let mut out = json!({
        "id": d.id,
        "product": s.products.get(&d.product).map(|p| p.name.clone()),
        "product_id": d.product,
        "version": v.map(|v| v.name.clone()),
        "version_id": d.version,
        "version_kind": v.map(|v| v.kind),
        "node": node_name(s, &d.node),
        "node_key": d.node,
        "prefix": d.prefix,
        "status": d.status.as_str(),
        "tries": d.tries,
        "finished_try": d.finished_try,
        "reason": d.reason,
        "note": d.note,
        "protected": d.protected,
        "conflict": view::deployment_in_conflict(s, d),
        "mutable": rules::deployment_mutable(s, d),
        "deployable": rules::deployment_deployable(s, d),
        "created_ms": d.created.ms,
        "created_by": member_name(s, &d.created_by),
        // Secret values never leave the node they are sealed to: keys only.
        "secrets": d.secrets.keys().collect::<Vec<_>>(),
    });
    if full {
        out["env"] = json!(d.env);
        out["instances"] = json!(d.instances);
        out["containers"] = json!(d.containers);
        out["events"] = json!(d.events);
        out["frozen"] = json!(d.frozen.as_ref().map(|f| f.version_name.clone()));
        out["images"] = Value::Array(
            v.map(|v| v.images.iter().map(|i| image_json(s, i)).collect())
                .unwrap_or_default(),
        );
    }
    out
}

async fn registries(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let mut list: Vec<&Registry> = s.registries.values().collect();
    list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    ok(Value::Array(
        list.into_iter().map(|r| registry_json(&s, r)).collect(),
    ))
}

async fn registry(State(api): Shared, UrlPath((team, arg)): UrlPath<(String, String)>) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    ok(registry_json(&s, find_registry(&s, &arg)?))
}

#[derive(Deserialize)]
struct TagsQuery {
    image: String,
}

/// Lists an image's tags with the registry's client; the password, if any,
/// is opened here with this node's encryption key and never leaves.
async fn tags(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
    Query(q): Query<TagsQuery>,
) -> Answer {
    let (_, s, entry) = resolve(&api, &team).await?;
    let r = find_registry(&s, &arg)?.clone();
    let creds = match (&r.user, &r.password) {
        (Some(user), Some(_)) => {
            let store = Arc::clone(entry.sync.store());
            let secret = tokio::task::spawn_blocking(move || Node::stored_enc_secret(&store))
                .await
                .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let password = secrets::open_registry_password(&secret, &api.node.to_hex(), &s, &r)
                .map_err(|e| {
                    Fail(
                        StatusCode::CONFLICT,
                        format!("cannot use the password of registry {}: {e}", r.name),
                    )
                })?
                .unwrap_or_default();
            Some(Credentials::new(user.clone(), password))
        }
        _ => None,
    };
    let client = RegistryClient::new()
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let spec = RegistrySpec::from(&r);
    match client.list_tags(&spec, &q.image, creds.as_ref()).await {
        Ok(tags) => ok(json!({ "registry": r.name, "image": q.image, "tags": tags })),
        Err(e) => {
            let status = match &e {
                TagsError::NotListable { .. }
                | TagsError::InvalidImage { .. }
                | TagsError::InvalidSpec { .. } => StatusCode::BAD_REQUEST,
                TagsError::UnknownImage { .. } => StatusCode::NOT_FOUND,
                TagsError::Client { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_GATEWAY,
            };
            Err(Fail(status, e.to_string()))
        }
    }
}

async fn products(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let mut list: Vec<&Product> = s.products.values().collect();
    list.sort_by(|a, b| (&a.name, a.created).cmp(&(&b.name, b.created)));
    ok(Value::Array(
        list.into_iter().map(|p| product_json(&s, p)).collect(),
    ))
}

fn product_versions<'a>(s: &'a TeamState, p: &Product) -> Vec<&'a Version> {
    let mut list: Vec<&Version> = s.versions.values().filter(|v| v.product == p.id).collect();
    list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    list
}

async fn product(State(api): Shared, UrlPath((team, arg)): UrlPath<(String, String)>) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let p = find_product(&s, &arg)?;
    let mut out = product_json(&s, p);
    out["versions"] = Value::Array(
        product_versions(&s, p)
            .into_iter()
            .map(|v| version_json(&s, v, false))
            .collect(),
    );
    ok(out)
}

async fn versions(State(api): Shared, UrlPath((team, arg)): UrlPath<(String, String)>) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let p = find_product(&s, &arg)?;
    ok(Value::Array(
        product_versions(&s, p)
            .into_iter()
            .map(|v| version_json(&s, v, false))
            .collect(),
    ))
}

async fn version(
    State(api): Shared,
    UrlPath((team, product, version)): UrlPath<(String, String, String)>,
) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let p = find_product(&s, &product)?;
    let v = find_version(&s, p, &version)?;
    ok(version_json(&s, v, true))
}

#[derive(Deserialize)]
struct SlotQuery {
    node: String,
    prefix: String,
}

/// The deployment `deploy rollback` redeploys on a node and prefix.
async fn rollback(
    State(api): Shared,
    UrlPath((team, product)): UrlPath<(String, String)>,
    Query(q): Query<SlotQuery>,
) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let p = find_product(&s, &product)?;
    let node = find_node_key(&s, &q.node)?;
    match view::rollback_target(&s, &p.id, &node, &q.prefix) {
        Some(d) => ok(deployment_json(&s, d, true)),
        None => Err(not_found(format!(
            "nothing to roll back to for {} on {}/{}: there is no obsolete deployment of an earlier incremental version there (see `shoal deploy list --product {}`)",
            p.name, q.node, q.prefix, p.name
        ))),
    }
}

#[derive(Deserialize, Default)]
struct DeploymentQuery {
    node: Option<String>,
    status: Option<String>,
    product: Option<String>,
    version: Option<String>,
}

async fn deployments(
    State(api): Shared,
    UrlPath(team): UrlPath<String>,
    Query(q): Query<DeploymentQuery>,
) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let node = match q.node.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => Some(find_node_key(&s, n)?),
        None => None,
    };
    let status = match q.status.as_deref().filter(|x| !x.is_empty()) {
        Some(x) => Some(DeploymentStatus::parse(x).ok_or_else(|| {
            bad_request(format!(
                "unknown status {x:?}: use preparing, in-progress, successful, failed, obsolete or downgraded"
            ))
        })?),
        None => None,
    };
    let product = match q.product.as_deref().filter(|x| !x.is_empty()) {
        Some(x) => Some(find_product(&s, x)?),
        None => None,
    };
    let version = match (product, q.version.as_deref().filter(|x| !x.is_empty())) {
        (Some(p), Some(x)) => Some(find_version(&s, p, x)?.id.clone()),
        (None, Some(_)) => {
            return Err(bad_request(
                "a version filter needs a product filter too".into(),
            ));
        }
        _ => None,
    };
    let mut list: Vec<&Deployment> = s
        .deployments
        .values()
        .filter(|d| node.as_ref().is_none_or(|n| &d.node == n))
        .filter(|d| status.is_none_or(|x| d.status == x))
        .filter(|d| product.is_none_or(|p| d.product == p.id))
        .filter(|d| version.as_ref().is_none_or(|v| &d.version == v))
        .collect();
    list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    ok(Value::Array(
        list.into_iter()
            .map(|d| deployment_json(&s, d, false))
            .collect(),
    ))
}

/// Longest wait of one `GET .../deployments/{d}?unless=` long poll; short so
/// the daemon's graceful shutdown never waits long on one.
pub const DEPLOYMENT_WAIT_MAX: Duration = Duration::from_secs(5);

#[derive(Deserialize, Default)]
struct DeploymentWait {
    /// A `fingerprint` the client has seen: answer once the deployment
    /// differs from it (or `wait_ms` passes).
    unless: Option<String>,
    wait_ms: Option<u64>,
}

/// A fingerprint of a deployment's JSON (serde_json maps are ordered, so
/// equal views print equal). Only this daemon compares it, so the std
/// hasher (fixed keys) is enough.
fn fingerprint(v: &Value) -> String {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

async fn deployment(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
    Query(q): Query<DeploymentWait>,
) -> Answer {
    let (_, _, entry) = resolve(&api, &team).await?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(DEPLOYMENT_WAIT_MAX);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = entry.sync.subscribe();
    loop {
        // Marked seen before the state is read, so no change is missed.
        changes.borrow_and_update();
        let (_, s, _) = resolve(&api, &team).await?;
        let mut v = deployment_json(&s, find_deployment(&s, &arg)?, true);
        let fp = fingerprint(&v);
        let unchanged = q.unless.as_deref() == Some(fp.as_str());
        v["fingerprint"] = json!(fp);
        if !unchanged {
            return ok(v);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the team's sync engine stopped.
            Ok(Err(_)) | Err(_) => return ok(v),
        }
    }
}

/// The sealed secret values of a deployment (ciphertext only, as in the
/// replicated state): what a client re-sends when it edits other secrets.
async fn deployment_sealed(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let d = find_deployment(&s, &arg)?;
    ok(json!({ "id": d.id, "secrets": d.secrets }))
}

/// The team secrets key (§5) as the state holds it: the current epoch and
/// public half, who holds which epoch (sealed copies are not sent), and the
/// nodes and admins still waiting for the current one (or, before the team
/// has a key, everyone who should get the first), with their encryption
/// keys.
async fn keys(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer {
    let (_, s, _) = resolve(&api, &team).await?;
    let current = secrets::team_public(&s);
    let holders: Vec<Value> = s
        .keys
        .values()
        .map(|k| json!({ "recipient": k.recipient, "epoch": k.epoch }))
        .collect();
    let waiting: Vec<Value> = secrets::key_recipients_missing(&s)
        .into_iter()
        .map(|(recipient, enc_key)| json!({ "recipient": recipient, "enc_key": enc_key }))
        .collect();
    ok(json!({
        "epoch": current.as_ref().map(|(e, _)| *e),
        "public": current.map(|(_, p)| p),
        "holders": holders,
        "waiting": waiting,
    }))
}

/// A rotation of the team secrets key (§5) for an admin to sign: this node
/// makes the next epoch's key, seals it to every node and admin, and seals
/// every registry password again to it (opened with the key this node
/// holds). Only sealed values leave the node; the action is not submitted.
async fn key_rotation(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer {
    let (_, s, entry) = resolve(&api, &team).await?;
    let store = Arc::clone(entry.sync.store());
    let secret = tokio::task::spawn_blocking(move || Node::stored_enc_secret(&store))
        .await
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let r = secrets::rotate(&secret, &api.node.to_hex(), &s).map_err(|e| {
        let status = match e {
            secrets::SecretsError::NoKeyYet => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        };
        Fail(
            status,
            format!("cannot rotate the team key on this node: {e}"),
        )
    })?;
    ok(json!({
        "action": r.action,
        "epoch": r.epoch,
        "recipients": r.recipients,
        "registries": r.registries,
    }))
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    author: Option<String>,
    action: Option<String>,
    target: Option<String>,
}

async fn audit_list(
    State(api): Shared,
    UrlPath(team): UrlPath<String>,
    Query(q): Query<AuditQuery>,
) -> Answer {
    let (_, s, entry) = resolve(&api, &team).await?;
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
    let list = entry.sync.read(move |r| audit::list(r, &filter)).await?;
    ok(serde_json::to_value(list)
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?)
}

fn problem_json(p: &Problem) -> Value {
    let kind = match p {
        Problem::BadSignature { .. } => "bad-signature",
        Problem::WrongTeam { .. } => "wrong-team",
        Problem::Gap { .. } => "gap",
        Problem::Fork { .. } => "fork",
        Problem::BrokenLink { .. } => "broken-link",
        Problem::Quarantined { .. } => "refused",
    };
    json!({ "kind": kind, "message": p.to_string() })
}

/// Verifies every log's chain and every signature, twice: over the ops this
/// replica applied (and reports the ops it refused), and over the ops as
/// they are stored on disk.
async fn audit_verify(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer {
    let (id, _, entry) = resolve(&api, &team).await?;
    let live = entry.sync.read(audit::verify).await?;
    let store = Arc::clone(entry.sync.store());
    let stored = tokio::task::spawn_blocking(move || store.ops_in_order(id))
        .await
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut problems: Vec<Value> = live.problems.iter().map(problem_json).collect();
    let mut decoded = Vec::new();
    for (i, bytes) in stored.iter().enumerate() {
        match Op::decode(bytes) {
            Ok(op) => decoded.push(op),
            Err(e) => problems.push(json!({
                "kind": "unreadable",
                "message": format!("stored op #{i} cannot be read: {e}"),
            })),
        }
    }
    let on_disk = audit::verify_ops(id, decoded.iter());
    for p in &on_disk.problems {
        let v = problem_json(p);
        if !problems.contains(&v) {
            problems.push(v);
        }
    }
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    for p in &problems {
        *per_kind
            .entry(p["kind"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    ok(json!({
        "ok": problems.is_empty(),
        "ops": live.ops,
        "logs": live.logs,
        "stored_ops": stored.len(),
        "problems": problems,
        "counts": per_kind,
    }))
}
