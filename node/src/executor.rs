//! The executor (§4 "Executor"): runs the deployments that target this node.
//!
//! One actor per team on a node with a container runtime. It wakes when the
//! team's state changes (and every [`RESCAN_INTERVAL`] in any case), looks
//! for deployments that target this node, are `in-progress`, are not marked
//! `conflict`, and whose current try has no report yet, and runs each try in
//! a task of its own (one at a time per prefix). A try builds its plan from
//! the state ([`plan`], pure), hands it to the [`Runtime`], and reports the
//! end as a signed `deployment.finish` op: status, container states, a short
//! events summary and, on success, the frozen config. Detailed progress
//! stays on the node, in the store's local table.
//!
//! Deleting a deployment (or its product) removes it from the state; the
//! executor of its target node then finds containers labelled with a
//! deployment the state no longer holds and tears them down
//! ([`orphans`], [`crate::runtime::Runtime::teardown`]), also when the
//! deletion arrives after the node was offline. Volumes are kept.
//!
//! After a crash the state still says `in-progress` for a try this node
//! never reported: the executor runs that try again (the runtime finishes
//! or undoes the replacement the cut-short run left, so running it twice is
//! safe) and says so in the
//! events. Nothing is left half-known: every try ends with a report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::action::Outcome;
use shoal_protocol::model::{
    ContainerAction, ContainerConfig, ContainerState, Deployment, DeploymentStatus, FrozenConfig,
    Image, ImageRef, Registry, RegistryKind, Sealed, TeamState, VersionKind,
};
use shoal_protocol::{Action, PublicKey, SecretKey, TeamId};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::daemon::now_ms;
use crate::runtime::{
    ContainerInfo, DeployPlan, ImageSource, PlannedContainer, ProgressEvent, PullPolicy,
    RegistryCredentials, SecretValues,
};
use crate::store::Store;
use crate::sync::{SyncError, SyncHandle};

/// A rescan of the state even without a change (a missed wake-up costs at
/// most this long).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
/// Progress events buffered between a runtime and the executor.
pub const PROGRESS_CHANNEL_CAPACITY: usize = 256;
/// Most events summarised in a report (the rules allow more; a short
/// summary reads better).
pub const MAX_REPORTED_EVENTS: usize = 40;
/// Longest event line in a report.
pub const MAX_EVENT_CHARS: usize = 200;
/// How many tries of a deployment keep their progress lines on the node
/// (`deploy logs`); older ones are pruned when a try starts.
pub const PROGRESS_TRIES_KEPT: u32 = 5;
/// Namespace of the executor's records in the store's local table.
pub const LOCAL_NS: &str = "executor";
/// Longest time between two looks for containers of deleted deployments
/// when the state does not change.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Opens sealed values (deployment secrets, registry passwords) with this
/// node's keys.
/// It gets the team state, which holds the team secrets key sealed to
/// this node.
pub type Unsealer = Arc<dyn Fn(&TeamState, &Sealed) -> Result<String, String> + Send + Sync>;

pub use crate::runtime::RuntimeFactory;

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the deployment's version {0} is gone")]
    NoVersion(String),
    #[error("the version has no images")]
    NoImages,
    #[error("image {image} names registry {registry}, which is not in the team")]
    NoRegistry { image: String, registry: String },
    #[error("secret {key} cannot be opened on this node: {why}")]
    Secret { key: String, why: String },
    #[error(
        "required secret {key} has no value for this node: set it with `shoal deploy create --secret {key}`"
    )]
    MissingSecret { key: String },
    #[error("the password of registry {registry} cannot be opened on this node: {why}")]
    RegistryPassword { registry: String, why: String },
}

/// The images a try of `d` runs, each with its layered config (image ←
/// deployment ← instance) merged. An incremental deployment that succeeded
/// before runs exactly its frozen config (that is what makes a redeploy of
/// an obsolete one a rollback); others run their version as it is now.
pub fn effective_images(
    state: &TeamState,
    d: &Deployment,
) -> Result<(String, Vec<Image>), PlanError> {
    let version = state
        .versions
        .get(&d.version)
        .ok_or_else(|| PlanError::NoVersion(d.version.clone()))?;
    if version.kind == VersionKind::Incremental
        && let Some(frozen) = &d.frozen
    {
        return Ok((frozen.version_name.clone(), frozen.images.clone()));
    }
    if version.images.is_empty() {
        return Err(PlanError::NoImages);
    }
    let deployment_level = ContainerConfig {
        env: d.env.clone(),
        ..ContainerConfig::default()
    };
    let images = version
        .images
        .iter()
        .map(|img| {
            let mut config = img.config.merged(&deployment_level);
            if let Some(inst) = d.instances.get(&img.name) {
                config = config.merged(inst);
            }
            let image = config.image.clone().unwrap_or_else(|| img.image.clone());
            Image {
                name: img.name.clone(),
                image,
                config,
            }
        })
        .collect();
    Ok((version.name.clone(), images))
}

