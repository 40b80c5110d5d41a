//! `shoal deploy create|start|update|config|list|show|logs|delete|copy|rollback`.
//!
//! Secret values come from this process's environment (`--secret KEY`) or
//! a file (`--secret-file`), are sealed here to the target node's
//! encryption key and only then leave this process: they are never in
//! argv, output, the daemon's logs or the replicated state.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use shoal_api::containers::{ContainerList, LogLines};
use shoal_api::deployments::{Deployment, DeploymentDetail, DeploymentList, SealedSecrets};
use shoal_api::nodes::StatusList;
use shoal_protocol::Action;
use shoal_protocol::action::DeploymentEdit;
use shoal_protocol::model::{ContainerConfig, DeploymentStatus, ImageRef, Sealed, VersionKind};

use crate::ctx::{Ctx, query, segment};
use crate::edits::ConfigEdits;
use crate::error::Usage;
use crate::output::{dash, json, table, when};
use crate::session::Session;
use crate::{config, parse};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Places a version on a node under a prefix (status preparing); the
    /// deployment id is the last line.
    Create {
        product: String,
        version: String,
        /// The target node (name or key).
        #[arg(long)]
        node: String,
        /// A DNS label: containers are named <prefix>-<container>.
        #[arg(long)]
        prefix: String,
        /// Deployment-wide environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// A secret whose value is this process's environment variable KEY (repeatable).
        #[arg(long = "secret", value_name = "KEY")]
        secret: Vec<String>,
        /// A file of KEY=VALUE secret lines.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Protect it: a non-protected deployment cannot replace it without --force.
        #[arg(long)]
        protected: bool,
        #[arg(long, default_value = "")]
        note: String,
        /// Create it even though a protected deployment holds the node and prefix.
        #[arg(long)]
        force: bool,
    },
    /// Starts (or restarts) a deployment, then waits for the target node to
    /// report the end unless --detach.
    Start {
        /// Deployment id, or the first characters of it.
        deployment: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Start even though a protected deployment holds the node and prefix.
        #[arg(long)]
        force: bool,
    },
    /// Edits a mutable deployment (preparing or failed, or successful for a
    /// rolling version): note, prefix, protection, env and secrets.
    Update {
        deployment: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, conflicts_with = "unprotected")]
        protected: bool,
        #[arg(long)]
        unprotected: bool,
        /// Set an environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Remove an environment variable (repeatable).
        #[arg(long = "unset-env", value_name = "KEY")]
        unset_env: Vec<String>,
        /// Set a secret from this process's environment variable KEY (repeatable).
        #[arg(long = "secret", value_name = "KEY")]
        secret: Vec<String>,
        /// Set secrets from a file of KEY=VALUE lines.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Remove a secret (repeatable).
        #[arg(long = "unset-secret", value_name = "KEY")]
        unset_secret: Vec<String>,
    },
    /// Edits a mutable deployment's override of one container's config
    /// (the instance layer: image <- deployment <- instance, rightmost wins)
    /// with the flags of `image config`; --show prints the effective config.
    Config {
        deployment: String,
        container: String,
        #[command(flatten)]
        edits: Box<ConfigEdits>,
        /// Drop every override of this container first.
        #[arg(long)]
        reset: bool,
        /// Print the effective config.
        #[arg(long)]
        show: bool,
    },
    /// Lists deployments.
    List {
        #[arg(long)]
        node: Option<String>,
        /// preparing, in-progress, successful, failed, obsolete or downgraded.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        product: Option<String>,
    },
    /// Shows a deployment: status, tries, containers, events, conflicts.
    Show { deployment: String },
    /// Prints a deployment's progress (each try's steps, kept by its node)
    /// and its containers' logs; with --follow, streams both from the node
    /// as they are written, including the containers of later tries, until
    /// interrupted.
    Logs {
        deployment: String,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        /// Lines of each container's log from the end.
        #[arg(long, default_value_t = 100)]
        tail: u64,
    },
    /// Deletes a deployment that is not in progress; its node removes its
    /// containers (and its network when nothing else uses it).
    Delete {
        deployment: String,
        /// Also remove the named volumes its containers mounted (those made
        /// for its prefix that no other container uses). Without it they stay.
        #[arg(long)]
        volumes: bool,
    },
    /// Copies a deployment (config, env, secrets) to another node or prefix;
    /// the new id is the last line.
    Copy {
        deployment: String,
        #[arg(long)]
        node: String,
        #[arg(long)]
        prefix: String,
    },
    /// Redeploys the previous incremental version on a node and prefix.
    Rollback {
        product: String,
        #[arg(long)]
        node: String,
        #[arg(long)]
        prefix: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// Wait for the end of the try (the default).
    #[arg(long, conflicts_with = "detach")]
    wait: bool,
    /// Return once started.
    #[arg(long)]
    detach: bool,
    /// How long to wait (e.g. 10m, 1h).
    #[arg(long, default_value = "30m")]
    timeout: String,
}

