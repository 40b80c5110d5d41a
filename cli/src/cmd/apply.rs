//! `shoal apply -f FILE [--diff] [--dry-run]`: makes the team's product
//! match a file written by `shoal export`, with the fewest ops: a new
//! incremental version (with the product when new) is one `product.import`;
//! an existing version gets only the image adds, removals, config changes
//! and reordering it needs. Applying the same file twice changes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use shoal_api::registries::RegistryList;
use shoal_protocol::Action;
use shoal_protocol::model::{Image, ImageRef, ProductKind, VersionKind};

use super::export::{ImageSpec, Manifest, VersionSpec};
use crate::ctx::Ctx;
use crate::session::Session;

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The file (from `shoal export`).
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Also prints what changes in each container config.
    #[arg(long)]
    pub diff: bool,
    /// Prints the plan and changes nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One op of the plan.
enum Step {
    CreateProduct {
        simple: bool,
    },
    /// A new incremental version with its images (and the product when new).
    Import {
        new_product: bool,
        version: VersionSpec,
    },
    CreateVersion {
        version: VersionSpec,
    },
    AddImage {
        version: String,
        image: ImageSpec,
    },
    RemoveImage {
        version: String,
        name: String,
    },
    ConfigImage {
        version: String,
        image: ImageSpec,
    },
    Order {
        version: String,
        names: Vec<String>,
    },
    Default {
        version: String,
    },
}

/// The fields of two configs that differ, by name.
fn changed_fields(a: &ImageSpec, b: &ImageSpec) -> Vec<String> {
    let mut out = Vec::new();
    if (&a.registry, &a.image, &a.tag) != (&b.registry, &b.image, &b.tag) {
        out.push(format!(
            "image {}/{}:{} -> {}/{}:{}",
            a.registry, a.image, a.tag, b.registry, b.image, b.tag
        ));
    }
    let (ja, jb) = (
        serde_json::to_value(&a.config).unwrap_or_default(),
        serde_json::to_value(&b.config).unwrap_or_default(),
    );
    if let (Some(ma), Some(mb)) = (ja.as_object(), jb.as_object()) {
        for (k, v) in mb {
            if ma.get(k) != Some(v) {
                out.push(format!(
                    "{k}: {} -> {v}",
                    ma.get(k).cloned().unwrap_or_default()
                ));
            }
        }
    }
    out
}