/// The pull reference of an image in a registry of the team.
fn image_source(state: &TeamState, img: &Image, open: &Unsealer) -> Result<ImageSource, PlanError> {
    let reg = state
        .registries
        .get(&img.image.registry)
        .ok_or_else(|| PlanError::NoRegistry {
            image: img.name.clone(),
            registry: img.image.registry.clone(),
        })?;
    let (reference, pull) = pull_reference(reg, &img.image);
    let credentials = match (&reg.user, &reg.password) {
        (Some(user), Some(sealed)) => Some(RegistryCredentials {
            user: user.clone(),
            password: open(state, sealed).map_err(|why| PlanError::RegistryPassword {
                registry: reg.name.clone(),
                why,
            })?,
        }),
        _ => None,
    };
    Ok(ImageSource {
        reference,
        credentials,
        pull,
    })
}

/// The reference a node pulls for image `r` of registry `reg`, and how.
fn pull_reference(reg: &Registry, r: &ImageRef) -> (String, PullPolicy) {
    let host = |url: &Option<String>, default: &str| {
        url.as_deref()
            .map(|u| {
                u.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string()
            })
            .unwrap_or_else(|| default.to_string())
    };
    let ns = |name: &str| match reg.namespace.as_deref() {
        Some(ns) if !ns.is_empty() && !name.starts_with(&format!("{ns}/")) => {
            format!("{ns}/{name}")
        }
        _ => name.to_string(),
    };
    let (reference, pull) = match reg.kind {
        RegistryKind::Hub => (format!("{}:{}", ns(&r.name), r.tag), PullPolicy::IfChanged),
        RegistryKind::V2 => (
            format!("{}/{}:{}", host(&reg.url, "localhost"), ns(&r.name), r.tag),
            PullPolicy::IfChanged,
        ),
        RegistryKind::Github => (
            format!("{}/{}:{}", host(&reg.url, "ghcr.io"), ns(&r.name), r.tag),
            PullPolicy::IfChanged,
        ),
        RegistryKind::Gitlab => (
            format!(
                "{}/{}:{}",
                host(&reg.url, "registry.gitlab.com"),
                ns(&r.name),
                r.tag
            ),
            PullPolicy::IfChanged,
        ),
        RegistryKind::Unchecked if reg.name == "local" => {
            (format!("{}:{}", r.name, r.tag), PullPolicy::Never)
        }
        RegistryKind::Unchecked => (format!("{}:{}", r.name, r.tag), PullPolicy::IfChanged),
    };
    (reference, pull)
}

/// What `node prune` on node `me` may look at and must keep: the
/// repositories of every image a deployment on the node runs or ran (by its
/// effective config), and the references that a deployment which is in
/// progress, successful, obsolete or downgraded can run again (its frozen
/// config, else its version's current images). Images of the local
/// registry are never candidates: nothing could pull them back.
pub fn prune_scope(state: &TeamState, me: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut repos = BTreeSet::new();
    let mut keep = BTreeSet::new();
    for d in state.deployments.values().filter(|d| d.node == me) {
        let Ok((_, images)) = effective_images(state, d) else {
            continue;
        };
        let kept = matches!(
            d.status,
            DeploymentStatus::InProgress
                | DeploymentStatus::Successful
                | DeploymentStatus::Obsolete
                | DeploymentStatus::Downgraded
        );
        let refs = images.iter().flat_map(|img| {
            std::iter::once(&img.image).chain(img.config.init_containers.iter().map(|i| &i.image))
        });
        for r in refs {
            let Some(reg) = state.registries.get(&r.registry) else {
                continue;
            };
            let (reference, pull) = pull_reference(reg, r);
            if kept || pull == PullPolicy::Never {
                keep.insert(reference.clone());
            }
            if pull == PullPolicy::Never {
                continue;
            }
            if let Some((repo, _)) = reference.rsplit_once(':')
                && !repo.ends_with('/')
                && !repo
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains(':'))
            {
                repos.insert(repo.to_owned());
            }
        }
    }
    (repos, keep)
}

