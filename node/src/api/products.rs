//! Products and their versions, and the deployment `deploy rollback`
//! redeploys on a slot.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::get;
use shoal_api::deployments::DeploymentDetail;
use shoal_api::products::{
    Product as ProductView, ProductDetail, ProductList, RollbackQuery, Version as VersionView,
    VersionDetail, VersionList, VersionSummary,
};
use shoal_protocol::effect::copy_sources;
use shoal_protocol::model::{By, Product, TeamState, Version, VersionKind};
use shoal_protocol::{rules, view};

use super::common::{Answer, Api, Fail, Shared, ok, resolve};
use super::lookup::{find_node_key, find_product, find_version};
use super::views::{deployment_detail, image_view};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
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
}

/// A product; `versions` is filled by the caller (a count or the list).
fn product_view<V>(s: &TeamState, p: &Product, versions: V) -> ProductView<V> {
    let default = p.default_version.as_ref().and_then(|v| s.versions.get(v));
    ProductView {
        id: p.id.clone(),
        name: p.name.clone(),
        kind: p.kind,
        description: p.description.clone(),
        default_version: default.map(|v| v.name.clone()),
        default_version_id: p.default_version.clone(),
        versions,
        deployments: s.deployments.ids_by(By::Product, &p.id).count() as u64,
        created_ms: p.created.ms,
    }
}

/// A version; `images` is filled by the caller (a count or the list).
fn version_view<I>(s: &TeamState, v: &Version, images: I) -> VersionView<I> {
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
    VersionView {
        id: v.id.clone(),
        product: p.map(|p| p.name.clone()),
        product_id: v.product.clone(),
        name: v.name.clone(),
        kind: v.kind,
        changelog: v.changelog.clone(),
        auto_copy: v.auto_copy,
        default: p.is_some_and(|p| p.default_version.as_deref() == Some(v.id.as_str())),
        frozen: rules::version_frozen(s, v),
        parent: name_of(&v.parent),
        child: name_of(&v.child),
        images,
        deployments: s.deployments.ids_by(By::Version, &v.id).count() as u64,
        copies: copies as u64,
        created_ms: v.created.ms,
    }
}

fn version_summary(s: &TeamState, v: &Version) -> VersionSummary {
    version_view(s, v, v.images.len() as u64)
}

/// By name.
async fn products(State(api): Shared, UrlPath(team): UrlPath<String>) -> Answer<ProductList> {
    let s = resolve(&api, &team).await?.state().await?;
    let mut list: Vec<&Product> = s.products.values().collect();
    list.sort_by(|a, b| (&a.name, a.created).cmp(&(&b.name, b.created)));
    ok(list
        .into_iter()
        .map(|p| {
            let count = s.versions.ids_by(By::Product, &p.id).count();
            product_view(&s, p, count as u64)
        })
        .collect())
}

/// A product's versions, oldest first.
fn product_versions<'a>(s: &'a TeamState, p: &Product) -> Vec<&'a Version> {
    let mut list: Vec<&Version> = s.versions.find_by(By::Product, &p.id).collect();
    list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    list
}

async fn product(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
) -> Answer<ProductDetail> {
    let s = resolve(&api, &team).await?.state().await?;
    let p = find_product(&s, &arg)?;
    let versions = product_versions(&s, p)
        .into_iter()
        .map(|v| version_summary(&s, v))
        .collect();
    ok(product_view(&s, p, versions))
}

async fn versions(
    State(api): Shared,
    UrlPath((team, arg)): UrlPath<(String, String)>,
) -> Answer<VersionList> {
    let s = resolve(&api, &team).await?.state().await?;
    let p = find_product(&s, &arg)?;
    ok(product_versions(&s, p)
        .into_iter()
        .map(|v| version_summary(&s, v))
        .collect())
}

async fn version(
    State(api): Shared,
    UrlPath((team, product, version)): UrlPath<(String, String, String)>,
) -> Answer<VersionDetail> {
    let s = resolve(&api, &team).await?.state().await?;
    let p = find_product(&s, &product)?;
    let v = find_version(&s, p, &version)?;
    ok(version_view(
        &s,
        v,
        v.images.iter().map(|i| image_view(&s, i)).collect(),
    ))
}

/// The deployment `deploy rollback` redeploys on a node and prefix.
async fn rollback(
    State(api): Shared,
    UrlPath((team, product)): UrlPath<(String, String)>,
    Query(q): Query<RollbackQuery>,
) -> Answer<DeploymentDetail> {
    let s = resolve(&api, &team).await?.state().await?;
    let p = find_product(&s, &product)?;
    let node = find_node_key(&s, &q.node)?;
    match view::rollback_target(&s, &p.id, &node, &q.prefix) {
        Some(d) => ok(deployment_detail(&s, d)),
        None => Err(Fail::not_found(format!(
            "nothing to roll back to for {} on {}/{}: there is no obsolete deployment of an earlier incremental version there (see `shoal deploy list --product {}`)",
            p.name, q.node, q.prefix, p.name
        ))),
    }
}
