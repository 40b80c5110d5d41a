//! The one-line account of each action in the audit log (`what`), naming
//! entities by their names in the state it is given.

use crate::action::{Action, Outcome};
use crate::model::{InviteKind, TeamState, VersionKind};

/// A short account of an action, naming members, nodes, registries,
/// products, versions and deployments by their names in `state` (an id or
/// key prefix when the entity is gone). Secret values are never part of an
/// action, so never of this text.
pub fn describe(state: &TeamState, action: &Action) -> String {
    fn short(id: &str) -> String {
        id.chars().take(8).collect()
    }
    /// The name of entity `id` of a collection, else a prefix of the id.
    fn named<T>(m: &crate::table::Table<T>, id: &str, name: impl Fn(&T) -> &str) -> String {
        m.get(id).map_or_else(|| short(id), |e| name(e).to_owned())
    }
    let who = |key: &str| named(&state.members, key, |m| &m.name);
    let node = |key: &str| named(&state.nodes, key, |n| &n.name);
    let product = |id: &str| named(&state.products, id, |p| &p.name);
    let registry = |id: &str| named(&state.registries, id, |r| &r.name);
    let version = |id: &str| -> String {
        match state.versions.get(id) {
            Some(v) => format!("{} {}", product(&v.product), v.name),
            None => format!("version {}", short(id)),
        }
    };
    let deployment = |id: &str| -> String {
        match state.deployments.get(id) {
            Some(d) => format!(
                "{} ({} on {}/{})",
                short(id),
                version(&d.version),
                node(&d.node),
                d.prefix
            ),
            None => short(id),
        }
    };
    match action {
        Action::TeamCreate {
            name, owner, node, ..
        } => format!(
            "created team {name} with owner {} and node {}",
            owner.name, node.name
        ),
        Action::TeamUpdate { name, .. } => format!("renamed the team {name}"),
        Action::InviteCreate { id, kind, .. } => match kind {
            InviteKind::Member { role } => {
                format!(
                    "invited a member as {} (invite {})",
                    role.as_str(),
                    short(id)
                )
            }
            InviteKind::Node { name, runtime } => format!(
                "invited node {name} ({}) (invite {})",
                runtime.as_str(),
                short(id)
            ),
        },
        Action::InviteRevoke { id } => format!("revoked invite {}", short(id)),
        Action::QuarantinePurge { ops } => match ops.as_slice() {
            [one] => format!("purged refused op {} from quarantine", one.short()),
            _ => format!("purged {} refused ops from quarantine", ops.len()),
        },
        Action::MemberJoin { member, node, .. } => match node {
            Some(n) => format!("{} joined with node {}", member.name, n.name),
            None => format!("{} joined", member.name),
        },
        Action::NodeJoin { node, .. } => {
            format!("node {} ({}) joined", node.name, node.runtime.as_str())
        }
        Action::MemberRole { member, role } => {
            format!("made {} {}", who(&member.to_hex()), role.as_str())
        }
        Action::MemberRemove { member } => format!("removed member {}", who(&member.to_hex())),
        Action::NodeRemove { node: n } => format!("removed node {}", node(&n.to_hex())),
        Action::NodeUpdate { agent_version, .. } => {
            format!("node runs shoal {agent_version}")
        }
        Action::RegistryAdd { name, kind, .. } => {
            format!("added registry {name} ({})", kind.as_str())
        }
        Action::RegistryRemove { id } => format!("removed registry {}", registry(id)),
        Action::RegistryUpdate {
            id,
            url,
            namespace,
            user,
            clear_credentials,
            ..
        } => {
            let mut what = Vec::new();
            if let Some(u) = url {
                what.push(format!("url {u}"));
            }
            if let Some(n) = namespace {
                what.push(format!("namespace {n}"));
            }
            if let Some(u) = user {
                what.push(format!("credentials of {u}"));
            }
            if *clear_credentials {
                what.push("no credentials".to_string());
            }
            format!("set {} of registry {}", what.join(", "), registry(id))
        }
        Action::ProductCreate { name, .. } => format!("created product {name}"),
        Action::ProductImport {
            product: p,
            product_name,
            name,
            images,
            ..
        } => format!(
            "imported version {} {name} with {} container(s){}",
            product_name.clone().unwrap_or_else(|| product(p)),
            images.len(),
            if product_name.is_some() {
                " into a new product"
            } else {
                ""
            }
        ),
        Action::ProductRemove { id } => format!("removed product {}", product(id)),
        Action::VersionCreate {
            product: p,
            name,
            kind,
            ..
        } => format!(
            "created version {} {name} ({})",
            product(p),
            match kind {
                VersionKind::Rolling => "rolling",
                VersionKind::Incremental => "incremental",
            }
        ),
        Action::VersionIncrease { from, name, .. } => {
            format!("increased {} to {name}", version(from))
        }
        Action::VersionDefault { version: v } => format!("made {} the default", version(v)),
        Action::VersionRemove { id } => format!("removed {}", version(id)),
        Action::ProductUpdate { id, .. } => {
            format!("set the description of product {}", product(id))
        }
        Action::VersionUpdate {
            id,
            changelog,
            auto_copy,
        } => {
            let mut what = Vec::new();
            if changelog.is_some() {
                what.push("the changelog".to_string());
            }
            if let Some(a) = auto_copy {
                what.push(format!("auto-copy {}", if *a { "on" } else { "off" }));
            }
            format!("set {} of {}", what.join(" and "), version(id))
        }
        Action::ImageAdd { version: v, image } => format!(
            "added container {} ({}) to {}",
            image.name,
            image.image.name,
            version(v)
        ),
        Action::ImageRemove { version: v, name } => {
            format!("removed container {name} from {}", version(v))
        }
        Action::ImageConfig {
            version: v, name, ..
        } => {
            format!("configured container {name} of {}", version(v))
        }
        Action::ImageOrder { version: v, names } => {
            format!("ordered {}: {}", version(v), names.join(", "))
        }
        Action::DeploymentCreate {
            id,
            version: v,
            node: n,
            prefix,
            ..
        } => format!(
            "created deployment {} of {} on {}/{prefix}",
            short(id),
            version(v),
            node(&n.to_hex())
        ),
        Action::DeploymentUpdate { id, edit } => {
            let mut parts = Vec::new();
            if edit.note.is_some() {
                parts.push("note");
            }
            if edit.prefix.is_some() {
                parts.push("prefix");
            }
            if edit.protected.is_some() {
                parts.push("protection");
            }
            if edit.env.is_some() {
                parts.push("env");
            }
            if edit.secrets.is_some() {
                parts.push("secrets");
            }
            if edit.instances.is_some() {
                parts.push("container overrides");
            }
            format!(
                "edited {} of deployment {}",
                parts.join(", "),
                deployment(id)
            )
        }
        Action::DeploymentStart { id, .. } => format!("started deployment {}", deployment(id)),
        Action::DeploymentRollback { id, .. } => {
            format!("rolled back to deployment {}", deployment(id))
        }
        Action::DeploymentDelete { id } => format!("deleted deployment {}", deployment(id)),
        Action::DeploymentDeleteVolumes { id, .. } => {
            format!("deleted deployment {} and its volumes", deployment(id))
        }
        Action::NodePrune { node: n, .. } => {
            format!("pruned unused images on {}", node(&n.to_hex()))
        }
        Action::DeploymentCopy {
            from,
            id,
            node: n,
            prefix,
        } => format!(
            "copied deployment {} to {} on {}/{prefix}",
            deployment(from),
            short(id),
            node(&n.to_hex())
        ),
        Action::DeploymentFinish {
            id,
            attempt,
            outcome,
            ..
        } => match outcome {
            Outcome::Successful => {
                format!("try {attempt} of deployment {} succeeded", deployment(id))
            }
            Outcome::Failed { reason } => format!(
                "try {attempt} of deployment {} failed: {reason}",
                deployment(id)
            ),
        },
        Action::ContainerCommand {
            node: n,
            container,
            action,
            ..
        } => format!(
            "{} container {container} on {}",
            action.as_str(),
            node(&n.to_hex())
        ),
        Action::KeyRotate {
            epoch,
            keys,
            registries,
        } => format!(
            "rotated the team key to epoch {epoch}: sealed to {} node(s) and admin(s), {} registry password(s) sealed again",
            keys.len(),
            registries.len()
        ),
        Action::KeySeal { keys } => format!(
            "sealed the team key to {}",
            keys.iter()
                .map(|k| match k.recipient.split_once(':') {
                    Some(("member", key)) => who(key),
                    Some(("node", key)) => format!("node {}", node(key)),
                    _ => short(&k.recipient),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