/// The plan of the current try of `d` (pure: everything comes from the
/// state and the unsealer).
pub fn plan(
    team: TeamId,
    state: &TeamState,
    d: &Deployment,
    open: &Unsealer,
) -> Result<(DeployPlan, FrozenConfig), PlanError> {
    let (version_name, images) = effective_images(state, d)?;
    let mut secrets = BTreeMap::new();
    for (key, sealed) in &d.secrets {
        let value = open(state, sealed).map_err(|why| PlanError::Secret {
            key: key.clone(),
            why,
        })?;
        secrets.insert(key.clone(), value);
    }
    let mut containers = Vec::new();
    for img in &images {
        for (key, decl) in &img.config.secrets {
            if decl.required && !secrets.contains_key(key) {
                return Err(PlanError::MissingSecret { key: key.clone() });
            }
        }
        let mine: BTreeMap<String, String> = secrets
            .iter()
            .filter(|(k, _)| img.config.secrets.contains_key(*k) || d.secrets.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut init_images = BTreeMap::new();
        for init in &img.config.init_containers {
            let src = image_source(
                state,
                &Image {
                    name: init.name.clone(),
                    image: init.image.clone(),
                    config: ContainerConfig::default(),
                },
                open,
            )?;
            init_images.insert(init.name.clone(), src);
        }
        containers.push(PlannedContainer {
            name: img.name.clone(),
            config: img.config.clone(),
            image: image_source(state, img, open)?,
            init_images,
            secrets: SecretValues(mine),
        });
    }
    let plan = DeployPlan {
        team: team.to_hex(),
        deployment: d.id.clone(),
        product: d.product.clone(),
        prefix: d.prefix.clone(),
        version: version_name.clone(),
        try_number: d.tries,
        containers,
    };
    Ok((
        plan,
        FrozenConfig {
            version_name,
            images,
        },
    ))
}

/// The tries this node should run now: its in-progress, unreported,
/// non-conflicting deployments, oldest first.
pub fn due(state: &TeamState, me: &PublicKey) -> Vec<Deployment> {
    let me = me.to_hex();
    let mut list: Vec<Deployment> = state
        .deployments
        .values()
        .filter(|d| d.node == me && d.status == DeploymentStatus::InProgress)
        .filter(|d| d.finished_try < d.tries)
        .filter(|d| !shoal_protocol::view::deployment_in_conflict(state, d))
        .cloned()
        .collect();
    list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    list
}

/// This node's in-progress tries that lost their slot to a concurrent,
/// earlier deployment (§2 concurrency), with the winner's id. They are never
/// run; the node finishes them as failed so that they do not stay
/// in progress (and undeletable) for ever.
pub fn lost_races(state: &TeamState, me: &PublicKey) -> Vec<(Deployment, String)> {
    let me = me.to_hex();
    state
        .deployments
        .values()
        .filter(|d| d.node == me && d.status == DeploymentStatus::InProgress)
        .filter(|d| d.finished_try < d.tries)
        .filter_map(|d| {
            let winner = shoal_protocol::view::conflict_winner(state, d)?;
            Some((d.clone(), winner.id.clone()))
        })
        .collect()
}

/// The deployments whose containers are on this node's runtime but which
/// the state no longer holds (deleted with `deploy delete`, `product
/// remove`, or before `node remove`), with their prefix: this node tears
/// them down. `found` are the team's containers; a deployment the state
/// still holds is never listed, whatever its status or node.
pub fn orphans(state: &TeamState, found: &[ContainerInfo]) -> Vec<(String, String)> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for c in found {
        if c.deployment.is_empty() || state.deployments.contains_key(&c.deployment) {
            continue;
        }
        out.entry(c.deployment.clone())
            .or_insert_with(|| c.prefix.clone());
    }
    out.into_iter().collect()
}

/// Whether deployment `deployment`, deleted, was deleted with its volumes
/// (`deployment.delete-volumes` left a `remove-volumes` command for `node`).
pub fn volumes_go(state: &TeamState, node: &str, deployment: &str) -> bool {
    state.commands.values().any(|c| {
        c.node == node && c.action == ContainerAction::RemoveVolumes && c.container == deployment
    })
}

