//! Effects on deployments (including what a success makes obsolete or
//! downgraded) and container commands.

use std::collections::BTreeMap;

use crate::action::{Action, Outcome};
use crate::context::OpContext;
use crate::model::*;
use crate::table::{By, slot};
use crate::view;

use super::common::{Write, del, new_deployment, put};

/// The writes of a deployment or container command action (see
/// [`super::effect`]).
pub(super) fn effect(s: &TeamState, ctx: &OpContext, action: &Action) -> Vec<Write> {
    use Action as A;
    let mut out = Vec::new();
    match action {
        A::DeploymentCreate {
            id,
            version,
            node,
            prefix,
            env,
            secrets,
            instances,
            protected,
            note,
            ..
        } => {
            let product = s
                .versions
                .get(version)
                .map(|v| v.product.clone())
                .unwrap_or_default();
            out.push(put(
                Entity::Deployment(Box::new(Deployment {
                    id: id.clone(),
                    product,
                    version: version.clone(),
                    node: node.to_hex(),
                    prefix: prefix.clone(),
                    note: note.clone(),
                    protected: *protected,
                    env: env.clone(),
                    secrets: secrets.clone(),
                    instances: instances.clone(),
                    status: DeploymentStatus::Preparing,
                    tries: 0,
                    created: ctx.hlc,
                    created_by: ctx.author.to_hex(),
                    reason: None,
                    finished_try: 0,
                    containers: BTreeMap::new(),
                    events: Vec::new(),
                    frozen: None,
                })),
                id,
            ));
        }
        A::DeploymentUpdate { id, edit } => {
            if let Some(d) = s.deployments.get(id) {
                let mut d = d.clone();
                if let Some(x) = &edit.note {
                    d.note = x.clone();
                }
                if let Some(x) = &edit.prefix {
                    d.prefix = x.clone();
                }
                if let Some(x) = edit.protected {
                    d.protected = x;
                }
                if let Some(x) = &edit.env {
                    d.env = x.clone();
                }
                if let Some(x) = &edit.secrets {
                    d.secrets = x.clone();
                }
                if let Some(x) = &edit.instances {
                    d.instances = x.clone();
                }
                out.push(put(Entity::Deployment(Box::new(d)), id));
            }
        }
        A::DeploymentStart { id, .. } | A::DeploymentRollback { id, .. } => {
            if let Some(d) = s.deployments.get(id) {
                out.push(put(
                    Entity::Deployment(Box::new(Deployment {
                        status: DeploymentStatus::InProgress,
                        tries: d.tries + 1,
                        reason: None,
                        ..d.clone()
                    })),
                    id,
                ));
            }
        }
        A::DeploymentDelete { id } => out.push(del(Collection::Deployments, id)),
        A::DeploymentDeleteVolumes { id, command } => {
            if let Some(d) = s.deployments.get(id) {
                out.push(put(
                    Entity::Command(ContainerCommand {
                        id: command.clone(),
                        node: d.node.clone(),
                        container: id.clone(),
                        action: ContainerAction::RemoveVolumes,
                        requested: ctx.hlc,
                        requested_by: ctx.author.to_hex(),
                    }),
                    command,
                ));
            }
            out.push(del(Collection::Deployments, id));
        }
        A::DeploymentCopy {
            from,
            id,
            node,
            prefix,
        } => {
            if let Some(src) = s.deployments.get(from) {
                let mut d = new_deployment(ctx, id, src);
                d.node = node.to_hex();
                d.prefix = prefix.clone();
                if d.node != src.node {
                    // Values sealed to another node are useless here.
                    d.secrets.clear();
                }
                out.push(put(Entity::Deployment(Box::new(d)), id));
            }
        }
        A::DeploymentFinish {
            id,
            attempt,
            outcome,
            containers,
            events,
            frozen,
        } => {
            let Some(d) = s.deployments.get(id) else {
                return out;
            };
            let mut done = Deployment {
                finished_try: *attempt,
                containers: containers.clone(),
                events: events.clone(),
                ..d.clone()
            };
            match outcome {
                Outcome::Failed { reason } => {
                    done.status = DeploymentStatus::Failed;
                    done.reason = Some(reason.clone());
                    out.push(put(Entity::Deployment(Box::new(done)), id));
                }
                Outcome::Successful => {
                    done.status = DeploymentStatus::Successful;
                    done.reason = None;
                    done.frozen = frozen.clone();
                    out.push(put(Entity::Deployment(Box::new(done)), id));
                    out.extend(supersede(s, d));
                }
            }
        }
        A::ContainerCommand {
            id,
            node,
            container,
            action,
        } => out.push(put(
            Entity::Command(ContainerCommand {
                id: id.clone(),
                node: node.to_hex(),
                container: container.clone(),
                action: *action,
                requested: ctx.hlc,
                requested_by: ctx.author.to_hex(),
            }),
            id,
        )),
        A::NodePrune { id, node } => out.push(put(
            Entity::Command(ContainerCommand {
                id: id.clone(),
                node: node.to_hex(),
                container: String::new(),
                action: ContainerAction::PruneImages,
                requested: ctx.hlc,
                requested_by: ctx.author.to_hex(),
            }),
            id,
        )),
        // Not of this family: the dispatcher never sends one, and the rules
        // refuse it anyway.
        _ => {}
    }
    out
}

/// On success of `d`: the other deployments of its slot become `obsolete`
/// (same version or ancestors) or `downgraded` (descendants).
fn supersede(s: &TeamState, d: &Deployment) -> Vec<Write> {
    let Some(v) = s.versions.get(&d.version) else {
        return Vec::new();
    };
    let (older, newer): (Vec<String>, Vec<String>) = match v.kind {
        VersionKind::Rolling => (Vec::new(), Vec::new()),
        VersionKind::Incremental => (
            view::ancestors(s, v).iter().map(|v| v.id.clone()).collect(),
            view::descendants(s, v)
                .iter()
                .map(|v| v.id.clone())
                .collect(),
        ),
    };
    let mut out = Vec::new();
    for e in s.deployments.find_by(By::Slot, &slot(&d.node, &d.prefix)) {
        if e.id == d.id {
            continue;
        }
        if matches!(
            e.status,
            DeploymentStatus::Preparing | DeploymentStatus::InProgress
        ) {
            continue;
        }
        let status = if e.version == d.version || older.contains(&e.version) {
            DeploymentStatus::Obsolete
        } else if newer.contains(&e.version) {
            DeploymentStatus::Downgraded
        } else {
            continue;
        };
        if e.status != status {
            out.push(put(
                Entity::Deployment(Box::new(Deployment {
                    status,
                    ..e.clone()
                })),
                &e.id,
            ));
        }
    }
    out
}