pub async fn run(ctx: &Ctx, args: ApplyArgs, out: &mut impl Write) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| anyhow!("cannot read {}: {e}", args.file.display()))?;
    crate::compose::load::prescan(&text, &args.file.display().to_string())?;
    let want: Manifest = serde_norway::from_str(&text)
        .with_context(|| format!("{} is not a file of `shoal export`", args.file.display()))?;
    let p = &want.product;
    let registries: RegistryList = ctx.get("registries").await?;
    for v in &p.versions {
        for i in &v.images {
            if !registries.iter().any(|r| r.name == i.registry) {
                bail!(
                    "version {} container {}: the team has no registry {}: add it with `shoal registry add`",
                    v.name,
                    i.name,
                    i.registry
                );
            }
        }
    }
    let have = match ctx.product(&p.name).await {
        Ok(_) => Some(super::export::manifest(ctx, &p.name, None).await?),
        Err(_) => None,
    };
    let mut steps: Vec<(String, Vec<String>, Step)> = Vec::new();
    let mut frozen: BTreeMap<String, String> = BTreeMap::new();
    match &have {
        Some(h) if h.product.kind != p.kind => bail!(
            "product {} is {:?} in the team and {:?} in the file: remove it first",
            p.name,
            h.product.kind,
            p.kind
        ),
        Some(_) => {
            let detail = ctx.product(&p.name).await?;
            for v in &detail.versions {
                let d = ctx.version(&p.name, &v.name).await?;
                if let Some(why) = d.frozen {
                    frozen.insert(v.name.clone(), why);
                }
            }
        }
        None => {}
    }
    let simple = p.kind == ProductKind::Simple;
    let mut new_product = have.is_none();
    if new_product
        && (simple
            || p.versions
                .first()
                .is_none_or(|v| v.kind != VersionKind::Incremental))
    {
        steps.push((
            format!("+ product {}", p.name),
            vec![],
            Step::CreateProduct { simple },
        ));
        new_product = false;
    }
    for v in &p.versions {
        let old = have
            .as_ref()
            .and_then(|h| h.product.versions.iter().find(|x| x.name == v.name))
            .cloned()
            .or_else(|| {
                // A new simple product comes with its empty rolling version.
                (simple && have.is_none()).then(|| VersionSpec {
                    images: vec![],
                    ..v.clone()
                })
            });
        let Some(old) = old else {
            if v.kind == VersionKind::Incremental {
                steps.push((
                    format!("+ version {} with {} container(s)", v.name, v.images.len()),
                    vec![],
                    Step::Import {
                        new_product,
                        version: v.clone(),
                    },
                ));
                new_product = false;
            } else {
                steps.push((
                    format!("+ version {}", v.name),
                    vec![],
                    Step::CreateVersion { version: v.clone() },
                ));
                for i in &v.images {
                    steps.push((
                        format!("+ container {} in {}", i.name, v.name),
                        vec![],
                        Step::AddImage {
                            version: v.name.clone(),
                            image: i.clone(),
                        },
                    ));
                }
            }
            continue;
        };
        let before = steps.len();
        for o in &old.images {
            if !v.images.iter().any(|i| i.name == o.name) {
                steps.push((
                    format!("- container {} in {}", o.name, v.name),
                    vec![],
                    Step::RemoveImage {
                        version: v.name.clone(),
                        name: o.name.clone(),
                    },
                ));
            }
        }
        for i in &v.images {
            match old.images.iter().find(|o| o.name == i.name) {
                None => steps.push((
                    format!("+ container {} in {}", i.name, v.name),
                    vec![],
                    Step::AddImage {
                        version: v.name.clone(),
                        image: i.clone(),
                    },
                )),
                Some(o) if o != i => steps.push((
                    format!("~ container {} in {}", i.name, v.name),
                    changed_fields(o, i),
                    Step::ConfigImage {
                        version: v.name.clone(),
                        image: i.clone(),
                    },
                )),
                Some(_) => {}
            }
        }
        let kept: Vec<&String> = old
            .images
            .iter()
            .map(|o| &o.name)
            .filter(|n| v.images.iter().any(|i| &i.name == *n))
            .chain(
                v.images
                    .iter()
                    .map(|i| &i.name)
                    .filter(|n| !old.images.iter().any(|o| &o.name == *n)),
            )
            .collect();
        let names: Vec<String> = v.images.iter().map(|i| i.name.clone()).collect();
        if kept
            .iter()
            .map(|s| s.as_str())
            .ne(names.iter().map(String::as_str))
        {
            steps.push((
                format!("~ order of {}: {}", v.name, names.join(", ")),
                vec![],
                Step::Order {
                    version: v.name.clone(),
                    names,
                },
            ));
        }
        if steps.len() > before
            && let Some(why) = frozen.get(&v.name)
        {
            bail!(
                "version {} differs from the file but is frozen ({why}): increase it and change the new version",
                v.name
            );
        }
    }
    let current_default = have
        .as_ref()
        .and_then(|h| h.product.default_version.clone());
    if let Some(d) = &p.default_version {
        let first_new = have.is_none() && p.versions.first().is_some_and(|v| &v.name == d);
        if current_default.as_ref() != Some(d) && !first_new && !simple {
            steps.push((
                format!("~ default version {d}"),
                vec![],
                Step::Default { version: d.clone() },
            ));
        }
    }
    if steps.is_empty() {
        writeln!(
            out,
            "{} matches {}: nothing to do",
            p.name,
            args.file.display()
        )?;
        return Ok(());
    }
    for (line, detail, _) in &steps {
        writeln!(out, "{line}")?;
        if args.diff {
            for d in detail {
                writeln!(out, "    {d}")?;
            }
        }
    }
    if args.dry_run {
        writeln!(
            out,
            "{} op(s) planned; nothing changed (--dry-run)",
            steps.len()
        )?;
        return Ok(());
    }
    let reference = |i: &ImageSpec| -> Result<Image> {
        let r = registries
            .iter()
            .find(|r| r.name == i.registry)
            .ok_or_else(|| anyhow!("no registry {}", i.registry))?;
        Ok(Image {
            name: i.name.clone(),
            image: ImageRef {
                registry: r.id.clone(),
                name: i.image.clone(),
                tag: i.tag.clone(),
            },
            config: i.config.clone(),
        })
    };
    let s = Session::open(ctx).await?;
    let n = steps.len();
    for (_, _, step) in steps {
        let version_id = |v: String| async move { ctx.version(&p.name, &v).await.map(|d| d.id) };
        let action = match step {
            Step::CreateProduct { simple } => {
                let ids = s.ids(2).await?;
                Action::ProductCreate {
                    id: ids[0].clone(),
                    name: p.name.clone(),
                    kind: if simple {
                        ProductKind::Simple
                    } else {
                        ProductKind::Complex
                    },
                    description: p.description.clone(),
                    version: simple.then(|| ids[1].clone()),
                }
            }
            Step::Import {
                new_product,
                version,
            } => {
                let mut ids = s.ids(2).await?;
                let vid = ids.remove(1);
                let product = if new_product {
                    ids.remove(0)
                } else {
                    ctx.product(&p.name).await?.id
                };
                Action::ProductImport {
                    product,
                    product_name: new_product.then(|| p.name.clone()),
                    description: p.description.clone(),
                    version: vid,
                    name: version.name.clone(),
                    changelog: version.changelog.clone(),
                    images: version
                        .images
                        .iter()
                        .map(reference)
                        .collect::<Result<_>>()?,
                }
            }
            Step::CreateVersion { version } => Action::VersionCreate {
                id: s.ids(1).await?.remove(0),
                product: ctx.product(&p.name).await?.id,
                name: version.name.clone(),
                kind: version.kind,
                changelog: version.changelog.clone(),
                auto_copy: version.auto_copy,
            },
            Step::AddImage { version, image } => Action::ImageAdd {
                version: version_id(version).await?,
                image: reference(&image)?,
            },
            Step::RemoveImage { version, name } => Action::ImageRemove {
                version: version_id(version).await?,
                name,
            },
            Step::ConfigImage { version, image } => {
                let i = reference(&image)?;
                Action::ImageConfig {
                    version: version_id(version).await?,
                    name: i.name,
                    image: i.image,
                    config: i.config,
                }
            }
            Step::Order { version, names } => Action::ImageOrder {
                version: version_id(version).await?,
                names,
            },
            Step::Default { version } => Action::VersionDefault {
                version: version_id(version).await?,
            },
        };
        s.act(action).await?;
    }
    writeln!(out, "applied {n} op(s) to {}", p.name)?;
    Ok(())
}
