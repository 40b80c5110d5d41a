//! Deterministic fixtures for tests and benchmarks: keys from small seeds, a
//! team with members and nodes, helpers that prepare, sign and apply, and
//! edits of an op's Automerge change as a hostile author would make them
//! through automerge's public API.

use crate::action::{Action, NewMember, NewNode};
use crate::keys::{PublicKey, SecretKey, TeamId};
use crate::model::{InviteKind, Role, Runtime};
use crate::op::Op;
use crate::replica::{PrepareError, Replica, Report, join_proof_message};
use crate::rules::OpContext;

/// A key from a one-byte seed.
pub fn key(n: u8) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[0] = n;
    seed[31] = 0x5a;
    SecretKey::from_seed(seed)
}

pub fn new_member(k: &SecretKey, name: &str) -> NewMember {
    NewMember {
        key: k.public(),
        name: name.to_string(),
        email: None,
        enc_key: hex::encode([0u8; 32]),
    }
}

pub fn new_node(k: &SecretKey, name: &str, runtime: Runtime) -> NewNode {
    NewNode {
        key: k.public(),
        name: name.to_string(),
        runtime,
        enc_key: hex::encode([1u8; 32]),
        addresses: vec![],
        agent_version: "test".into(),
        protocol_version: crate::PROTOCOL_VERSION,
    }
}

/// A clock that advances one second per read, starting at a fixed time.
#[derive(Debug, Clone)]
pub struct Clock(pub u64);

impl Clock {
    pub fn tick(&mut self) -> u64 {
        self.0 += 1000;
        self.0
    }
}

/// A small deterministic generator (splitmix64), for schedules and edits
/// derived from a test's seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den.max(1) < num
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Signs a genesis op for a new team owned by `owner` on node `node`.
pub fn genesis(owner: &SecretKey, node: &SecretKey, now_ms: u64) -> Op {
    genesis_speaking(owner, node, now_ms, crate::PROTOCOL_VERSION)
}

/// The protocol version the node of [`history`] publishes: fixed, so the
/// history (and the stored copy of it that compatibility tests hold) keeps
/// its bytes when [`crate::PROTOCOL_VERSION`] moves on.
pub const HISTORY_PROTOCOL_VERSION: u32 = 2;

/// [`genesis`] with a node that publishes `protocol_version`.
pub fn genesis_speaking(
    owner: &SecretKey,
    node: &SecretKey,
    now_ms: u64,
    protocol_version: u32,
) -> Op {
    let body = Replica::genesis_body(
        now_ms,
        "team",
        "",
        new_member(owner, "owner"),
        NewNode {
            protocol_version,
            ..new_node(node, "node-0", Runtime::Docker)
        },
    );
    match body.and_then(|b| {
        b.sign(owner)
            .map_err(|e| PrepareError::Internal(e.to_string()))
    }) {
        Ok(op) => op,
        Err(e) => unreachable!("fixture genesis is valid: {e}"),
    }
}

/// Prepares and signs an op on `r` without applying it.
pub fn sign_op(
    r: &mut Replica,
    author: &SecretKey,
    origin: PublicKey,
    now_ms: u64,
    action: Action,
) -> Result<Op, PrepareError> {
    let body = r.prepare(author.public(), origin, now_ms, action)?;
    body.sign(author)
        .map_err(|e| PrepareError::Internal(e.to_string()))
}

/// Prepares, signs and applies; returns the op and the report.
pub fn act(
    r: &mut Replica,
    author: &SecretKey,
    origin: PublicKey,
    now_ms: u64,
    action: Action,
) -> Result<(Op, Report), PrepareError> {
    let op = sign_op(r, author, origin, now_ms, action)?;
    let report = r.apply(op.clone(), now_ms);
    Ok((op, report))
}

/// The context for the next op of (author, origin), for deriving ids.
pub fn ctx(r: &Replica, author: &SecretKey, origin: PublicKey, now_ms: u64) -> OpContext {
    r.next_context(author.public(), origin, now_ms)
}

/// An invite and the signed join of `newcomer` (a member, enrolling `node`
/// if given) — two ops: the invite by `admin`, the join by the newcomer.
#[allow(clippy::too_many_arguments)]
pub fn invite_and_join(
    r: &mut Replica,
    admin: &SecretKey,
    admin_origin: PublicKey,
    newcomer: &SecretKey,
    name: &str,
    role: Role,
    node: Option<(&SecretKey, &str, Runtime)>,
    now_ms: u64,
) -> Result<Vec<Op>, PrepareError> {
    let invite_key = key(200);
    let c = ctx(r, admin, admin_origin, now_ms);
    let id = c.new_id(0);
    let (inv, _) = act(
        r,
        admin,
        admin_origin,
        now_ms,
        Action::InviteCreate {
            id: id.clone(),
            kind: InviteKind::Member { role },
            invite_key: invite_key.public(),
            expires: crate::hlc::Hlc::new(now_ms + 86_400_000, 0),
        },
    )?;
    let team: TeamId = r.team();
    let proof = invite_key.sign(&join_proof_message(&team, &id, &newcomer.public()));
    let origin = match node {
        Some((k, _, _)) => k.public(),
        None => admin_origin,
    };
    let (join, _) = act(
        r,
        newcomer,
        origin,
        now_ms + 1,
        Action::MemberJoin {
            invite: id,
            member: Box::new(new_member(newcomer, name)),
            node: node.map(|(k, n, rt)| Box::new(new_node(k, n, rt))),
            proof,
        },
    )?;
    Ok(vec![inv, join])
}