/// The running executor of one team.
#[derive(Debug)]
pub struct Executor {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Executor {
    /// Spawns the actor; it stops when `cancel` fires (tries in flight are
    /// abandoned and run again at the next start).
    pub fn spawn(
        team: TeamId,
        sync: SyncHandle,
        key: SecretKey,
        store: Arc<Store>,
        runtime: RuntimeFactory,
        open: Unsealer,
        cancel: CancellationToken,
    ) -> Executor {
        let actor = Actor {
            team,
            changes: sync.subscribe(),
            sync,
            key,
            store,
            runtime,
            open,
            cancel: cancel.clone(),
            running: BTreeMap::new(),
            commands: BTreeSet::new(),
            tasks: JoinSet::new(),
            last_sweep: None,
        };
        Executor {
            cancel,
            task: tokio::spawn(actor.run()),
        }
    }

    /// Stops the actor and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

struct Actor {
    team: TeamId,
    sync: SyncHandle,
    changes: watch::Receiver<u64>,
    key: SecretKey,
    store: Arc<Store>,
    runtime: RuntimeFactory,
    open: Unsealer,
    cancel: CancellationToken,
    /// Prefix → (deployment, try) running now; a teardown holds its prefix
    /// as (`teardown:<deployment>`, 0).
    running: BTreeMap<String, (String, u32)>,
    /// Container commands being carried out now.
    commands: BTreeSet<String>,
    tasks: JoinSet<(String, String, u32)>,
    /// The state's change counter and the time of the last look for
    /// containers of deleted deployments.
    last_sweep: Option<(u64, tokio::time::Instant)>,
}

impl Actor {
    async fn run(mut self) {
        let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => break,
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.scan().await;
                }
                _ = rescan.tick() => self.scan().await,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok((prefix, id, _)) = done {
                        if prefix.is_empty() {
                            self.commands.remove(&id);
                        } else {
                            self.running.remove(&prefix);
                        }
                    }
                    self.scan().await;
                }
            }
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        debug!(team = %self.team.short(), "executor stopped");
    }

    /// Carries out `container.command` ops that target this node and were
    /// not carried out yet (each once; the result stays on the node).
    async fn run_commands(&mut self) {
        let me = self.key.public().to_hex();
        let found = self
            .sync
            .read(move |r| {
                let s = r.state();
                let mine: Vec<_> = s
                    .commands
                    .values()
                    // Volume removal goes with the deployment's teardown.
                    .filter(|c| c.node == me && c.action != ContainerAction::RemoveVolumes)
                    .cloned()
                    .collect();
                let scope = if mine
                    .iter()
                    .any(|c| c.action == ContainerAction::PruneImages)
                {
                    prune_scope(s, &me)
                } else {
                    Default::default()
                };
                mine.into_iter()
                    .map(|c| (c, scope.clone()))
                    .collect::<Vec<_>>()
            })
            .await;
        let Ok(list) = found else {
            return;
        };
        let ns = format!("commands/{}", self.team.to_hex());
        for (c, (repos, keep)) in list {
            if self.commands.contains(&c.id)
                || matches!(self.store.get_local(&ns, &c.id), Ok(Some(_)))
            {
                continue;
            }
            self.commands.insert(c.id.clone());
            let runtime = Arc::clone(&self.runtime);
            let store = Arc::clone(&self.store);
            let (ns, team) = (ns.clone(), self.team);
            self.tasks.spawn(async move {
                let rt = runtime().await.map_err(|e| e.to_string());
                let line = if c.action == ContainerAction::PruneImages {
                    let result = match rt {
                        Ok(rt) => rt
                            .prune_images(&repos, &keep)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(removed) if removed.is_empty() => {
                            "done: prune-images: nothing to remove".to_owned()
                        }
                        Ok(removed) => {
                            format!("done: prune-images: removed {}", removed.join(" "))
                        }
                        Err(e) => format!("failed: prune-images: {e}"),
                    }
                } else {
                    let result = match rt {
                        Ok(rt) => rt
                            .command(&team.to_hex(), &c.container, c.action)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    match &result {
                        Ok(()) => format!("done: {} {}", c.action.as_str(), c.container),
                        Err(e) => format!("failed: {} {}: {e}", c.action.as_str(), c.container),
                    }
                };
                info!(team = %team.short(), command = %c.id, "{line}");
                if let Err(e) = store.put_local(&ns, &c.id, line.as_bytes()) {
                    warn!("cannot record command {}: {e}", c.id);
                }
                (String::new(), c.id, 0)
            });
        }
    }

    /// Finishes as failed the tries that lost a race for their slot.
    async fn fail_lost_races(&mut self) {
        let me = self.key.public();
        let Ok(lost) = self.sync.read(move |r| lost_races(r.state(), &me)).await else {
            return;
        };
        for (d, winner) in lost {
            let reason = format!(
                "in conflict: deployment {winner} was created earlier for the same version, node and prefix and runs instead"
            );
            let action = Action::DeploymentFinish {
                id: d.id.clone(),
                attempt: d.tries,
                outcome: Outcome::Failed { reason },
                containers: BTreeMap::new(),
                events: Vec::new(),
                frozen: None,
            };
            let key = &self.key;
            let done = self
                .sync
                .write_with(key.public(), action, |body| {
                    body.sign(key).map_err(|e| e.to_string())
                })
                .await;
            match done {
                Ok(_) => {
                    info!(team = %self.team.short(), deployment = %d.id, %winner, "finished a deployment that lost its slot")
                }
                Err(e) => {
                    warn!(team = %self.team.short(), deployment = %d.id, "cannot finish a deployment in conflict: {e}")
                }
            }
        }
    }

    /// Tears down the containers of deployments the state no longer holds
    /// (also those deleted while this node was offline). Looks when the
    /// state changed, else every [`SWEEP_INTERVAL`]; never in a prefix
    /// where a try runs.
    async fn tear_down_deleted(&mut self) {
        let version = *self.changes.borrow();
        if let Some((seen, at)) = self.last_sweep
            && seen == version
            && at.elapsed() < SWEEP_INTERVAL
        {
            return;
        }
        self.last_sweep = Some((version, tokio::time::Instant::now()));
        let Ok(runtime) = (self.runtime)().await else {
            return;
        };
        let team = self.team.to_hex();
        let found = match runtime.containers(&team, None).await {
            Ok(found) => found,
            Err(e) => {
                debug!(team = %self.team.short(), "cannot list containers: {e}");
                return;
            }
        };
        if found.is_empty() {
            return;
        }
        let me = self.key.public().to_hex();
        let read = self.sync.read(move |r| {
            orphans(r.state(), &found)
                .into_iter()
                .map(|(d, p)| {
                    let volumes = volumes_go(r.state(), &me, &d);
                    (d, p, volumes)
                })
                .collect::<Vec<_>>()
        });
        let Ok(gone) = read.await else {
            return;
        };
        for (deployment, prefix, volumes) in gone {
            let id = format!("teardown:{deployment}");
            if self.running.contains_key(&prefix) {
                continue;
            }
            // The prefix is busy until the teardown ends: no try runs there
            // meanwhile.
            self.running.insert(prefix.clone(), (id.clone(), 0));
            let runtime = Arc::clone(&runtime);
            let (team, short) = (team.clone(), self.team.short());
            self.tasks.spawn(async move {
                match runtime.teardown(&team, &deployment, &prefix, volumes).await {
                    Ok(removed) => info!(
                        team = %short, %deployment, %prefix,
                        containers = ?removed.containers, networks = ?removed.networks,
                        volumes = ?removed.volumes,
                        "tore down a deleted deployment"
                    ),
                    Err(e) => warn!(
                        team = %short, %deployment, %prefix,
                        "cannot tear down a deleted deployment: {e}"
                    ),
                }
                (prefix, id, 0)
            });
        }
    }

    async fn scan(&mut self) {
        self.run_commands().await;
        self.tear_down_deleted().await;
        self.fail_lost_races().await;
        let me = self.key.public();
        let found = self.sync.read(move |r| due(r.state(), &me)).await;
        let Ok(list) = found else {
            return;
        };
        let busy: BTreeSet<String> = self.running.keys().cloned().collect();
        for d in list {
            if busy.contains(&d.prefix) || self.running.contains_key(&d.prefix) {
                continue;
            }
            self.running
                .insert(d.prefix.clone(), (d.id.clone(), d.tries));
            let job = Try {
                team: self.team,
                sync: self.sync.clone(),
                key: self.key.clone(),
                store: Arc::clone(&self.store),
                runtime: Arc::clone(&self.runtime),
                open: Arc::clone(&self.open),
                cancel: self.cancel.clone(),
                seq: std::sync::atomic::AtomicU32::new(0),
            };
            self.tasks.spawn(async move {
                let (prefix, id, attempt) = (d.prefix.clone(), d.id.clone(), d.tries);
                job.run(d).await;
                (prefix, id, attempt)
            });
        }
    }
}

