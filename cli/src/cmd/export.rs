//! `shoal export PRODUCT [VERSION]`: a product (its versions, images and
//! their configs; secrets by name only, as the model holds them) as one
//! YAML file that `shoal apply` reads back.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde::{Deserialize, Serialize};
use shoal_protocol::model::{ContainerConfig, ProductKind, VersionKind};

use crate::ctx::Ctx;

/// The file `export` writes and `apply` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub product: ProductSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSpec {
    pub name: String,
    pub kind: ProductKind,
    #[serde(default)]
    pub description: String,
    /// The default version's name.
    #[serde(default)]
    pub default_version: Option<String>,
    pub versions: Vec<VersionSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    pub name: String,
    pub kind: VersionKind,
    /// The version this one was made from by increase (incremental only);
    /// absent means the file does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default)]
    pub changelog: String,
    #[serde(default)]
    pub auto_copy: bool,
    /// In start order.
    pub images: Vec<ImageSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The container's name.
    pub name: String,
    /// The registry's name.
    pub registry: String,
    pub image: String,
    pub tag: String,
    #[serde(default)]
    pub config: ContainerConfig,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    pub product: String,
    /// Only this version (default: every version).
    pub version: Option<String>,
}

/// The manifest of a product as the team holds it.
pub async fn manifest(ctx: &Ctx, product: &str, only: Option<&str>) -> Result<Manifest> {
    let p = ctx.product(product).await?;
    let mut versions = Vec::new();
    for v in &p.versions {
        if only.is_some_and(|o| o != v.name) {
            continue;
        }
        let d = ctx.version(&p.name, &v.name).await?;
        versions.push(VersionSpec {
            name: d.name,
            kind: d.kind,
            // One version alone is exported without its chain: the file
            // would name a parent it does not hold.
            parent: d.parent.filter(|_| only.is_none()),
            changelog: d.changelog,
            auto_copy: d.auto_copy,
            images: d
                .images
                .into_iter()
                .map(|i| ImageSpec {
                    name: i.name,
                    registry: i.registry,
                    image: i.image,
                    tag: i.tag,
                    config: i.config,
                })
                .collect(),
        });
    }
    if let Some(o) = only
        && versions.is_empty()
    {
        anyhow::bail!("product {} has no version {o}", p.name);
    }
    Ok(Manifest {
        product: ProductSpec {
            name: p.name,
            kind: p.kind,
            description: p.description,
            default_version: p.default_version,
            versions,
        },
    })
}

pub async fn run(ctx: &Ctx, args: ExportArgs, out: &mut impl Write) -> Result<()> {
    let m = manifest(ctx, &args.product, args.version.as_deref()).await?;
    write!(out, "{}", serde_norway::to_string(&m)?)?;
    Ok(())
}
