//! Edits of a container config from flags, shared by `image config` (the
//! image layer) and `deploy config` (a deployment's instance layer).

use std::path::PathBuf;

use anyhow::Result;
use shoal_protocol::model::{ContainerConfig, ImageRef, SecretDecl};

use crate::config;
use crate::ctx::Ctx;
use crate::error::Usage;
use crate::image_ref;
use crate::parse::{self, PortSpec};

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

    /// The image `--image` names, resolved against the team's registries;
    /// without a host or `--registry` it stays in `current` (the registry
    /// id of the image it changes).
    pub async fn image_ref(&self, ctx: &Ctx, current: Option<&str>) -> Result<Option<ImageRef>> {
        match &self.image {
            Some(r) => Ok(Some(
                image_ref::image_ref(ctx, r, self.registry.as_deref(), current).await?,
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
