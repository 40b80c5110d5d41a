//! Rules of deployments (create, edit, start, roll back, copy, delete, the
//! node's report) and of container commands.

use std::collections::BTreeMap;

use crate::action::{Action, Outcome};
use crate::context::OpContext;
use crate::model::{
    ContainerAction, ContainerConfig, Deployment, DeploymentStatus, Node, Role, Runtime, Sealed,
    TeamState, Version, VersionKind,
};
use crate::table::{By, slot};
use crate::view;

use super::common::{
    R, RuleError, check_name, check_prefix, deployment_mutable, deployment_state_err, found, fresh,
    need_origin, need_role, need_self_node, not_in_family,
};

/// Limits that keep one op's effect bounded.
pub const MAX_EVENTS: usize = 100;
pub const MAX_EVENT_LEN: usize = 500;

/// deployable(d) of §2.
pub fn deployment_deployable(s: &TeamState, d: &Deployment) -> bool {
    match d.status {
        DeploymentStatus::Preparing | DeploymentStatus::Failed | DeploymentStatus::Obsolete => true,
        DeploymentStatus::Successful => s
            .versions
            .get(&d.version)
            .is_some_and(|v| v.kind == VersionKind::Rolling),
        _ => false,
    }
}

/// Checks a deployment or container command action (see [`super::check`]).
pub(super) fn check(s: &TeamState, ctx: &OpContext, action: &Action) -> R {
    use Action as A;
    match action {
        A::DeploymentCreate {
            id,
            version,
            node,
            prefix,
            secrets,
            instances,
            protected,
            force,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.create", Role::User)?;
            fresh(ctx, "deployment", id, s.deployments.contains_key(id))?;
            let v = found(s.versions.get(version), "version", version)?;
            if v.images.is_empty() {
                return Err(RuleError::NoImages {
                    version: v.name.clone(),
                });
            }
            let node = node.to_hex();
            target_node(s, &node)?;
            check_prefix(prefix)?;
            check_slot(s, v, &node, prefix, None)?;
            check_sealed_to(&node, secrets)?;
            check_instances(v, instances)?;
            check_protected(
                s, &v.product, &v.id, &node, prefix, *protected, *force, None,
            )
        }
        A::DeploymentUpdate { id, edit } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.update", Role::User)?;
            let d = found(s.deployments.get(id), "deployment", id)?;
            if !deployment_mutable(s, d) {
                return Err(deployment_state_err(
                    d,
                    "editing",
                    "preparing or failed (or successful, for a rolling version)",
                ));
            }
            let v = found(s.versions.get(&d.version), "version", &d.version)?;
            if let Some(p) = &edit.prefix {
                check_prefix(p)?;
                check_slot(s, v, &d.node, p, Some(id))?;
            }
            if let Some(sec) = &edit.secrets {
                check_sealed_to(&d.node, sec)?;
            }
            if let Some(inst) = &edit.instances {
                check_instances(v, inst)?;
            }
            Ok(())
        }
        A::DeploymentStart { id, force } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.start", Role::User)?;
            let d = found(s.deployments.get(id), "deployment", id)?;
            if !deployment_deployable(s, d) {
                return Err(deployment_state_err(
                    d,
                    "starting",
                    "preparing, failed or obsolete (or successful, for a rolling version)",
                ));
            }
            check_start(s, d, *force)
        }
        A::DeploymentRollback { id, force } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.rollback", Role::User)?;
            let d = found(s.deployments.get(id), "deployment", id)?;
            if d.status != DeploymentStatus::Obsolete {
                return Err(deployment_state_err(d, "rolling back to it", "obsolete"));
            }
            let v = found(s.versions.get(&d.version), "version", &d.version)?;
            if v.kind != VersionKind::Incremental {
                return Err(RuleError::NotIncremental {
                    what: "rolled back to",
                });
            }
            check_start(s, d, *force)
        }
        A::DeploymentDelete { id } => check_delete(s, ctx, "deployment.delete", id),
        A::DeploymentDeleteVolumes { id, command } => {
            check_delete(s, ctx, "deployment.delete-volumes", id)?;
            fresh(ctx, "command", command, s.commands.contains_key(command))
        }
        A::DeploymentCopy {
            from,
            id,
            node,
            prefix,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "deployment.copy", Role::User)?;
            let d = found(s.deployments.get(from), "deployment", from)?;
            if d.status == DeploymentStatus::InProgress {
                return Err(deployment_state_err(
                    d,
                    "copying",
                    "anything but in-progress",
                ));
            }
            fresh(ctx, "deployment", id, s.deployments.contains_key(id))?;
            let v = found(s.versions.get(&d.version), "version", &d.version)?;
            let node = node.to_hex();
            target_node(s, &node)?;
            check_prefix(prefix)?;
            check_slot(s, v, &node, prefix, None)
        }
        A::DeploymentFinish {
            id,
            attempt,
            outcome,
            events,
            frozen,
            ..
        } => {
            let d = found(s.deployments.get(id), "deployment", id)?;
            if ctx.author.to_hex() != d.node {
                return Err(RuleError::NotTheNode {
                    expected: node_name(s, &d.node),
                    what: "report on this deployment",
                });
            }
            need_self_node(s, ctx)?;
            if d.status != DeploymentStatus::InProgress {
                return Err(deployment_state_err(d, "finishing", "in-progress"));
            }
            if *attempt != d.tries {
                return Err(RuleError::WrongTry {
                    expected: d.tries,
                    got: *attempt,
                });
            }
            if events.len() > MAX_EVENTS || events.iter().any(|e| e.len() > MAX_EVENT_LEN) {
                return Err(RuleError::Invalid {
                    what: "events",
                    value: events.len().to_string(),
                    why: format!("at most {MAX_EVENTS} events of {MAX_EVENT_LEN} bytes"),
                });
            }
            match (outcome, frozen) {
                (Outcome::Successful, Some(_)) | (Outcome::Failed { .. }, None) => Ok(()),
                _ => Err(RuleError::Frozen),
            }
        }
        A::ContainerCommand {
            id,
            node,
            container,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "container.command", Role::User)?;
            if let A::ContainerCommand {
                action: a @ (ContainerAction::RemoveVolumes | ContainerAction::PruneImages),
                ..
            } = action
            {
                return Err(RuleError::Invalid {
                    what: "container command",
                    value: a.as_str().into(),
                    why: "it is not a command on one container: use `shoal deploy delete DEPLOYMENT --volumes` or `shoal node prune NODE`"
                        .into(),
                });
            }
            fresh(ctx, "command", id, s.commands.contains_key(id))?;
            found(
                view::effective_node(s, &node.to_hex()),
                "node",
                &node.to_hex(),
            )?;
            check_name("container", container)
        }
        // An admin's: removing images is maintenance of the node, like
        // adding or removing it; what may go is decided by the node (only
        // images no deployment on it can roll back to).
        A::NodePrune { id, node } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "node.prune", Role::Admin)?;
            fresh(ctx, "command", id, s.commands.contains_key(id))?;
            let n = found(
                view::effective_node(s, &node.to_hex()).filter(|n| n.removed.is_none()),
                "node",
                &node.to_hex(),
            )?;
            if n.runtime == Runtime::None {
                return Err(RuleError::NoRuntime {
                    node: n.name.clone(),
                });
            }
            Ok(())
        }
        _ => Err(not_in_family(action, "deployment")),
    }
}

