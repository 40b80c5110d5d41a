//! What the page may ask to change: one typed intent per write, each
//! carried out by the CLI command that does the same (so the dashboard
//! prepares, checks, signs and submits exactly as `shoal` does, under the
//! same write lease). No intent takes a secret value: secrets stay in the
//! CLI (`--secret`, `--password-stdin`).

use anyhow::Result;
use clap::Parser;
use serde::Deserialize;

use crate::cmd::{container, deploy, image, member, product, registry, team, version};
use crate::ctx::Ctx;
use crate::error::Usage;

/// One change asked for by the page (`POST /api/act`).
#[derive(Debug, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Intent {
    #[serde(rename = "product.create")]
    ProductCreate {
        name: String,
        #[serde(default)]
        simple: bool,
        #[serde(default)]
        description: String,
    },
    /// Replaces a product's description ("" clears it).
    #[serde(rename = "product.update")]
    ProductUpdate { name: String, description: String },
    #[serde(rename = "product.remove")]
    ProductRemove { name: String },
    #[serde(rename = "version.create")]
    VersionCreate {
        product: String,
        name: String,
        #[serde(default)]
        rolling: bool,
        #[serde(default)]
        changelog: String,
    },
    #[serde(rename = "version.increase")]
    VersionIncrease {
        product: String,
        version: String,
        new_name: String,
    },
    /// Replaces a version's changelog ("" clears it).
    #[serde(rename = "version.update")]
    VersionUpdate {
        product: String,
        version: String,
        changelog: String,
    },
    #[serde(rename = "version.default")]
    VersionDefault { product: String, version: String },
    #[serde(rename = "version.remove")]
    VersionRemove { product: String, version: String },
    #[serde(rename = "image.add")]
    ImageAdd {
        product: String,
        version: String,
        reference: String,
        #[serde(default)]
        registry: Option<String>,
        #[serde(default)]
        name: Option<String>,
    },
    #[serde(rename = "image.remove")]
    ImageRemove {
        product: String,
        version: String,
        container: String,
    },
    /// Field edits of an image's container config, as `image config`
    /// flags: the command's arguments (replacing them all when given),
    /// env `K=V`, published ports `EXT:INT[/udp]` and the restart policy.
    #[serde(rename = "image.config")]
    ImageConfig {
        product: String,
        version: String,
        container: String,
        #[serde(default)]
        cmd: Vec<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        ports: Vec<String>,
        #[serde(default)]
        restart: Option<String>,
    },
    #[serde(rename = "deploy.create")]
    DeployCreate {
        product: String,
        version: String,
        node: String,
        prefix: String,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        note: String,
        #[serde(default)]
        protected: bool,
    },
    #[serde(rename = "deploy.start")]
    DeployStart {
        deployment: String,
        #[serde(default)]
        force: bool,
    },
    #[serde(rename = "deploy.rollback")]
    DeployRollback {
        product: String,
        node: String,
        prefix: String,
        #[serde(default)]
        force: bool,
    },
    #[serde(rename = "deploy.delete")]
    DeployDelete { deployment: String },
    #[serde(rename = "deploy.copy")]
    DeployCopy {
        deployment: String,
        node: String,
        prefix: String,
    },
    /// Start, stop or restart one of the team's containers on a node
    /// (`container` is its runtime name); waits, as the CLI does, until
    /// the node carried it out.
    #[serde(rename = "container.command")]
    ContainerCommand {
        node: String,
        container: String,
        action: ContainerVerb,
    },
    #[serde(rename = "member.role")]
    MemberRole { member: String, role: String },
    #[serde(rename = "member.remove")]
    MemberRemove { member: String },
    #[serde(rename = "invite.create")]
    InviteCreate {
        role: String,
        #[serde(default = "day")]
        expires: String,
    },
    #[serde(rename = "invite.revoke")]
    InviteRevoke { id: String },
    /// A registry without credentials (a password is typed into
    /// `shoal registry add --password-stdin`, never into the page).
    #[serde(rename = "registry.add")]
    RegistryAdd {
        name: String,
        kind: String,
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        namespace: Option<String>,
    },
    #[serde(rename = "registry.remove")]
    RegistryRemove { name: String },
}

/// What the dashboard may ask a container to do (removal stays in the CLI).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerVerb {
    Start,
    Stop,
    Restart,
}

fn day() -> String {
    "24h".into()
}

