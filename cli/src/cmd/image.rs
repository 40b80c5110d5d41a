//! `shoal image`: a version's images and their container configs.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use shoal_api::products::{Image as ImageInfo, VersionDetail};
use shoal_protocol::Action;
use shoal_protocol::model::Protocol;
use shoal_protocol::model::{ContainerConfig, Image, ImageRef};

use crate::ctx::Ctx;
use crate::edits::ConfigEdits;
use crate::output::{self, dash, json};
use crate::session::Session;
use crate::{config, image_ref, parse};

#[derive(Subcommand, Debug)]
pub enum Cmd {
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

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Add {
            product,
            version,
            reference,
            registry,
            name,
        } => {
            let v = ctx.version(&product, &version).await?;
            let image = image_ref::image_ref(ctx, &reference, registry.as_deref(), None).await?;
            let name = name.unwrap_or_else(|| parse::container_name_for(&image.name));
            let s = Session::open(ctx).await?;
            s.act(Action::ImageAdd {
                version: v.id.clone(),
                image: Box::new(Image {
                    name: name.clone(),
                    image: image.clone(),
                    config: ContainerConfig::default(),
                }),
            })
            .await?;
            writeln!(
                out,
                "added {image} as container {name} to {} {}",
                v.product.as_deref().unwrap_or_default(),
                v.name
            )?;
            Ok(())
        }
        Cmd::List { product, version } => {
            let v = ctx.version(&product, &version).await?;
            if ctx.json() {
                return json(out, &v.images);
            }
            table(&v.images, out)
        }
        Cmd::Remove {
            product,
            version,
            container,
        } => {
            let v = ctx.version(&product, &version).await?;
            find_image(&v, &container)?;
            let s = Session::open(ctx).await?;
            s.act(Action::ImageRemove {
                version: v.id.clone(),
                name: container.clone(),
            })
            .await?;
            writeln!(
                out,
                "removed container {container} from {} {}",
                v.product.as_deref().unwrap_or_default(),
                v.name
            )?;
            Ok(())
        }
        Cmd::Order {
            product,
            version,
            containers,
        } => {
            let v = ctx.version(&product, &version).await?;
            let current: Vec<String> = v.images.iter().map(|i| i.name.clone()).collect();
            let names = new_order(&current, &containers).map_err(|e| {
                anyhow::anyhow!(
                    "{e}: see `shoal image list {} {}`",
                    v.product.as_deref().unwrap_or_default(),
                    v.name
                )
            })?;
            if names == current {
                writeln!(out, "the start order is already {}", names.join(", "))?;
                return Ok(());
            }
            let s = Session::open(ctx).await?;
            s.act(Action::ImageOrder {
                version: v.id.clone(),
                names: names.clone(),
            })
            .await?;
            writeln!(
                out,
                "{} {} starts its containers in this order: {}",
                v.product.as_deref().unwrap_or_default(),
                v.name,
                names.join(", ")
            )?;
            Ok(())
        }
        Cmd::Config(args) => image_config(ctx, *args, out).await,
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

fn ports_of(c: &ContainerConfig) -> String {
    let mut out: Vec<String> = c
        .ports
        .iter()
        .map(|p| {
            let proto = if p.protocol == Protocol::Udp {
                "/udp"
            } else {
                ""
            };
            match p.external {
                Some(e) => format!("{e}:{}{proto}", p.internal),
                None => format!("{}{proto}", p.internal),
            }
        })
        .collect();
    out.extend(c.port_ranges.iter().map(|p| {
        format!(
            "{}-{}:{}-{}",
            p.external_from, p.external_to, p.internal_from, p.internal_to
        )
    }));
    out.join(",")
}

/// A version's images, one row each.
pub fn table(list: &[ImageInfo], out: &mut impl Write) -> Result<()> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.registry.clone(),
                i.reference.clone(),
                dash(ports_of(&i.config)),
            ]
        })
        .collect();
    output::table(out, &["CONTAINER", "REGISTRY", "IMAGE", "PORTS"], &rows)
}

fn find_image<'a>(v: &'a VersionDetail, container: &str) -> Result<&'a ImageInfo> {
    v.images
        .iter()
        .find(|i| i.name == container)
        .ok_or_else(|| {
            let product = v.product.as_deref().unwrap_or_default();
            anyhow::anyhow!(
                "version {} of {product} has no container {container:?}: see `shoal image list {product} {}`",
                v.name,
                v.name
            )
        })
}

async fn image_config(ctx: &Ctx, args: ConfigArgs, out: &mut impl Write) -> Result<()> {
    let v = ctx.version(&args.product, &args.version).await?;
    let current = find_image(&v, &args.container)?;
    let mut c: ContainerConfig = current.config.clone();
    let mut image = ImageRef {
        registry: current.registry_id.clone(),
        name: current.image.clone(),
        tag: current.tag.clone(),
    };
    let mut registry_name = current.registry.clone();
    if args.edits.edits() {
        args.edits.apply(&mut c)?;
        let changed = args
            .edits
            .image_ref(ctx, Some(&current.registry_id))
            .await?;
        if let Some(r) = changed {
            image = r;
            registry_name = image_ref::registry_name_of(ctx, &image.registry).await?;
            if !ctx.json() {
                writeln!(out, "image {image} from registry {registry_name}")?;
            }
        }
        let s = Session::open(ctx).await?;
        s.act(Action::ImageConfig {
            version: v.id.clone(),
            name: args.container.clone(),
            image: image.clone(),
            config: Box::new(c.clone()),
        })
        .await?;
        if !args.show {
            writeln!(
                out,
                "updated the config of {} in {} {}",
                args.container,
                v.product.as_deref().unwrap_or_default(),
                v.name
            )?;
            return Ok(());
        }
    }
    let shown = config::effective(&image, &registry_name, &c)?;
    if ctx.json() {
        json(out, &shown)
    } else {
        write!(out, "{}", config::to_yaml(&shown)?)?;
        Ok(())
    }
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