/// A member (user or above) deletes a deployment that is not in progress.
fn check_delete(s: &TeamState, ctx: &OpContext, what: &'static str, id: &str) -> R {
    need_origin(s, ctx)?;
    need_role(s, ctx, what, Role::User)?;
    let d = found(s.deployments.get(id), "deployment", id)?;
    if d.status == DeploymentStatus::InProgress {
        return Err(deployment_state_err(
            d,
            "deleting",
            "anything but in-progress",
        ));
    }
    Ok(())
}

fn check_slot(s: &TeamState, v: &Version, node: &str, prefix: &str, except: Option<&str>) -> R {
    let clash = s
        .deployments
        .find_by(By::Slot, &slot(node, prefix))
        .find(|e| {
            Some(e.id.as_str()) != except
                && e.version == v.id
                && (v.kind == VersionKind::Rolling || e.status == DeploymentStatus::Preparing)
        });
    if let Some(e) = clash {
        return Err(RuleError::DuplicateDeployment {
            id: e.id.clone(),
            node: node_name(s, node),
            prefix: prefix.to_string(),
            hint: match v.kind {
                VersionKind::Rolling => {
                    ": a rolling version has one deployment per node and prefix; start or edit that one"
                }
                VersionKind::Incremental => {
                    " and is still preparing: start, edit or delete that one"
                }
            },
        });
    }
    Ok(())
}

fn node_name(s: &TeamState, key: &str) -> String {
    s.nodes
        .get(key)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| key.to_string())
}

