//! `shoal version`: a product's versions.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;
use shoal_protocol::Action;
use shoal_protocol::model::VersionKind;

use crate::ctx::{Ctx, list_of, seg, str_of};
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
                product: str_of(&p, "id"),
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
                str_of(&p, "name")
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
            let copies = v["copies"].as_u64().unwrap_or(0) as u32;
            let s = Session::open(ctx).await?;
            let mut ids = s.ids(1 + copies).await?;
            let id = ids.remove(0);
            s.act(Action::VersionIncrease {
                from: str_of(&v, "id"),
                id,
                name: new_name.clone(),
                changelog,
                copies: ids,
            })
            .await?;
            writeln!(
                out,
                "created version {new_name} of {} from {}{}",
                str_of(&v, "product"),
                str_of(&v, "name"),
                if copies > 0 {
                    format!(" with {copies} deployment(s) copied as preparing")
                } else {
                    String::new()
                }
            )?;
            Ok(())
        }
        Cmd::List { product } => {
            let v = ctx
                .get(&format!("products/{}/versions", seg(&product)))
                .await?;
            if ctx.json() {
                return json(out, &v);
            }
            table(list_of(&v), out)
        }
        Cmd::Show { product, version } => {
            let v = ctx.version(&product, &version).await?;
            if ctx.json() {
                return json(out, &v);
            }
            writeln!(out, "{:<13}{}", "product", str_of(&v, "product"))?;
            writeln!(out, "{:<13}{}", "version", str_of(&v, "name"))?;
            writeln!(out, "{:<13}{}", "id", str_of(&v, "id"))?;
            writeln!(out, "{:<13}{}", "kind", str_of(&v, "kind"))?;
            writeln!(
                out,
                "{:<13}{}",
                "default",
                if v["default"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
            )?;
            let frozen = str_of(&v, "frozen");
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
            writeln!(out, "{:<13}{}", "parent", dash(str_of(&v, "parent")))?;
            writeln!(out, "{:<13}{}", "child", dash(str_of(&v, "child")))?;
            writeln!(
                out,
                "{:<13}{}",
                "auto-copy",
                if v["auto_copy"].as_bool() == Some(true) {
                    "on"
                } else {
                    "off"
                }
            )?;
            writeln!(out, "{:<13}{}", "deployments", str_of(&v, "deployments"))?;
            writeln!(out, "{:<13}{}", "changelog", dash(str_of(&v, "changelog")))?;
            writeln!(out)?;
            super::image::table(list_of(&v["images"]), out)
        }
        Cmd::Default { product, version } => {
            let v = ctx.version(&product, &version).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::VersionDefault {
                version: str_of(&v, "id"),
            })
            .await?;
            writeln!(
                out,
                "{} is now the default version of {}",
                str_of(&v, "name"),
                str_of(&v, "product")
            )?;
            Ok(())
        }
        Cmd::Remove { product, version } => {
            let v = ctx.version(&product, &version).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::VersionRemove {
                id: str_of(&v, "id"),
            })
            .await?;
            writeln!(
                out,
                "removed version {} of {}",
                str_of(&v, "name"),
                str_of(&v, "product")
            )?;
            Ok(())
        }
    }
}

/// Versions, one row each.
pub fn table(list: &[Value], out: &mut impl Write) -> Result<()> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let mut name = str_of(v, "name");
            if v["default"].as_bool() == Some(true) {
                name.push_str(" *");
            }
            let frozen = if v["frozen"].is_null() { "no" } else { "yes" };
            vec![
                name,
                str_of(v, "kind"),
                frozen.to_string(),
                str_of(v, "images"),
                str_of(v, "deployments"),
                dash(str_of(v, "parent")),
                dash(str_of(v, "changelog")),
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
