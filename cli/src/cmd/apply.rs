//! `shoal apply -f FILE [--diff] [--dry-run] [--prune]`: makes the team's
//! product match a file written by `shoal export`, with the fewest ops.
//!
//! What the file says wins for everything the file names:
//! - a new product is created (a simple one with its rolling version); a new
//!   incremental version without auto-copy is one `product.import`, other
//!   new versions are a `version.create` and their image adds; a new version
//!   with a `parent` is a `version.increase` of it (deployments copied when
//!   the parent has auto-copy on) and the image changes from the parent's;
//! - an existing version gets only the image adds, removals (containers the
//!   file does not list are removed), config changes and reordering it needs;
//!   a frozen version that differs is refused before anything is written;
//! - a product's description, and a version's changelog and auto-copy, that
//!   differ are set to the file's (`product.update`, `version.update`; a
//!   frozen version takes them too, as they leave its containers alone);
//! - the product's default version is set to the file's.
//!
//! Versions the team has and the file does not list are kept, and the plan
//! says so, unless `--prune` is given: then they are removed (children before
//! parents, with their deployments), and a version the rules keep (its child
//! stays, or one of its deployments cannot change) refuses the whole apply.
//! A version's kind and parent are set when it is created and no op changes
//! them afterwards (a file without `parent` does not say), so a file that
//! differs there is refused with what to change, never skipped in silence.
//! Everything is checked before the first op, so a refused apply writes
//! nothing; applying the same file twice changes nothing.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use shoal_api::deployments::DeploymentList;
use shoal_api::products::VersionSummary;
use shoal_api::registries::RegistryList;
use shoal_protocol::Action;
use shoal_protocol::model::{Image, ImageRef, ProductKind, VersionKind};

use super::export::{ImageSpec, Manifest, VersionSpec};
use crate::ctx::{Ctx, query};
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
    /// Also removes the product's versions that the file does not list
    /// (with their deployments); without it they are kept and the plan says
    /// so. A version the rules keep refuses the whole apply.
    #[arg(long)]
    pub prune: bool,
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
    /// A new version made from its parent (images and configs copied,
    /// deployments too when the parent has auto-copy on).
    Increase {
        from: String,
        version: VersionSpec,
    },
    UpdateProduct {
        description: String,
    },
    /// A version's changelog and auto-copy; `None` keeps one.
    UpdateVersion {
        version: String,
        changelog: Option<String>,
        auto_copy: Option<bool>,
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
    RemoveVersion {
        id: String,
    },
}

/// A plan line, its `--diff` detail and its op.
type Planned = (String, Vec<String>, Step);

/// The name of a simple product's one version (`product.create` makes it).
const SIMPLE_VERSION: &str = "rolling";

/// A new version that one `product.import` creates with its images: the op
/// makes incremental versions without auto-copy.
fn importable(v: &VersionSpec) -> bool {
    v.kind == VersionKind::Incremental && !v.auto_copy
}