/// A protected deployment on the slot blocks a non-protected one (§2).
#[allow(clippy::too_many_arguments)]
fn check_protected(
    s: &TeamState,
    d_product: &str,
    d_version: &str,
    node: &str,
    prefix: &str,
    protected: bool,
    force: bool,
    except: Option<&str>,
) -> R {
    if protected || force {
        return Ok(());
    }
    let Some(v) = s.versions.get(d_version) else {
        return Ok(());
    };
    let blocker = s
        .deployments
        .find_by(By::Slot, &slot(node, prefix))
        .find(|e| {
            Some(e.id.as_str()) != except
                && e.protected
                && e.product == d_product
                && e.status == DeploymentStatus::Successful
                && (v.kind == VersionKind::Rolling || e.version != d_version)
        });
    if let Some(e) = blocker {
        return Err(RuleError::Protected {
            id: e.id.clone(),
            node: node_name(s, node),
            prefix: prefix.to_string(),
        });
    }
    Ok(())
}

fn check_sealed_to(node: &str, secrets: &BTreeMap<String, Sealed>) -> R {
    let want = format!("node:{node}");
    for (k, v) in secrets {
        if v.recipient != want {
            return Err(RuleError::SecretRecipient {
                key: k.clone(),
                recipient: v.recipient.clone(),
            });
        }
    }
    Ok(())
}

fn target_node<'a>(s: &'a TeamState, key: &str) -> Result<&'a Node, RuleError> {
    let n = found(view::effective_node(s, key), "node", key)?;
    if n.runtime == Runtime::None {
        return Err(RuleError::NoRuntime {
            node: n.name.clone(),
        });
    }
    Ok(n)
}

/// Refuses a config field a Kubernetes node cannot honour (see
/// [`crate::kubernetes::unsupported`]), naming the first one.
pub(super) fn check_kubernetes(container: &str, node: &str, cfg: &ContainerConfig) -> R {
    match crate::kubernetes::unsupported(cfg).into_iter().next() {
        None => Ok(()),
        Some(u) => Err(RuleError::Invalid {
            what: "config field",
            value: u.field.to_owned(),
            why: format!(
                "container {container} is deployed to {node}, a Kubernetes node, which cannot honour it: {}",
                u.why
            ),
        }),
    }
}

fn check_instances(v: &Version, instances: &BTreeMap<String, ContainerConfig>) -> R {
    for name in instances.keys() {
        if !v.images.iter().any(|i| &i.name == name) {
            return Err(RuleError::NotFound {
                what: "container",
                id: name.clone(),
            });
        }
    }
    Ok(())
}

fn check_start(s: &TeamState, d: &Deployment, force: bool) -> R {
    if view::deployment_in_conflict(s, d) {
        return Err(RuleError::Conflict { id: d.id.clone() });
    }
    let n = target_node(s, &d.node)?;
    let v = found(s.versions.get(&d.version), "version", &d.version)?;
    let images = match (&d.frozen, d.status) {
        (Some(f), DeploymentStatus::Obsolete) => f.images.clone(),
        _ => v.images.clone(),
    };
    if images.is_empty() {
        return Err(RuleError::NoImages {
            version: v.name.clone(),
        });
    }
    for img in &images {
        let cfg = match d.instances.get(&img.name) {
            Some(inst) => img.config.merged(inst),
            None => img.config.clone(),
        };
        if n.runtime == Runtime::Kubernetes {
            check_kubernetes(&img.name, &n.name, &cfg)?;
        }
        for (key, decl) in &cfg.secrets {
            if decl.required && !d.secrets.contains_key(key) {
                return Err(RuleError::MissingSecret {
                    container: img.name.clone(),
                    key: key.clone(),
                });
            }
        }
        // Container names are `<prefix>-<name>` on the node: another product
        // running on the same slot must not use the same name.
        let other = s
            .deployments
            .find_by(By::Slot, &slot(&d.node, &d.prefix))
            .find(|e| {
                e.product != d.product
                    && matches!(
                        e.status,
                        DeploymentStatus::InProgress | DeploymentStatus::Successful
                    )
                    && s.versions
                        .get(&e.version)
                        .is_some_and(|ev| ev.images.iter().any(|i| i.name == img.name))
            });
        if let Some(e) = other {
            return Err(RuleError::ContainerName {
                name: img.name.clone(),
                node: n.name.clone(),
                prefix: d.prefix.clone(),
                other: e.id.clone(),
            });
        }
    }
    check_sealed_to(&d.node, &d.secrets)?;
    check_protected(
        s,
        &d.product,
        &d.version,
        &d.node,
        &d.prefix,
        d.protected,
        force,
        Some(&d.id),
    )
}
