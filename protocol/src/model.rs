//! The team document's schema: every concept of the design (§1) as typed Rust
//! that hydrates from and reconciles into the one Automerge document.
//!
//! Layout: the root holds one map per [`Collection`]; each maps an id to one
//! entity. Every op touches whole entities addressed by `(collection, id)`,
//! which is what makes path scoping (§3) a simple check.

use std::collections::BTreeMap;
use std::fmt;

use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
pub use crate::table::{By, Indexed, Table, slot};

/// Fields stored as one JSON string scalar instead of a tree of Automerge
/// objects. Used for configs that are always replaced whole, where merging
/// field by field buys nothing and a tree costs an object per field.
pub mod json {
    use autosurgeon::{Hydrate, HydrateError, Prop, ReadDoc, Reconciler};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub fn hydrate<D: ReadDoc, T: DeserializeOwned>(
        doc: &D,
        obj: &automerge::ObjId,
        prop: Prop<'_>,
    ) -> Result<T, HydrateError> {
        let s = String::hydrate(doc, obj, prop)?;
        serde_json::from_str(&s)
            .map_err(|e| HydrateError::unexpected("a JSON value", e.to_string()))
    }

    pub fn reconcile<R: Reconciler, T: Serialize>(v: &T, mut r: R) -> Result<(), R::Error> {
        r.str(serde_json::to_string(v).unwrap_or_default())
    }
}

/// A string-keyed map reconciled as autosurgeon's maps are, except that
/// keys that left the map are deleted in key order. (autosurgeon deletes
/// them in a hash set's order, which differs between processes: a change
/// removing two keys could not be rebuilt byte for byte by another replica.)
/// Everything else, one key removed or none, is the same ops in the same
/// order.
pub mod sorted_map {
    use std::collections::{BTreeMap, BTreeSet};

    use autosurgeon::reconcile::{LoadKey, MapReconciler};
    use autosurgeon::{Hydrate, HydrateError, Prop, ReadDoc, Reconcile, Reconciler};

    pub fn hydrate<D: ReadDoc, V: Hydrate>(
        doc: &D,
        obj: &automerge::ObjId,
        prop: Prop<'_>,
    ) -> Result<BTreeMap<String, V>, HydrateError> {
        BTreeMap::<String, V>::hydrate(doc, obj, prop)
    }

    pub fn reconcile<R: Reconciler, V: Reconcile>(
        v: &BTreeMap<String, V>,
        mut r: R,
    ) -> Result<(), R::Error> {
        let mut m = r.map()?;
        let old: BTreeSet<String> = m.entries().map(|(k, _)| k.to_string()).collect();
        for (k, val) in v {
            if let LoadKey::Found(new_key) = val.key()
                && let LoadKey::Found(existing) = m.hydrate_entry_key::<V, _>(k)?
                && existing != new_key
            {
                m.replace(k, val)?;
                continue;
            }
            m.put(k, val)?;
        }
        for k in old.iter().filter(|k| !v.contains_key(*k)) {
            m.delete(k)?;
        }
        Ok(())
    }
}

/// Version of the document schema, written at genesis.
pub const SCHEMA_VERSION: u32 = 1;

/// The id of the registry every team has from the start.
pub const HUB_REGISTRY_ID: &str = "hub";

/// The top-level maps of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Collection {
    Team,
    Members,
    Nodes,
    Invites,
    Registries,
    Products,
    Versions,
    Deployments,
    Commands,
    Keys,
}

impl Collection {
    pub const ALL: [Collection; 10] = [
        Collection::Team,
        Collection::Members,
        Collection::Nodes,
        Collection::Invites,
        Collection::Registries,
        Collection::Products,
        Collection::Versions,
        Collection::Deployments,
        Collection::Commands,
        Collection::Keys,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Collection::Team => "team",
            Collection::Members => "members",
            Collection::Nodes => "nodes",
            Collection::Invites => "invites",
            Collection::Registries => "registries",
            Collection::Products => "products",
            Collection::Versions => "versions",
            Collection::Deployments => "deployments",
            Collection::Commands => "commands",
            Collection::Keys => "keys",
        }
    }

    pub fn from_key(k: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.key() == k)
    }
}