fn kind_name(k: VersionKind) -> &'static str {
    match k {
        VersionKind::Rolling => "rolling",
        VersionKind::Incremental => "incremental",
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The image removals, adds, config changes and reordering that turn `old`
/// into `new` in version `version`.
fn diff_images(version: &str, old: &[ImageSpec], new: &[ImageSpec], steps: &mut Vec<Planned>) {
    for o in old {
        if !new.iter().any(|i| i.name == o.name) {
            steps.push((
                format!("- container {} in {}", o.name, version),
                vec![],
                Step::RemoveImage {
                    version: version.to_string(),
                    name: o.name.clone(),
                },
            ));
        }
    }
    for i in new {
        match old.iter().find(|o| o.name == i.name) {
            None => steps.push((
                format!("+ container {} in {}", i.name, version),
                vec![],
                Step::AddImage {
                    version: version.to_string(),
                    image: i.clone(),
                },
            )),
            Some(o) if o != i => steps.push((
                format!("~ container {} in {}", i.name, version),
                changed_fields(o, i),
                Step::ConfigImage {
                    version: version.to_string(),
                    image: i.clone(),
                },
            )),
            Some(_) => {}
        }
    }
    let kept: Vec<&String> = old
        .iter()
        .map(|o| &o.name)
        .filter(|n| new.iter().any(|i| &i.name == *n))
        .chain(
            new.iter()
                .map(|i| &i.name)
                .filter(|n| !old.iter().any(|o| &o.name == *n)),
        )
        .collect();
    let names: Vec<String> = new.iter().map(|i| i.name.clone()).collect();
    if kept
        .iter()
        .map(|s| s.as_str())
        .ne(names.iter().map(String::as_str))
    {
        steps.push((
            format!("~ order of {}: {}", version, names.join(", ")),
            vec![],
            Step::Order {
                version: version.to_string(),
                names,
            },
        ));
    }
}

/// The plan line and op that set `v`'s changelog and auto-copy (`None`
/// keeps one).
fn update_version(v: &VersionSpec, changelog: Option<String>, auto_copy: Option<bool>) -> Planned {
    let mut what = Vec::new();
    if changelog.is_some() {
        what.push("changelog".to_string());
    }
    if let Some(a) = auto_copy {
        what.push(format!("auto-copy {}", on_off(a)));
    }
    (
        format!("~ version {}: {}", v.name, what.join(", ")),
        vec![],
        Step::UpdateVersion {
            version: v.name.clone(),
            changelog,
            auto_copy,
        },
    )
}

/// Refuses the apply, before any op, with every difference no op can make.
fn refuse(args: &ApplyArgs, problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "{} cannot be applied; nothing was changed:\n  {}",
        args.file.display(),
        problems.join("\n  ")
    )
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
    let simple = p.kind == ProductKind::Simple;
    let mut problems: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for v in &p.versions {
        if !seen.insert(&v.name) {
            problems.push(format!("version {} is in the file twice", v.name));
        }
        let mut names = std::collections::BTreeSet::new();
        for i in &v.images {
            if !names.insert(&i.name) {
                problems.push(format!(
                    "version {}: container {} is in the file twice",
                    v.name, i.name
                ));
            }
        }
    }
    if simple {
        match p.versions.as_slice() {
            [v] if v.kind == VersionKind::Rolling
                && v.name == SIMPLE_VERSION
                && v.changelog.is_empty()
                && !v.auto_copy => {}
            _ => problems.push(format!(
                "product {} is simple: the file must list exactly one version, `{SIMPLE_VERSION}`, rolling, with no changelog and no auto-copy",
                p.name
            )),
        }
    }
    if let Some(d) = &p.default_version
        && !p.versions.iter().any(|v| &v.name == d)
    {
        problems.push(format!(
            "default_version {d} is not one of the file's versions"
        ));
    }
    let registries: RegistryList = ctx.get("registries").await?;
    for v in &p.versions {
        for i in &v.images {
            if !registries.iter().any(|r| r.name == i.registry) {
                problems.push(format!(
                    "version {} container {}: the team has no registry {}: add it with `shoal registry add`",
                    v.name, i.name, i.registry
                ));
            }
        }
    }
    refuse(&args, &problems)?;
    let detail = ctx.product(&p.name).await.ok();
    let have = match &detail {
        Some(_) => Some(super::export::manifest(ctx, &p.name, None).await?),
        None => None,
    };
    if let Some(h) = &have
        && h.product.kind != p.kind
    {
        bail!(
            "product {} is {:?} in the team and {:?} in the file: remove it first",
            p.name,
            h.product.kind,
            p.kind
        );
    }
    let summaries: Vec<VersionSummary> = detail
        .as_ref()
        .map(|d| d.versions.clone())
        .unwrap_or_default();
    let mut steps: Vec<Planned> = Vec::new();
    if let Some(h) = &have
        && h.product.description != p.description
    {
        steps.push((
            format!("~ description of product {}", p.name),
            vec![format!(
                "description: {:?} -> {:?}",
                h.product.description, p.description
            )],
            Step::UpdateProduct {
                description: p.description.clone(),
            },
        ));
    }
    let mut new_product = have.is_none();
    if new_product && (simple || p.versions.first().is_none_or(|v| !importable(v))) {
        steps.push((
            format!("+ product {}", p.name),
            vec![],
            Step::CreateProduct { simple },
        ));
        new_product = false;
    }
    // The default a product gets from its first version when it has none.
    let mut default = have
        .as_ref()
        .and_then(|h| h.product.default_version.clone());
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
            default.get_or_insert_with(|| v.name.clone());
            if let Some(parent) = &v.parent {
                // Made by increase from a version the team has or that
                // comes earlier in the file, whose images it starts from.
                let earlier = p.versions.iter().take_while(|x| x.name != v.name);
                let in_team = have
                    .as_ref()
                    .and_then(|h| h.product.versions.iter().find(|x| &x.name == parent));
                let from = if p.versions.iter().any(|x| &x.name == parent) {
                    earlier.clone().find(|x| &x.name == parent)
                } else {
                    in_team
                };
                let Some(from) = from else {
                    problems.push(format!(
                        "version {}: its parent {parent} is neither listed before it in the file nor in the team",
                        v.name
                    ));
                    continue;
                };
                let team = summaries.iter().find(|s| &s.name == parent);
                if from.kind != VersionKind::Incremental || v.kind != VersionKind::Incremental {
                    problems.push(format!(
                        "version {}: only an incremental version is made from an incremental parent ({parent})",
                        v.name
                    ));
                } else if let Some(c) = team.and_then(|s| s.child.as_ref()) {
                    problems.push(format!(
                        "version {}: its parent {parent} already has the child {c} in the team",
                        v.name
                    ));
                } else if let Some(other) = earlier
                    .clone()
                    .find(|x| x.parent.as_ref() == Some(parent) && x.name != v.name)
                {
                    problems.push(format!(
                        "versions {} and {}: a version has at most one child ({parent})",
                        other.name, v.name
                    ));
                }
                // What the increase copies follows the parent's auto-copy
                // as it is then: the file's when this apply changes it.
                let copies = match (from.auto_copy, in_team.map(|x| x.auto_copy)) {
                    (false, _) | (true, None) => String::new(),
                    (true, Some(true)) => match team.map(|s| s.copies).unwrap_or(0) {
                        0 => String::new(),
                        n => format!(" with {n} deployment(s) copied as preparing"),
                    },
                    (true, Some(false)) => {
                        " with its deployments copied as preparing (auto-copy)".to_string()
                    }
                };
                steps.push((
                    format!("+ version {} from {parent}{copies}", v.name),
                    vec![],
                    Step::Increase {
                        from: parent.clone(),
                        version: v.clone(),
                    },
                ));
                // A version made by increase takes its parent's auto-copy.
                if from.auto_copy != v.auto_copy {
                    steps.push(update_version(v, None, Some(v.auto_copy)));
                }
                diff_images(&v.name, &from.images, &v.images, &mut steps);
                continue;
            }
            if importable(v) {
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
                    format!(
                        "+ version {} ({}{})",
                        v.name,
                        kind_name(v.kind),
                        if v.auto_copy { ", auto-copy" } else { "" }
                    ),
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
        if old.kind != v.kind {
            problems.push(format!(
                "version {} is {} in the team and {} in the file: a version's kind never changes",
                v.name,
                kind_name(old.kind),
                kind_name(v.kind)
            ));
            continue;
        }
        if let Some(parent) = &v.parent
            && old.parent.as_ref() != Some(parent)
        {
            problems.push(format!(
                "version {}: its parent is {} in the team and {parent} in the file: a version's parent never changes",
                v.name,
                old.parent.as_deref().unwrap_or("none")
            ));
        }
        let changelog = (old.changelog != v.changelog).then(|| v.changelog.clone());
        let auto_copy = (old.auto_copy != v.auto_copy).then_some(v.auto_copy);
        if changelog.is_some() || auto_copy.is_some() {
            let (line, _, step) = update_version(v, changelog, auto_copy);
            let mut detail = Vec::new();
            if old.changelog != v.changelog {
                detail.push(format!(
                    "changelog: {:?} -> {:?}",
                    old.changelog, v.changelog
                ));
            }
            steps.push((line, detail, step));
        }
        // Only container changes count against a frozen version.
        let before = steps.len();
        diff_images(&v.name, &old.images, &v.images, &mut steps);
        if steps.len() > before
            && let Some(why) = summaries
                .iter()
                .find(|s| s.name == v.name)
                .and_then(|s| s.frozen.as_ref())
        {
            let changes: Vec<&str> = steps[before..].iter().map(|s| s.0.as_str()).collect();
            problems.push(format!(
                "version {} differs from the file ({}) but is frozen ({why}): increase it (`shoal version increase`) and put the changes in the new version",
                v.name,
                changes.join("; ")
            ));
        }
    }
    if let Some(d) = &p.default_version
        && default.as_ref() != Some(d)
        && !simple
    {
        steps.push((
            format!("~ default version {d}"),
            vec![],
            Step::Default { version: d.clone() },
        ));
    }
    // Versions the file does not list: kept, or removed with --prune.
    let extra: Vec<&VersionSummary> = summaries
        .iter()
        .filter(|s| !p.versions.iter().any(|v| v.name == s.name))
        .collect();
    let mut notes = Vec::new();
    if !extra.is_empty() && !args.prune {
        for s in &extra {
            notes.push(format!(
                "= version {} kept: it is not in the file (--prune removes it)",
                s.name
            ));
        }
    } else if !extra.is_empty() {
        let deployments: DeploymentList = ctx
            .get(&format!(
                "deployments{}",
                query(&[("product", Some(p.name.as_str()))])
            ))
            .await?;
        let pruned = |name: &str| extra.iter().any(|s| s.name == name);
        for s in &extra {
            if let Some(c) = s.child.as_deref().filter(|c| !pruned(c)) {
                problems.push(format!(
                    "version {} is not in the file but cannot be removed: its child version {c} is in the file",
                    s.name
                ));
            }
            if let Some(d) = deployments
                .iter()
                .find(|d| d.version_id == s.id && !d.mutable)
            {
                problems.push(format!(
                    "version {} is not in the file but cannot be removed: its deployment {} is {} and cannot change",
                    s.name, d.id, d.status
                ));
            }
        }
        // Children before their parents: a version with a child cannot go.
        let mut left: Vec<&VersionSummary> = extra.clone();
        while !left.is_empty() {
            let (now, later): (Vec<&VersionSummary>, Vec<&VersionSummary>) =
                left.iter().partition(|s| {
                    s.child
                        .as_deref()
                        .is_none_or(|c| !left.iter().any(|x| x.name == c))
                });
            if now.is_empty() {
                break;
            }
            for s in now {
                steps.push((
                    format!(
                        "- version {}{}",
                        s.name,
                        match s.deployments {
                            0 => String::new(),
                            n => format!(" and its {n} deployment(s)"),
                        }
                    ),
                    vec![],
                    Step::RemoveVersion { id: s.id.clone() },
                ));
            }
            left = later;
        }
    }
    refuse(&args, &problems)?;
    for n in &notes {
        writeln!(out, "{n}")?;
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
            Step::Increase { from, version } => {
                // Counted now: an earlier op of this apply may have changed
                // the parent's auto-copy.
                let copies = ctx.version(&p.name, &from).await?.copies;
                let mut ids = s.ids(1 + u32::try_from(copies).unwrap_or(u32::MAX)).await?;
                let id = ids.remove(0);
                Action::VersionIncrease {
                    from: version_id(from).await?,
                    id,
                    name: version.name.clone(),
                    changelog: version.changelog.clone(),
                    copies: ids,
                }
            }
            Step::AddImage { version, image } => Action::ImageAdd {
                version: version_id(version).await?,
                image: Box::new(reference(&image)?),
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
                    config: Box::new(i.config),
                }
            }
            Step::Order { version, names } => Action::ImageOrder {
                version: version_id(version).await?,
                names,
            },
            Step::Default { version } => Action::VersionDefault {
                version: version_id(version).await?,
            },
            Step::RemoveVersion { id } => Action::VersionRemove { id },
            Step::UpdateProduct { description } => Action::ProductUpdate {
                id: ctx.product(&p.name).await?.id,
                description,
            },
            Step::UpdateVersion {
                version,
                changelog,
                auto_copy,
            } => Action::VersionUpdate {
                id: version_id(version).await?,
                changelog,
                auto_copy,
            },
        };
        s.act(action).await?;
    }
    writeln!(out, "applied {n} op(s) to {}", p.name)?;
    Ok(())
}
