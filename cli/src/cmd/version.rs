//! `shoal version`: a product's versions.

use std::io::Write;

use anyhow::{Result, bail};
use clap::Subcommand;
use shoal_api::products::{VersionList, VersionSummary};
use shoal_protocol::Action;
use shoal_protocol::model::VersionKind;

use crate::ctx::{Ctx, segment};
use crate::output::{self, dash, json};
use crate::session::Session;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Adds a version to a complex product: incremental (the default, frozen
    /// once deployed) or rolling (mutable forever).
    Create {
        product: String,
        name: String,
        #[arg(long, conflicts_with = "incremental")]
        rolling: bool,
        #[arg(long)]
        incremental: bool,
        #[arg(long, default_value = "")]
        changelog: String,
        /// On increase, copy this version's deployments to the new version.
        #[arg(long)]
        auto_copy: bool,
    },
    /// Makes the child of an incremental version: images and configs are copied.
    Increase {
        product: String,
        version: String,
        new_name: String,
        #[arg(long, default_value = "")]
        changelog: String,
    },
    /// Changes a version's changelog or auto-copy flag; a frozen version
    /// takes them too (they change neither its images nor its configs).
    Update {
        product: String,
        version: String,
        /// The new changelog (replaces the old one; "" clears it).
        #[arg(long)]
        changelog: Option<String>,
        /// On increase, copy this version's deployments to the new version.
        #[arg(long, conflicts_with = "no_auto_copy")]
        auto_copy: bool,
        /// On increase, copy none of this version's deployments.
        #[arg(long)]
        no_auto_copy: bool,
    },
    /// Lists a product's versions.
    List { product: String },
    /// Shows a version and its images.
    Show { product: String, version: String },
    /// Makes a version the product's default.
    Default { product: String, version: String },
    /// Removes a version (none of its deployments may be immutable).
    Remove { product: String, version: String },
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Create {
            product,
            name,
            rolling,
            incremental: _,
            changelog,
            auto_copy,
        } => {
            let p = ctx.product(&product).await?;
            let s = Session::open(ctx).await?;
            let id = s.ids(1).await?.remove(0);
            let kind = if rolling {
                VersionKind::Rolling
            } else {
                VersionKind::Incremental
            };
            s.act(Action::VersionCreate {
                id,
                product: p.id.clone(),
                name: name.clone(),
                kind,
                changelog,
                auto_copy,
            })
            .await?;
            writeln!(
                out,
                "created {} version {name} of {}",
                if rolling { "rolling" } else { "incremental" },
                p.name
            )?;
            Ok(())
        }
        Cmd::Increase {
            product,
            version,
            new_name,
            changelog,
        } => {
            let v = ctx.version(&product, &version).await?;
            let copies = u32::try_from(v.copies).unwrap_or(u32::MAX);
            let s = Session::open(ctx).await?;
            let mut ids = s.ids(1 + copies).await?;
            let id = ids.remove(0);
            s.act(Action::VersionIncrease {
                from: v.id.clone(),
                id,
                name: new_name.clone(),
                changelog,
                copies: ids,
            })
            .await?;
            writeln!(
                out,
                "created version {new_name} of {} from {}{}",
                v.product.clone().unwrap_or_default(),
                v.name,
                if copies > 0 {
                    format!(" with {copies} deployment(s) copied as preparing")
                } else {
                    String::new()
                }
            )?;
            Ok(())
        }
        Cmd::Update {
            product,
            version,
            changelog,
            auto_copy,
            no_auto_copy,
        } => {
            let auto_copy = match (auto_copy, no_auto_copy) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            if changelog.is_none() && auto_copy.is_none() {
                bail!("nothing to change: give --changelog, --auto-copy or --no-auto-copy");
            }
            let v = ctx.version(&product, &version).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::VersionUpdate {
                id: v.id.clone(),
                changelog: changelog.clone(),
                auto_copy,
            })
            .await?;
            let mut what = Vec::new();
            if changelog.is_some() {
                what.push("changelog".to_string());
            }
            if let Some(a) = auto_copy {
                what.push(format!("auto-copy {}", if a { "on" } else { "off" }));
            }
            writeln!(
                out,
                "updated {} of version {} of {}",
                what.join(" and "),
                v.name,
                v.product.as_deref().unwrap_or_default()
            )?;
            Ok(())
        }
        Cmd::List { product } => {
            let v: VersionList = ctx
                .get(&format!("products/{}/versions", segment(&product)))
                .await?;
            if ctx.json() {
                return json(out, &v);
            }
            table(&v, out)
        }
        Cmd::Show { product, version } => {
            let v = ctx.version(&product, &version).await?;
            if ctx.json() {
                return json(out, &v);
            }
            writeln!(
                out,
                "{:<13}{}",
                "product",
                v.product.as_deref().unwrap_or_default()
            )?;
            writeln!(out, "{:<13}{}", "version", v.name)?;
            writeln!(out, "{:<13}{}", "id", v.id)?;
            writeln!(out, "{:<13}{}", "kind", kind(v.kind))?;
            writeln!(
                out,
                "{:<13}{}",
                "default",
                if v.default { "yes" } else { "no" }
            )?;
            let frozen = v.frozen.clone().unwrap_or_default();
            writeln!(
                out,
                "{:<13}{}",
                "frozen",
                if frozen.is_empty() {
                    "no".to_string()
                } else {
                    format!("yes: {frozen}")
                }
            )?;
            writeln!(
                out,
                "{:<13}{}",
                "parent",
                dash(v.parent.clone().unwrap_or_default())
            )?;
            writeln!(
                out,
                "{:<13}{}",
                "child",
                dash(v.child.clone().unwrap_or_default())
            )?;
            writeln!(
                out,
                "{:<13}{}",
                "auto-copy",
                if v.auto_copy { "on" } else { "off" }
            )?;
            writeln!(out, "{:<13}{}", "deployments", v.deployments)?;
            writeln!(out, "{:<13}{}", "changelog", dash(v.changelog.clone()))?;
            writeln!(out)?;
            super::image::table(&v.images, out)
        }
        Cmd::Default { product, version } => {
            let v = ctx.version(&product, &version).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::VersionDefault {
                version: v.id.clone(),
            })
            .await?;
            writeln!(
                out,
                "{} is now the default version of {}",
                v.name,
                v.product.as_deref().unwrap_or_default()
            )?;
            Ok(())
        }
        Cmd::Remove { product, version } => {
            let v = ctx.version(&product, &version).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::VersionRemove { id: v.id.clone() }).await?;
            writeln!(
                out,
                "removed version {} of {}",
                v.name,
                v.product.as_deref().unwrap_or_default()
            )?;
            Ok(())
        }
    }
}

/// Versions, one row each.
pub fn table(list: &[VersionSummary], out: &mut impl Write) -> Result<()> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let mut name = v.name.clone();
            if v.default {
                name.push_str(" *");
            }
            let frozen = if v.frozen.is_none() { "no" } else { "yes" };
            vec![
                name,
                kind(v.kind).to_string(),
                frozen.to_string(),
                v.images.to_string(),
                v.deployments.to_string(),
                dash(v.parent.clone().unwrap_or_default()),
                dash(v.changelog.clone()),
            ]
        })
        .collect();
    output::table(
        out,
        &[
            "VERSION",
            "KIND",
            "FROZEN",
            "IMAGES",
            "DEPLOYMENTS",
            "PARENT",
            "CHANGELOG",
        ],
        &rows,
    )
}

/// A version kind as the API writes it.
pub fn kind(k: VersionKind) -> &'static str {
    match k {
        VersionKind::Rolling => "rolling",
        VersionKind::Incremental => "incremental",
    }
}