/// `image config`'s flags parsed as the CLI parses them.
#[derive(Parser, Debug)]
#[command(name = "image")]
struct ImageArgs {
    #[command(subcommand)]
    cmd: image::Cmd,
}

/// `image config FLAGS -- PRODUCT VERSION CONTAINER`: every value is
/// joined to its flag (`--cmd=VALUE`) and the names come after `--`, so
/// no value can be taken for another flag.
fn image_config_args(
    product: String,
    version: String,
    container: String,
    cmd: Vec<String>,
    env: Vec<String>,
    ports: Vec<String>,
    restart: Option<String>,
) -> Vec<String> {
    let mut argv = vec!["image".to_string(), "config".to_string()];
    argv.extend(cmd.into_iter().map(|v| format!("--cmd={v}")));
    argv.extend(env.into_iter().map(|v| format!("--env={v}")));
    argv.extend(ports.into_iter().map(|v| format!("--port={v}")));
    argv.extend(restart.map(|v| format!("--restart={v}")));
    argv.extend(["--".to_string(), product, version, container]);
    argv
}

/// Carries out `intent` as its CLI command; what the command printed.
pub async fn run(ctx: &Ctx, intent: Intent) -> Result<String> {
    let mut out = Vec::new();
    let o = &mut out;
    match intent {
        Intent::ProductCreate {
            name,
            simple,
            description,
        } => {
            let cmd = product::Cmd::Create {
                name,
                simple,
                complex: !simple,
                description,
            };
            product::run(ctx, cmd, o).await?;
        }
        Intent::ProductUpdate { name, description } => {
            product::run(ctx, product::Cmd::Update { name, description }, o).await?;
        }
        Intent::ProductRemove { name } => {
            product::run(ctx, product::Cmd::Remove { name }, o).await?;
        }
        Intent::VersionCreate {
            product,
            name,
            rolling,
            changelog,
        } => {
            let cmd = version::Cmd::Create {
                product,
                name,
                rolling,
                incremental: !rolling,
                changelog,
                auto_copy: false,
            };
            version::run(ctx, cmd, o).await?;
        }
        Intent::VersionIncrease {
            product,
            version,
            new_name,
        } => {
            let cmd = version::Cmd::Increase {
                product,
                version,
                new_name,
                changelog: String::new(),
            };
            version::run(ctx, cmd, o).await?;
        }
        Intent::VersionUpdate {
            product,
            version,
            changelog,
        } => {
            let cmd = version::Cmd::Update {
                product,
                version,
                changelog: Some(changelog),
                auto_copy: false,
                no_auto_copy: false,
            };
            version::run(ctx, cmd, o).await?;
        }
        Intent::VersionDefault { product, version } => {
            version::run(ctx, version::Cmd::Default { product, version }, o).await?;
        }
        Intent::VersionRemove { product, version } => {
            version::run(ctx, version::Cmd::Remove { product, version }, o).await?;
        }
        Intent::ImageAdd {
            product,
            version,
            reference,
            registry,
            name,
        } => {
            let cmd = image::Cmd::Add {
                product,
                version,
                reference,
                registry: registry.filter(|r| !r.is_empty()),
                name: name.filter(|n| !n.is_empty()),
            };
            image::run(ctx, cmd, o).await?;
        }
        Intent::ImageRemove {
            product,
            version,
            container,
        } => {
            let cmd = image::Cmd::Remove {
                product,
                version,
                container,
            };
            image::run(ctx, cmd, o).await?;
        }
        Intent::ImageConfig {
            product,
            version,
            container,
            cmd,
            env,
            ports,
            restart,
        } => {
            let argv = image_config_args(product, version, container, cmd, env, ports, restart);
            let parsed = ImageArgs::try_parse_from(argv).map_err(|e| Usage(e.to_string()))?;
            image::run(ctx, parsed.cmd, o).await?;
        }
        Intent::DeployCreate {
            product,
            version,
            node,
            prefix,
            env,
            note,
            protected,
        } => {
            let cmd = deploy::Cmd::Create {
                product,
                version,
                node,
                prefix,
                env,
                secret: Vec::new(),
                secret_file: None,
                protected,
                note,
                force: false,
            };
            deploy::run(ctx, cmd, o).await?;
        }
        Intent::DeployStart { deployment, force } => {
            let cmd = deploy::Cmd::Start {
                deployment,
                wait: deploy::WaitArgs::detached(),
                force,
            };
            deploy::run(ctx, cmd, o).await?;
        }
        Intent::DeployRollback {
            product,
            node,
            prefix,
            force,
        } => {
            let cmd = deploy::Cmd::Rollback {
                product,
                node,
                prefix,
                wait: deploy::WaitArgs::detached(),
                force,
            };
            deploy::run(ctx, cmd, o).await?;
        }
        Intent::DeployDelete { deployment } => {
            deploy::run(
                ctx,
                deploy::Cmd::Delete {
                    deployment,
                    volumes: false,
                },
                o,
            )
            .await?;
        }
        Intent::DeployCopy {
            deployment,
            node,
            prefix,
        } => {
            let cmd = deploy::Cmd::Copy {
                deployment,
                node,
                prefix,
            };
            deploy::run(ctx, cmd, o).await?;
        }
        Intent::ContainerCommand {
            node,
            container,
            action,
        } => {
            let cmd = match action {
                ContainerVerb::Start => container::Cmd::Start { node, container },
                ContainerVerb::Stop => container::Cmd::Stop { node, container },
                ContainerVerb::Restart => container::Cmd::Restart { node, container },
            };
            container::run(ctx, cmd, o).await?;
        }
        Intent::MemberRole { member, role } => {
            member::run(ctx, member::Cmd::Role { member, role }, o).await?;
        }
        Intent::MemberRemove { member } => {
            member::run(ctx, member::Cmd::Remove { member }, o).await?;
        }
        Intent::InviteCreate { role, expires } => {
            let cmd = team::Cmd::Invite {
                sub: None,
                role,
                expires,
            };
            team::run(ctx, cmd, o).await?;
        }
        Intent::InviteRevoke { id } => {
            let cmd = team::Cmd::Invite {
                sub: Some(team::InviteCmd::Revoke { id }),
                role: "user".into(),
                expires: day(),
            };
            team::run(ctx, cmd, o).await?;
        }
        Intent::RegistryAdd {
            name,
            kind,
            url,
            namespace,
        } => {
            let cmd = registry::Cmd::Add {
                name,
                kind,
                url: url.filter(|u| !u.is_empty()),
                namespace: namespace.filter(|n| !n.is_empty()),
                user: None,
                password_stdin: false,
            };
            registry::run(ctx, cmd, o).await?;
        }
        Intent::RegistryRemove { name } => {
            registry::run(ctx, registry::Cmd::Remove { name }, o).await?;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_that_look_like_flags_stay_values() {
        let argv = image_config_args(
            "--force".into(),
            "1.0".into(),
            "web".into(),
            vec!["sh".into(), "-c".into(), "echo --file=/etc/passwd".into()],
            vec!["A=--show".into()],
            vec![],
            None,
        );
        let parsed = ImageArgs::try_parse_from(argv).unwrap();
        let text = format!("{:?}", parsed.cmd);
        assert!(text.contains("product: \"--force\""), "{text}");
        assert!(text.contains("show: false"), "{text}");
        assert!(text.contains("file: None"), "{text}");
    }

    #[test]
    fn unknown_fields_and_ops_are_refused() {
        assert!(serde_json::from_str::<Intent>(r#"{"op":"profile.init","name":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<Intent>(
                r#"{"op":"registry.add","name":"r","kind":"v2","password":"p"}"#
            )
            .is_err()
        );
        let ok: Intent =
            serde_json::from_str(r#"{"op":"deploy.start","deployment":"abcd"}"#).unwrap();
        assert!(matches!(ok, Intent::DeployStart { force: false, .. }));
        // The edits carry their text; a version update without one (or
        // with the CLI's other flags) is no intent.
        let edit: Intent = serde_json::from_str(
            r#"{"op":"version.update","product":"p","version":"1","changelog":""}"#,
        )
        .unwrap();
        assert!(
            matches!(edit, Intent::VersionUpdate { ref changelog, .. } if changelog.is_empty())
        );
        for no in [
            r#"{"op":"version.update","product":"p","version":"1"}"#,
            r#"{"op":"version.update","product":"p","version":"1","changelog":"x","auto_copy":true}"#,
            r#"{"op":"product.update","name":"p"}"#,
        ] {
            assert!(serde_json::from_str::<Intent>(no).is_err(), "{no}");
        }
    }
}
