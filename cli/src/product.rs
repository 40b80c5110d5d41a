//! `shoal product`, `shoal version` and `shoal image`: the applications,
//! their versions and the images (with container configs) they run.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use shoal_protocol::Action;
use shoal_protocol::model::{
    ContainerConfig, Image, ImageRef, ProductKind, SecretDecl, VersionKind,
};

use crate::Usage;
use crate::compose;
use crate::config;
use crate::domain::{self, Ctx, dash, when};
use crate::parse::{self, PortSpec};
use crate::read::{json, list_of, str_of, table};
use crate::registry;

#[derive(Subcommand, Debug)]
pub enum ProductCmd {
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

#[derive(Subcommand, Debug)]
pub enum VersionCmd {
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

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Adds an image to a version: REF is [HOST/]NAME[:TAG].
    Add {
        product: String,
        version: String,
        reference: String,
        /// The registry REF is in (default: the one whose host REF names, else Docker Hub).
        #[arg(long)]
        registry: Option<String>,
        /// The container's name (default: the image name's last part).
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists a version's images, in start order.
    List { product: String, version: String },
    /// Removes an image from a version.
    Remove {
        product: String,
        version: String,
        container: String,
    },
    /// Sets the start order of a version's images: the containers named
    /// come first, in that order; the others follow in their current order.
    Order {
        product: String,
        version: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Edits an image's container config field by field, or from a file;
    /// `--show` prints the effective config.
    Config(Box<ConfigArgs>),
}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    product: String,
    version: String,
    container: String,
    #[command(flatten)]
    edits: ConfigEdits,
    /// Print the effective config.
    #[arg(long)]
    show: bool,
}

/// The edits of a container config, shared by `image config` (the image
/// layer) and `deploy config` (a deployment's instance layer).
#[derive(clap::Args, Debug)]
pub struct ConfigEdits {
    /// A new image reference.
    #[arg(long)]
    image: Option<String>,
    /// The registry of --image (default: from its host, else Docker Hub).
    #[arg(long, requires = "image")]
    registry: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Remove an environment variable (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    unset_env: Vec<String>,
    /// Published port [EXTERNAL:]INTERNAL[/udp], or ranges (repeatable).
    #[arg(long = "port", value_name = "EXT:INT[/udp]")]
    port: Vec<String>,
    /// Remove the published port (or range) of this INTERNAL[/udp] port (repeatable).
    #[arg(long = "unset-port", value_name = "INT[/udp]")]
    unset_port: Vec<String>,
    /// Named volume NAME:PATH[:ro], or tmpfs:PATH (repeatable).
    #[arg(long = "volume", value_name = "NAME:PATH[:ro]")]
    volume: Vec<String>,
    /// Remove the volume mounted at PATH (repeatable).
    #[arg(long = "unset-volume", value_name = "PATH")]
    unset_volume: Vec<String>,
    /// no, always, unless-stopped or on-failure.
    #[arg(long)]
    restart: Option<String>,
    /// The command's arguments (repeatable; replaces them all).
    #[arg(long = "cmd", value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    label: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long = "unset-label", value_name = "KEY")]
    unset_label: Vec<String>,
    /// A secret the container needs: its value is given per deployment (repeatable).
    #[arg(long = "secret", value_name = "KEY")]
    secret: Vec<String>,
    /// No longer need this secret (repeatable).
    #[arg(long = "unset-secret", value_name = "KEY")]
    unset_secret: Vec<String>,
    /// Unset a whole field: restart, cmd, command, user, working-dir, tty,
    /// health, cpu, memory, expected, log-driver or image (repeatable).
    #[arg(long = "unset", value_name = "FIELD")]
    unset: Vec<String>,
    /// Replace the config with this YAML or JSON file (flags apply on top).
    #[arg(long)]
    file: Option<PathBuf>,
}

pub async fn product(ctx: &Ctx, cmd: ProductCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        ProductCmd::Create {
            name,
            simple,
            complex: _,
            description,
        } => {
            let s = ctx.session().await?;
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
        ProductCmd::List => {
            let v = ctx.get("products").await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = list_of(&v)
                .iter()
                .map(|p| {
                    vec![
                        str_of(p, "name"),
                        str_of(p, "kind"),
                        dash(str_of(p, "default_version")),
                        str_of(p, "versions"),
                        str_of(p, "deployments"),
                        dash(str_of(p, "description")),
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
        ProductCmd::Show { name } => {
            let p = domain::product(ctx, &name).await?;
            if ctx.json() {
                return json(out, &p);
            }
            for (label, f) in [
                ("name", "name"),
                ("id", "id"),
                ("kind", "kind"),
                ("description", "description"),
                ("default", "default_version"),
            ] {
                writeln!(out, "{:<13}{}", label, dash(str_of(&p, f)))?;
            }
            writeln!(out, "{:<13}{}", "deployments", str_of(&p, "deployments"))?;
            writeln!(out, "{:<13}{}", "created", when(ms(&p)))?;
            writeln!(out)?;
            version_table(list_of(&p["versions"]), out)
        }
        ProductCmd::Remove { name } => {
            let p = domain::product(ctx, &name).await?;
            let s = ctx.session().await?;
            s.act(Action::ProductRemove {
                id: str_of(&p, "id"),
            })
            .await?;
            writeln!(
                out,
                "removed product {} with its versions and deployments",
                str_of(&p, "name")
            )?;
            Ok(())
        }
        ProductCmd::Import {
            name,
            compose: file,
            version,
            registry,
        } => import(ctx, &name, &file, &version, registry.as_deref(), out).await,
    }
}

fn ms(v: &Value) -> u64 {
    v["created_ms"].as_u64().unwrap_or(0)
}

fn version_table(list: &[Value], out: &mut impl Write) -> Result<()> {
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
    table(
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

pub async fn version(ctx: &Ctx, cmd: VersionCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        VersionCmd::Create {
            product,
            name,
            rolling,
            incremental: _,
            changelog,
            auto_copy,
        } => {
            let p = domain::product(ctx, &product).await?;
            let s = ctx.session().await?;
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
        VersionCmd::Increase {
            product,
            version,
            new_name,
            changelog,
        } => {
            let v = domain::version(ctx, &product, &version).await?;
            let copies = v["copies"].as_u64().unwrap_or(0) as u32;
            let s = ctx.session().await?;
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
        VersionCmd::List { product } => {
            let v = ctx
                .get(&format!("products/{}/versions", domain::seg(&product)))
                .await?;
            if ctx.json() {
                return json(out, &v);
            }
            version_table(list_of(&v), out)
        }
        VersionCmd::Show { product, version } => {
            let v = domain::version(ctx, &product, &version).await?;
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
            image_table(list_of(&v["images"]), out)
        }
        VersionCmd::Default { product, version } => {
            let v = domain::version(ctx, &product, &version).await?;
            let s = ctx.session().await?;
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
        VersionCmd::Remove { product, version } => {
            let v = domain::version(ctx, &product, &version).await?;
            let s = ctx.session().await?;
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

fn ports_of(c: &Value) -> String {
    let mut out: Vec<String> = list_of(&c["ports"])
        .iter()
        .map(|p| {
            let proto = if str_of(p, "protocol") == "udp" {
                "/udp"
            } else {
                ""
            };
            match p["external"].as_u64() {
                Some(e) => format!("{e}:{}{proto}", str_of(p, "internal")),
                None => format!("{}{proto}", str_of(p, "internal")),
            }
        })
        .collect();
    out.extend(list_of(&c["port_ranges"]).iter().map(|p| {
        format!(
            "{}-{}:{}-{}",
            str_of(p, "external_from"),
            str_of(p, "external_to"),
            str_of(p, "internal_from"),
            str_of(p, "internal_to")
        )
    }));
    out.join(",")
}

fn image_table(list: &[Value], out: &mut impl Write) -> Result<()> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                str_of(i, "name"),
                str_of(i, "registry"),
                str_of(i, "ref"),
                dash(ports_of(&i["config"])),
            ]
        })
        .collect();
    table(out, &["CONTAINER", "REGISTRY", "IMAGE", "PORTS"], &rows)
}

fn find_image<'a>(v: &'a Value, container: &str) -> Result<&'a Value> {
    list_of(&v["images"])
        .iter()
        .find(|i| str_of(i, "name") == container)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "version {} of {} has no container {container:?}: see `shoal image list {} {}`",
                str_of(v, "name"),
                str_of(v, "product"),
                str_of(v, "product"),
                str_of(v, "name")
            )
        })
}

pub async fn image(ctx: &Ctx, cmd: ImageCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        ImageCmd::Add {
            product,
            version,
            reference,
            registry,
            name,
        } => {
            let v = domain::version(ctx, &product, &version).await?;
            let image = registry::image_ref(ctx, &reference, registry.as_deref()).await?;
            let name = name.unwrap_or_else(|| parse::container_name_for(&image.name));
            let s = ctx.session().await?;
            s.act(Action::ImageAdd {
                version: str_of(&v, "id"),
                image: Image {
                    name: name.clone(),
                    image: image.clone(),
                    config: ContainerConfig::default(),
                },
            })
            .await?;
            writeln!(
                out,
                "added {image} as container {name} to {} {}",
                str_of(&v, "product"),
                str_of(&v, "name")
            )?;
            Ok(())
        }
        ImageCmd::List { product, version } => {
            let v = domain::version(ctx, &product, &version).await?;
            if ctx.json() {
                return json(out, &v["images"]);
            }
            image_table(list_of(&v["images"]), out)
        }
        ImageCmd::Remove {
            product,
            version,
            container,
        } => {
            let v = domain::version(ctx, &product, &version).await?;
            find_image(&v, &container)?;
            let s = ctx.session().await?;
            s.act(Action::ImageRemove {
                version: str_of(&v, "id"),
                name: container.clone(),
            })
            .await?;
            writeln!(
                out,
                "removed container {container} from {} {}",
                str_of(&v, "product"),
                str_of(&v, "name")
            )?;
            Ok(())
        }
        ImageCmd::Order {
            product,
            version,
            containers,
        } => {
            let v = domain::version(ctx, &product, &version).await?;
            let current: Vec<String> = list_of(&v["images"])
                .iter()
                .map(|i| str_of(i, "name"))
                .collect();
            let names = new_order(&current, &containers).map_err(|e| {
                anyhow::anyhow!(
                    "{e}: see `shoal image list {} {}`",
                    str_of(&v, "product"),
                    str_of(&v, "name")
                )
            })?;
            if names == current {
                writeln!(out, "the start order is already {}", names.join(", "))?;
                return Ok(());
            }
            let s = ctx.session().await?;
            s.act(Action::ImageOrder {
                version: str_of(&v, "id"),
                names: names.clone(),
            })
            .await?;
            writeln!(
                out,
                "{} {} starts its containers in this order: {}",
                str_of(&v, "product"),
                str_of(&v, "name"),
                names.join(", ")
            )?;
            Ok(())
        }
        ImageCmd::Config(args) => image_config(ctx, *args, out).await,
    }
}

/// The start order `image order` asks for: `first` in that order, then the
/// rest of `current` in its order.
fn new_order(current: &[String], first: &[String]) -> Result<Vec<String>, String> {
    let mut seen = std::collections::BTreeSet::new();
    for name in first {
        if !current.contains(name) {
            return Err(format!("there is no container {name:?} in this version"));
        }
        if !seen.insert(name) {
            return Err(format!("container {name:?} is named twice"));
        }
    }
    let mut names = first.to_vec();
    names.extend(current.iter().filter(|n| !seen.contains(n)).cloned());
    Ok(names)
}

impl ConfigEdits {
    pub fn edits(&self) -> bool {
        self.image.is_some()
            || !self.env.is_empty()
            || !self.unset_env.is_empty()
            || !self.port.is_empty()
            || !self.unset_port.is_empty()
            || !self.volume.is_empty()
            || !self.unset_volume.is_empty()
            || self.restart.is_some()
            || !self.cmd.is_empty()
            || !self.label.is_empty()
            || !self.unset_label.is_empty()
            || !self.secret.is_empty()
            || !self.unset_secret.is_empty()
            || !self.unset.is_empty()
            || self.file.is_some()
    }

    /// The image `--image` names, resolved against the team's registries.
    pub async fn image_ref(&self, ctx: &Ctx) -> Result<Option<ImageRef>> {
        match &self.image {
            Some(r) => Ok(Some(
                registry::image_ref(ctx, r, self.registry.as_deref()).await?,
            )),
            None => Ok(None),
        }
    }

    /// Applies every edit but `--image` to `c`: the file first, then the
    /// removals, then the additions.
    pub fn apply(&self, c: &mut ContainerConfig) -> Result<()> {
        let usage = |e: anyhow::Error| -> anyhow::Error { Usage(e.to_string()).into() };
        if let Some(f) = &self.file {
            *c = config::read_config(f)?;
        }
        for field in &self.unset {
            unset_field(c, field)?;
        }
        for k in &self.unset_env {
            c.env.remove(k);
        }
        for k in &self.unset_label {
            c.labels.remove(k);
        }
        for k in &self.unset_secret {
            c.secrets.remove(k);
        }
        for p in &self.unset_port {
            let (internal, protocol) = parse::internal_port(p).map_err(usage)?;
            c.ports
                .retain(|x| (x.internal, x.protocol) != (internal, protocol));
            c.port_ranges
                .retain(|x| (x.internal_from, x.protocol) != (internal, protocol));
        }
        for path in &self.unset_volume {
            c.volumes.retain(|x| &x.path != path);
        }
        c.env
            .extend(parse::key_values("--env", &self.env).map_err(usage)?);
        c.labels
            .extend(parse::key_values("--label", &self.label).map_err(usage)?);
        for p in &self.port {
            match parse::port(p).map_err(usage)? {
                PortSpec::One(p) => {
                    c.ports
                        .retain(|x| (x.internal, x.protocol) != (p.internal, p.protocol));
                    c.ports.push(p);
                }
                PortSpec::Range(r) => {
                    c.port_ranges
                        .retain(|x| (x.internal_from, x.protocol) != (r.internal_from, r.protocol));
                    c.port_ranges.push(r);
                }
            }
        }
        for v in &self.volume {
            let v = parse::volume(v).map_err(usage)?;
            c.volumes.retain(|x| x.path != v.path);
            c.volumes.push(v);
        }
        if let Some(r) = &self.restart {
            c.restart = Some(parse::restart(r).map_err(usage)?);
        }
        if !self.cmd.is_empty() {
            c.args = Some(self.cmd.clone());
        }
        for k in &self.secret {
            if k.is_empty() || k.contains('=') {
                return Err(Usage(format!(
                    "--secret {k:?}: give the secret's key only; its value is set per deployment (`shoal deploy create --secret KEY`)"
                ))
                .into());
            }
            c.secrets.insert(k.clone(), SecretDecl { required: true });
        }
        Ok(())
    }
}

/// The fields `--unset` takes, for its error message.
const UNSET_FIELDS: &str = "restart, cmd, command, user, working-dir, tty, health, cpu, memory, expected, log-driver, image";

fn unset_field(c: &mut ContainerConfig, field: &str) -> Result<()> {
    match field {
        "restart" => c.restart = None,
        "cmd" | "args" => c.args = None,
        "command" | "entrypoint" => c.command = None,
        "user" => c.user = None,
        "working-dir" | "working_dir" => c.working_dir = None,
        "tty" => c.tty = None,
        "health" | "healthcheck" => c.health = None,
        "cpu" => c.cpu = None,
        "memory" => c.memory = None,
        "expected" => c.expected = None,
        "log-driver" | "log_driver" => {
            c.log_driver = None;
            c.log_options.clear();
        }
        "image" => c.image = None,
        other => {
            return Err(Usage(format!(
                "--unset {other:?}: not a field that can be unset; one of {UNSET_FIELDS} (maps and lists have --unset-env, --unset-label, --unset-port, --unset-volume, --unset-secret)"
            ))
            .into());
        }
    }
    Ok(())
}

/// The name of the registry with id `id` (the id itself when it is gone).
pub async fn registry_name_of(ctx: &Ctx, id: &str) -> Result<String> {
    let list = ctx.get("registries").await?;
    Ok(list_of(&list)
        .iter()
        .find(|x| str_of(x, "id") == id)
        .map(|x| str_of(x, "name"))
        .unwrap_or_else(|| id.to_owned()))
}

/// The config shown by `--show`: the image's config with its image ref.
pub fn effective(image: &ImageRef, registry: &str, c: &ContainerConfig) -> Result<Value> {
    let mut v = serde_json::to_value(c)?;
    v["image"] = json!({
        "registry": registry,
        "name": image.name,
        "tag": image.tag,
    });
    Ok(v)
}

async fn image_config(ctx: &Ctx, args: ConfigArgs, out: &mut impl Write) -> Result<()> {
    let v = domain::version(ctx, &args.product, &args.version).await?;
    let current = find_image(&v, &args.container)?;
    let mut c: ContainerConfig = serde_json::from_value(current["config"].clone())
        .context("the daemon sent a container config this shoal cannot read")?;
    let mut image = ImageRef {
        registry: str_of(current, "registry_id"),
        name: str_of(current, "image"),
        tag: str_of(current, "tag"),
    };
    let mut registry_name = str_of(current, "registry");
    if args.edits.edits() {
        args.edits.apply(&mut c)?;
        if let Some(r) = args.edits.image_ref(ctx).await? {
            image = r;
            registry_name = registry_name_of(ctx, &image.registry).await?;
        }
        let s = ctx.session().await?;
        s.act(Action::ImageConfig {
            version: str_of(&v, "id"),
            name: args.container.clone(),
            image: image.clone(),
            config: c.clone(),
        })
        .await?;
        if !args.show {
            writeln!(
                out,
                "updated the config of {} in {} {}",
                args.container,
                str_of(&v, "product"),
                str_of(&v, "name")
            )?;
            return Ok(());
        }
    }
    let shown = effective(&image, &registry_name, &c)?;
    if ctx.json() {
        json(out, &shown)
    } else {
        write!(out, "{}", config::to_yaml(&shown)?)?;
        Ok(())
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
    let registries = ctx.get("registries").await?;
    let mut images = Vec::new();
    for svc in &plan.services {
        let parts =
            parse::image_ref(&svc.image).with_context(|| format!("service {}", svc.service))?;
        let image = registry::image_ref_in(list_of(&registries), &parts, &svc.image, registry)
            .with_context(|| format!("service {}", svc.service))?;
        images.push(Image {
            name: svc.name.clone(),
            image,
            config: svc.config.clone(),
        });
    }
    let s = ctx.session().await?;
    // The product: an existing complex one gets the new version.
    let product_id = match domain::product(ctx, name).await {
        Ok(p) => {
            if str_of(&p, "kind") != "complex" {
                bail!(
                    "product {name} is simple: a simple product has exactly one version; import into a new product name"
                );
            }
            str_of(&p, "id")
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

#[cfg(test)]
mod tests {
    use super::new_order;

    fn names(s: &[&str]) -> Vec<String> {
        s.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn named_containers_go_first_and_the_rest_keep_their_order() {
        let current = names(&["db", "api", "web", "worker"]);
        assert_eq!(
            new_order(&current, &names(&["web", "db"])).unwrap(),
            names(&["web", "db", "api", "worker"])
        );
        assert_eq!(
            new_order(&current, &names(&["worker", "web", "api", "db"])).unwrap(),
            names(&["worker", "web", "api", "db"])
        );
    }

    #[test]
    fn unknown_or_repeated_names_are_refused() {
        let current = names(&["db", "api"]);
        assert_eq!(
            new_order(&current, &names(&["cache"])).unwrap_err(),
            "there is no container \"cache\" in this version"
        );
        assert_eq!(
            new_order(&current, &names(&["api", "api"])).unwrap_err(),
            "container \"api\" is named twice"
        );
    }
}
