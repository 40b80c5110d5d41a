//! Deterministic simulation of one team's replicas (§2, §3).
//!
//! Several node daemons write concurrently, each against its own causal past,
//! and ops travel between them late, out of order and more than once. Once
//! everything has been delivered everywhere, every replica must hold the same
//! document, the same typed view, the same applied ops and the same
//! quarantine. The second half checks corrupted and forged ops: each is
//! refused on every replica, whatever the order it arrives in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use shoal_protocol::testkit::{Rng, move_start};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use automerge::legacy;
use automerge::transaction::CommitOptions;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{FileFailurePersistence, TestRunner};

use shoal_protocol::action::{Action, DeploymentEdit, Outcome};
use shoal_protocol::doc::{AtHeads, read_state, write_entity};
use shoal_protocol::effect::{self, Write};
use shoal_protocol::model::{
    Collection, ContainerConfig, Deployment, DeploymentStatus, Entity, FrozenConfig,
    HUB_REGISTRY_ID, Image, ImageRef, InviteKind, ProductKind, RegistryKind, Role, Runtime,
    Version, VersionKind,
};
use shoal_protocol::op::OP_VERSION;
use shoal_protocol::replica::join_proof_message;
use shoal_protocol::testkit::{self, act, invite_and_join, key, new_member, new_node, sign_op};
use shoal_protocol::{
    Hlc, Op, OpBody, OpHash, PublicKey, Rejection, Replica, RuleError, SecretKey,
};
use shoal_protocol::{rules, view};

const T0: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;

/// `cases` unless `PROPTEST_CASES` asks for more (soak runs).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// Keys: the owner, node daemons, members present from the start, members
// joining during the run, and the one-time key of every invite.
fn owner_key() -> SecretKey {
    key(1)
}
fn node_key(i: usize) -> SecretKey {
    if i == 0 { key(2) } else { key(30 + i as u8) }
}
fn member_key(i: usize) -> SecretKey {
    key(10 + i as u8)
}
fn newcomer_key(k: usize) -> SecretKey {
    key(100 + k as u8)
}
fn invite_key() -> SecretKey {
    key(200)
}

fn ids<T>(m: &shoal_protocol::model::Table<T>) -> Vec<String> {
    m.keys().cloned().collect()
}

fn pick<T: Clone>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[i as usize % v.len()].clone())
}

fn image(name: &str, registry: &str, tag: &str) -> Image {
    Image {
        name: name.into(),
        image: ImageRef {
            registry: registry.into(),
            name: "shoal-test/busybox".into(),
            tag: tag.into(),
        },
        config: ContainerConfig::default(),
    }
}

/// The team every run starts from.
#[derive(Debug, Clone)]
struct Setup {
    /// Node daemons, one replica each; the first `docker` run docker, the
    /// others are laptops (runtime `none`) that only replicate.
    replicas: usize,
    docker: usize,
    /// Members besides the owner: admin (else user), and a mask of further
    /// replicas they also write from.
    members: Vec<(bool, u8)>,
    owner_mask: u8,
    skew_seed: u64,
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        3..=7usize,
        2..=3usize,
        prop::collection::vec((any::<bool>(), any::<u8>()), 2..=4),
        any::<u8>(),
        any::<u64>(),
    )
        .prop_map(|(replicas, docker, members, owner_mask, skew_seed)| Setup {
            replicas,
            docker,
            members,
            owner_mask,
            skew_seed,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ProductComplex,
    ProductSimple,
    VersionRolling,
    VersionIncremental,
    ImageAdd,
    VersionIncrease,
    DeploymentCreate,
    DeploymentUpdate,
    Start,
    Finish,
    Delete,
    Rollback,
    MemberRole,
    MemberRemove,
    Invite,
    Join,
    RegistryAdd,
    /// A member's daemon sends an op that bypassed the rules (the owner's
    /// removal); the member never writes from that daemon again.
    Forge,
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        2 => Just(Kind::ProductComplex),
        2 => Just(Kind::ProductSimple),
        2 => Just(Kind::VersionRolling),
        3 => Just(Kind::VersionIncremental),
        5 => Just(Kind::ImageAdd),
        2 => Just(Kind::VersionIncrease),
        7 => Just(Kind::DeploymentCreate),
        3 => Just(Kind::DeploymentUpdate),
        6 => Just(Kind::Start),
        6 => Just(Kind::Finish),
        2 => Just(Kind::Delete),
        1 => Just(Kind::Rollback),
        1 => Just(Kind::MemberRole),
        1 => Just(Kind::MemberRemove),
        1 => Just(Kind::Invite),
        1 => Just(Kind::Join),
        1 => Just(Kind::RegistryAdd),
        4 => Just(Kind::Forge),
    ]
}