/// The single entity id inside [`Collection::Team`].
pub const TEAM_INFO_ID: &str = "info";

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct TeamInfo {
    pub name: String,
    pub description: String,
    pub schema: u32,
    pub created: Hlc,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    User,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Member {
    /// Public key, hex. Also the map key.
    pub key: String,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    /// X25519 public key (hex) secrets are sealed to.
    pub enc_key: String,
    pub joined: Hlc,
    /// The invite redeemed to join (none for the owner).
    pub invite: Option<String>,
    /// When the member was removed; removed members stay for the audit log.
    pub removed: Option<Hlc>,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Kubernetes,
    None,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Kubernetes => "kubernetes",
            Runtime::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<Runtime> {
        match s {
            "docker" => Some(Runtime::Docker),
            "kubernetes" | "k8s" => Some(Runtime::Kubernetes),
            "none" => Some(Runtime::None),
            _ => None,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Node {
    /// Public key, hex (also the libp2p peer identity). Also the map key.
    pub key: String,
    pub name: String,
    pub runtime: Runtime,
    pub enc_key: String,
    /// Listen and observed multiaddrs the node publishes.
    pub addresses: Vec<String>,
    pub agent_version: String,
    pub protocol_version: u32,
    pub joined: Hlc,
    /// The node invite redeemed to join (node tickets).
    pub invite: Option<String>,
    /// The member whose join enrolled this node (member tickets).
    pub sponsor: Option<String>,
    pub removed: Option<Hlc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InviteKind {
    Member { role: Role },
    Node { name: String, runtime: Runtime },
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Invite {
    pub id: String,
    pub kind: InviteKind,
    /// Public key (hex) of the one-time key whose secret half is in the ticket.
    pub invite_key: String,
    pub expires: Hlc,
    pub created: Hlc,
    pub created_by: String,
    pub revoked: bool,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryKind {
    Hub,
    V2,
    Github,
    Gitlab,
    Unchecked,
}

impl RegistryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::Hub => "hub",
            RegistryKind::V2 => "v2",
            RegistryKind::Github => "github",
            RegistryKind::Gitlab => "gitlab",
            RegistryKind::Unchecked => "unchecked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hub" => Some(Self::Hub),
            "v2" => Some(Self::V2),
            "github" => Some(Self::Github),
            "gitlab" => Some(Self::Gitlab),
            "unchecked" => Some(Self::Unchecked),
            _ => None,
        }
    }
}

/// Ciphertext in the document: never plaintext (§5).
#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Sealed {
    /// `node:<key hex>` for values sealed to a node, `team:<epoch>` for the
    /// team secrets key, `nodes` for one sealed copy per node.
    pub recipient: String,
    /// The sealed value in its versioned text form (`shoal-seal-v1:<hex>`),
    /// or for `nodes` a `shoal-sealed-set-v1` list of `<node key> <sealed>`
    /// lines (see `shoal_node::secrets`).
    pub data: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Registry {
    pub id: String,
    pub name: String,
    pub kind: RegistryKind,
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub user: Option<String>,
    pub password: Option<Sealed>,
    pub created: Hlc,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProductKind {
    Simple,
    Complex,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub kind: ProductKind,
    pub description: String,
    pub default_version: Option<String>,
    pub created: Hlc,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum VersionKind {
    Rolling,
    Incremental,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    pub product: String,
    pub name: String,
    pub kind: VersionKind,
    pub changelog: String,
    pub auto_copy: bool,
    pub parent: Option<String>,
    pub child: Option<String>,
    pub images: Vec<Image>,
    pub created: Hlc,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct ImageRef {
    /// Registry id.
    pub registry: String,
    pub name: String,
    pub tag: String,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Image {
    /// Container name, unique in the version.
    pub name: String,
    pub image: ImageRef,
    #[autosurgeon(with = "json")]
    pub config: ContainerConfig,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Port {
    pub internal: u16,
    pub external: Option<u16>,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct PortRange {
    pub internal_from: u16,
    pub internal_to: u16,
    pub external_from: u16,
    pub external_to: u16,
    pub protocol: Protocol,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeKind {
    Rw,
    Ro,
    Tmpfs,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub path: String,
    pub kind: VolumeKind,
    pub size: Option<String>,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    Bridge,
    Host,
    None,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "no" => Some(Self::No),
            "always" => Some(Self::Always),
            "unless-stopped" => Some(Self::UnlessStopped),
            "on-failure" => Some(Self::OnFailure),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub start_period_ms: Option<u64>,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedRunState {
    Running,
    Exited,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct ExpectedState {
    pub state: ExpectedRunState,
    pub exit_code: Option<i64>,
    pub timeout_s: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct SecretDecl {
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct InitContainer {
    pub name: String,
    pub image: ImageRef,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Probe {
    /// `exec` command, or empty for HTTP/TCP probes.
    pub command: Vec<String>,
    pub http_path: Option<String>,
    pub port: Option<u16>,
    pub period_s: Option<u32>,
    pub initial_delay_s: Option<u32>,
    pub failure_threshold: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Rolling,
    Recreate,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct KubernetesConfig {
    pub replicas: Option<u32>,
    pub strategy: Option<Strategy>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    pub startup: Option<Probe>,
    pub requests: Option<Resources>,
    pub limits: Option<Resources>,
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    pub service_type: Option<String>,
    /// Object kind (`deployment`, `service`, `pod`, ...) to labels.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    pub annotations: BTreeMap<String, BTreeMap<String, String>>,
}

/// A container's configuration (§1.1). Every field is optional or a
/// collection so that layers (image ← deployment ← instance) can be merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    pub image: Option<ImageRef>,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretDecl>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub tty: Option<bool>,
    pub ports: Vec<Port>,
    pub port_ranges: Vec<PortRange>,
    pub volumes: Vec<Volume>,
    pub networks: Vec<String>,
    pub network_mode: Option<NetworkMode>,
    pub restart: Option<RestartPolicy>,
    pub labels: BTreeMap<String, String>,
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
    pub health: Option<HealthCheck>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub expected: Option<ExpectedState>,
    pub init_containers: Vec<InitContainer>,
    pub kubernetes: Option<KubernetesConfig>,
}

impl ContainerConfig {
    /// Layers `over` on top of `self` (rightmost wins): scalars are replaced
    /// when set, maps merge per key, lists merge by their key (ports by
    /// internal port and protocol, volumes by path, init containers and
    /// networks by name).
    pub fn merged(&self, over: &ContainerConfig) -> ContainerConfig {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            b.clone().or_else(|| a.clone())
        }
        fn map<V: Clone>(a: &BTreeMap<String, V>, b: &BTreeMap<String, V>) -> BTreeMap<String, V> {
            let mut m = a.clone();
            m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            m
        }
        fn keyed<T: Clone, K: PartialEq>(a: &[T], b: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
            let mut out: Vec<T> = a.to_vec();
            for item in b {
                match out.iter_mut().find(|x| key(x) == key(item)) {
                    Some(slot) => *slot = item.clone(),
                    None => out.push(item.clone()),
                }
            }
            out
        }
        let kubernetes = match (&self.kubernetes, &over.kubernetes) {
            (Some(a), Some(b)) => Some(KubernetesConfig {
                replicas: pick(&a.replicas, &b.replicas),
                strategy: pick(&a.strategy, &b.strategy),
                liveness: pick(&a.liveness, &b.liveness),
                readiness: pick(&a.readiness, &b.readiness),
                startup: pick(&a.startup, &b.startup),
                requests: pick(&a.requests, &b.requests),
                limits: pick(&a.limits, &b.limits),
                service_type: pick(&a.service_type, &b.service_type),
                labels: map(&a.labels, &b.labels),
                annotations: map(&a.annotations, &b.annotations),
            }),
            (a, b) => pick(a, b),
        };
        ContainerConfig {
            image: pick(&self.image, &over.image),
            env: map(&self.env, &over.env),
            secrets: map(&self.secrets, &over.secrets),
            command: pick(&self.command, &over.command),
            args: pick(&self.args, &over.args),
            user: pick(&self.user, &over.user),
            working_dir: pick(&self.working_dir, &over.working_dir),
            tty: pick(&self.tty, &over.tty),
            ports: keyed(&self.ports, &over.ports, |p| (p.internal, p.protocol)),
            port_ranges: keyed(&self.port_ranges, &over.port_ranges, |p| {
                (p.internal_from, p.protocol)
            }),
            volumes: keyed(&self.volumes, &over.volumes, |v| v.path.clone()),
            networks: keyed(&self.networks, &over.networks, |n| n.clone()),
            network_mode: pick(&self.network_mode, &over.network_mode),
            restart: pick(&self.restart, &over.restart),
            labels: map(&self.labels, &over.labels),
            log_driver: pick(&self.log_driver, &over.log_driver),
            log_options: map(&self.log_options, &over.log_options),
            health: pick(&self.health, &over.health),
            cpu: pick(&self.cpu, &over.cpu),
            memory: pick(&self.memory, &over.memory),
            expected: pick(&self.expected, &over.expected),
            init_containers: keyed(&self.init_containers, &over.init_containers, |i| {
                i.name.clone()
            }),
            kubernetes,
        }
    }

    /// Expands `{{version}}` in env values.
    pub fn expand_version(&mut self, version: &str) {
        for v in self.env.values_mut() {
            if v.contains("{{version}}") {
                *v = v.replace("{{version}}", version);
            }
        }
    }
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentStatus {
    Preparing,
    InProgress,
    Successful,
    Failed,
    Obsolete,
    Downgraded,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::InProgress => "in-progress",
            Self::Successful => "successful",
            Self::Failed => "failed",
            Self::Obsolete => "obsolete",
            Self::Downgraded => "downgraded",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Preparing,
            Self::InProgress,
            Self::Successful,
            Self::Failed,
            Self::Obsolete,
            Self::Downgraded,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container's state as the target node saw it at the end of a try.
#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct ContainerState {
    pub state: String,
    pub exit_code: Option<i64>,
    pub image: String,
}

/// The effective config frozen into a deployment on success (§2), so that a
/// rollback redeploys exactly what ran.
#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct FrozenConfig {
    pub version_name: String,
    pub images: Vec<Image>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub product: String,
    pub version: String,
    /// Target node key, hex.
    pub node: String,
    pub prefix: String,
    pub note: String,
    pub protected: bool,
    #[autosurgeon(with = "sorted_map")]
    pub env: BTreeMap<String, String>,
    /// Secret values, sealed to the target node.
    #[autosurgeon(with = "sorted_map")]
    pub secrets: BTreeMap<String, Sealed>,
    /// Per-container (instance) overrides.
    #[autosurgeon(with = "json")]
    pub instances: BTreeMap<String, ContainerConfig>,
    pub status: DeploymentStatus,
    pub tries: u32,
    pub created: Hlc,
    pub created_by: String,
    /// Why the last try failed, or why the status changed.
    pub reason: Option<String>,
    // Execution fields: written only by the target node.
    pub finished_try: u32,
    #[autosurgeon(with = "json")]
    pub containers: BTreeMap<String, ContainerState>,
    #[autosurgeon(with = "json")]
    pub events: Vec<String>,
    #[autosurgeon(with = "json")]
    pub frozen: Option<FrozenConfig>,
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerAction {
    Start,
    Stop,
    Restart,
    Remove,
    /// Written only by `deployment.delete-volumes`: the command's
    /// `container` is the deleted deployment's id, and its node removes the
    /// deployment's named volumes when it tears it down.
    RemoveVolumes,
    /// Written only by `node.prune`: the node removes the images no
    /// deployment on it can roll back to (`container` is empty).
    PruneImages,
}

impl ContainerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Remove => "remove",
            Self::RemoveVolumes => "remove-volumes",
            Self::PruneImages => "prune-images",
        }
    }
}

/// A member's request to a node to act on one of its containers.
#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct ContainerCommand {
    pub id: String,
    pub node: String,
    pub container: String,
    pub action: ContainerAction,
    pub requested: Hlc,
    pub requested_by: String,
}

/// Prefix of the text of a sealed team secrets key:
/// `shoal-team-key-v1:<epoch>:<team public key, 64 hex>:<sealed secret>`.
pub const TEAM_KEY_PREFIX: &str = "shoal-team-key-v1:";

/// The team secrets key sealed to one recipient (a node or an admin).
///
/// Stored under [`SealedKey::entity_id`], so a recipient keeps one entry per
/// key it was given: the keys of older epochs (for values sealed before a
/// rotation reached them) and two keys of one epoch made concurrently.
/// Entries of the first release are stored under the bare recipient.
#[derive(Clone, Debug, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct SealedKey {
    pub recipient: String,
    pub epoch: u32,
    pub sealed: String,
}

impl SealedKey {
    /// The (epoch, team public key hex) the text names, when well formed.
    pub fn named(&self) -> Option<(u32, &str)> {
        let mut parts = self.sealed.strip_prefix(TEAM_KEY_PREFIX)?.splitn(3, ':');
        let epoch = parts.next()?.parse().ok()?;
        let public = parts.next()?;
        let ok = public.len() == 64 && public.bytes().all(|b| b.is_ascii_hexdigit());
        (ok && parts.next().is_some_and(|s| !s.is_empty())).then_some((epoch, public))
    }

    /// The team public key this is a copy of, when well formed.
    pub fn public(&self) -> Option<&str> {
        self.named().map(|(_, p)| p)
    }

    /// `<recipient>/<epoch>/<first 16 hex of the team public key>`.
    pub fn entity_id(&self) -> String {
        let fp = self.public().map_or("", |p| &p[..16]);
        format!("{}/{}/{fp}", self.recipient, self.epoch)
    }
}

/// The recipient a team-wide secret sealed to the team key of `epoch` with
/// public half `public` names: `team:<epoch>:<first 16 hex of public>`.
/// (The first release named only `team:<epoch>`.)
pub fn team_recipient(epoch: u32, public: &str) -> String {
    format!("team:{epoch}:{}", public.get(..16).unwrap_or(public))
}

/// The (epoch, public key prefix) a `team:` recipient names.
pub fn parse_team_recipient(recipient: &str) -> Option<(u32, Option<&str>)> {
    let rest = recipient.strip_prefix("team:")?;
    match rest.split_once(':') {
        Some((e, fp)) => Some((e.parse().ok()?, Some(fp))),
        None => Some((rest.parse().ok()?, None)),
    }
}

/// The whole typed view of the team document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct TeamState {
    pub team: Table<TeamInfo>,
    pub members: Table<Member>,
    pub nodes: Table<Node>,
    pub invites: Table<Invite>,
    pub registries: Table<Registry>,
    pub products: Table<Product>,
    pub versions: Table<Version>,
    pub deployments: Table<Deployment>,
    pub commands: Table<ContainerCommand>,
    pub keys: Table<SealedKey>,
}

/// One entity of any collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entity {
    Team(TeamInfo),
    Member(Member),
    Node(Node),
    Invite(Invite),
    Registry(Registry),
    Product(Product),
    Version(Version),
    Deployment(Box<Deployment>),
    Command(ContainerCommand),
    Key(SealedKey),
}

impl Entity {
    pub fn collection(&self) -> Collection {
        match self {
            Entity::Team(_) => Collection::Team,
            Entity::Member(_) => Collection::Members,
            Entity::Node(_) => Collection::Nodes,
            Entity::Invite(_) => Collection::Invites,
            Entity::Registry(_) => Collection::Registries,
            Entity::Product(_) => Collection::Products,
            Entity::Version(_) => Collection::Versions,
            Entity::Deployment(_) => Collection::Deployments,
            Entity::Command(_) => Collection::Commands,
            Entity::Key(_) => Collection::Keys,
        }
    }
}

// The secondary indexes of each collection (see `table`): what the rules
// and effects look entities up by.
impl Indexed for TeamInfo {}
impl Indexed for Invite {}
impl Indexed for ContainerCommand {}
impl Indexed for SealedKey {}

impl Indexed for Member {
    fn index_keys(&self, key: &mut dyn FnMut(By, String)) {
        if let Some(i) = &self.invite {
            key(By::Invite, i.clone());
        }
    }
}

impl Indexed for Node {
    fn index_keys(&self, key: &mut dyn FnMut(By, String)) {
        if let Some(i) = &self.invite {
            key(By::Invite, i.clone());
        }
        // A removed node's name is free again.
        if self.removed.is_none() {
            key(By::Name, self.name.clone());
        }
    }
}

impl Indexed for Registry {
    fn index_keys(&self, key: &mut dyn FnMut(By, String)) {
        key(By::Name, self.name.clone());
    }
}

impl Indexed for Product {
    fn index_keys(&self, key: &mut dyn FnMut(By, String)) {
        key(By::Name, self.name.clone());
    }
}

impl Indexed for Version {
    fn index_keys(&self, key: &mut dyn FnMut(By, String)) {
        key(By::Product, self.product.clone());
        // Version names are unique within their product.
        key(By::Name, slot(&self.product, &self.name));
    }
}

impl Indexed for Deployment {
    fn index_keys(&self, key: &mut dyn FnMut(By, String)) {
        key(By::Product, self.product.clone());
        key(By::Version, self.version.clone());
        key(By::Node, self.node.clone());
        key(By::Slot, slot(&self.node, &self.prefix));
    }
}

impl TeamState {
    pub fn info(&self) -> Option<&TeamInfo> {
        self.team.get(TEAM_INFO_ID)
    }

    pub fn get(&self, c: Collection, id: &str) -> Option<Entity> {
        Some(match c {
            Collection::Team => Entity::Team(self.team.get(id)?.clone()),
            Collection::Members => Entity::Member(self.members.get(id)?.clone()),
            Collection::Nodes => Entity::Node(self.nodes.get(id)?.clone()),
            Collection::Invites => Entity::Invite(self.invites.get(id)?.clone()),
            Collection::Registries => Entity::Registry(self.registries.get(id)?.clone()),
            Collection::Products => Entity::Product(self.products.get(id)?.clone()),
            Collection::Versions => Entity::Version(self.versions.get(id)?.clone()),
            Collection::Deployments => {
                Entity::Deployment(Box::new(self.deployments.get(id)?.clone()))
            }
            Collection::Commands => Entity::Command(self.commands.get(id)?.clone()),
            Collection::Keys => Entity::Key(self.keys.get(id)?.clone()),
        })
    }

    /// Whether the collection holds an entity with this id.
    pub fn contains(&self, c: Collection, id: &str) -> bool {
        match c {
            Collection::Team => self.team.contains_key(id),
            Collection::Members => self.members.contains_key(id),
            Collection::Nodes => self.nodes.contains_key(id),
            Collection::Invites => self.invites.contains_key(id),
            Collection::Registries => self.registries.contains_key(id),
            Collection::Products => self.products.contains_key(id),
            Collection::Versions => self.versions.contains_key(id),
            Collection::Deployments => self.deployments.contains_key(id),
            Collection::Commands => self.commands.contains_key(id),
            Collection::Keys => self.keys.contains_key(id),
        }
    }

    /// Sets (`Some`) or removes (`None`) one entity.
    pub fn set(&mut self, c: Collection, id: &str, e: Option<Entity>) {
        fn put<T: Clone + Indexed>(m: &mut Table<T>, id: &str, v: Option<T>) {
            m.set(id, v);
        }
        match (c, e) {
            (Collection::Team, Some(Entity::Team(v))) => put(&mut self.team, id, Some(v)),
            (Collection::Members, Some(Entity::Member(v))) => put(&mut self.members, id, Some(v)),
            (Collection::Nodes, Some(Entity::Node(v))) => put(&mut self.nodes, id, Some(v)),
            (Collection::Invites, Some(Entity::Invite(v))) => put(&mut self.invites, id, Some(v)),
            (Collection::Registries, Some(Entity::Registry(v))) => {
                put(&mut self.registries, id, Some(v))
            }
            (Collection::Products, Some(Entity::Product(v))) => {
                put(&mut self.products, id, Some(v))
            }
            (Collection::Versions, Some(Entity::Version(v))) => {
                put(&mut self.versions, id, Some(v))
            }
            (Collection::Deployments, Some(Entity::Deployment(v))) => {
                put(&mut self.deployments, id, Some(*v))
            }
            (Collection::Commands, Some(Entity::Command(v))) => {
                put(&mut self.commands, id, Some(v))
            }
            (Collection::Keys, Some(Entity::Key(v))) => put(&mut self.keys, id, Some(v)),
            (c, _) => match c {
                Collection::Team => put(&mut self.team, id, None),
                Collection::Members => put(&mut self.members, id, None),
                Collection::Nodes => put(&mut self.nodes, id, None),
                Collection::Invites => put(&mut self.invites, id, None),
                Collection::Registries => put(&mut self.registries, id, None),
                Collection::Products => put(&mut self.products, id, None),
                Collection::Versions => put(&mut self.versions, id, None),
                Collection::Deployments => put(&mut self.deployments, id, None),
                Collection::Commands => put(&mut self.commands, id, None),
                Collection::Keys => put(&mut self.keys, id, None),
            },
        }
    }

    /// Active (not removed) member by key.
    pub fn member(&self, key: &str) -> Option<&Member> {
        self.members.get(key).filter(|m| m.removed.is_none())
    }

    /// Active (not removed) node by key.
    pub fn node(&self, key: &str) -> Option<&Node> {
        self.nodes.get(key).filter(|n| n.removed.is_none())
    }

    pub fn owner(&self) -> Option<&Member> {
        self.members.values().find(|m| m.role == Role::Owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_merges_maps_and_keyed_lists_rightmost_wins() {
        let base = ContainerConfig {
            env: [("A".into(), "1".into()), ("B".into(), "1".into())].into(),
            ports: vec![Port {
                internal: 80,
                external: Some(8080),
                protocol: Protocol::Tcp,
            }],
            volumes: vec![Volume {
                name: "data".into(),
                path: "/data".into(),
                kind: VolumeKind::Rw,
                size: None,
            }],
            user: Some("app".into()),
            ..Default::default()
        };
        let over = ContainerConfig {
            env: [("B".into(), "2".into())].into(),
            ports: vec![
                Port {
                    internal: 80,
                    external: Some(9090),
                    protocol: Protocol::Tcp,
                },
                Port {
                    internal: 53,
                    external: None,
                    protocol: Protocol::Udp,
                },
            ],
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!(m.env["A"], "1");
        assert_eq!(m.env["B"], "2");
        assert_eq!(m.ports.len(), 2);
        assert_eq!(m.ports[0].external, Some(9090));
        assert_eq!(m.volumes.len(), 1);
        assert_eq!(m.user.as_deref(), Some("app"));
    }

    #[test]
    fn version_placeholder_expands_in_env() {
        let mut c = ContainerConfig {
            env: [("V".into(), "app-{{version}}".into())].into(),
            ..Default::default()
        };
        c.expand_version("1.4.0");
        assert_eq!(c.env["V"], "app-1.4.0");
    }
}