/// A valid single-team history of about `n` ops (after genesis) made of
/// repeated product → version → image → deployment → start → finish →
/// edits → restart → finish blocks, for benchmarks and load tests.
pub fn history(n: usize) -> (Op, Vec<Op>) {
    use std::collections::BTreeMap;

    use crate::action::Outcome;
    use crate::model::{ContainerConfig, FrozenConfig, Image, ImageRef, ProductKind};

    let owner = key(1);
    let node = key(2);
    let origin = node.public();
    let mut clock = Clock(1_700_000_000_000);
    let g = genesis_speaking(&owner, &node, clock.tick(), HISTORY_PROTOCOL_VERSION);
    let Ok(mut r) = Replica::from_genesis(g.clone()) else {
        unreachable!("fixture genesis is valid")
    };
    let mut ops = Vec::with_capacity(n);
    let mut block = 0usize;
    while ops.len() < n {
        let mut step = |r: &mut Replica, who: &SecretKey, action: Action| {
            let now = clock.tick();
            match act(r, who, origin, now, action) {
                Ok((op, rep)) if rep.applied.len() == 1 => ops.push(op),
                other => unreachable!("fixture op applies: {other:?}"),
            }
        };
        let c = ctx(&r, &owner, origin, 0);
        let product = c.new_id(0);
        let version = c.new_id(1);
        step(
            &mut r,
            &owner,
            Action::ProductCreate {
                id: product.clone(),
                name: format!("product-{block}"),
                kind: ProductKind::Simple,
                description: String::new(),
                version: Some(version.clone()),
            },
        );
        step(
            &mut r,
            &owner,
            Action::ImageAdd {
                version: version.clone(),
                image: Box::new(Image {
                    name: "app".into(),
                    image: ImageRef {
                        registry: crate::model::HUB_REGISTRY_ID.into(),
                        name: "shoal-test/busybox".into(),
                        tag: "1.0".into(),
                    },
                    config: ContainerConfig {
                        env: [("MODE".to_string(), "prod".to_string())].into(),
                        ..Default::default()
                    },
                }),
            },
        );
        let c = ctx(&r, &owner, origin, 0);
        let dep = c.new_id(0);
        step(
            &mut r,
            &owner,
            Action::DeploymentCreate {
                id: dep.clone(),
                version: version.clone(),
                node: origin,
                prefix: format!("p{block}"),
                env: BTreeMap::new(),
                secrets: BTreeMap::new(),
                instances: BTreeMap::new(),
                protected: false,
                note: String::new(),
                force: false,
            },
        );
        for attempt in 1..=2u32 {
            step(
                &mut r,
                &owner,
                Action::DeploymentStart {
                    id: dep.clone(),
                    force: false,
                },
            );
            let images = r.state().versions[&version].images.clone();
            step(
                &mut r,
                &node,
                Action::DeploymentFinish {
                    id: dep.clone(),
                    attempt,
                    outcome: Outcome::Successful,
                    containers: BTreeMap::new(),
                    events: vec!["pulled".into(), "started".into()],
                    frozen: Some(FrozenConfig {
                        version_name: "rolling".into(),
                        images,
                    }),
                },
            );
            for k in 0..2 {
                step(
                    &mut r,
                    &owner,
                    Action::DeploymentUpdate {
                        id: dep.clone(),
                        edit: crate::action::DeploymentEdit {
                            note: Some(format!("edit {attempt}.{k}")),
                            env: Some([("LEVEL".to_string(), k.to_string())].into()),
                            ..Default::default()
                        },
                    },
                );
            }
        }
        block += 1;
    }
    ops.truncate(n);
    (g, ops)
}

/// `op` with its change decoded, edited by `f`, encoded again and the op
/// signed again by `author`: what any author can do with automerge's API.
pub fn edit_change(
    op: &Op,
    author: &SecretKey,
    f: impl FnOnce(&mut automerge::ExpandedChange),
) -> Result<Op, String> {
    let mut body = op.body.clone();
    let mut expanded = automerge::Change::from_bytes(body.change.clone())
        .map_err(|e| e.to_string())?
        .decode();
    f(&mut expanded);
    expanded.hash = None;
    body.change = automerge::Change::from(expanded).raw_bytes().to_vec();
    body.sign(author).map_err(|e| e.to_string())
}

/// Moves a change's ops to start at `start`: its own op ids move with it.
pub fn move_start(e: &mut automerge::ExpandedChange, start: u64) {
    use automerge::legacy;
    let (old, actor) = (e.start_op.get(), e.actor_id.clone());
    let shift = |id: &mut legacy::OpId| {
        if id.1 == actor && id.0 >= old {
            id.0 = id.0 - old + start;
        }
    };
    for op in &mut e.operations {
        if let legacy::ObjectId::Id(id) = &mut op.obj {
            shift(id);
        }
        if let legacy::Key::Seq(legacy::ElementId::Id(id)) = &mut op.key {
            shift(id);
        }
        let mut pred: Vec<legacy::OpId> = op.pred.iter().cloned().collect();
        pred.iter_mut().for_each(shift);
        op.pred = pred.into();
    }
    if let Some(s) = std::num::NonZeroU64::new(start) {
        e.start_op = s;
    }
}