/// One step: a writer replica makes one op (if the rules let it), then ops
/// travel between replicas by the schedule derived from `delivery`. When
/// `twin` is a multiple of 3, a second writer makes the same step before anything is
/// delivered: two ops made concurrently on purpose.
#[derive(Debug, Clone)]
struct Step {
    writer: u8,
    twin: u8,
    author: u8,
    kind: Kind,
    a: u8,
    b: u8,
    c: u8,
    delivery: u64,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    (
        (any::<u8>(), any::<u8>()),
        any::<u8>(),
        kind_strategy(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u64>(),
    )
        .prop_map(|((writer, twin), author, kind, a, b, c, delivery)| Step {
            writer,
            twin,
            author,
            kind,
            a,
            b,
            c,
            delivery,
        })
}

/// One node daemon: its replica, its key, and the member keys used on it.
struct Peer {
    replica: Replica,
    node: SecretKey,
    writers: Vec<SecretKey>,
    skew_ms: i64,
}

impl Peer {
    fn now(&self, clock: u64) -> u64 {
        clock.saturating_add_signed(self.skew_ms)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    made: usize,
    refused: usize,
    /// Ops made while the writer lacked some op already made elsewhere.
    concurrent: usize,
    /// Offers that had to wait for a missing dependency.
    waited: usize,
    duplicates: usize,
    /// Steps after which some replica saw a deployment that lost a
    /// concurrent conflict for its slot.
    conflicts: usize,
    /// Hostile ops sent (see `Sim::forge`).
    forged: usize,
}

struct Sim {
    genesis: Op,
    setup: Vec<Op>,
    peers: Vec<Peer>,
    /// Ops made during the run, in the order they were made.
    ops: Vec<Op>,
    /// Per replica, the indexes into `ops` it has been offered.
    delivered: Vec<BTreeSet<usize>>,
    clock: u64,
    newcomers: usize,
    /// Ops made by bypassing the rules or editing an honest op's change or
    /// clock: every replica must refuse them.
    forged: BTreeSet<OpHash>,
    /// The forged ops that carry a far-future time: they wait (or are
    /// refused as a fork once their seq is taken), never apply.
    future: BTreeSet<OpHash>,
    stats: Stats,
}

impl Sim {
    fn new(setup: &Setup) -> Sim {
        let n = setup.replicas;
        let owner = owner_key();
        let origin0 = node_key(0).public();
        let runtime = |i: usize| {
            if i < setup.docker {
                Runtime::Docker
            } else {
                Runtime::None
            }
        };
        let mut clock = T0;
        let genesis = testkit::genesis(&owner, &node_key(0), clock);
        let mut base = Replica::from_genesis(genesis.clone()).unwrap();
        let mut ops = Vec::new();
        let mut writers: Vec<Vec<SecretKey>> = vec![Vec::new(); n];
        for (k, w) in writers.iter_mut().enumerate() {
            if k == 0 || setup.owner_mask >> (k % 8) & 1 == 1 {
                w.push(owner.clone());
            }
        }
        // Members join through invites; the first ones enrol the nodes.
        for (i, &(admin, mask)) in setup.members.iter().enumerate() {
            clock += 1000;
            let m = member_key(i);
            let j = i + 1;
            let nk = node_key(j);
            let name = format!("node-{j}");
            let node = (j < n).then(|| (&nk, name.as_str(), runtime(j)));
            let role = if admin { Role::Admin } else { Role::User };
            let made = invite_and_join(
                &mut base,
                &owner,
                origin0,
                &m,
                &format!("member-{i}"),
                role,
                node,
                clock,
            )
            .unwrap();
            ops.extend(made);
            let home = if j < n { j } else { 0 };
            for (k, w) in writers.iter_mut().enumerate() {
                if k == home || mask >> (k % 8) & 1 == 1 {
                    w.push(m.clone());
                }
            }
        }
        // Remaining nodes join with node tickets.
        for j in setup.members.len() + 1..n {
            clock += 1000;
            let c = testkit::ctx(&base, &owner, origin0, clock);
            let id = c.new_id(0);
            let name = format!("node-{j}");
            let (inv, _) = act(
                &mut base,
                &owner,
                origin0,
                clock,
                Action::InviteCreate {
                    id: id.clone(),
                    kind: InviteKind::Node {
                        name: name.clone(),
                        runtime: runtime(j),
                    },
                    invite_key: invite_key().public(),
                    expires: Hlc::new(clock + DAY_MS, 0),
                },
            )
            .unwrap();
            let nk = node_key(j);
            let proof = invite_key().sign(&join_proof_message(&base.team(), &id, &nk.public()));
            let (join, _) = act(
                &mut base,
                &nk,
                nk.public(),
                clock + 1,
                Action::NodeJoin {
                    invite: id,
                    node: Box::new(new_node(&nk, &name, runtime(j))),
                    proof,
                },
            )
            .unwrap();
            ops.extend([inv, join]);
        }
        assert_eq!(base.ops().len(), 1 + ops.len(), "the setup applies");
        assert!(base.quarantine().is_empty());
        assert_eq!(base.state().nodes.len(), n);

        let mut rng = Rng(setup.skew_seed);
        let peers = writers
            .into_iter()
            .enumerate()
            .map(|(k, writers)| {
                let mut replica = Replica::from_genesis(genesis.clone()).unwrap();
                for op in &ops {
                    let rep = replica.apply(op.clone(), clock);
                    assert_eq!(rep.applied, vec![op.hash()]);
                }
                Peer {
                    replica,
                    node: node_key(k),
                    writers,
                    skew_ms: rng.below(6001) as i64 - 3000,
                }
            })
            .collect();
        Sim {
            genesis,
            setup: ops,
            peers,
            ops: Vec::new(),
            delivered: vec![BTreeSet::new(); n],
            clock,
            newcomers: 0,
            forged: BTreeSet::new(),
            future: BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    /// The author and action of a step, from the writer's own state. When
    /// the state lacks what the chosen kind needs (no product yet, no
    /// deployment to start...), the step makes that prerequisite instead.
    fn action(&mut self, w: usize, s: &Step) -> Option<(SecretKey, Action, bool)> {
        let newcomer = newcomer_key(self.newcomers);
        let peer = &self.peers[w];
        let st = peer.replica.state();
        let now = peer.now(self.clock);
        let origin = peer.node.public();
        // Members this daemon still believes active (the rules refuse the others).
        let active: Vec<SecretKey> = peer
            .writers
            .iter()
            .filter(|k| view::effective_role(st, &k.public().to_hex()).is_some())
            .cloned()
            .collect();
        let member = pick(&active, s.author);
        let c = |author: &SecretKey| peer.replica.next_context(author.public(), origin, now);
        let deployments = |f: &dyn Fn(&Deployment) -> bool| {
            st.deployments
                .values()
                .filter(|d| f(d))
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        };
        let versions = |f: &dyn Fn(&Version) -> bool| {
            st.versions
                .values()
                .filter(|v| f(v))
                .map(|v| v.id.clone())
                .collect::<Vec<_>>()
        };
        let mut kind = s.kind;
        loop {
            let fallback = match kind {
                Kind::ProductComplex | Kind::ProductSimple => {
                    let author = member?;
                    let ctx = c(&author);
                    let simple = kind == Kind::ProductSimple;
                    let action = Action::ProductCreate {
                        id: ctx.new_id(0),
                        name: ["web", "db", "queue"][s.a as usize % 3].into(),
                        kind: if simple {
                            ProductKind::Simple
                        } else {
                            ProductKind::Complex
                        },
                        description: String::new(),
                        version: simple.then(|| ctx.new_id(1)),
                    };
                    return Some((author, action, false));
                }
                Kind::VersionRolling | Kind::VersionIncremental => {
                    let complex: Vec<String> = st
                        .products
                        .values()
                        .filter(|p| p.kind == ProductKind::Complex)
                        .map(|p| p.id.clone())
                        .collect();
                    if let Some(product) = pick(&complex, s.a) {
                        let author = member?;
                        let action = Action::VersionCreate {
                            id: c(&author).new_id(0),
                            product,
                            name: format!("{}.0.0", s.b % 4),
                            kind: if kind == Kind::VersionRolling {
                                VersionKind::Rolling
                            } else {
                                VersionKind::Incremental
                            },
                            changelog: String::new(),
                            auto_copy: s.c.is_multiple_of(2),
                        };
                        return Some((author, action, false));
                    }
                    Kind::ProductComplex
                }
                Kind::ImageAdd => {
                    let open = versions(&|v| rules::version_frozen(st, v).is_none());
                    if let Some(version) = pick(&open, s.a) {
                        let author = member?;
                        let registry = pick(&ids(&st.registries), s.c)?;
                        let name = ["app", "db", "web"][s.b as usize % 3];
                        let action = Action::ImageAdd {
                            version,
                            image: Box::new(image(name, &registry, &format!("1.{}", s.c % 3))),
                        };
                        return Some((author, action, false));
                    }
                    Kind::VersionIncrease
                }
                Kind::VersionIncrease => {
                    let open =
                        versions(&|v| v.kind == VersionKind::Incremental && v.child.is_none());
                    if let Some(from) = pick(&open, s.a) {
                        let author = member?;
                        let v = &st.versions[&from];
                        let ctx = c(&author);
                        let copies = if v.auto_copy {
                            let n = effect::copy_sources(st, v).len() as u32;
                            (1..=n).map(|k| ctx.new_id(k)).collect()
                        } else {
                            Vec::new()
                        };
                        let action = Action::VersionIncrease {
                            from,
                            id: ctx.new_id(0),
                            name: format!("{}.{}.0", s.b % 4, 1 + s.c % 3),
                            changelog: String::new(),
                            copies,
                        };
                        return Some((author, action, false));
                    }
                    Kind::VersionIncremental
                }
                Kind::DeploymentCreate => {
                    // Mostly the newest version, docker nodes and prefix
                    // `a`, so that concurrent creations collide on a slot.
                    let mut ready: Vec<&Version> = st
                        .versions
                        .values()
                        .filter(|v| !v.images.is_empty())
                        .collect();
                    ready.sort_by_key(|v| std::cmp::Reverse((v.created, v.id.clone())));
                    let newest = ready.first().map(|v| v.id.clone());
                    let ready: Vec<String> = ready.into_iter().map(|v| v.id.clone()).collect();
                    let version = if !s.a.is_multiple_of(4) {
                        newest
                    } else {
                        pick(&ready, s.a / 4)
                    };
                    if let Some(version) = version {
                        let author = member?;
                        let docker: Vec<String> = st
                            .nodes
                            .values()
                            .filter(|n| n.runtime == Runtime::Docker || s.b % 8 == 7)
                            .map(|n| n.key.clone())
                            .collect();
                        let node: PublicKey = pick(&docker, s.b)?.parse().unwrap();
                        let action = Action::DeploymentCreate {
                            id: c(&author).new_id(0),
                            version,
                            node,
                            prefix: if s.c.is_multiple_of(4) { "b" } else { "a" }.into(),
                            env: BTreeMap::new(),
                            secrets: BTreeMap::new(),
                            instances: BTreeMap::new(),
                            protected: s.c % 7 == 3,
                            note: String::new(),
                            force: false,
                        };
                        return Some((author, action, false));
                    }
                    Kind::ImageAdd
                }
                Kind::DeploymentUpdate | Kind::Delete => {
                    if let Some(id) = pick(&deployments(&|_| true), s.a) {
                        let author = member?;
                        if kind == Kind::Delete {
                            return Some((author, Action::DeploymentDelete { id }, false));
                        }
                        let mut edit = DeploymentEdit::default();
                        match s.b % 4 {
                            0 => edit.note = Some(format!("note {}", s.c)),
                            1 => edit.env = Some([("LEVEL".to_string(), s.c.to_string())].into()),
                            2 => edit.prefix = Some(["a", "b"][s.c as usize % 2].into()),
                            _ => edit.protected = Some(s.c.is_multiple_of(2)),
                        }
                        return Some((author, Action::DeploymentUpdate { id, edit }, false));
                    }
                    Kind::DeploymentCreate
                }
                Kind::Start => {
                    let deployable = deployments(&|d| rules::deployment_deployable(st, d));
                    if let Some(id) = pick(&deployable, s.a) {
                        let author = member?;
                        let action = Action::DeploymentStart {
                            id,
                            force: s.b.is_multiple_of(5),
                        };
                        return Some((author, action, false));
                    }
                    Kind::DeploymentCreate
                }
                Kind::Finish => {
                    // Only this daemon holds its node key.
                    let me = origin.to_hex();
                    let running =
                        deployments(&|d| d.node == me && d.status == DeploymentStatus::InProgress);
                    if let Some(id) = pick(&running, s.a) {
                        let d = &st.deployments[&id];
                        let v = st.versions.get(&d.version)?;
                        let outcome = if s.b.is_multiple_of(3) {
                            Outcome::Failed {
                                reason: "exited 1".into(),
                            }
                        } else {
                            Outcome::Successful
                        };
                        let frozen = matches!(outcome, Outcome::Successful).then(|| {
                            d.frozen.clone().unwrap_or_else(|| FrozenConfig {
                                version_name: v.name.clone(),
                                images: v.images.clone(),
                            })
                        });
                        let action = Action::DeploymentFinish {
                            id,
                            attempt: d.tries,
                            outcome,
                            containers: BTreeMap::new(),
                            events: vec!["pulled".into(), "started".into()],
                            frozen,
                        };
                        return Some((peer.node.clone(), action, false));
                    }
                    Kind::Start
                }
                Kind::Rollback => {
                    let obsolete = deployments(&|d| d.status == DeploymentStatus::Obsolete);
                    if let Some(id) = pick(&obsolete, s.a) {
                        let author = member?;
                        let action = Action::DeploymentRollback {
                            id,
                            force: s.b.is_multiple_of(5),
                        };
                        return Some((author, action, false));
                    }
                    Kind::Start
                }
                Kind::MemberRole | Kind::MemberRemove => {
                    let author = member?;
                    let members: Vec<String> = st
                        .members
                        .values()
                        .filter(|m| m.removed.is_none() && m.role != Role::Owner)
                        .map(|m| m.key.clone())
                        .collect();
                    let target: PublicKey = pick(&members, s.a)?.parse().unwrap();
                    let action = if kind == Kind::MemberRole {
                        Action::MemberRole {
                            member: target,
                            role: if s.b.is_multiple_of(2) {
                                Role::Admin
                            } else {
                                Role::User
                            },
                        }
                    } else {
                        Action::MemberRemove { member: target }
                    };
                    return Some((author, action, false));
                }
                Kind::Invite => {
                    let author = member?;
                    let action = Action::InviteCreate {
                        id: c(&author).new_id(0),
                        kind: InviteKind::Member {
                            role: if s.a.is_multiple_of(2) {
                                Role::User
                            } else {
                                Role::Admin
                            },
                        },
                        invite_key: invite_key().public(),
                        expires: Hlc::new(now + DAY_MS, 0),
                    };
                    return Some((author, action, false));
                }
                Kind::Join => {
                    let open: Vec<String> = st
                        .invites
                        .values()
                        .filter(|i| matches!(i.kind, InviteKind::Member { .. }) && !i.revoked)
                        .filter(|i| {
                            !st.members
                                .values()
                                .any(|m| m.invite.as_ref() == Some(&i.id))
                        })
                        .map(|i| i.id.clone())
                        .collect();
                    if let Some(invite) = pick(&open, s.a) {
                        let proof = invite_key().sign(&join_proof_message(
                            &peer.replica.team(),
                            &invite,
                            &newcomer.public(),
                        ));
                        let action = Action::MemberJoin {
                            invite,
                            member: Box::new(new_member(
                                &newcomer,
                                &format!("newcomer-{}", self.newcomers),
                            )),
                            node: None,
                            proof,
                        };
                        return Some((newcomer, action, true));
                    }
                    Kind::Invite
                }
                Kind::RegistryAdd => {
                    let author = member?;
                    let action = Action::RegistryAdd {
                        id: c(&author).new_id(0),
                        name: ["r1", "r2"][s.a as usize % 2].into(),
                        kind: RegistryKind::Unchecked,
                        url: None,
                        namespace: None,
                        user: None,
                        password: None,
                    };
                    return Some((author, action, false));
                }
                Kind::Forge => return None,
            };
            kind = fallback;
        }
    }

    fn step(&mut self, s: &Step) {
        self.clock += 1000;
        let n = self.peers.len();
        let w = s.writer as usize % n;
        self.write(w, s);
        if s.twin.is_multiple_of(3) {
            self.write((w + 1 + s.twin as usize / 3 % (n - 1)) % n, s);
        }
        self.deliver(s.delivery);
        let conflicted = self.peers.iter().any(|p| {
            let st = p.replica.state();
            st.deployments
                .values()
                .any(|d| view::deployment_in_conflict(st, d))
        });
        self.stats.conflicts += usize::from(conflicted);
    }

    /// Replica `w` makes the step's op, if the rules let it.
    fn write(&mut self, mut w: usize, s: &Step) {
        let n = self.peers.len();
        if s.kind == Kind::Finish {
            // A daemon with a deployment of its own to finish, if any.
            let running = |p: &Peer| {
                let me = p.node.public().to_hex();
                p.replica
                    .state()
                    .deployments
                    .values()
                    .any(|d| d.node == me && d.status == DeploymentStatus::InProgress)
            };
            w = (0..n)
                .map(|k| (w + k) % n)
                .find(|&k| running(&self.peers[k]))
                .unwrap_or(w);
        }
        if s.kind == Kind::Forge {
            self.forge(w, s);
        } else if let Some((author, action, join)) = self.action(w, s) {
            let known = 1 + self.setup.len() + self.ops.len() - self.forged.len();
            let peer = &mut self.peers[w];
            let now = peer.now(self.clock);
            let origin = peer.node.public();
            match sign_op(&mut peer.replica, &author, origin, now, action) {
                Err(_) => self.stats.refused += 1,
                Ok(op) => {
                    if peer.replica.ops().len() < known {
                        self.stats.concurrent += 1;
                    }
                    let rep = peer.replica.apply(op.clone(), now);
                    assert_eq!(
                        rep.applied,
                        vec![op.hash()],
                        "replica {w} refuses the op it just prepared: {:?} {rep:?}",
                        op.body.action
                    );
                    if join {
                        peer.writers.push(author);
                        self.newcomers += 1;
                    }
                    self.delivered[w].insert(self.ops.len());
                    self.ops.push(op);
                    self.stats.made += 1;
                }
            }
        }
    }

    /// A hostile author on daemon `w` sends a validly signed op that must be
    /// refused everywhere: one that bypassed the rules, or an honest op whose
    /// change or clock it edited with automerge's public API. The author
    /// then goes on writing honestly from that daemon, reusing the seq.
    fn forge(&mut self, w: usize, s: &Step) {
        let variant = s.a % 9;
        let op = if variant == 0 {
            let peer = &self.peers[w];
            let Some(author) = pick(&peer.writers, s.author) else {
                return;
            };
            let action = Action::MemberRemove {
                member: owner_key().public(),
            };
            let now = peer.now(self.clock);
            let Some(op) = forge_op(&peer.replica, &author, &peer.node, now, action, |_| {}) else {
                return;
            };
            op
        } else if variant == 8 {
            // Writes outside its action: the owner's member entry.
            let peer = &self.peers[w];
            let Some(author) = pick(&peer.writers, s.author) else {
                return;
            };
            let st = peer.replica.state();
            let mut owner = st.members[&owner_key().public().to_hex()].clone();
            owner.name = "taken".into();
            let action = Action::TeamUpdate {
                name: "t".into(),
                description: String::new(),
            };
            let now = peer.now(self.clock);
            let Some(op) = forge_op(&peer.replica, &author, &peer.node, now, action, |w| {
                w.push(Write {
                    collection: Collection::Members,
                    id: owner.key.clone(),
                    value: Some(Entity::Member(owner)),
                })
            }) else {
                return;
            };
            op
        } else {
            // An honest op, edited.
            const KINDS: [Kind; 10] = [
                Kind::ProductComplex,
                Kind::ProductSimple,
                Kind::VersionRolling,
                Kind::VersionIncremental,
                Kind::ImageAdd,
                Kind::DeploymentCreate,
                Kind::DeploymentUpdate,
                Kind::Start,
                Kind::MemberRole,
                Kind::RegistryAdd,
            ];
            let honest_step = Step {
                kind: KINDS[usize::from(s.c) % KINDS.len()],
                ..s.clone()
            };
            let Some((author, action, false)) = self.action(w, &honest_step) else {
                return;
            };
            let clock = self.clock;
            let peer = &mut self.peers[w];
            let now = peer.now(clock);
            let Ok(honest) = sign_op(&mut peer.replica, &author, peer.node.public(), now, action)
            else {
                return;
            };
            let mut body = honest.body.clone();
            let change = automerge::Change::from_bytes(body.change.clone()).unwrap();
            let mut e = change.decode();
            e.hash = None;
            match variant {
                1 => {
                    let start = e.start_op.get() + 1 + u64::from(s.b % 3);
                    move_start(&mut e, start);
                }
                2 => {
                    let start = u64::from(u32::MAX) - e.operations.len() as u64 - 1;
                    move_start(&mut e, start);
                }
                3 => {
                    // A key the action does not name, in an object it writes.
                    let obj = e
                        .operations
                        .iter()
                        .map(|o| o.obj.clone())
                        .find(|o| *o != legacy::ObjectId::Root)
                        .unwrap_or(legacy::ObjectId::Root);
                    e.operations.push(legacy::Op {
                        action: legacy::OpType::Put(automerge::ScalarValue::Str("x".into())),
                        obj,
                        key: legacy::Key::Map("smuggled".into()),
                        pred: Vec::new().into(),
                        insert: false,
                    });
                }
                4 => {
                    // Preds: drop what an op overwrites, or claim to
                    // overwrite the first op of the whole document.
                    match e.operations.iter_mut().find(|o| !o.pred.is_empty()) {
                        Some(o) => o.pred = Vec::new().into(),
                        None => match e.operations.first_mut() {
                            Some(o) => {
                                let first = self.setup[0].log().actor();
                                o.pred = vec![legacy::OpId(1, first)].into();
                            }
                            None => e.deps.clear(),
                        },
                    }
                }
                5 => body.hlc = Hlc::new(body.hlc.ms, u32::MAX),
                6 => body.change.truncate(body.change.len() / 2),
                _ => {
                    // Far in the future: it waits (or is a fork once the
                    // author's next honest op took its seq).
                    body.hlc = Hlc::new(body.hlc.ms + DAY_MS, 0);
                    e.time = body.hlc.ms as i64;
                }
            }
            if !matches!(variant, 5 | 6) {
                body.change = automerge::Change::from(e).raw_bytes().to_vec();
            }
            let op = body.sign(&author).unwrap();
            if variant == 7 {
                self.future.insert(op.hash());
            }
            op
        };
        let peer = &mut self.peers[w];
        let now = peer.now(self.clock);
        let rep = peer.replica.apply(op.clone(), now);
        if self.future.contains(&op.hash()) {
            assert!(rep.applied.is_empty() && rep.rejected.is_empty(), "{rep:?}");
        } else {
            assert!(
                rep.applied.is_empty()
                    && matches!(rep.rejected.as_slice(), [(h, r)] if *h == op.hash() && hostile(r)),
                "variant {variant}: {rep:?}"
            );
        }
        self.forged.insert(op.hash());
        self.stats.forged += 1;
        if std::env::var_os("SHOAL_SIM_TRACE").is_some() {
            eprintln!("forged variant {variant}");
        }
        self.delivered[w].insert(self.ops.len());
        self.ops.push(op);
    }

    /// Each replica (unless cut off this step) gets a random subset of the
    /// ops it lacks, shuffled, with duplicates; the rest stay in flight.
    fn deliver(&mut self, seed: u64) {
        let mut rng = Rng(seed);
        for r in 0..self.peers.len() {
            if rng.chance(1, 4) {
                continue;
            }
            let mut batch: Vec<usize> = (0..self.ops.len())
                .filter(|i| !self.delivered[r].contains(i))
                .filter(|_| rng.chance(1, 2))
                .collect();
            let again: Vec<usize> = batch.iter().copied().filter(|_| rng.chance(1, 6)).collect();
            batch.extend(again);
            if !self.ops.is_empty() && rng.chance(1, 4) {
                batch.push(rng.below(self.ops.len()));
            }
            rng.shuffle(&mut batch);
            self.offer(r, &batch);
        }
    }

    fn offer(&mut self, r: usize, batch: &[usize]) {
        let peer = &mut self.peers[r];
        let now = peer.now(self.clock);
        for &i in batch {
            let rep = peer.replica.apply(self.ops[i].clone(), now);
            self.stats.waited += usize::from(!rep.waiting.is_empty());
            self.stats.duplicates += usize::from(rep.duplicate);
            self.delivered[r].insert(i);
        }
    }

    /// Everything to everyone, in a different order per replica, with duplicates.
    fn deliver_all(&mut self, seed: u64) {
        self.clock += 1000;
        let mut rng = Rng(seed);
        for r in 0..self.peers.len() {
            let mut batch: Vec<usize> = (0..self.ops.len()).collect();
            let again: Vec<usize> = batch.iter().copied().filter(|_| rng.chance(1, 5)).collect();
            batch.extend(again);
            rng.shuffle(&mut batch);
            self.offer(r, &batch);
            // Setup ops and the genesis again: already held, so duplicates.
            let peer = &mut self.peers[r];
            for op in self.setup.iter().chain([&self.genesis]) {
                if rng.chance(1, 4) {
                    let rep = peer.replica.apply(op.clone(), self.clock);
                    assert!(rep.duplicate && rep.applied.is_empty());
                }
            }
        }
    }

    fn check_converged(&mut self) {
        let every: BTreeSet<OpHash> = [&self.genesis]
            .into_iter()
            .chain(&self.setup)
            .chain(&self.ops)
            .map(Op::hash)
            .filter(|h| !self.forged.contains(h))
            .collect();
        let prints: Vec<Fingerprint> = self
            .peers
            .iter()
            .map(|p| fingerprint(&p.replica, &self.future))
            .collect();
        for (r, (peer, fp)) in self.peers.iter().zip(&prints).enumerate() {
            let replica = &peer.replica;
            let pending: Vec<_> = replica
                .pending()
                .filter(|(h, _)| !self.future.contains(h))
                .map(|(h, o)| (*h, o.body.action.name()))
                .collect();
            assert!(
                pending.is_empty(),
                "replica {r} still has pending ops: {pending:?}"
            );
            // An honest op is refused only when a concurrent revocation
            // took the right it used (revocation wins), or it depends on such an op.
            let honest: Vec<_> = replica
                .quarantine()
                .iter()
                .filter(|(h, q)| {
                    !self.forged.contains(h) && !matches!(q.reason, Rejection::Voided { .. })
                })
                .map(|(_, q)| (q.op.body.action.name(), q.reason.clone()))
                .collect();
            assert!(
                honest.is_empty(),
                "replica {r} refused ops made by honest replicas: {honest:?}"
            );
            let voided: BTreeSet<OpHash> = replica
                .quarantine()
                .keys()
                .filter(|h| !self.forged.contains(h))
                .copied()
                .collect();
            let refused: BTreeSet<OpHash> = self
                .forged
                .difference(&self.future)
                .chain(&voided)
                .copied()
                .collect();
            assert_eq!(fp.quarantine, refused, "replica {r} applied a forged op");
            assert!(
                replica.quarantine().values().all(|q| hostile(&q.reason)),
                "{:?}",
                replica.quarantine()
            );
            assert!(
                self.future
                    .iter()
                    .all(|h| replica.op(h).is_none() && self.forged.contains(h)),
                "replica {r} applied a forged op from the future"
            );
            let kept: BTreeSet<OpHash> = every.difference(&voided).copied().collect();
            assert_eq!(fp.applied, kept, "replica {r} lacks ops");
            assert_eq!(
                replica.state(),
                &replica.recompute_state(),
                "replica {r}: the incrementally kept view differs from the document"
            );
            let first = &prints[0];
            assert_eq!(fp.heads, first.heads, "heads of replicas 0 and {r}");
            assert_eq!(
                fp.applied, first.applied,
                "applied ops of replicas 0 and {r}"
            );
            assert_eq!(
                fp.quarantine, first.quarantine,
                "quarantine of replicas 0 and {r}"
            );
            assert_eq!(
                fp.versions, first.versions,
                "version vectors of replicas 0 and {r}"
            );
            assert_eq!(
                fp.conflicts, first.conflicts,
                "conflict views of replicas 0 and {r}"
            );
            assert_eq!(
                fp.roles, first.roles,
                "effective roles of replicas 0 and {r}"
            );
            assert_eq!(
                replica.state(),
                self.peers[0].replica.state(),
                "states of replicas 0 and {r}"
            );
        }
        // The view at each op's causal past (what its rules were checked
        // against) equals a full read of the document at those heads, both
        // on a live replica and on one restored from a snapshot.
        let live = &self.peers[0].replica;
        let ops: Vec<Op> = live.ops().iter().map(|a| a.op.clone()).collect();
        let mut restored = Replica::restore(&live.save_doc(), ops.clone()).unwrap();
        for replica in [&mut self.peers[0].replica, &mut restored] {
            for op in &ops[1..] {
                let change = automerge::Change::from_bytes(op.body.change.clone()).unwrap();
                let mut deps = change.deps().to_vec();
                deps.sort();
                let full = read_state(&AtHeads::new(replica.doc(), &deps)).unwrap();
                assert_eq!(
                    replica.state_at(&deps).unwrap(),
                    full,
                    "the view before {}",
                    op.body.action.name()
                );
            }
        }
    }
}

/// What must be identical on every replica once all ops are everywhere.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    heads: Vec<automerge::ChangeHash>,
    applied: BTreeSet<OpHash>,
    /// The refused ops (those from the far future aside: they may still
    /// wait on one replica and be a refused fork on another).
    quarantine: BTreeSet<OpHash>,
    versions: BTreeMap<shoal_protocol::LogId, u64>,
    conflicts: BTreeMap<String, bool>,
    roles: BTreeMap<String, Option<Role>>,
}

fn fingerprint(r: &Replica, future: &BTreeSet<OpHash>) -> Fingerprint {
    let s = r.state();
    Fingerprint {
        heads: r.heads(),
        applied: r.ops().iter().map(|a| a.hash).collect(),
        quarantine: r
            .quarantine()
            .keys()
            .filter(|h| !future.contains(h))
            .copied()
            .collect(),
        versions: r.version_vector(),
        conflicts: s
            .deployments
            .values()
            .map(|d| (d.id.clone(), view::deployment_in_conflict(s, d)))
            .collect(),
        roles: s
            .members
            .keys()
            .map(|k| (k.clone(), view::effective_role(s, k)))
            .collect(),
    }
}

fn simulate(setup: &Setup, steps: &[Step], final_seed: u64) -> Stats {
    let mut sim = Sim::new(setup);
    for s in steps {
        sim.step(s);
    }
    sim.deliver_all(final_seed);
    sim.check_converged();
    sim.stats
}

proptest! {
    #![proptest_config(config(16))]

    #[test]
    fn replicas_converge_under_random_concurrency_and_delivery(
        setup in setup_strategy(),
        steps in prop::collection::vec(step_strategy(), 10..=32),
        final_seed in any::<u64>(),
    ) {
        simulate(&setup, &steps, final_seed);
    }
}

/// Guards the simulation against going vacuous: over a fixed set of runs it
/// must make ops concurrently, deliver them before their dependencies, and
/// produce slot conflicts.
#[test]
fn simulation_exercises_concurrency() {
    let mut runner = TestRunner::deterministic();
    let strategy = (
        setup_strategy(),
        prop::collection::vec(step_strategy(), 30..=30),
        any::<u64>(),
    );
    let mut total = Stats::default();
    for _ in 0..3 {
        let (setup, steps, seed) = strategy.new_tree(&mut runner).unwrap().current();
        let s = simulate(&setup, &steps, seed);
        total.made += s.made;
        total.refused += s.refused;
        total.concurrent += s.concurrent;
        total.waited += s.waited;
        total.duplicates += s.duplicates;
        total.conflicts += s.conflicts;
        total.forged += s.forged;
    }
    assert!(total.made >= 40, "{total:?}");
    assert!(total.concurrent >= 20, "{total:?}");
    assert!(total.waited > 0 && total.duplicates > 0, "{total:?}");
    assert!(total.conflicts > 0, "{total:?}");
    assert!(total.forged >= 3, "{total:?}");
}

// ---------------------------------------------------------------------------
// Corrupted and forged ops.
// ---------------------------------------------------------------------------

/// A small team: the owner on node 0, an admin who enrolled node 1, a user
/// who enrolled node 2 (all docker), an incremental version with one image,
/// and three deployments: `done` (node 1, successful), `running` (node 1,
/// in progress) and `fresh` (node 2, preparing).
struct Fixture {
    genesis: Op,
    ops: Vec<Op>,
    maker: Replica,
    clock: testkit::Clock,
    owner: SecretKey,
    admin: SecretKey,
    user: SecretKey,
    nodes: [SecretKey; 3],
    running: String,
    fresh: String,
}

impl Fixture {
    fn new() -> Fixture {
        let owner = key(1);
        let admin = key(10);
        let user = key(11);
        let nodes = [key(2), key(31), key(32)];
        let mut clock = testkit::Clock(T0);
        let genesis = testkit::genesis(&owner, &nodes[0], clock.tick());
        let maker = Replica::from_genesis(genesis.clone()).unwrap();
        let mut fx = Fixture {
            genesis,
            ops: Vec::new(),
            maker,
            clock,
            owner,
            admin,
            user,
            nodes,
            running: String::new(),
            fresh: String::new(),
        };
        for (who, role, n) in [
            (fx.admin.clone(), Role::Admin, 1),
            (fx.user.clone(), Role::User, 2),
        ] {
            let now = fx.clock.tick();
            let node = fx.nodes[n].clone();
            let name = format!("node-{n}");
            let made = invite_and_join(
                &mut fx.maker,
                &fx.owner,
                fx.nodes[0].public(),
                &who,
                &format!("m{n}"),
                role,
                Some((&node, &name, Runtime::Docker)),
                now,
            )
            .unwrap();
            fx.ops.extend(made);
            fx.clock.tick();
        }
        let (owner, admin, user) = (fx.owner.clone(), fx.admin.clone(), fx.user.clone());
        let [n0, n1, n2] = fx.nodes.clone();
        let product = fx.id(&owner, &n0);
        fx.run(
            &owner,
            &n0,
            Action::ProductCreate {
                id: product.clone(),
                name: "web".into(),
                kind: ProductKind::Complex,
                description: String::new(),
                version: None,
            },
        );
        let version = fx.id(&user, &n2);
        fx.run(
            &user,
            &n2,
            Action::VersionCreate {
                id: version.clone(),
                product,
                name: "1.0.0".into(),
                kind: VersionKind::Incremental,
                changelog: String::new(),
                auto_copy: false,
            },
        );
        fx.run(
            &user,
            &n2,
            Action::ImageAdd {
                version: version.clone(),
                image: Box::new(image("app", HUB, "1.0")),
            },
        );
        let create = |id: String, node: &SecretKey, prefix: &str| Action::DeploymentCreate {
            id,
            version: version.clone(),
            node: node.public(),
            prefix: prefix.into(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            protected: false,
            note: String::new(),
            force: false,
        };
        let done = fx.id(&user, &n2);
        fx.run(&user, &n2, create(done.clone(), &n1, "a"));
        fx.run(
            &admin,
            &n1,
            Action::DeploymentStart {
                id: done.clone(),
                force: false,
            },
        );
        let images = fx.maker.state().versions[&version].images.clone();
        fx.run(
            &n1,
            &n1,
            Action::DeploymentFinish {
                id: done,
                attempt: 1,
                outcome: Outcome::Successful,
                containers: BTreeMap::new(),
                events: vec!["started".into()],
                frozen: Some(FrozenConfig {
                    version_name: "1.0.0".into(),
                    images,
                }),
            },
        );
        fx.running = fx.id(&admin, &n1);
        fx.run(&admin, &n1, create(fx.running.clone(), &n1, "b"));
        fx.run(
            &admin,
            &n1,
            Action::DeploymentStart {
                id: fx.running.clone(),
                force: false,
            },
        );
        fx.fresh = fx.id(&owner, &n0);
        fx.run(&owner, &n0, create(fx.fresh.clone(), &n2, "c"));
        let registry = fx.id(&admin, &n1);
        fx.run(
            &admin,
            &n1,
            Action::RegistryAdd {
                id: registry,
                name: "r1".into(),
                kind: RegistryKind::Unchecked,
                url: None,
                namespace: None,
                user: None,
                password: None,
            },
        );
        fx
    }

    /// The first id the next op of (author, origin) may create.
    fn id(&self, author: &SecretKey, origin: &SecretKey) -> String {
        testkit::ctx(&self.maker, author, origin.public(), 0).new_id(0)
    }

    /// Prepares, signs and applies an op on the maker; it joins the history.
    fn run(&mut self, author: &SecretKey, origin: &SecretKey, action: Action) -> Op {
        let now = self.clock.tick();
        let (op, rep) = act(&mut self.maker, author, origin.public(), now, action).unwrap();
        assert_eq!(rep.applied, vec![op.hash()], "{rep:?}");
        self.ops.push(op.clone());
        op
    }

    /// An op forged on the maker's state (see [`forge_op`]).
    fn forge(
        &mut self,
        author: &SecretKey,
        origin: &SecretKey,
        action: Action,
        tweak: impl FnOnce(&mut Vec<Write>),
    ) -> Op {
        let now = self.clock.tick();
        forge_op(&self.maker, author, origin, now, action, tweak)
            .expect("the fixture's logs are whole")
    }

    /// Offers the history and `forged` to fresh replicas in several orders
    /// (the forged op first, in the middle, last; the history in order,
    /// reversed, shuffled) and checks that every one refuses `forged` for the
    /// expected reason and applies everything else.
    fn assert_refused_everywhere(&self, forged: &Op, expected: impl Fn(&Rejection) -> bool) {
        let now = self.clock.0 + 1000;
        let hash = forged.hash();
        let n = self.ops.len();
        for (k, pos) in [0, n / 2, n].into_iter().enumerate() {
            let mut order: Vec<&Op> = self.ops.iter().collect();
            match k {
                0 => {}
                1 => order.reverse(),
                _ => Rng(k as u64).shuffle(&mut order),
            }
            order.insert(pos, forged);
            let mut r = Replica::from_genesis(self.genesis.clone()).unwrap();
            for op in order {
                r.apply(op.clone(), now);
            }
            let q = r
                .quarantine()
                .get(&hash)
                .unwrap_or_else(|| panic!("replica {k} did not refuse the forged op"));
            assert!(
                expected(&q.reason),
                "replica {k} refused it for another reason: {:?}",
                q.reason
            );
            assert!(r.op(&hash).is_none());
            assert_eq!(r.quarantine().len(), 1, "replica {k}: {:?}", r.quarantine());
            assert_eq!(r.pending().count(), 0);
            assert_eq!(r.ops().len(), 1 + n, "replica {k} applies every honest op");
            assert_eq!(r.heads(), self.maker.heads());
            assert_eq!(r.state(), self.maker.state());
            assert_eq!(r.state(), &r.recompute_state());
        }
    }
}

/// What a malicious peer can send: an op for `action` signed by `author`
/// on `origin`, whose change is written by hand from `r`'s state, bypassing
/// the rules; `tweak` edits the writes first.
fn forge_op(
    r: &Replica,
    author: &SecretKey,
    origin: &SecretKey,
    now: u64,
    action: Action,
    tweak: impl FnOnce(&mut Vec<Write>),
) -> Option<Op> {
    let ctx = r.next_context(author.public(), origin.public(), now);
    let mut writes = effect::effect(r.state(), &ctx, &action);
    tweak(&mut writes);
    let log = ctx.log();
    let mut doc = r.doc().fork();
    doc.set_actor(log.actor());
    let mut tx = doc.transaction();
    for w in &writes {
        write_entity(&mut tx, w.collection, &w.id, w.value.as_ref()).unwrap();
    }
    tx.commit_with(CommitOptions::default().with_time(ctx.hlc.ms as i64));
    let change = doc.get_last_local_change().unwrap();
    // A log whose next seat is held by a void op cannot go on from this
    // document (its change would take the void op's seq): nothing to forge.
    if change.seq() != ctx.seq {
        return None;
    }
    let body = OpBody {
        version: OP_VERSION,
        team: Some(r.team()),
        author: author.public(),
        origin: origin.public(),
        seq: ctx.seq,
        prev: r.log_op(&log, ctx.seq - 1).map(|a| a.hash),
        hlc: ctx.hlc,
        action,
        change: change.raw_bytes().to_vec(),
    };
    Some(body.sign(author).unwrap())
}

/// Why a hostile op may be refused: never a reason an honest op could get.
fn hostile(r: &Rejection) -> bool {
    matches!(
        r,
        Rejection::Rule(_)
            | Rejection::BadChange(_)
            | Rejection::OutOfScope { .. }
            | Rejection::EffectMismatch { .. }
            | Rejection::Counter(_)
            | Rejection::Fork { .. }
            | Rejection::ForkLost { .. }
            | Rejection::Voided { .. }
            // A change whose preds were tampered with can fail inside
            // automerge while the concurrent path rebuilds it; it is refused
            // alike on every replica, under a reason that names no rule.
            | Rejection::Internal(_)
    )
}

const HUB: &str = HUB_REGISTRY_ID;

/// The fixture's history, genesis first, built once for the byte-flip cases.
fn flip_history() -> &'static [Op] {
    static OPS: OnceLock<Vec<Op>> = OnceLock::new();
    OPS.get_or_init(|| {
        let fx = Fixture::new();
        std::iter::once(fx.genesis).chain(fx.ops).collect()
    })
}

proptest! {
    #![proptest_config(config(32))]

    /// A flipped byte anywhere in an encoded op (any kind, the genesis
    /// included) either fails to decode or yields an op that a replica
    /// holding everything the original needs refuses.
    #[test]
    fn flipped_byte_never_applies(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let history = flip_history();
        let i = which.index(history.len());
        let original = &history[i];
        let mut bytes = original.encode();
        let p = at.index(bytes.len());
        bytes[p] ^= mask;
        let Ok(op) = Op::decode(&bytes) else {
            return Ok(());
        };
        prop_assert_ne!(&op, original);
        let now = T0 + 3_600_000;
        if i == 0 {
            prop_assert!(Replica::from_genesis(op.clone()).is_err(), "a corrupted genesis founds a team");
        }
        let mut r = Replica::from_genesis(history[0].clone()).unwrap();
        for o in &history[1..i.max(1)] {
            prop_assert_eq!(r.apply(o.clone(), now).applied.len(), 1);
        }
        let before = r.state().clone();
        let rep = r.apply(op.clone(), now);
        prop_assert!(rep.applied.is_empty(), "a corrupted op applied: {:?}", rep);
        prop_assert!(rep.rejected.iter().any(|(h, _)| *h == op.hash()), "{:?}", rep);
        prop_assert!(r.op(&op.hash()).is_none());
        prop_assert_eq!(r.state(), &before);
        prop_assert_eq!(r.state(), &r.recompute_state());
    }
}

#[test]
fn removed_members_ops_after_their_removal_are_refused_everywhere() {
    let mut fx = Fixture::new();
    let (owner, user) = (fx.owner.clone(), fx.user.clone());
    let [n0, _, n2] = fx.nodes.clone();
    // Made by the user before the removal reached node 2: concurrent with
    // it, so its causal past does not include it; the removal wins and it
    // is void, refused on arrival after the removal.
    let c = fx.id(&user, &n2);
    let concurrent = sign_op(
        &mut fx.maker,
        &user,
        n2.public(),
        fx.clock.tick(),
        Action::ProductCreate {
            id: c,
            name: "queue".into(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        },
    )
    .unwrap();
    fx.run(
        &owner,
        &n0,
        Action::MemberRemove {
            member: user.public(),
        },
    );
    let rep = fx.maker.apply(concurrent.clone(), fx.clock.tick());
    assert!(rep.applied.is_empty(), "{rep:?}");
    assert!(
        matches!(rep.rejected.as_slice(), [(h, Rejection::Voided { .. })] if *h == concurrent.hash()),
        "{rep:?}"
    );
    // Made after the removal, on a state that includes it (on another
    // node: the log of the voided op cannot go on).
    let id = fx.id(&user, &n0);
    let late = Action::ProductCreate {
        id,
        name: "late".into(),
        kind: ProductKind::Complex,
        description: String::new(),
        version: None,
    };
    assert!(matches!(
        sign_op(&mut fx.maker, &user, n0.public(), fx.clock.0, late.clone()),
        Err(shoal_protocol::replica::PrepareError::Rule(
            RuleError::NotMember { .. }
        ))
    ));
    let forged = fx.forge(&user, &n0, late, |_| {});
    fx.assert_refused_everywhere(&forged, |r| {
        matches!(r, Rejection::Rule(RuleError::NotMember { .. }))
    });
}

#[test]
fn users_doing_admin_work_are_refused_everywhere() {
    let mut fx = Fixture::new();
    let (admin, user) = (fx.admin.clone(), fx.user.clone());
    let n2 = fx.nodes[2].clone();
    let id = fx.id(&user, &n2);
    let actions = [
        (
            "member.role",
            Action::MemberRole {
                member: admin.public(),
                role: Role::User,
            },
        ),
        (
            "registry.add",
            Action::RegistryAdd {
                id: id.clone(),
                name: "mine".into(),
                kind: RegistryKind::Unchecked,
                url: None,
                namespace: None,
                user: None,
                password: None,
            },
        ),
        (
            "invite.create",
            Action::InviteCreate {
                id,
                kind: InviteKind::Member { role: Role::Admin },
                invite_key: invite_key().public(),
                expires: Hlc::new(fx.clock.0 + DAY_MS, 0),
            },
        ),
    ];
    for (name, action) in actions {
        let forged = fx.forge(&user, &n2, action, |_| {});
        fx.assert_refused_everywhere(&forged, |r| {
            matches!(
                r,
                Rejection::Rule(RuleError::Role { action, needed: Role::Admin, has: Role::User, .. })
                    if *action == name
            )
        });
    }
}

#[test]
fn only_the_target_node_finishes_a_deployment() {
    let mut fx = Fixture::new();
    let [_, n1, n2] = fx.nodes.clone();
    let admin = fx.admin.clone();
    let version = fx.maker.state().deployments[&fx.running].version.clone();
    let images = fx.maker.state().versions[&version].images.clone();
    let finish = Action::DeploymentFinish {
        id: fx.running.clone(),
        attempt: 1,
        outcome: Outcome::Successful,
        containers: BTreeMap::new(),
        events: vec![],
        frozen: Some(FrozenConfig {
            version_name: "1.0.0".into(),
            images,
        }),
    };
    // Another node, and a member on the target node itself.
    for (author, origin) in [(&n2, &n2), (&admin, &n1)] {
        let forged = fx.forge(author, origin, finish.clone(), |_| {});
        fx.assert_refused_everywhere(&forged, |r| {
            matches!(r, Rejection::Rule(RuleError::NotTheNode { .. }))
        });
    }
    // The target node may.
    let ok = sign_op(&mut fx.maker, &n1, n1.public(), fx.clock.tick(), finish).unwrap();
    let rep = fx.maker.apply(ok.clone(), fx.clock.0);
    assert_eq!(rep.applied, vec![ok.hash()]);
}

#[test]
fn a_change_writing_outside_its_action_is_refused_everywhere() {
    let mut fx = Fixture::new();
    let (admin, user) = (fx.admin.clone(), fx.user.clone());
    let n1 = fx.nodes[1].clone();
    let edit = Action::DeploymentUpdate {
        id: fx.fresh.clone(),
        edit: DeploymentEdit {
            note: Some("x".into()),
            ..Default::default()
        },
    };
    // The honest op is valid.
    sign_op(&mut fx.maker, &admin, n1.public(), fx.clock.0, edit.clone()).unwrap();
    let mut promoted = fx.maker.state().members[&user.public().to_hex()].clone();
    promoted.role = Role::Admin;
    let forged = fx.forge(&admin, &n1, edit, |w| {
        w.push(Write {
            collection: Collection::Members,
            id: promoted.key.clone(),
            value: Some(Entity::Member(promoted.clone())),
        })
    });
    let path = format!("/members/{}", user.public().to_hex());
    fx.assert_refused_everywhere(&forged, |r| {
        matches!(r, Rejection::OutOfScope { path: p, action: "deployment.update" } if *p == path)
    });
}

#[test]
fn a_change_doing_something_else_than_its_action_is_refused_everywhere() {
    let mut fx = Fixture::new();
    let admin = fx.admin.clone();
    let n1 = fx.nodes[1].clone();
    let fresh = fx.fresh.clone();
    let edit = Action::DeploymentUpdate {
        id: fresh.clone(),
        edit: DeploymentEdit {
            note: Some("x".into()),
            ..Default::default()
        },
    };
    let forged = fx.forge(&admin, &n1, edit, |w| {
        for w in w.iter_mut() {
            if let Some(Entity::Deployment(d)) = &mut w.value {
                d.note = "y".into();
            }
        }
    });
    fx.assert_refused_everywhere(&forged, |r| {
        matches!(
            r,
            Rejection::EffectMismatch { action: "deployment.update", collection: Collection::Deployments, id }
                if *id == fresh
        )
    });
}

#[test]
fn a_corrupted_copy_does_not_poison_the_log_it_claims() {
    let fx = Fixture::new();
    let now = fx.clock.0 + 1000;
    // The owner's product.create: later owner ops follow it in the same log.
    let i = fx
        .ops
        .iter()
        .position(|o| matches!(o.body.action, Action::ProductCreate { .. }))
        .unwrap();
    let original = &fx.ops[i];
    assert!(fx.ops[i + 1..].iter().any(|o| o.log() == original.log()));
    // A copy damaged in transit (or sent by anyone without the key).
    let mut corrupt = original.clone();
    corrupt.sig.0[7] ^= 0x40;
    let mut failures = Vec::new();
    for corrupt_first in [true, false] {
        let mut r = Replica::from_genesis(fx.genesis.clone()).unwrap();
        for o in &fx.ops[..i] {
            r.apply(o.clone(), now);
        }
        if corrupt_first {
            let rep = r.apply(corrupt.clone(), now);
            assert_eq!(
                rep.rejected,
                vec![(corrupt.hash(), Rejection::BadSignature)]
            );
        }
        r.apply(original.clone(), now);
        if !corrupt_first {
            let rep = r.apply(corrupt.clone(), now);
            assert_eq!(
                rep.rejected,
                vec![(corrupt.hash(), Rejection::BadSignature)]
            );
        }
        for o in &fx.ops[i + 1..] {
            r.apply(o.clone(), now);
        }
        let refused: Vec<_> = r
            .quarantine()
            .values()
            .filter(|q| q.op.hash() != corrupt.hash())
            .map(|q| (q.op.body.action.name(), q.reason.clone()))
            .collect();
        if !refused.is_empty() || r.state() != fx.maker.state() {
            failures.push((corrupt_first, refused));
        }
    }
    assert!(
        failures.is_empty(),
        "(corrupt copy first, honest ops refused): {failures:?}"
    );
}

#[test]
fn an_equivocating_author_does_not_split_the_replicas() {
    let mut fx = Fixture::new();
    let user = fx.user.clone();
    let n2 = fx.nodes[2].clone();
    let now = fx.clock.tick();
    let product = |id: String, name: &str| Action::ProductCreate {
        id,
        name: name.into(),
        kind: ProductKind::Complex,
        description: String::new(),
        version: None,
    };
    // Two different, individually valid ops with the same log and seq.
    let id = fx.id(&user, &n2);
    let a = sign_op(
        &mut fx.maker,
        &user,
        n2.public(),
        now,
        product(id.clone(), "a"),
    )
    .unwrap();
    let b = sign_op(&mut fx.maker, &user, n2.public(), now, product(id, "b")).unwrap();
    assert_eq!((a.body.seq, a.body.prev), (b.body.seq, b.body.prev));
    fx.maker.apply(a.clone(), now);
    let next = fx.run(&user, &n2, product(fx.id(&user, &n2), "c"));
    let mut kept = Vec::new();
    for order in [[&a, &b, &next], [&b, &a, &next]] {
        let mut r = Replica::from_genesis(fx.genesis.clone()).unwrap();
        for o in fx
            .ops
            .iter()
            .filter(|o| o.hash() != next.hash())
            .chain(order)
        {
            r.apply(o.clone(), now);
        }
        let names: Vec<&str> = [("a", &a), ("b", &b), ("next", &next)]
            .into_iter()
            .filter(|(_, o)| r.op(&o.hash()).is_some())
            .map(|(n, _)| n)
            .collect();
        kept.push((names, r.heads()));
    }
    assert_eq!(
        kept[0], kept[1],
        "a first, then b: {:?}; b first, then a: {:?}",
        kept[0].0, kept[1].0
    );
}