/// One try, run in its own task.
struct Try {
    team: TeamId,
    sync: SyncHandle,
    key: SecretKey,
    store: Arc<Store>,
    runtime: RuntimeFactory,
    open: Unsealer,
    cancel: CancellationToken,
    /// Number of the last progress line written for this try.
    seq: std::sync::atomic::AtomicU32,
}

fn short_line(s: &str) -> String {
    if s.chars().count() <= MAX_EVENT_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_EVENT_CHARS - 1).collect();
    out.push('…');
    out
}

impl Try {
    fn record_key(d: &Deployment) -> String {
        format!("{}/{}", d.id, d.tries)
    }

    /// Keeps one line of the try's detailed progress in the store (what
    /// `deploy logs` shows). Lines of a try resumed after a restart follow
    /// the ones written before it.
    fn progress(&self, d: &Deployment, line: &str) {
        use std::sync::atomic::Ordering;
        let ns = crate::progress::progress_ns(&self.team, &d.id);
        if self.seq.load(Ordering::Relaxed) == 0 {
            let listed = self.store.list_local(&ns).unwrap_or_default();
            let before = listed
                .iter()
                .filter(|(k, _)| crate::progress::progress_try(k) == Some(d.tries))
                .count();
            self.seq.store(
                u32::try_from(before).unwrap_or(u32::MAX - 1),
                Ordering::Relaxed,
            );
            let old = crate::progress::progress_to_prune(
                listed.iter().map(|(k, _)| k.as_str()),
                d.tries,
                PROGRESS_TRIES_KEPT,
            );
            if !old.is_empty()
                && let Err(e) = self.store.delete_local_keys(&ns, &old)
            {
                debug!(deployment = %d.id, "cannot prune old progress lines: {e}");
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let key = crate::progress::progress_key(d.tries, seq);
        if let Err(e) = self.store.put_local(&ns, &key, line.as_bytes()) {
            debug!(deployment = %d.id, "cannot keep a progress line: {e}");
        }
    }

    async fn run(self, d: Deployment) {
        let mut events = Vec::new();
        // A try started before a crash and never reported is run again.
        let key = Self::record_key(&d);
        let ns = format!("{LOCAL_NS}/{}", self.team.to_hex());
        if let Ok(Some(_)) = self.store.get_local(&ns, &key) {
            events.push("resumed after the node restarted".to_string());
            self.progress(
                &d,
                &format!("try {}: resumed after the node restarted", d.tries),
            );
        } else {
            self.progress(&d, &format!("try {}: started", d.tries));
        }
        if let Err(e) = self.store.put_local(&ns, &key, &now_ms().to_be_bytes()) {
            warn!(team = %self.team.short(), "cannot record the try: {e}");
        }
        info!(team = %self.team.short(), deployment = %d.id, attempt = d.tries, prefix = %d.prefix, "deploying");
        let state = match self.sync.state().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let started = std::time::Instant::now();
        let outcome = self.execute(&state, &d, &mut events).await;
        crate::metrics::record_try(
            if outcome.is_ok() {
                "successful"
            } else {
                "failed"
            },
            started.elapsed().as_secs_f64(),
        );
        let (outcome, containers, frozen) = match outcome {
            Ok((containers, frozen)) => (Outcome::Successful, containers, Some(frozen)),
            Err((reason, containers)) => (Outcome::Failed { reason }, containers, None),
        };
        match &outcome {
            Outcome::Successful => self.progress(&d, &format!("try {}: successful", d.tries)),
            Outcome::Failed { reason } => {
                self.progress(&d, &format!("try {}: failed: {reason}", d.tries));
            }
        }
        let events: Vec<String> = events
            .iter()
            .rev()
            .take(MAX_REPORTED_EVENTS)
            .rev()
            .map(|e| short_line(e))
            .collect();
        let action = Action::DeploymentFinish {
            id: d.id.clone(),
            attempt: d.tries,
            outcome: outcome.clone(),
            containers,
            events,
            frozen,
        };
        match self.report(action).await {
            Ok(()) => {
                info!(team = %self.team.short(), deployment = %d.id, attempt = d.tries, ?outcome, "reported");
                let _ = self.store.delete_local(&ns, &key);
            }
            Err(e) => {
                warn!(team = %self.team.short(), deployment = %d.id, "cannot report the try: {e}")
            }
        }
    }

    async fn report(&self, action: Action) -> Result<(), SyncError> {
        let key = &self.key;
        self.sync
            .write_with(key.public(), action, |body| {
                body.sign(key).map_err(|e| e.to_string())
            })
            .await
            .map(|_| ())
    }

    async fn execute(
        &self,
        state: &TeamState,
        d: &Deployment,
        events: &mut Vec<String>,
    ) -> Result<
        (BTreeMap<String, ContainerState>, FrozenConfig),
        (String, BTreeMap<String, ContainerState>),
    > {
        let none = BTreeMap::new;
        let (plan, frozen) =
            plan(self.team, state, d, &self.open).map_err(|e| (e.to_string(), none()))?;
        let runtime = (self.runtime)()
            .await
            .map_err(|e| (e.to_string(), none()))?;
        let (tx, mut rx) = mpsc::channel::<ProgressEvent>(PROGRESS_CHANNEL_CAPACITY);
        let deploy = runtime.deploy(&plan, &tx);
        tokio::pin!(deploy);
        let result = loop {
            tokio::select! {
                () = self.cancel.cancelled() => return Err(("the node stopped during the try".into(), none())),
                r = &mut deploy => break r,
                Some(ev) = rx.recv() => {
                    let line = match &ev.container {
                        Some(c) => format!("{:?} {c}: {}", ev.step, ev.message),
                        None => format!("{:?}: {}", ev.step, ev.message),
                    };
                    self.progress(d, &line);
                    events.push(line);
                }
            }
        };
        while let Ok(ev) = rx.try_recv() {
            let line = format!("{:?}: {}", ev.step, ev.message);
            self.progress(d, &line);
            events.push(line);
        }
        match result {
            Ok(out) => {
                events.extend(out.events.iter().cloned());
                Ok((out.containers, frozen))
            }
            Err(e) => {
                // What of this deployment is on the node now, so `deploy
                // show` tells the truth (other deployments' are not its).
                let containers = runtime
                    .containers(&plan.team, Some(&plan.prefix))
                    .await
                    .map(|list| {
                        list.into_iter()
                            .filter(|c| c.init.is_none() && c.deployment == plan.deployment)
                            .map(|c| (c.container, c.state))
                            .collect()
                    })
                    .unwrap_or_default();
                Err((e.to_string(), containers))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shoal_protocol::hlc::Hlc;

    fn deployment(id: &str) -> Deployment {
        Deployment {
            id: id.into(),
            product: "p".into(),
            version: "v".into(),
            node: "n".into(),
            prefix: "main".into(),
            note: String::new(),
            protected: false,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            status: DeploymentStatus::Obsolete,
            tries: 1,
            created: Hlc { ms: 1, c: 0 },
            created_by: String::new(),
            reason: None,
            finished_try: 1,
            containers: BTreeMap::new(),
            events: Vec::new(),
            frozen: None,
        }
    }

    fn container(name: &str, deployment: &str, prefix: &str) -> ContainerInfo {
        ContainerInfo {
            name: name.into(),
            id: name.into(),
            prefix: prefix.into(),
            container: name.into(),
            deployment: deployment.into(),
            version: "1".into(),
            try_number: 1,
            init: None,
            state: ContainerState {
                state: "running".into(),
                exit_code: None,
                image: String::new(),
            },
            status: String::new(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn only_deployments_gone_from_the_state_are_orphans() {
        let mut state = TeamState::default();
        state.deployments.insert("kept".into(), deployment("kept"));
        let found = vec![
            container("main-a", "kept", "main"),
            container("main-b", "gone", "main"),
            container("main-b.prev-up", "gone", "main"),
            container("other-c", "gone-too", "other"),
            container("stray", "", "main"),
        ];
        assert_eq!(
            orphans(&state, &found),
            vec![
                ("gone".to_owned(), "main".to_owned()),
                ("gone-too".to_owned(), "other".to_owned())
            ]
        );
        assert!(orphans(&state, &found[..1]).is_empty());
    }
}
