//! `shoal product`: the applications, and `product import` from a
//! docker-compose file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use shoal_api::products::ProductList;
use shoal_api::registries::RegistryList;
use shoal_protocol::Action;
use shoal_protocol::model::{Image, ProductKind};

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
    /// Lists the product templates shipped with shoal (a database, a reverse
    /// proxy, a queue), or prints one as a file for `shoal apply -f`.
    Templates {
        /// The template to print.
        name: Option<String>,
    },
    /// Shows a product and its versions.
    Show { name: String },
    /// Changes a product's description.
    Update {
        name: String,
        /// The new description (replaces the old one; "" clears it).
        #[arg(long)]
        description: String,
    },
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
        /// Variables for `${VAR}` in the file, instead of the `.env` beside
        /// it (the process environment wins over both).
        #[arg(long = "env-file", value_name = "FILE")]
        env_file: Vec<PathBuf>,
        /// Also imports the services of this compose profile.
        #[arg(long, value_name = "NAME")]
        profile: Vec<String>,
        /// The image of a service, for one that is only built (or to
        /// replace its `image:`).
        #[arg(long, value_name = "SERVICE=REF")]
        image: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Templates { name } => templates(ctx, name.as_deref(), out),
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
        Cmd::Update { name, description } => {
            let p = ctx.product(&name).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::ProductUpdate {
                id: p.id.clone(),
                description,
            })
            .await?;
            writeln!(out, "updated the description of product {}", p.name)?;
            Ok(())
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
            env_file,
            profile,
            image,
        } => {
            let mut images = std::collections::BTreeMap::new();
            for i in image {
                let Some((svc, reference)) = i.split_once('=') else {
                    bail!("--image {i}: write SERVICE=REF");
                };
                images.insert(svc.to_string(), reference.to_string());
            }
            let plan = compose::load(&file, &env_file, profile, images)?;
            import(ctx, &name, &file, plan, &version, registry.as_deref(), out).await
        }
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
    plan: compose::Plan,
    version_name: &str,
    registry: Option<&str>,
    out: &mut impl Write,
) -> Result<()> {
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
    // The product, the version and every image in one op, checked whole: a
    // refused import leaves nothing behind.
    // Ids derive from the op that uses them: both come from one call.
    let mut ids = s.ids(2).await?;
    let version_id = ids.remove(1);
    let (product_id, product_name) = match ctx.product(name).await {
        Ok(p) => {
            if p.kind != ProductKind::Complex {
                bail!(
                    "product {name} is simple: a simple product has exactly one version; import into a new product name"
                );
            }
            if p.versions.iter().any(|v| v.name == version_name) {
                bail!(
                    "product {name} already has a version {version_name}: choose another with --version"
                );
            }
            (p.id, None)
        }
        Err(_) => (ids.remove(0), Some(name.to_string())),
    };
    let lines: Vec<String> = images
        .iter()
        .map(|i| format!("added {} as container {}", i.image, i.name))
        .collect();
    let action = Action::ProductImport {
        product: product_id,
        product_name: product_name.clone(),
        description: format!("imported from {}", file.display()),
        version: version_id,
        name: version_name.to_string(),
        changelog: format!("imported from {}", file.display()),
        images,
    };
    // The op's body; signatures and framing add little, the margin covers them.
    let size = postcard::to_allocvec(&action).map(|b| b.len()).unwrap_or(0);
    let limit = shoal_protocol::op::MAX_OP_BYTES - 64 * 1024;
    if size > limit {
        bail!(
            "{}: the version's {} service(s) make an op of {size} bytes, more than the {limit} one import may write: split the file",
            file.display(),
            plan.services.len()
        );
    }
    s.act(action).await?;
    if product_name.is_some() {
        writeln!(out, "created product {name}")?;
    }
    for l in lines {
        writeln!(out, "{l}")?;
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

/// `product templates [NAME]`: the list, or one template's file.
fn templates(ctx: &Ctx, name: Option<&str>, out: &mut impl Write) -> Result<()> {
    if let Some(name) = name {
        let text = crate::templates::find(name).ok_or_else(|| {
            anyhow::anyhow!("no template {name:?}: see `shoal product templates`")
        })?;
        write!(out, "{text}")?;
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut listed = Vec::new();
    for (name, about, text) in crate::templates::TEMPLATES {
        let m = crate::templates::parse(text)?;
        let images: Vec<String> = m
            .product
            .versions
            .iter()
            .flat_map(|v| &v.images)
            .map(|i| format!("{}:{}", i.image, i.tag))
            .collect();
        rows.push(vec![name.to_string(), about.to_string(), images.join(",")]);
        listed.push(serde_json::json!({
            "name": name,
            "description": about,
            "images": images,
        }));
    }
    if ctx.json() {
        return crate::output::json(out, &listed);
    }
    crate::output::table(out, &["NAME", "DESCRIPTION", "IMAGES"], &rows)?;
    writeln!(
        out,
        "\nuse one: shoal product templates NAME > NAME.yaml && shoal apply -f NAME.yaml"
    )?;
    Ok(())
}
