//! `shoal product`: the applications, and `product import` from a
//! docker-compose file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use shoal_api::products::ProductList;
use shoal_api::registries::RegistryList;
use shoal_protocol::Action;
use shoal_protocol::model::{Image, ProductKind, VersionKind};

use crate::compose;
use crate::ctx::Ctx;
use crate::image_ref;
use crate::output::{dash, json, table, when};
use crate::parse;
use crate::session::Session;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Creates a product: complex (any number of versions, the default) or
    /// simple (exactly one rolling version, created with it).
    Create {
        name: String,
        #[arg(long, conflicts_with = "complex")]
        simple: bool,
        #[arg(long)]
        complex: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Lists the team's products.
    List,
    /// Shows a product and its versions.
    Show { name: String },
    /// Removes a product with its versions and deployments (none may be in progress).
    Remove { name: String },
    /// Makes a product version from a docker-compose file: one image per
    /// service, in depends_on order. Keys shoal does not take are listed on
    /// stderr.
    Import {
        name: String,
        #[arg(long)]
        compose: PathBuf,
        /// The version's name (incremental).
        #[arg(long, default_value = "1.0.0")]
        version: String,
        /// The registry of images whose reference names no host (default: Docker Hub).
        #[arg(long)]
        registry: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Create {
            name,
            simple,
            complex: _,
            description,
        } => {
            let s = Session::open(ctx).await?;
            let ids = s.ids(2).await?;
            let (kind, version) = if simple {
                (ProductKind::Simple, Some(ids[1].clone()))
            } else {
                (ProductKind::Complex, None)
            };
            s.act(Action::ProductCreate {
                id: ids[0].clone(),
                name: name.clone(),
                kind,
                description,
                version,
            })
            .await?;
            if simple {
                writeln!(
                    out,
                    "created simple product {name} with its rolling version"
                )?;
            } else {
                writeln!(
                    out,
                    "created product {name}; add a version with `shoal version create {name} 1.0.0`"
                )?;
            }
            Ok(())
        }
        Cmd::List => {
            let v: ProductList = ctx.get("products").await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        kind(p.kind).to_string(),
                        dash(p.default_version.clone().unwrap_or_default()),
                        p.versions.to_string(),
                        p.deployments.to_string(),
                        dash(p.description.clone()),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "NAME",
                    "KIND",
                    "DEFAULT",
                    "VERSIONS",
                    "DEPLOYMENTS",
                    "DESCRIPTION",
                ],
                &rows,
            )
        }
        Cmd::Show { name } => {
            let p = ctx.product(&name).await?;
            if ctx.json() {
                return json(out, &p);
            }
            for (label, value) in [
                ("name", p.name.clone()),
                ("id", p.id.clone()),
                ("kind", kind(p.kind).to_string()),
                ("description", p.description.clone()),
                ("default", p.default_version.clone().unwrap_or_default()),
            ] {
                writeln!(out, "{:<13}{}", label, dash(value))?;
            }
            writeln!(out, "{:<13}{}", "deployments", p.deployments)?;
            writeln!(out, "{:<13}{}", "created", when(p.created_ms))?;
            writeln!(out)?;
            super::version::table(&p.versions, out)
        }
        Cmd::Remove { name } => {
            let p = ctx.product(&name).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::ProductRemove { id: p.id.clone() }).await?;
            writeln!(
                out,
                "removed product {} with its versions and deployments",
                p.name
            )?;
            Ok(())
        }
        Cmd::Import {
            name,
            compose: file,
            version,
            registry,
        } => import(ctx, &name, &file, &version, registry.as_deref(), out).await,
    }
}

/// A product kind as the API writes it.
fn kind(k: ProductKind) -> &'static str {
    match k {
        ProductKind::Simple => "simple",
        ProductKind::Complex => "complex",
    }
}

async fn import(
    ctx: &Ctx,
    name: &str,
    file: &std::path::Path,
    version_name: &str,
    registry: Option<&str>,
    out: &mut impl Write,
) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let plan = compose::parse(&text, &file.display().to_string())?;
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let registries: RegistryList = ctx.get("registries").await?;
    let mut images = Vec::new();
    for svc in &plan.services {
        let parts =
            parse::image_ref(&svc.image).with_context(|| format!("service {}", svc.service))?;
        let image = image_ref::image_ref_in(&registries, &parts, &svc.image, registry)
            .with_context(|| format!("service {}", svc.service))?;
        images.push(Image {
            name: svc.name.clone(),
            image,
            config: svc.config.clone(),
        });
    }
    let s = Session::open(ctx).await?;
    // The product: an existing complex one gets the new version.
    let product_id = match ctx.product(name).await {
        Ok(p) => {
            if p.kind != ProductKind::Complex {
                bail!(
                    "product {name} is simple: a simple product has exactly one version; import into a new product name"
                );
            }
            p.id
        }
        Err(_) => {
            let id = s.ids(1).await?.remove(0);
            s.act(Action::ProductCreate {
                id: id.clone(),
                name: name.to_string(),
                kind: ProductKind::Complex,
                description: format!("imported from {}", file.display()),
                version: None,
            })
            .await?;
            writeln!(out, "created product {name}")?;
            id
        }
    };
    let version_id = s.ids(1).await?.remove(0);
    s.act(Action::VersionCreate {
        id: version_id.clone(),
        product: product_id,
        name: version_name.to_string(),
        kind: VersionKind::Incremental,
        changelog: format!("imported from {}", file.display()),
        auto_copy: false,
    })
    .await?;
    for image in images {
        let (container, reference) = (image.name.clone(), image.image.to_string());
        s.act(Action::ImageAdd {
            version: version_id.clone(),
            image,
        })
        .await?;
        writeln!(out, "added {reference} as container {container}")?;
    }
    writeln!(
        out,
        "imported {} service(s) into {name} {version_name}{}",
        plan.services.len(),
        if plan.warnings.is_empty() {
            String::new()
        } else {
            format!(" ({} warning(s) on stderr)", plan.warnings.len())
        }
    )?;
    Ok(())
}