impl WaitArgs {
    /// Return once started, as `--detach` (the dashboard follows the
    /// status itself).
    pub fn detached() -> WaitArgs {
        WaitArgs {
            wait: false,
            detach: true,
            timeout: "30m".into(),
        }
    }
}

/// Secret values by key, from the environment and a secret file (the file
/// wins on equal keys). Values are never printed.
pub fn secret_values(
    keys: &[String],
    file: Option<&std::path::Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for k in keys {
        if k.is_empty() || k.contains('=') {
            return Err(Usage(format!(
                "--secret {:?}: give the name of an environment variable that holds the value, never the value itself",
                k.split('=').next().unwrap_or_default()
            ))
            .into());
        }
        let v = env(k).ok_or_else(|| {
            Usage(format!(
                "--secret {k}: the environment variable {k} is not set; export it first, or put {k}=VALUE in a --secret-file"
            ))
        })?;
        let v = v
            .into_string()
            .map_err(|_| anyhow!("--secret {k}: the value of {k} is not UTF-8 text"))?;
        out.insert(k.clone(), v);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read the secret file {}: {e}", path.display()))?;
        let parsed = parse::secret_file(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        out.extend(parsed);
    }
    Ok(out)
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn status_cell(d: &Deployment) -> String {
    let mut s = d.base().status.as_str().to_string();
    if d.base().conflict {
        s.push_str(" (conflict)");
    }
    s
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Create {
            product,
            version,
            node,
            prefix,
            env,
            secret,
            secret_file,
            protected,
            note,
            force,
        } => {
            let env = parse::key_values("--env", &env).map_err(|e| Usage(e.to_string()))?;
            let values = secret_values(&secret, secret_file.as_deref(), |k| std::env::var_os(k))?;
            let v = ctx.version(&product, &version).await?;
            let (node_key, node_name, enc_key) = ctx.node(&node).await?;
            let node_hex = node_key.to_hex();
            let mut secrets: BTreeMap<String, Sealed> = BTreeMap::new();
            for (k, value) in &values {
                secrets.insert(
                    k.clone(),
                    shoal_node::secrets::seal_for_node(&node_hex, &enc_key, k, value)
                        .map_err(|e| anyhow!("cannot seal secret {k} for node {node_name}: {e}"))?,
                );
            }
            drop(values);
            let s = Session::open(ctx).await?;
            let id = s.ids(1).await?.remove(0);
            s.act(Action::DeploymentCreate {
                id: id.clone(),
                version: v.id.clone(),
                node: node_key,
                prefix: prefix.clone(),
                env,
                secrets: secrets.clone(),
                instances: BTreeMap::new(),
                protected,
                note,
                force,
            })
            .await?;
            writeln!(
                out,
                "created deployment {} of {} {} on {node_name}/{prefix} (preparing{}); start it with `shoal deploy start {}`",
                short_id(&id),
                v.product.clone().unwrap_or_default(),
                v.name.clone(),
                if secrets.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", secrets {} sealed for {node_name}",
                        secrets.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
                short_id(&id)
            )?;
            writeln!(out, "{id}")?;
            Ok(())
        }
        Cmd::Start {
            deployment,
            wait,
            force,
        } => {
            let d = ctx.deployment(&deployment).await?;
            start(ctx, d.base(), force, &wait, out).await
        }
        Cmd::Update {
            deployment,
            note,
            prefix,
            protected,
            unprotected,
            env,
            unset_env,
            secret,
            secret_file,
            unset_secret,
        } => {
            let set_env = parse::key_values("--env", &env).map_err(|e| Usage(e.to_string()))?;
            let values = secret_values(&secret, secret_file.as_deref(), |k| std::env::var_os(k))?;
            let d = ctx.deployment(&deployment).await?;
            let id = d.base().id.clone();
            let mut edit = DeploymentEdit {
                note,
                prefix,
                protected: match (protected, unprotected) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                ..Default::default()
            };
            if !set_env.is_empty() || !unset_env.is_empty() {
                let mut e: BTreeMap<String, String> = d.env.clone();
                e.extend(set_env);
                for k in &unset_env {
                    e.remove(k);
                }
                edit.env = Some(e);
            }
            if !values.is_empty() || !unset_secret.is_empty() {
                let sealed: SealedSecrets = ctx
                    .get(&format!("deployments/{}/sealed", segment(&id)))
                    .await?;
                let mut all: BTreeMap<String, Sealed> = sealed.secrets;
                let (node_key, node_name, enc_key) = ctx.node(&d.base().node_key.clone()).await?;
                for (k, value) in &values {
                    all.insert(
                        k.clone(),
                        shoal_node::secrets::seal_for_node(&node_key.to_hex(), &enc_key, k, value)
                            .map_err(|e| {
                                anyhow!("cannot seal secret {k} for node {node_name}: {e}")
                            })?,
                    );
                }
                for k in &unset_secret {
                    all.remove(k);
                }
                edit.secrets = Some(all);
            }
            if edit == DeploymentEdit::default() {
                return Err(Usage(
                    "nothing to change: give --note, --prefix, --protected, --env, --secret or another edit".into(),
                )
                .into());
            }
            let s = Session::open(ctx).await?;
            s.act(Action::DeploymentUpdate {
                id: id.clone(),
                edit,
            })
            .await?;
            writeln!(out, "updated deployment {}", short_id(&id))?;
            Ok(())
        }
        Cmd::Config {
            deployment,
            container,
            edits,
            reset,
            show,
        } => instance_config(ctx, &deployment, &container, &edits, reset, show, out).await,
        Cmd::List {
            node,
            status,
            product,
        } => {
            if let Some(st) = &status
                && DeploymentStatus::parse(st).is_none()
            {
                return Err(Usage(format!(
                    "--status {st:?}: use preparing, in-progress, successful, failed, obsolete or downgraded"
                ))
                .into());
            }
            let v: DeploymentList = ctx
                .get(&format!(
                    "deployments{}",
                    query(&[
                        ("node", node.as_deref()),
                        ("status", status.as_deref()),
                        ("product", product.as_deref()),
                    ])
                ))
                .await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|d| {
                    vec![
                        short_id(&d.base().id.clone()),
                        d.base().product.clone().unwrap_or_default(),
                        d.base().version.clone().unwrap_or_default(),
                        d.base().node.clone(),
                        d.base().prefix.clone(),
                        status_cell(d),
                        d.base().tries.to_string(),
                        if d.base().protected {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        dash(d.base().note.clone()),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "ID",
                    "PRODUCT",
                    "VERSION",
                    "NODE",
                    "PREFIX",
                    "STATUS",
                    "TRIES",
                    "PROTECTED",
                    "NOTE",
                ],
                &rows,
            )
        }
        Cmd::Show { deployment } => {
            let d = ctx.deployment(&deployment).await?;
            if ctx.json() {
                return json(out, &d);
            }
            show(&d, out)
        }
        Cmd::Logs {
            deployment,
            follow,
            tail,
        } => {
            let d = ctx.deployment(&deployment).await?;
            logs(ctx, d.base(), follow, tail, out).await
        }
        Cmd::Delete {
            deployment,
            volumes,
        } => {
            let d = ctx.deployment(&deployment).await?;
            let s = Session::open(ctx).await?;
            let id = d.base().id.clone();
            let action = if volumes {
                let command = s.ids(1).await?.remove(0);
                Action::DeploymentDeleteVolumes { id, command }
            } else {
                Action::DeploymentDelete { id }
            };
            s.act(action).await?;
            writeln!(
                out,
                "deleted deployment {} of {} {} on {}/{}",
                short_id(&d.base().id.clone()),
                d.base().product.clone().unwrap_or_default(),
                d.base().version.clone().unwrap_or_default(),
                d.base().node.clone(),
                d.base().prefix.clone()
            )?;
            if volumes {
                writeln!(
                    out,
                    "its node removes its containers and named volumes (when it is offline, once it is back)"
                )?;
            }
            Ok(())
        }
        Cmd::Copy {
            deployment,
            node,
            prefix,
        } => {
            let d = ctx.deployment(&deployment).await?;
            let (node_key, node_name, _) = ctx.node(&node).await?;
            if !d.base().secrets.is_empty() && node_key.to_hex() != d.base().node_key.clone() {
                eprintln!(
                    "warning: the copy's secrets stay sealed to {}: set them again for {node_name} before starting it",
                    d.base().node.clone()
                );
            }
            let s = Session::open(ctx).await?;
            let id = s.ids(1).await?.remove(0);
            s.act(Action::DeploymentCopy {
                from: d.base().id.clone(),
                id: id.clone(),
                node: node_key,
                prefix: prefix.clone(),
            })
            .await?;
            writeln!(
                out,
                "copied deployment {} to {} on {node_name}/{prefix} (preparing)",
                short_id(&d.base().id.clone()),
                short_id(&id)
            )?;
            writeln!(out, "{id}")?;
            Ok(())
        }
        Cmd::Rollback {
            product,
            node,
            prefix,
            wait,
            force,
        } => {
            let d: Deployment = ctx
                .get(&format!(
                    "products/{}/rollback{}",
                    segment(&product),
                    query(&[("node", Some(&node)), ("prefix", Some(&prefix))])
                ))
                .await?;
            writeln!(
                out,
                "rolling back {} on {}/{} to version {} (deployment {})",
                d.base().product.clone().unwrap_or_default(),
                d.base().node.clone(),
                d.base().prefix.clone(),
                d.base().version.clone().unwrap_or_default(),
                short_id(&d.base().id.clone())
            )?;
            start(ctx, d.base(), force, &wait, out).await
        }
    }
}

/// How often `deploy logs --follow` (and the dashboard's log feed) looks
/// for new containers of the deployment (a later try replaces them).
pub(crate) const CONTAINER_SCAN: Duration = Duration::from_secs(2);

/// The deployment's containers on its node (not init containers): runtime
/// name and container id.
async fn containers_of(
    ctx: &Ctx,
    node_route: &str,
    d: &Deployment,
) -> Result<Vec<(String, String)>> {
    Ok(live_containers_of(ctx, node_route, d)
        .await?
        .into_iter()
        .map(|c| (c.name, c.id))
        .collect())
}

/// The deployment's containers as its node runs them now (not init
/// containers); `node_route` is `/v1/teams/<team>/nodes/<node key>`.
pub(crate) async fn live_containers_of(
    ctx: &Ctx,
    node_route: &str,
    d: &Deployment,
) -> Result<ContainerList> {
    // Asked of the node itself: a heartbeat's live list may not hold a try
    // that just started.
    let list: ContainerList = ctx
        .client
        .get(&format!(
            "{node_route}/containers{}",
            query(&[("prefix", Some(&d.prefix)), ("fresh", Some("true"))])
        ))
        .await?;
    Ok(list
        .into_iter()
        .filter(|c| c.deployment == d.id && c.init.is_none())
        .collect())
}

/// Whether `e` is a call of the daemon that may succeed later.
fn transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::client::ClientError>()
        .is_some_and(crate::client::ClientError::is_transient)
}

async fn logs(
    ctx: &Ctx,
    d: &Deployment,
    follow: bool,
    tail: u64,
    out: &mut impl Write,
) -> Result<()> {
    use futures::StreamExt as _;
    let node_route = format!(
        "{}/nodes/{}",
        ctx.base().await?,
        segment(&d.base().node_key.clone())
    );
    let progress_route = format!(
        "{node_route}/deployments/{}/progress",
        segment(&d.base().id.clone())
    );
    let follow_route = |name: &str| format!("{node_route}/containers/{}/follow", segment(name));
    if !follow {
        let mut progress = crate::follow::progress(
            ctx.client.clone(),
            progress_route,
            false,
            crate::follow::Link::default(),
        );
        while let Some(chunk) = progress.next().await {
            for l in chunk? {
                writeln!(out, "{l}")?;
            }
        }
        for (name, _) in containers_of(ctx, &node_route, d).await? {
            let v: LogLines = ctx
                .client
                .get(&format!(
                    "{node_route}/containers/{}/logs?tail={tail}",
                    segment(&name)
                ))
                .await?;
            for l in &v.lines {
                writeln!(out, "{name} | {l}")?;
            }
        }
        return Ok(());
    }
    // The progress and every container's output share one link, so an
    // outage is announced once. Progress is the backbone: its stream ends
    // the command when it fails (refused, or given up); a container's
    // stream failing (it was removed) only warns.
    let link = crate::follow::Link::default();
    let mut progress =
        crate::follow::progress(ctx.client.clone(), progress_route, true, link.clone());
    let mut all = futures::stream::SelectAll::new();
    let mut followed = std::collections::BTreeSet::new();
    let mut scan = tokio::time::interval(CONTAINER_SCAN);
    let mut warned = false;
    let print = |out: &mut dyn Write, lines: Vec<String>| -> Result<()> {
        for l in lines {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
        Ok(())
    };
    loop {
        tokio::select! {
            _ = scan.tick() => match containers_of(ctx, &node_route, d).await {
                Ok(list) => {
                    warned = false;
                    for (name, id) in list {
                        if followed.insert(id) {
                            all.push(crate::follow::container(
                                ctx.client.clone(),
                                follow_route(&name),
                                tail,
                                Some(name),
                                link.clone(),
                            ));
                        }
                    }
                }
                // An outage is for the followers to announce.
                Err(e) if !warned && !link.is_lost() && !transient(&e) => {
                    warned = true;
                    eprintln!("warning: cannot list the deployment's containers now: {e}");
                }
                Err(_) => {}
            },
            chunk = progress.next() => match chunk {
                Some(chunk) => print(out, chunk?)?,
                None => return Ok(()),
            },
            Some(chunk) = all.next() => {
                match chunk {
                    Ok(lines) => print(out, lines)?,
                    Err(e) => eprintln!("warning: {e}"),
                }
            }
        }
    }
}

fn show(d: &DeploymentDetail, out: &mut impl Write) -> Result<()> {
    let row = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "{k:<13}{v}");
    row(out, "id", d.base().id.clone())?;
    row(out, "product", d.base().product.clone().unwrap_or_default())?;
    row(
        out,
        "version",
        format!(
            "{} ({})",
            d.base().version.clone().unwrap_or_default(),
            d.base()
                .version_kind
                .map(super::version::kind)
                .unwrap_or_default()
        ),
    )?;
    row(out, "node", d.base().node.clone())?;
    row(out, "prefix", d.base().prefix.clone())?;
    let mut status = d.base().status.as_str().to_string();
    if d.base().conflict {
        status.push_str(
            " (conflict: a concurrent deployment won this slot; it will not run: delete it or change its prefix)",
        );
    }
    row(out, "status", status)?;
    if !d.base().reason.clone().unwrap_or_default().is_empty() {
        row(out, "reason", d.base().reason.clone().unwrap_or_default())?;
    }
    row(out, "tries", d.base().tries.to_string())?;
    row(
        out,
        "protected",
        if d.base().protected {
            "yes".into()
        } else {
            "no".into()
        },
    )?;
    row(out, "note", dash(d.base().note.clone()))?;
    row(
        out,
        "created",
        format!(
            "{} by {}",
            when(d.base().created_ms),
            d.base().created_by.clone()
        ),
    )?;
    let env: Vec<String> = d.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    row(out, "env", dash(env.join(" ")))?;
    let secrets = &d.base().secrets;
    row(
        out,
        "secrets",
        if secrets.is_empty() {
            "-".into()
        } else {
            format!(
                "{} (sealed for {})",
                secrets.join(", "),
                d.base().node.clone()
            )
        },
    )?;
    if d.frozen.is_some() {
        row(
            out,
            "frozen",
            format!("config of {}", d.frozen.clone().unwrap_or_default()),
        )?;
    }
    writeln!(out)?;
    let containers = &d.containers;
    // Expected (the state the last try reached) against actual (the node's
    // live state from its latest heartbeat, when fresh).
    let rows: Vec<Vec<String>> = d
        .images
        .iter()
        .map(|i| {
            let name = i.name.clone();
            let st = containers.get(&name);
            let now = d
                .live
                .as_ref()
                .and_then(|l| l.containers.iter().find(|c| c.container == name));
            let actual = now.map_or_else(
                || "-".into(),
                |c| {
                    let mut a = c.actual.clone();
                    if let Some(code) = c.exit_code {
                        a.push_str(&format!(" ({code})"));
                    }
                    if let Some(h) = &c.health {
                        a.push_str(&format!(" {h}"));
                    }
                    a
                },
            );
            let mut row = vec![
                name,
                i.reference.clone(),
                st.map(|s| s.state.clone()).unwrap_or_else(|| "-".into()),
                st.map(|s| dash(s.exit_code.map(|c| c.to_string()).unwrap_or_default()))
                    .unwrap_or_else(|| "-".into()),
            ];
            if d.live.is_some() {
                row.push(actual);
                row.push(now.map_or_else(|| "-".into(), |c| c.restarts.to_string()));
                row.push(match now {
                    Some(c) if c.drift => "DRIFT".into(),
                    Some(_) => "ok".into(),
                    None => "-".into(),
                });
            }
            row
        })
        .collect();
    // The live columns only when the node's heartbeat says what runs.
    let mut header = vec!["CONTAINER", "IMAGE", "STATE", "EXIT"];
    if d.live.is_some() {
        header.extend(["ACTUAL", "RESTARTS", "DRIFT"]);
    }
    table(out, &header, &rows)?;
    if d.live.is_none() && d.base().status == DeploymentStatus::Successful {
        writeln!(
            out,
            "(no live state: the node's heartbeat is not fresh or it sends no live reports; see `shoal node list`)"
        )?;
    }
    let events = &d.events;
    if !events.is_empty() {
        writeln!(out)?;
        writeln!(out, "events of the last try:")?;
        for e in events {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(())
}

/// Starts `d` (a rollback when it is an obsolete deployment of an
/// incremental version), then waits unless told not to.
async fn start(
    ctx: &Ctx,
    d: &Deployment,
    force: bool,
    wait: &WaitArgs,
    out: &mut impl Write,
) -> Result<()> {
    let timeout = humantime::parse_duration(&wait.timeout).map_err(|_| {
        Usage(format!(
            "--timeout {:?} is not a duration such as 10m or 1h",
            wait.timeout
        ))
    })?;
    let id = d.base().id.clone();
    let rollback =
        d.status == DeploymentStatus::Obsolete && d.version_kind == Some(VersionKind::Incremental);
    let s = Session::open(ctx).await?;
    let action = if rollback {
        Action::DeploymentRollback {
            id: id.clone(),
            force,
        }
    } else {
        Action::DeploymentStart {
            id: id.clone(),
            force,
        }
    };
    s.act(action).await?;
    let now = ctx.deployment(&id).await?;
    let target = now.base().tries;
    writeln!(
        out,
        "started deployment {} of {} {} on {}/{} (try {target})",
        short_id(&id),
        d.base().product.clone().unwrap_or_default(),
        d.base().version.clone().unwrap_or_default(),
        d.base().node.clone(),
        d.base().prefix.clone(),
    )?;
    if wait.detach {
        writeln!(
            out,
            "not waiting; see its progress with `shoal deploy show {}`",
            short_id(&id)
        )?;
        return Ok(());
    }
    out.flush()?;
    // Whether the target node is reachable now: if not, say it will start later.
    if let Ok(status) = ctx.get::<StatusList>("status").await {
        let key = d.base().node_key.clone();
        let st = status
            .iter()
            .find(|n| n.key == key)
            .map(|n| (n.status.to_string(), n.this_node));
        if let Some((st, false)) = st
            && st != "connected"
        {
            writeln!(
                out,
                "node {} is {st}: the deployment starts when it is back",
                d.base().node.clone()
            )?;
        }
    }
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut seen: Option<String> = None;
    loop {
        // A long poll: the daemon answers as soon as the deployment changes.
        let tail = match &seen {
            Some(fp) => {
                let left = deadline.saturating_duration_since(Instant::now());
                format!(
                    "deployments/{}?unless={fp}&wait_ms={}",
                    segment(&id),
                    left.as_millis().min(u128::from(u64::MAX))
                )
            }
            None => format!("deployments/{}", segment(&id)),
        };
        let cur: DeploymentDetail = ctx
            .get(&tail)
            .await
            .map_err(|e| anyhow!("lost track of deployment {}: {e}", short_id(&id)))?;
        let status = cur.base().status.as_str().to_string();
        let finished = cur.base().finished_try >= target;
        if status != last {
            writeln!(out, "{}", status_line(cur.base()))?;
            out.flush()?;
            last = status.clone();
        }
        if finished && status != "in-progress" {
            return match status.as_str() {
                "failed" => Err(anyhow!(
                    "deployment {} failed: {}",
                    short_id(&id),
                    dash(cur.base().reason.clone().unwrap_or_default())
                )),
                _ => Ok(()),
            };
        }
        if Instant::now() >= deadline {
            bail!(
                "deployment {} is still {status} after {}; it goes on: follow it with `shoal deploy show {}`",
                short_id(&id),
                wait.timeout,
                short_id(&id)
            );
        }
        match cur.fingerprint.as_deref() {
            Some(fp) => seen = Some(fp.to_owned()),
            // A daemon without long polls: poll.
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn status_line(d: &Deployment) -> String {
    let mut s = format!(
        "{} try {}: {}",
        short_id(&d.base().id.clone()),
        d.base().tries,
        d.base().status.as_str()
    );
    if !d.base().reason.clone().unwrap_or_default().is_empty() {
        s.push_str(&format!(
            " ({})",
            d.base().reason.clone().unwrap_or_default()
        ));
    }
    s
}

/// `deploy config`: reads and edits a deployment's instance layer.
async fn instance_config(
    ctx: &Ctx,
    deployment: &str,
    container: &str,
    edits: &ConfigEdits,
    reset: bool,
    show: bool,
    out: &mut impl Write,
) -> Result<()> {
    let d = ctx.deployment(deployment).await?;
    let id = d.base().id.clone();
    let img = d
        .images
        .iter()
        .find(|i| i.name.clone() == container)
        .ok_or_else(|| {
            anyhow!(
                "version {} of {} has no container {container:?}: see `shoal image list {} {}`",
                d.base().version.clone().unwrap_or_default(),
                d.base().product.clone().unwrap_or_default(),
                d.base().product.clone().unwrap_or_default(),
                d.base().version.clone().unwrap_or_default()
            )
        })?;
    let mut instances: BTreeMap<String, ContainerConfig> = d.instances.clone();
    let mut inst = instances.get(container).cloned().unwrap_or_default();
    if reset || edits.edits() {
        if reset {
            inst = ContainerConfig::default();
        }
        edits.apply(&mut inst)?;
        let current = inst
            .image
            .as_ref()
            .map_or(img.registry_id.clone(), |i| i.registry.clone());
        if let Some(r) = edits.image_ref(ctx, Some(&current)).await? {
            if !ctx.json() {
                writeln!(
                    out,
                    "image {r} from registry {}",
                    crate::image_ref::registry_name_of(ctx, &r.registry).await?
                )?;
            }
            inst.image = Some(r);
        }
        if inst == ContainerConfig::default() {
            instances.remove(container);
        } else {
            instances.insert(container.to_owned(), inst.clone());
        }
        let s = Session::open(ctx).await?;
        s.act(Action::DeploymentUpdate {
            id: id.clone(),
            edit: DeploymentEdit {
                instances: Some(instances),
                ..Default::default()
            },
        })
        .await?;
        if !show {
            writeln!(
                out,
                "updated the overrides of {container} in deployment {}",
                short_id(&id)
            )?;
            return Ok(());
        }
    }
    // The layers as the node merges them when it runs the deployment.
    let base: ContainerConfig = img.config.clone();
    let deployment_level = ContainerConfig {
        env: d.env.clone(),
        ..ContainerConfig::default()
    };
    let merged = base.merged(&deployment_level).merged(&inst);
    let (image, registry) = match &merged.image {
        Some(r) => (
            r.clone(),
            crate::image_ref::registry_name_of(ctx, &r.registry).await?,
        ),
        None => (
            ImageRef {
                registry: img.registry_id.clone(),
                name: img.image.clone(),
                tag: img.tag.clone(),
            },
            img.registry.clone(),
        ),
    };
    let shown = config::effective(&image, &registry, &merged)?;
    if ctx.json() {
        json(out, &shown)
    } else {
        write!(out, "{}", config::to_yaml(&shown)?)?;
        Ok(())
    }
}

/// The deployment fields a list item and a detail share.
trait Base {
    fn base(&self) -> &Deployment;
}

impl Base for Deployment {
    fn base(&self) -> &Deployment {
        self
    }
}

impl Base for DeploymentDetail {
    fn base(&self) -> &Deployment {
        &self.deployment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.env");
        std::fs::write(&file, "B=from-file\nC=c\n").unwrap();
        let env = |k: &str| match k {
            "A" => Some("from-env".into()),
            "B" => Some("shadowed".into()),
            _ => None,
        };
        let v = secret_values(&["A".into(), "B".into()], Some(&file), env).unwrap();
        assert_eq!(v["A"], "from-env");
        assert_eq!(v["B"], "from-file");
        assert_eq!(v["C"], "c");
        let e = secret_values(&["MISSING".into()], None, env).unwrap_err();
        assert!(e.to_string().contains("not set"), "{e}");
        assert!(e.downcast_ref::<Usage>().is_some());
        // A value typed on the command line is refused without echoing it.
        let e = secret_values(&["A=hunter2".into()], None, env).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
