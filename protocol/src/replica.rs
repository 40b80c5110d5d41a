//! One replica of a team: the Automerge document, its typed view, the op log
//! and the validation of §3.
//!
//! `prepare` builds an unsigned op against the current state, the author
//! signs it elsewhere, and `apply` verifies and applies ops from anywhere, in
//! any order, any number of times. An op is judged against its causal past
//! (the document at the op's dependencies), never against whatever this
//! replica happens to hold, so every replica accepts and rejects the same ops.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{self as am, ChangeHash, ReadDoc as _};

use crate::action::Action;
use crate::doc::{
    self, AtHeads, collection_obj, read_entity, read_entity_in, read_state, write_entity,
};
use crate::effect::{self, Write};
use crate::hlc::{Hlc, MAX_COUNTER, MAX_FUTURE_MS};
use crate::keys::{LogId, OpHash, PublicKey, TeamId};
use crate::model::{Collection, TeamState};
use crate::op::{OP_VERSION, Op, OpBody};
use crate::rules::{self, OpContext, RuleError};

pub use crate::rules::{entity_id, join_proof_message};

/// Why an op was refused. Refused ops are kept in quarantine, never applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature does not verify under the author's key")]
    BadSignature,
    #[error("op encoding version {0} is not supported")]
    Version(u8),
    #[error("the op belongs to another team ({0:?})")]
    WrongTeam(Option<TeamId>),
    #[error("the change is malformed: {0}")]
    BadChange(String),
    #[error("the log's hash chain does not link: {0}")]
    Chain(String),
    #[error("fork: this log already has a different op at seq {seq}")]
    Fork { seq: u64 },
    #[error("it depends on a rejected op")]
    DependsOnRejected,
    #[error("its clock counter {0} is above the bound {MAX_COUNTER}")]
    Counter(u32),
    #[error("its clock {hlc} is not after its causal past ({past})")]
    Clock { hlc: Hlc, past: Hlc },
    #[error("refused by the rules: {0}")]
    Rule(#[from] RuleError),
    #[error("the change touches {path}, which {action} may not touch")]
    OutOfScope { path: String, action: &'static str },
    #[error("the change does not do what {action} says for {collection:?}/{id}")]
    EffectMismatch {
        action: &'static str,
        collection: Collection,
        id: String,
    },
    #[error("internal error while validating: {0}")]
    Internal(String),
    /// Its author lost the right it uses through `by`, an op concurrent
    /// with it (or it depends on an op voided so).
    #[error("voided by {}: its author lost the right it uses concurrently", by.to_hex())]
    Voided { by: OpHash },
    /// Another op holds the same log seq with a lower hash: the lower hash
    /// wins a fork, on every replica.
    #[error("fork lost: {} holds seq {seq} of this log", winner.to_hex())]
    ForkLost { seq: u64, winner: OpHash },
    /// Refused in an earlier run; the reason as it was recorded then.
    #[error("{0}")]
    Restored(String),
}

/// How the reason of a [`Rejection::Voided`] starts, as a store keeps it.
pub const VOIDED_PREFIX: &str = "voided by ";
/// How the reason of a [`Rejection::ForkLost`] starts, as a store keeps it.
pub const FORK_LOST_PREFIX: &str = "fork lost:";

/// Why an op waits instead of being applied now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Wait {
    /// A change this op depends on has not arrived.
    Change(ChangeHash),
    /// The previous op of its log has not arrived.
    Log(LogId, u64),
    /// Its time is more than [`MAX_FUTURE_MS`] ahead of the local clock.
    Future(Hlc),
}

/// The result of offering one op (and whatever it unblocked).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub applied: Vec<OpHash>,
    pub rejected: Vec<(OpHash, Rejection)>,
    pub waiting: Vec<(OpHash, Wait)>,
    /// Waiting ops dropped to stay within the bounds on waiting ops; a peer
    /// offers them again later.
    pub dropped: Vec<OpHash>,
    /// Ops applied before and now taken out of the state (voided by a
    /// revocation or a fork that arrived after them); they are in quarantine.
    pub voided: Vec<OpHash>,
    pub duplicate: bool,
}

impl Report {
    /// Adds what a later `apply` reported (a batch's reports as one).
    fn merge(&mut self, r: Report) {
        self.applied.extend(r.applied);
        self.rejected.extend(r.rejected);
        self.waiting.extend(r.waiting);
        self.dropped.extend(r.dropped);
        self.voided.extend(r.voided);
    }
}

/// At most this many ops of one log wait (for a dependency, a log
/// predecessor or their time); beyond it the log's oldest waiting op is dropped.
pub const MAX_PENDING_PER_LOG: usize = 512;
/// At most this many encoded bytes of one log's ops wait.
pub const MAX_PENDING_BYTES_PER_LOG: usize = 16 * 1024 * 1024;
/// At most this many ops wait in all; beyond it the oldest is dropped.
pub const MAX_PENDING: usize = 4096;
/// At most this many encoded bytes of ops wait in all.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Ops waiting to be applied, in arrival order, bounded per log and in
/// total: anyone can send validly signed ops that never become ready (a
/// gap in a log, an unknown dependency, a far-future time). Sync offers
/// ops in causal order, so an honest op rarely waits long, and a dropped
/// one is offered again by the next anti-entropy round.
#[derive(Debug, Default)]
struct Pending {
    ops: HashMap<OpHash, Held>,
    order: BTreeMap<u64, OpHash>,
    logs: HashMap<LogId, LogHeld>,
    next: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Held {
    op: Op,
    wait: Wait,
    order: u64,
    bytes: usize,
}

#[derive(Debug, Default)]
struct LogHeld {
    order: BTreeMap<u64, OpHash>,
    bytes: usize,
}

impl Pending {
    fn contains(&self, hash: &OpHash) -> bool {
        self.ops.contains_key(hash)
    }

    fn remove(&mut self, hash: &OpHash) -> Option<(Op, Wait)> {
        let held = self.ops.remove(hash)?;
        self.order.remove(&held.order);
        self.bytes -= held.bytes;
        let log = held.op.log();
        if let Some(l) = self.logs.get_mut(&log) {
            l.order.remove(&held.order);
            l.bytes -= held.bytes;
            if l.order.is_empty() {
                self.logs.remove(&log);
            }
        }
        Some((held.op, held.wait))
    }

    /// Holds `op` until `wait` is over; returns the ops dropped to stay
    /// within the bounds (oldest first), with what they waited for.
    fn hold(&mut self, hash: OpHash, op: Op, wait: Wait) -> Vec<(OpHash, Wait)> {
        self.remove(&hash);
        let bytes = op.encode().len();
        let log = op.log();
        let order = self.next;
        self.next += 1;
        self.order.insert(order, hash);
        self.bytes += bytes;
        let l = self.logs.entry(log).or_default();
        l.order.insert(order, hash);
        l.bytes += bytes;
        self.ops.insert(
            hash,
            Held {
                op,
                wait,
                order,
                bytes,
            },
        );
        let mut dropped = Vec::new();
        loop {
            let victim = match self.logs.get(&log) {
                Some(l)
                    if l.order.len() > MAX_PENDING_PER_LOG
                        || l.bytes > MAX_PENDING_BYTES_PER_LOG =>
                {
                    l.order.values().next().copied()
                }
                _ if self.ops.len() > MAX_PENDING || self.bytes > MAX_PENDING_BYTES => {
                    self.order.values().next().copied()
                }
                _ => None,
            };
            match victim.and_then(|h| Some((h, self.remove(&h)?.1))) {
                Some(d) => dropped.push(d),
                None => break,
            }
        }
        dropped
    }
}

/// What `validate_and_apply` learned of an op it applied, for `commit`.
struct Validated {
    change: ChangeHash,
    deps: Vec<ChangeHash>,
    max_op: u64,
    touches: BTreeSet<Touch>,
    /// The writes of a revocation at its causal past.
    revoke: Option<Vec<Write>>,
}

/// An applied op with its derived indexes.
#[derive(Debug, Clone)]
pub struct Applied {
    pub op: Op,
    pub hash: OpHash,
    pub change: ChangeHash,
}

/// A refused op and the reason.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub op: Op,
    pub reason: Rejection,
}

/// At most this many refused ops of one author are kept in quarantine.
pub const QUARANTINE_MAX_OPS_PER_AUTHOR: usize = 32;
/// At most this many encoded bytes of one author's refused ops are kept.
pub const QUARANTINE_MAX_BYTES_PER_AUTHOR: usize = 8 << 20;
/// At most this many refused ops are kept per team.
pub const QUARANTINE_MAX_OPS: usize = 1024;
/// At most this many encoded bytes of refused ops are kept per team.
pub const QUARANTINE_MAX_BYTES: usize = 64 << 20;

/// What the quarantine bounds look at in one refused op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub hash: OpHash,
    pub author: PublicKey,
    pub hlc: Hlc,
    /// Length of the encoded op.
    pub bytes: usize,
}

impl QuarantineEntry {
    pub fn of(op: &Op, hash: OpHash, bytes: usize) -> Self {
        QuarantineEntry {
            hash,
            author: op.body.author,
            hlc: op.body.hlc,
            bytes,
        }
    }
}

/// The ops to drop so the quarantine `entries` fits its bounds. Per author
/// (count and bytes), the author's oldest ops (by time, then hash) go first;
/// then, while the team is over its bounds, the oldest op of the author
/// holding the most bytes goes, so one author's flood cannot push out the
/// others' evidence. The same on every node and in the store.
pub fn quarantine_overflow(entries: &[QuarantineEntry]) -> Vec<OpHash> {
    let mut by_author: BTreeMap<PublicKey, Vec<&QuarantineEntry>> = BTreeMap::new();
    for e in entries {
        by_author.entry(e.author).or_default().push(e);
    }
    let mut out = Vec::new();
    // Per author, newest last; each author's kept ops and their bytes.
    let mut kept: BTreeMap<PublicKey, (std::collections::VecDeque<&QuarantineEntry>, usize)> =
        BTreeMap::new();
    for (author, mut list) in by_author {
        list.sort_by_key(|e| (e.hlc, e.hash));
        let mut bytes: usize = list.iter().map(|e| e.bytes).fold(0, usize::saturating_add);
        let mut list: std::collections::VecDeque<_> = list.into();
        while list.len() > QUARANTINE_MAX_OPS_PER_AUTHOR || bytes > QUARANTINE_MAX_BYTES_PER_AUTHOR
        {
            let Some(old) = list.pop_front() else { break };
            bytes = bytes.saturating_sub(old.bytes);
            out.push(old.hash);
        }
        kept.insert(author, (list, bytes));
    }
    let mut count: usize = kept.values().map(|(l, _)| l.len()).sum();
    let mut total: usize = kept
        .values()
        .map(|(_, b)| *b)
        .fold(0, usize::saturating_add);
    while count > QUARANTINE_MAX_OPS || total > QUARANTINE_MAX_BYTES {
        let Some((_, (list, bytes))) = kept
            .iter_mut()
            .filter(|(_, (l, _))| !l.is_empty())
            .max_by_key(|(a, (l, b))| (*b, l.len(), **a))
        else {
            break;
        };
        let Some(old) = list.pop_front() else { break };
        *bytes = bytes.saturating_sub(old.bytes);
        count -= 1;
        total = total.saturating_sub(old.bytes);
        out.push(old.hash);
    }
    out
}

/// Errors from [`Replica::prepare`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("internal error preparing the op: {0}")]
    Internal(String),
    #[error("op {seq} of this log (author and node) was voided; the log cannot go on")]
    VoidedLog { seq: u64 },
}

/// Errors creating a replica from a genesis op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("not a valid genesis op: {0}")]
    Invalid(String),
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

/// First bytes of a snapshot made by [`Replica::save_doc`] (format version 1).
pub const SNAPSHOT_MAGIC: &[u8] = b"shoal-snapshot-v1\n";

/// Version vector: per log, the highest contiguous seq held.
pub type VersionVector = BTreeMap<LogId, u64>;

#[derive(Debug)]
pub struct Replica {
    team: TeamId,
    doc: am::Automerge,
    state: TeamState,
    applied: Vec<Applied>,
    by_hash: HashMap<OpHash, usize>,
    by_change: HashMap<ChangeHash, usize, ByHash>,
    logs: HashMap<LogId, Vec<usize>>,
    pending: Pending,
    waiting: HashMap<Wait, Vec<OpHash>>,
    quarantine: BTreeMap<OpHash, Quarantined>,
    /// Author, time and size of every quarantined op, for the bounds.
    quarantine_meta: BTreeMap<OpHash, QuarantineEntry>,
    rejected_changes: HashSet<ChangeHash>,
    /// Authentic ops that were refused: an op naming one as its `prev`
    /// depends on it and is refused too. (Refusal is by hash, never by seq:
    /// another op at the same seq may still be valid.)
    rejected_ops: HashSet<OpHash>,
    max_hlc: Hlc,
    /// Per applied op (same index as `applied`): its change's deps.
    deps: Vec<Vec<ChangeHash>>,
    /// `deps` as indices into `applied` (the walks of causal pasts).
    dep_idx: Vec<Vec<u32>>,
    /// Per applied op, how far back its causal past is known to be whole
    /// (the walks of causal pasts stop there).
    floors: Floors,
    /// Per applied op index: what its change wrote. Filled when the op is
    /// validated, or on first need for ops restored from a snapshot.
    /// (A sorted slice: a set's tree node would cost hundreds of bytes per
    /// op for the one or two entities most changes write.)
    touches: HashMap<usize, Box<[Touch]>>,
    /// The largest op counter of any applied change: the next change on top
    /// of the whole document starts after it.
    max_op: u64,
    /// Per applied op index: the largest op counter of its change.
    max_ops: Vec<u64>,
    /// Applied revocations (removal, role change, node removal, invite
    /// revocation) with their writes at their causal past.
    revokes: HashMap<OpHash, Vec<Write>>,
    /// Voided ops and changes, with the op that voided them (the
    /// revocation, or the winner of a fork).
    void_by: HashMap<OpHash, OpHash>,
    void_changes: HashMap<ChangeHash, OpHash>,
    /// Per (log, seq), the lowest hash of an authentic op seen there.
    seats: HashMap<(LogId, u64), OpHash>,
    /// Ops applied before and voided during the current `apply`.
    newly_voided: Vec<OpHash>,
    /// Voided ops whose voider was voided in turn: offered again.
    reoffer: Vec<Op>,
    /// The typed state just after recently applied ops (see [`StatesAfter`]).
    after: StatesAfter,
    /// Authors' keys, parsed once for every op they sign.
    keys: crate::keys::KeyCache,
}

/// Per applied op `i`, a floor `f` such that every op applied before index
/// `f` is in `i`'s causal past. A concurrent op's past is walked from its
/// deps down to the highest floor among them instead of to the genesis, so
/// the walk costs what is concurrent, not the whole history.
///
/// Ops are applied in causal order (every dep of op `i` has a lower index).
/// An op whose deps name every tip (every op no other op names) has all
/// earlier ops in its past: its floor is its own index. Otherwise a dep
/// `d`'s floor, or `d + 1` when `d`'s past is whole, is a sound floor.
#[derive(Clone, Debug, Default)]
struct Floors {
    floor: Vec<u32>,
    /// The applied ops no applied op names as a dep.
    tips: HashSet<u32>,
    /// A dep at or after its op's own index was seen (a store written in
    /// another order): floors are not trusted and every walk is whole.
    broken: bool,
}

impl Floors {
    /// Notes applied op `idx` (the next index) with its deps' indices.
    fn push(&mut self, idx: usize, deps: &[u32]) {
        let i = idx as u32;
        if deps.iter().any(|&d| d >= i) {
            self.broken = true;
        }
        let whole = self.tips.len() <= deps.len() && self.tips.iter().all(|t| deps.contains(t));
        let floor = if whole && !self.broken {
            i
        } else {
            deps.iter()
                .filter(|&&d| d < i)
                .map(|&d| self.after(d))
                .max()
                .unwrap_or(0)
        };
        self.floor.push(floor);
        for d in deps {
            self.tips.remove(d);
        }
        self.tips.insert(i);
    }

    /// Every op before the returned index is in the causal past of op `d`
    /// or is `d`.
    fn after(&self, d: u32) -> u32 {
        match self.floor.get(d as usize) {
            Some(&f) if f == d => d + 1,
            Some(&f) => f,
            None => 0,
        }
    }

    /// Every op before the returned index is in the causal past of the set
    /// of ops `deps` (or in it).
    fn of(&self, deps: &[usize]) -> usize {
        if self.broken {
            return 0;
        }
        deps.iter()
            .map(|&d| self.after(d as u32) as usize)
            .max()
            .unwrap_or(0)
    }

    fn clear(&mut self) {
        *self = Floors::default();
    }
}

/// How many recent ops' "state just after" a replica keeps: a few per
/// writer of a busy team (persistent maps share all but what each op wrote).
const STATES_AFTER: usize = 64;

/// The typed state at the heads `{c}` for the changes `c` of recently
/// applied ops: the state at the op's causal past with its writes set (its
/// change overwrote exactly those entities, with nothing concurrent in its
/// own past). A writer that has seen nothing new since its last op names
/// only that op's change as deps, so its next op's past state is found
/// here instead of being read back from the document. Cleared whenever the
/// document is rebuilt (ops voided or a failed change dropped).
#[derive(Clone, Default)]
struct StatesAfter {
    states: HashMap<ChangeHash, TeamState, ByHash>,
    order: VecDeque<ChangeHash>,
}

impl std::fmt::Debug for StatesAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatesAfter({} ops)", self.order.len())
    }
}

impl StatesAfter {
    fn get(&self, heads: &[ChangeHash]) -> Option<&TeamState> {
        match heads {
            [h] => self.states.get(h),
            _ => None,
        }
    }

    fn insert(&mut self, change: ChangeHash, state: TeamState) {
        if self.states.insert(change, state).is_none() {
            self.order.push_back(change);
        }
        while self.order.len() > STATES_AFTER {
            if let Some(old) = self.order.pop_front() {
                self.states.remove(&old);
            }
        }
    }

    fn clear(&mut self) {
        self.states.clear();
        self.order.clear();
    }
}

/// The entities (collection, id) that ops outside some causal past wrote.
type Concurrent = BTreeSet<(Collection, String)>;

/// Past this many entities of one collection touched by concurrent ops,
/// the state at an op's deps reads the collection's keys once.
const MANY_STALE: usize = 16;

/// Change hashes are already uniform, so eight of their bytes, mixed with a
/// per-process key (no author can aim changes at one bucket), are the map
/// key's hash. The causal past of an op is walked through this map once per
/// concurrent op, and SipHash of 32 bytes was most of that walk.
#[derive(Clone)]
struct ByHash(u64);

impl Default for ByHash {
    fn default() -> Self {
        use std::hash::BuildHasher as _;
        ByHash(std::collections::hash_map::RandomState::new().hash_one(0u64))
    }
}

impl std::hash::BuildHasher for ByHash {
    type Hasher = PrefixHasher;
    fn build_hasher(&self) -> PrefixHasher {
        PrefixHasher(self.0)
    }
}

struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        // murmur3's finaliser
        let mut z = self.0;
        z ^= z >> 33;
        z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^= z >> 33;
        z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        z ^ (z >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(b);
    }
}

fn internal(e: impl std::fmt::Display) -> Rejection {
    Rejection::Internal(e.to_string())
}

/// Decodes change bytes. Automerge panics on some malformed changes (op
/// counters past `u32::MAX`), so a panic is caught and reported as an error.
fn decode_change(bytes: &[u8]) -> Result<am::Change, String> {
    match catch_unwind(|| am::Change::from_bytes(bytes.to_vec())) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("it cannot be decoded".into()),
    }
}

fn parse_change(op: &Op) -> Result<am::Change, Rejection> {
    let change = decode_change(&op.body.change).map_err(Rejection::BadChange)?;
    let log = op.log();
    if change.actor_id() != &log.actor() {
        return Err(Rejection::BadChange("its actor is not the op's log".into()));
    }
    if change.seq() != op.body.seq {
        return Err(Rejection::BadChange(format!(
            "its seq {} is not the op's seq {}",
            change.seq(),
            op.body.seq
        )));
    }
    if change.timestamp() != op.body.hlc.ms as i64 {
        return Err(Rejection::BadChange("its time is not the op's time".into()));
    }
    if change.message().is_some() || !change.extra_bytes().is_empty() || change.author().is_some() {
        return Err(Rejection::BadChange(
            "it carries a message, author or extra bytes".into(),
        ));
    }
    Ok(change)
}

/// Where an object sits in the document's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Loc {
    Root,
    Collection(Collection),
    Entity(Collection, String),
}

/// A write target in path-scope terms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Touch {
    RootKey(String),
    Entity(Collection, String),
}

fn prop_str(p: &am::Prop) -> String {
    match p {
        am::Prop::Map(s) => s.clone(),
        am::Prop::Seq(i) => i.to_string(),
    }
}

/// The entities a change writes into, from its decoded ops. Objects the
/// change creates are located by the op that made them; others are located
/// in the document at `heads` (the op's causal past).
fn touched(
    doc: &am::Automerge,
    heads: Option<&[ChangeHash]>,
    change: &am::Change,
) -> Result<BTreeSet<Touch>, String> {
    use am::legacy::{Key, ObjectId};
    let expanded = change.decode();
    let actor = change.actor_id().clone();
    let start = change.start_op().get();
    let mut made: HashMap<u64, Loc> = HashMap::new();
    let mut out = BTreeSet::new();
    for (i, op) in expanded.operations.iter().enumerate() {
        let loc = match &op.obj {
            ObjectId::Root => Loc::Root,
            ObjectId::Id(am::legacy::OpId(ctr, act)) => {
                if act == &actor && *ctr >= start && made.contains_key(ctr) {
                    made[ctr].clone()
                } else {
                    let exid = doc
                        .import_obj(&format!("{ctr}@{}", act.to_hex_string()))
                        .map_err(|e| format!("unknown object: {e}"))?;
                    let parents = match heads {
                        Some(h) => doc.parents_at(&exid, h),
                        None => doc.parents(&exid),
                    };
                    let path = parents.map_err(|e| format!("unknown object: {e}"))?.path();
                    match path.as_slice() {
                        [] => return Err("an object outside the team layout".into()),
                        [(_, c)] => Loc::Collection(
                            Collection::from_key(&prop_str(c)).ok_or("an unknown collection")?,
                        ),
                        [(_, c), (_, id), ..] => Loc::Entity(
                            Collection::from_key(&prop_str(c)).ok_or("an unknown collection")?,
                            prop_str(id),
                        ),
                    }
                }
            }
        };
        let key = match &op.key {
            Key::Map(k) => Some(k.to_string()),
            Key::Seq(_) => None,
        };
        let touch = match (&loc, &key) {
            (Loc::Root, Some(k)) => Touch::RootKey(k.clone()),
            (Loc::Collection(c), Some(k)) => Touch::Entity(*c, k.clone()),
            (Loc::Entity(c, id), _) => Touch::Entity(*c, id.clone()),
            _ => return Err("a list write outside any entity".into()),
        };
        if let am::legacy::OpType::Make(_) = op.action {
            let child = match (&loc, &key) {
                (Loc::Root, Some(k)) => {
                    Loc::Collection(Collection::from_key(k).ok_or("an unknown collection")?)
                }
                (Loc::Collection(c), Some(k)) => Loc::Entity(*c, k.clone()),
                (Loc::Entity(c, id), _) => Loc::Entity(*c, id.clone()),
                _ => return Err("an object outside the team layout".into()),
            };
            made.insert(start + i as u64, child);
        }
        out.insert(touch);
    }
    Ok(out)
}

fn path_text(t: &Touch) -> String {
    match t {
        Touch::RootKey(k) => format!("/{k}"),
        Touch::Entity(c, id) => format!("/{}/{id}", c.key()),
    }
}

fn sorted(mut v: Vec<ChangeHash>) -> Vec<ChangeHash> {
    v.sort();
    v
}

/// The quarantine's bookkeeping: bounds, restoring it from a store, purging.
impl Replica {
    /// Keeps an authentic refused op, then drops what the bounds exclude.
    fn quarantine_insert(&mut self, op: Op, hash: OpHash, reason: Rejection) {
        let bytes = op.encode().len();
        self.quarantine_meta
            .insert(hash, QuarantineEntry::of(&op, hash, bytes));
        self.quarantine.insert(hash, Quarantined { op, reason });
        self.enforce_quarantine_bounds();
    }

    /// Drops the quarantined ops beyond the bounds; returns their hashes.
    /// They stay refused: an op depending on one is still refused.
    fn enforce_quarantine_bounds(&mut self) -> Vec<OpHash> {
        let entries: Vec<QuarantineEntry> = self.quarantine_meta.values().cloned().collect();
        let drop = quarantine_overflow(&entries);
        for h in &drop {
            self.quarantine.remove(h);
            self.quarantine_meta.remove(h);
        }
        drop
    }

    /// Puts back the quarantine kept by a store (op and recorded reason).
    /// Entries that are not authentic ops of this team, or that the bounds
    /// exclude, are not taken: their hashes are returned so the store drops
    /// them too.
    pub fn restore_quarantine(
        &mut self,
        entries: impl IntoIterator<Item = (OpHash, String, Vec<u8>)>,
    ) -> Vec<OpHash> {
        let mut refused = Vec::new();
        for (hash, reason, bytes) in entries {
            let op = match Op::decode(&bytes) {
                Ok(op) => op,
                Err(_) => {
                    refused.push(hash);
                    continue;
                }
            };
            let authentic = op.hash() == hash
                && op.body.team == Some(self.team)
                && op.verify_signature()
                && !self.by_hash.contains_key(&hash);
            if !authentic {
                refused.push(hash);
                continue;
            }
            // A void or a lost fork depends on other ops, which may have
            // changed since: such an op is judged again (see `rejudge`).
            if reason.starts_with(VOIDED_PREFIX) || reason.starts_with(FORK_LOST_PREFIX) {
                self.reoffer.push(op);
                continue;
            }
            // As `reject` did: a fork leaves the log valid; any other
            // refusal poisons what depends on the op.
            if !reason.starts_with("fork:") {
                if let Ok(c) = decode_change(&op.body.change) {
                    self.rejected_changes.insert(c.hash());
                }
                self.rejected_ops.insert(hash);
            }
            self.quarantine_meta
                .insert(hash, QuarantineEntry::of(&op, hash, bytes.len()));
            self.quarantine.insert(
                hash,
                Quarantined {
                    op,
                    reason: Rejection::Restored(reason),
                },
            );
        }
        refused.extend(self.enforce_quarantine_bounds());
        refused
    }

    /// Judges again the ops [`Replica::restore_quarantine`] set aside (voided
    /// or lost a fork in an earlier run), oldest first: each is voided again,
    /// or applied if what voided it is gone. The report says which.
    pub fn rejudge(&mut self, now_ms: u64) -> Report {
        let mut again = std::mem::take(&mut self.reoffer);
        again.sort_by_key(|o| (o.body.hlc, o.hash()));
        let mut report = Report::default();
        for op in again {
            let r = self.apply(op, now_ms);
            report.merge(r);
        }
        report
    }

    /// Drops `ops` from the quarantine (a `quarantine.purge` applied). They
    /// stay refused.
    pub fn purge_quarantine(&mut self, ops: &[OpHash]) {
        for h in ops {
            self.quarantine.remove(h);
            self.quarantine_meta.remove(h);
        }
    }
}

impl Replica {
    /// Builds the unsigned genesis op of a new team.
    pub fn genesis_body(
        now_ms: u64,
        name: &str,
        description: &str,
        owner: crate::action::NewMember,
        node: crate::action::NewNode,
    ) -> Result<OpBody, PrepareError> {
        rules::check_name("team name", name)?;
        rules::check_name("member name", &owner.name)?;
        rules::check_name("node name", &node.name)?;
        let log = LogId {
            author: owner.key,
            origin: node.key,
        };
        let hlc = Hlc::new(now_ms, 0);
        let ctx = OpContext {
            team: None,
            author: owner.key,
            origin: node.key,
            seq: 1,
            hlc,
        };
        let action = Action::TeamCreate {
            name: name.to_string(),
            description: description.to_string(),
            owner: Box::new(owner),
            node: Box::new(node),
        };
        let writes = effect::genesis(&ctx, &action);
        let change = make_change(&mut am::Automerge::new(), log, hlc, &writes, 1)?;
        Ok(OpBody {
            version: OP_VERSION,
            team: None,
            author: ctx.author,
            origin: ctx.origin,
            seq: 1,
            prev: None,
            hlc,
            action,
            change,
        })
    }

    /// A replica holding just the team's genesis op; the team id is its hash.
    pub fn from_genesis(op: Op) -> Result<Replica, GenesisError> {
        let bad = |s: &str| GenesisError::Invalid(s.to_string());
        let b = &op.body;
        if b.version != OP_VERSION {
            return Err(Rejection::Version(b.version).into());
        }
        if b.team.is_some() || b.seq != 1 || b.prev.is_some() {
            return Err(bad("a genesis op has no team, seq 1 and no previous op"));
        }
        let Action::TeamCreate { owner, node, .. } = &b.action else {
            return Err(bad("its action is not team.create"));
        };
        if owner.key != b.author || node.key != b.origin {
            return Err(bad("it must be signed by the owner on the first node"));
        }
        if !op.verify_signature() {
            return Err(Rejection::BadSignature.into());
        }
        if b.hlc.c > MAX_COUNTER {
            return Err(Rejection::Counter(b.hlc.c).into());
        }
        let change = parse_change(&op)?;
        if !change.deps().is_empty() {
            return Err(bad("it has dependencies"));
        }
        let ctx = OpContext {
            team: None,
            author: b.author,
            origin: b.origin,
            seq: 1,
            hlc: b.hlc,
        };
        let writes = effect::genesis(&ctx, &b.action);
        // The change must be exactly the one team.create implies.
        let expected = make_change(&mut am::Automerge::new(), op.log(), b.hlc, &writes, 1)
            .map_err(|e| Rejection::Internal(e.to_string()))?;
        if expected != b.change {
            return Err(
                Rejection::BadChange("it is not the change team.create implies".into()).into(),
            );
        }
        let mut doc = am::Automerge::new();
        let mut touches: BTreeSet<Touch> = Collection::ALL
            .iter()
            .map(|c| Touch::RootKey(c.key().to_string()))
            .collect();
        touches.extend(writes_touch(&writes));
        let hash = change.hash();
        let max_op = change.max_op();
        doc.apply_changes([change])
            .map_err(|e| Rejection::BadChange(e.to_string()))?;
        let state = read_state(&doc).map_err(internal)?;
        let team = TeamId(op.hash().0);
        let mut r = Replica {
            team,
            doc,
            state,
            applied: Vec::new(),
            by_hash: HashMap::new(),
            by_change: HashMap::default(),
            logs: HashMap::new(),
            pending: Pending::default(),
            waiting: HashMap::new(),
            quarantine: BTreeMap::new(),
            quarantine_meta: BTreeMap::new(),
            rejected_changes: HashSet::new(),
            rejected_ops: HashSet::new(),
            max_hlc: b.hlc,
            deps: Vec::new(),
            dep_idx: Vec::new(),
            floors: Floors::default(),
            touches: HashMap::new(),
            max_op: 0,
            max_ops: Vec::new(),
            revokes: HashMap::new(),
            void_by: HashMap::new(),
            void_changes: HashMap::new(),
            seats: HashMap::new(),
            newly_voided: Vec::new(),
            reoffer: Vec::new(),
            after: StatesAfter::default(),
            keys: Default::default(),
        };
        r.record(op, OpHash(team.0), hash, Vec::new(), max_op);
        r.touches.insert(0, touches.into_iter().collect());
        Ok(r)
    }

    pub fn team(&self) -> TeamId {
        self.team
    }

    /// The typed view at the current heads.
    pub fn state(&self) -> &TeamState {
        &self.state
    }

    pub fn doc(&self) -> &am::Automerge {
        &self.doc
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        sorted(self.doc.get_heads())
    }

    /// Applied ops in the order this replica applied them (causal order).
    pub fn ops(&self) -> &[Applied] {
        &self.applied
    }

    pub fn op(&self, hash: &OpHash) -> Option<&Applied> {
        self.by_hash.get(hash).map(|&i| &self.applied[i])
    }

    pub fn has(&self, hash: &OpHash) -> bool {
        self.by_hash.contains_key(hash)
            || self.quarantine.contains_key(hash)
            || self.pending.contains(hash)
    }

    pub fn quarantine(&self) -> &BTreeMap<OpHash, Quarantined> {
        &self.quarantine
    }

    /// Fork evidence: per lost fork, the losing op (in quarantine) and the
    /// op holding its seat, both signed by the log's author.
    pub fn fork_evidence(&self) -> Vec<(&Op, &Op)> {
        self.quarantine
            .values()
            .filter_map(|q| match q.reason {
                Rejection::ForkLost { winner, .. } => {
                    let w = self
                        .op(&winner)
                        .map(|a| &a.op)
                        .or_else(|| self.quarantine.get(&winner).map(|q| &q.op))?;
                    Some((&q.op, w))
                }
                _ => None,
            })
            .collect()
    }

    pub fn pending(&self) -> impl Iterator<Item = (&OpHash, &Op)> {
        self.pending.ops.iter().map(|(h, held)| (h, &held.op))
    }

    /// The largest time of any applied op.
    pub fn max_hlc(&self) -> Hlc {
        self.max_hlc
    }

    /// Per log, the highest contiguous seq applied: what anti-entropy compares.
    pub fn version_vector(&self) -> VersionVector {
        self.logs
            .iter()
            .map(|(l, v)| (*l, v.len() as u64))
            .collect()
    }

    /// Applied ops a peer with `theirs` lacks, in causal order.
    pub fn missing_for(&self, theirs: &VersionVector) -> Vec<&Applied> {
        let mut out: Vec<usize> = Vec::new();
        for (log, idxs) in &self.logs {
            let have = theirs.get(log).copied().unwrap_or(0) as usize;
            out.extend(idxs.iter().skip(have));
        }
        out.sort_unstable();
        out.into_iter().map(|i| &self.applied[i]).collect()
    }

    /// One page of what a peer with `theirs` lacks: the first of
    /// [`Replica::missing_for`]'s ops, in causal order, at most `max_ops` ops
    /// and `max_bytes` encoded bytes (always at least one op when any is
    /// missing). A prefix in applied order is causally closed, so the peer
    /// applies the page and asks again for the rest.
    pub fn missing_page(
        &self,
        theirs: &VersionVector,
        max_ops: usize,
        max_bytes: usize,
    ) -> (Vec<&Applied>, bool) {
        let mut out: Vec<usize> = Vec::new();
        for (log, idxs) in &self.logs {
            let have = theirs.get(log).copied().unwrap_or(0) as usize;
            out.extend(idxs.iter().skip(have));
        }
        out.sort_unstable();
        let mut page = Vec::new();
        let mut bytes = 0usize;
        for &i in &out {
            let a = &self.applied[i];
            let size = a.op.encode().len();
            if !page.is_empty() && (page.len() >= max_ops || bytes + size > max_bytes) {
                return (page, true);
            }
            bytes += size;
            page.push(a);
        }
        (page, false)
    }

    /// The op of `log` at `seq` (1-based), if applied.
    pub fn log_op(&self, log: &LogId, seq: u64) -> Option<&Applied> {
        let idx = *self.logs.get(log)?.get(seq.checked_sub(1)? as usize)?;
        Some(&self.applied[idx])
    }

    /// Builds an unsigned op for `action` by `author` on node `origin`.
    /// The rules are checked here so the user hears at once.
    pub fn prepare(
        &mut self,
        author: PublicKey,
        origin: PublicKey,
        now_ms: u64,
        action: Action,
    ) -> Result<OpBody, PrepareError> {
        let ctx = self.next_context(author, origin, now_ms);
        let log = ctx.log();
        if self.logs.get(&log).map_or(0, |v| v.len() as u64) + 1 != ctx.seq {
            return Err(PrepareError::VoidedLog { seq: ctx.seq - 1 });
        }
        rules::check(&self.state, &ctx, &action)?;
        let writes = effect::effect(&self.state, &ctx, &action);
        // The change is written into the live document and rolled back; a
        // panic in between must not leave it half-written.
        let made = catch_unwind(AssertUnwindSafe(|| {
            make_change(&mut self.doc, ctx.log(), ctx.hlc, &writes, ctx.seq)
        }));
        let change = match made {
            Ok(c) => c?,
            Err(_) => {
                self.rebuild();
                return Err(PrepareError::Internal(
                    "building the change panicked".into(),
                ));
            }
        };
        Ok(OpBody {
            version: OP_VERSION,
            team: Some(self.team),
            author,
            origin,
            seq: ctx.seq,
            prev: self.log_head(&log).1,
            hlc: ctx.hlc,
            action,
            change,
        })
    }

    /// The seq and hash of a log's last op, voided ops included: a voided
    /// op keeps its seat, so the log goes on after it (and what follows it
    /// depends on it, so it is void too while it is).
    fn log_head(&self, log: &LogId) -> (u64, Option<OpHash>) {
        let mut n = self.logs.get(log).map_or(0, |v| v.len() as u64);
        while self.seats.contains_key(&(*log, n + 1)) {
            n += 1;
        }
        let hash = match self.log_op(log, n) {
            Some(a) => Some(a.hash),
            None => self.seats.get(&(*log, n)).copied(),
        };
        (n, hash)
    }

    /// The context the next op of (author, origin) will have: use it to
    /// derive the ids an action creates ([`OpContext::new_id`]).
    pub fn next_context(&self, author: PublicKey, origin: PublicKey, now_ms: u64) -> OpContext {
        let log = LogId { author, origin };
        let seq = self.log_head(&log).0 + 1;
        OpContext {
            team: Some(self.team),
            author,
            origin,
            seq,
            hlc: self.max_hlc.next(now_ms),
        }
    }

    /// Offers one op. It is applied if valid and ready, kept waiting if its
    /// dependencies are missing or its time is too far ahead, quarantined if
    /// invalid. Ops it unblocks are applied too.
    pub fn apply(&mut self, op: Op, now_ms: u64) -> Report {
        let mut report = Report::default();
        let hash = op.hash();
        if self.has(&hash) {
            report.duplicate = true;
            return report;
        }
        let mut queue = vec![(op, hash)];
        while let Some((op, hash)) = queue.pop() {
            let log = op.log();
            let seq = op.body.seq;
            let step = self.try_apply(&op, hash, now_ms);
            match step {
                Ok(Some(v)) => {
                    let change = v.change;
                    let purged = match &op.body.action {
                        Action::QuarantinePurge { ops } => Some(ops.clone()),
                        _ => None,
                    };
                    self.commit(op, hash, v);
                    report.applied.push(hash);
                    if let Some(ops) = purged {
                        self.purge_quarantine(&ops);
                    }
                    self.pending.remove(&hash);
                    if self.revokes.contains_key(&hash) {
                        self.void_concurrent(hash);
                    }
                    for key in [Wait::Change(change), Wait::Log(log, seq)] {
                        for h in self.waiting.remove(&key).unwrap_or_default() {
                            if let Some((o, _)) = self.pending.remove(&h) {
                                queue.push((o, h));
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(Step::Wait(w)) => {
                    report.waiting.push((hash, w.clone()));
                    self.waiting.entry(w.clone()).or_default().push(hash);
                    for (h, w) in self.pending.hold(hash, op, w) {
                        if let Some(v) = self.waiting.get_mut(&w) {
                            v.retain(|x| *x != h);
                            if v.is_empty() {
                                self.waiting.remove(&w);
                            }
                        }
                        report.dropped.push(h);
                    }
                }
                Err(step @ (Step::Reject(_) | Step::Unverified(_))) => {
                    let (reason, seat) = match step {
                        Step::Unverified(r) => (r, false),
                        Step::Reject(r) => (r, true),
                        Step::Wait(_) => unreachable!("matched above"),
                    };
                    self.pending.remove(&hash);
                    self.reject(&op, hash, reason.clone(), seat);
                    report.rejected.push((hash, reason));
                    // Whatever waited on this op can never apply.
                    let mut wake: Vec<OpHash> = Vec::new();
                    if let Ok(c) = decode_change(&op.body.change) {
                        wake.extend(
                            self.waiting
                                .remove(&Wait::Change(c.hash()))
                                .unwrap_or_default(),
                        );
                    }
                    wake.extend(
                        self.waiting
                            .remove(&Wait::Log(log, seq))
                            .unwrap_or_default(),
                    );
                    for h in wake {
                        if let Some((o, _)) = self.pending.remove(&h) {
                            queue.push((o, h));
                        }
                    }
                }
            }
            self.drain_voided(&mut report, &mut queue);
        }
        report
    }

    /// Moves what the last step voided into `report` and queues the ops to
    /// offer again.
    fn drain_voided(&mut self, report: &mut Report, queue: &mut Vec<(Op, OpHash)>) {
        for h in self.newly_voided.drain(..) {
            report.applied.retain(|a| *a != h);
            report.voided.push(h);
        }
        let mut again = std::mem::take(&mut self.reoffer);
        // Latest first: the queue pops from the end, so causes come first.
        again.sort_by_key(|o| std::cmp::Reverse((o.body.hlc, o.hash())));
        for o in again {
            let h = o.hash();
            queue.push((o, h));
        }
    }

    /// Retries ops that waited for the local clock to reach their time.
    pub fn retry_future(&mut self, now_ms: u64) -> Report {
        let keys: Vec<Wait> = self
            .waiting
            .keys()
            .filter(
                |w| matches!(w, Wait::Future(t) if t.ms <= now_ms.saturating_add(MAX_FUTURE_MS)),
            )
            .cloned()
            .collect();
        let mut report = Report::default();
        for k in keys {
            for h in self.waiting.remove(&k).unwrap_or_default() {
                if let Some((op, _)) = self.pending.remove(&h) {
                    let r = self.apply(op, now_ms);
                    report.merge(r);
                }
            }
        }
        report
    }

    /// `seat`: the op was judged whole (its change checked), so a void op
    /// keeps its seat of the log.
    fn reject(&mut self, op: &Op, hash: OpHash, reason: Rejection, seat: bool) {
        // Anyone can send a corrupted copy of a real op: only an op that
        // really is its author's (and this team's) speaks for its log and
        // change. A fork leaves the log's applied ops valid.
        let authentic = !matches!(
            reason,
            Rejection::BadSignature | Rejection::WrongTeam(_) | Rejection::Version(_)
        );
        if authentic && !matches!(reason, Rejection::Fork { .. }) {
            let by = match reason {
                Rejection::Voided { by } | Rejection::ForkLost { winner: by, .. } => Some(by),
                _ => None,
            };
            if let Ok(c) = decode_change(&op.body.change) {
                self.rejected_changes.insert(c.hash());
                if let Some(by) = by {
                    self.void_changes.insert(c.hash(), by);
                }
            }
            if let Some(by) = by {
                self.void_by.insert(hash, by);
                // A voided op that was judged valid still holds its seat.
                if seat {
                    self.seat(op.log(), op.body.seq, hash);
                }
            }
            self.rejected_ops.insert(hash);
        }
        // Nothing unsigned is kept: a forged or foreign op is reported,
        // never stored.
        if authentic {
            self.quarantine_insert(op.clone(), hash, reason);
        }
        self.unvoid_victims_of(hash);
    }

    /// Ops that `hash` voided come back when `hash` is refused or voided
    /// itself: they are offered again.
    fn unvoid_victims_of(&mut self, hash: OpHash) {
        let back: Vec<OpHash> = self
            .void_by
            .iter()
            .filter(|(_, by)| **by == hash)
            .map(|(h, _)| *h)
            .collect();
        for h in back {
            self.void_by.remove(&h);
            self.rejected_ops.remove(&h);
            self.quarantine_meta.remove(&h);
            if let Some(q) = self.quarantine.remove(&h) {
                if let Ok(c) = decode_change(&q.op.body.change) {
                    self.rejected_changes.remove(&c.hash());
                    self.void_changes.remove(&c.hash());
                }
                self.reoffer.push(q.op);
            }
        }
    }

    /// Notes an authentic op at (log, seq): the lowest hash holds the seat.
    fn seat(&mut self, log: LogId, seq: u64, hash: OpHash) {
        let e = self.seats.entry((log, seq)).or_insert(hash);
        if hash < *e {
            *e = hash;
        }
    }

    /// Notes an applied op; `hash` is `op.hash()`, which every caller has
    /// at hand already (hashing encodes the whole op).
    fn record(
        &mut self,
        op: Op,
        hash: OpHash,
        change: ChangeHash,
        deps: Vec<ChangeHash>,
        max_op: u64,
    ) {
        debug_assert_eq!(hash, op.hash());
        self.seat(op.log(), op.body.seq, hash);
        self.max_op = self.max_op.max(max_op);
        self.max_ops.push(max_op);
        let idx = self.applied.len();
        let dep_idx = deps
            .iter()
            .filter_map(|d| self.by_change.get(d).map(|&i| i as u32))
            .collect::<Vec<u32>>();
        self.floors.push(idx, &dep_idx);
        self.dep_idx.push(dep_idx);
        self.deps.push(deps);
        let log = op.log();
        self.max_hlc = self.max_hlc.max(op.body.hlc);
        self.applied.push(Applied { op, hash, change });
        self.by_hash.insert(hash, idx);
        self.by_change.insert(change, idx);
        self.logs.entry(log).or_default().push(idx);
    }

    fn try_apply(&mut self, op: &Op, hash: OpHash, now_ms: u64) -> Result<Option<Validated>, Step> {
        if self.by_hash.contains_key(&hash) {
            return Ok(None);
        }
        match catch_unwind(AssertUnwindSafe(|| {
            self.validate_and_apply(op, hash, now_ms)
        })) {
            Ok(r) => r.map(Some),
            Err(_) => {
                // Never leave a half-applied change behind.
                self.rebuild();
                Err(Step::Reject(Rejection::Internal(
                    "validation panicked".into(),
                )))
            }
        }
    }

    fn validate_and_apply(
        &mut self,
        op: &Op,
        hash: OpHash,
        now_ms: u64,
    ) -> Result<Validated, Step> {
        let b = &op.body;
        if b.version != OP_VERSION {
            return Err(Step::Reject(Rejection::Version(b.version)));
        }
        if b.team != Some(self.team) {
            return Err(Step::Reject(Rejection::WrongTeam(b.team)));
        }
        if !op.verify_signature_cached(&mut self.keys) {
            return Err(Step::Reject(Rejection::BadSignature));
        }
        if b.hlc.c > MAX_COUNTER {
            return Err(Step::Reject(Rejection::Counter(b.hlc.c)));
        }
        let log = op.log();
        if let Some(p) = b.prev
            && self.rejected_ops.contains(&p)
        {
            return Err(match self.void_by.get(&p).copied() {
                Some(by) if self.contend(op, hash, by) => Step::Wait(Wait::Log(log, b.seq - 1)),
                Some(by) => Step::Unverified(Rejection::Voided { by }),
                None => Step::Reject(Rejection::DependsOnRejected),
            });
        }
        // A fork: the lowest authentic hash at a seat wins everywhere.
        if let Some(&w) = self.seats.get(&(log, b.seq))
            && w < hash
        {
            return Err(Step::Reject(Rejection::ForkLost {
                seq: b.seq,
                winner: w,
            }));
        }
        let change = parse_change(op).map_err(Step::Reject)?;
        // The log's hash chain.
        let have = self.logs.get(&log).map_or(0, |v| v.len() as u64);
        if b.seq == 0 {
            return Err(Step::Reject(Rejection::Chain("seq starts at 1".into())));
        }
        if b.seq <= have {
            let prev = b.seq.checked_sub(1).and_then(|p| self.log_op(&log, p));
            if prev.map(|a| a.hash) != b.prev {
                return Err(Step::Reject(Rejection::Fork { seq: b.seq }));
            }
            // Whatever would make it wait comes first: a waiting op takes
            // nothing from the log.
            for dep in change.deps() {
                if !self.by_change.contains_key(dep) && !self.rejected_changes.contains(dep) {
                    return Err(Step::Wait(Wait::Change(*dep)));
                }
            }
            if b.hlc.ms > now_ms.saturating_add(MAX_FUTURE_MS) {
                return Err(Step::Wait(Wait::Future(b.hlc)));
            }
            // This op holds the seat now (lower hash, checked above): the
            // applied op there and everything depending on it are void (and
            // come back if this op is refused).
            let Some(&idx) = self.logs.get(&log).and_then(|v| v.get(b.seq as usize - 1)) else {
                return Err(Step::Reject(internal("a log without its ops")));
            };
            self.void_applied(vec![(
                idx,
                Rejection::ForkLost {
                    seq: b.seq,
                    winner: hash,
                },
            )]);
        }
        let have = self.logs.get(&log).map_or(0, |v| v.len() as u64);
        if b.seq > have + 1 {
            return Err(Step::Wait(Wait::Log(log, b.seq - 1)));
        }
        let prev = self.log_op(&log, b.seq - 1);
        let log_prev = prev.map(|a| a.change);
        if prev.map(|a| a.hash) != b.prev {
            return Err(Step::Reject(Rejection::Chain(format!(
                "seq {} does not name the hash of seq {}",
                b.seq,
                b.seq - 1
            ))));
        }
        // Causal dependencies.
        let mut past = prev.map_or(Hlc::ZERO, |a| a.op.body.hlc);
        for dep in change.deps() {
            match self.by_change.get(dep) {
                Some(&i) => past = past.max(self.applied[i].op.body.hlc),
                None if self.rejected_changes.contains(dep) => {
                    return Err(match self.void_changes.get(dep).copied() {
                        Some(by) if self.contend(op, hash, by) => Step::Wait(Wait::Change(*dep)),
                        Some(by) => Step::Unverified(Rejection::Voided { by }),
                        None => Step::Reject(Rejection::DependsOnRejected),
                    });
                }
                None => return Err(Step::Wait(Wait::Change(*dep))),
            }
        }
        if b.hlc <= past {
            return Err(Step::Reject(Rejection::Clock { hlc: b.hlc, past }));
        }
        if b.hlc.ms > now_ms.saturating_add(MAX_FUTURE_MS) {
            return Err(Step::Wait(Wait::Future(b.hlc)));
        }
        // The state at the op's causal past.
        let deps = sorted(change.deps().to_vec());
        // Every applied change is an ancestor of (or is) a head, so when the
        // deps include every head the causal past is the whole document.
        // (Automerge also names the log's previous change, often not a head.)
        let fast = self.doc.get_heads().iter().all(|h| deps.contains(h));
        // Which applied ops are in the causal past, computed once for the
        // state, the revocation check and the rebuilt change.
        let past = if fast {
            Vec::new()
        } else {
            self.past_of(&deps)
        };
        let past_state = if fast {
            None
        } else {
            Some(self.state_at_past(&deps, &past).map_err(Step::Reject)?)
        };
        let (past_state, concurrent) = match past_state {
            Some((state, concurrent)) => (Some(state), concurrent),
            None => (None, None),
        };
        let ctx = OpContext {
            team: Some(self.team),
            author: b.author,
            origin: b.origin,
            seq: b.seq,
            hlc: b.hlc,
        };
        if let Some(ps) = &past_state {
            rules::check(ps, &ctx, &b.action).map_err(|e| Step::Reject(e.into()))?;
        }
        let pre: &TeamState = past_state.as_ref().unwrap_or(&self.state);
        if fast {
            rules::check(pre, &ctx, &b.action).map_err(|e| Step::Reject(e.into()))?;
        }
        let writes = effect::effect(pre, &ctx, &b.action);
        let revoke = is_revocation(&b.action).then(|| writes.clone());
        // The change must be byte for byte the one an honest `prepare` made
        // from this action at these deps: rebuild it and compare hashes.
        let carried = change.hash();
        if fast {
            // What the rebuilt change's header will be; checked first so a
            // bad header never costs a rebuild of the document.
            let mut want = self.doc.get_heads();
            if let Some(p) = log_prev
                && !want.contains(&p)
            {
                want.push(p);
            }
            if sorted(want) != deps {
                return Err(Step::Reject(Rejection::BadChange(
                    "its deps are not the document's heads".into(),
                )));
            }
            if change.start_op().get() != self.max_op.saturating_add(1) {
                return Err(Step::Reject(Rejection::BadChange(format!(
                    "its start_op {} is not {}",
                    change.start_op(),
                    self.max_op.saturating_add(1)
                ))));
            }
            // On top of the whole document: write the expected change into
            // the live document; when it matches it *is* this op's change.
            let made = commit_expected(&mut self.doc, log, b.hlc, &writes);
            match made {
                Ok((h, _)) if h == carried => {}
                Ok((_, ends)) => {
                    let expected = self.doc.get_last_local_change();
                    self.rebuild();
                    return Err(Step::Reject(self.mismatch(
                        &change,
                        expected.as_ref(),
                        &deps,
                        &writes,
                        &ends,
                        b.action.name(),
                    )));
                }
                Err(e) => {
                    self.rebuild();
                    return Err(Step::Reject(internal(e)));
                }
            }
        } else {
            let new_entities = writes.iter().all(|w| !pre.contains(w.collection, &w.id));
            let (expected, ends) = self
                .expected_at(
                    &deps,
                    &past,
                    new_entities,
                    log,
                    b.seq,
                    b.hlc,
                    &writes,
                    log_prev,
                )
                .map_err(|e| Step::Reject(internal(e)))?;
            if expected.hash() != carried {
                return Err(Step::Reject(self.mismatch(
                    &change,
                    Some(&expected),
                    &deps,
                    &writes,
                    &ends,
                    b.action.name(),
                )));
            }
            // Revocation wins: an applied revocation concurrent with this op
            // may take the right it uses. (On the fast path every applied
            // op is in its causal past.) Judged once the change is known to
            // be the action's, as a void op keeps its seat of the log: a
            // forged change must not hold the seat of the honest op at it.
            if let Some(ps) = &past_state
                && !self.revokes.is_empty()
                && let Some(by) = self.voided_by_applied(&past, op, hash, ps, &ctx)
            {
                return Err(Step::Reject(Rejection::Voided { by }));
            }
            self.doc
                .apply_changes([change.clone()])
                .map_err(|e| Step::Reject(Rejection::BadChange(e.to_string())))?;
        }
        let change_hash = carried;
        let max_op = change.max_op();
        let touches: BTreeSet<Touch> = writes_touch(&writes).collect();
        if fast {
            for w in writes {
                self.state.set(w.collection, &w.id, w.value);
            }
            self.after.insert(change_hash, self.state.clone());
        } else {
            if let Some(mut after) = past_state {
                for w in &writes {
                    after.set(w.collection, &w.id, w.value.clone());
                }
                self.after.insert(change_hash, after);
            }
            // Concurrent ops may have touched the same entities: take the
            // merge. An entity no op outside the past wrote holds just what
            // this op wrote (its change overwrote all the past held there).
            for w in &writes {
                let alone = concurrent
                    .as_ref()
                    .is_some_and(|c| !c.contains(&(w.collection, w.id.clone())));
                if alone {
                    self.state.set(w.collection, &w.id, w.value.clone());
                    continue;
                }
                let merged = read_entity(&self.doc, w.collection, &w.id)
                    .map_err(|e| Step::Reject(internal(e)));
                match merged {
                    Ok(v) => self.state.set(w.collection, &w.id, v),
                    Err(e) => {
                        self.rebuild();
                        return Err(e);
                    }
                }
            }
        }
        Ok(Validated {
            change: change_hash,
            deps,
            max_op,
            touches,
            revoke,
        })
    }

    /// Records an op `validate_and_apply` has just applied to the document
    /// and typed view (taking the op, so it is not copied).
    fn commit(&mut self, op: Op, hash: OpHash, v: Validated) {
        let idx = self.applied.len();
        self.record(op, hash, v.change, v.deps, v.max_op);
        self.touches.insert(idx, v.touches.into_iter().collect());
        if let Some(w) = v.revoke {
            self.revokes.insert(hash, w);
        }
    }

    /// The change `prepare` would have made for `writes` on a document
    /// holding exactly the causal past of `deps` (not all applied changes).
    /// Forking the document at the deps would replay the whole history;
    /// instead the writes are made in a transaction isolated at the deps
    /// (exported, then rolled back, so the document is left as it was),
    /// which sees and overwrites what the past holds, and the two things
    /// the rest of the document changes are set to
    /// the past's: the first op counter (one past the largest counter in the
    /// causal past; the change's own op ids move with it) and the deps (the
    /// heads of the causal past, plus the log's previous change). Returns
    /// the change and, per write, the number of ops written up to it.
    ///
    /// An op that only creates entities its causal past does not hold
    /// (`new_entities`, known from the typed state there), which is most of
    /// what a busy team writes, needs
    /// no transaction: its change is built from the entities' ops alone
    /// ([`doc::new_entities_change`]), the same bytes the transaction makes.
    #[allow(clippy::too_many_arguments)]
    fn expected_at(
        &mut self,
        deps: &[ChangeHash],
        past: &[bool],
        new_entities: bool,
        log: LogId,
        seq: u64,
        hlc: Hlc,
        writes: &[Write],
        log_prev: Option<ChangeHash>,
    ) -> Result<(am::Change, Vec<usize>), String> {
        let mut max_op = 0;
        for (i, _) in past.iter().enumerate().filter(|(_, p)| **p) {
            max_op = max_op.max(self.max_ops[i]);
        }
        // The heads of the causal past: the deps no op of the past depends
        // on. Ops are applied after their deps, so only ops applied after a
        // dep can name it.
        let dep_idx: Vec<usize> = deps
            .iter()
            .filter_map(|d| self.by_change.get(d).copied())
            .collect();
        let low = dep_idx.iter().copied().min().unwrap_or(0);
        let mut heads: Vec<ChangeHash> = dep_idx
            .iter()
            .filter(|&&d| {
                let h = self.applied[d].change;
                !(low..past.len()).any(|j| past[j] && j != d && self.deps[j].contains(&h))
            })
            .map(|&d| self.applied[d].change)
            .collect();
        if let Some(p) = log_prev
            && !heads.contains(&p)
        {
            heads.push(p);
        }
        let start = max_op.saturating_add(1);
        if new_entities {
            let header = doc::ChangeHeader {
                actor: log.actor(),
                seq,
                start_op: start,
                time: hlc.ms as i64,
                deps: heads.clone(),
            };
            let puts = writes
                .iter()
                .map(|w| w.value.as_ref().map(|v| (w.collection, w.id.as_str(), v)))
                .collect::<Option<Vec<_>>>();
            if let Some(made) =
                puts.and_then(|puts| doc::new_entities_change(&self.doc, puts, header))
            {
                return Ok(made);
            }
        }
        // Written in the live document isolated at the deps, exported and
        // rolled back (a panic in between is caught by `try_apply`, which
        // rebuilds the document).
        let (made, ends) = export_change(&mut self.doc, log, hlc, writes, Some(deps))?;
        let mut e = match made {
            Some(c) => c.decode(),
            None => am::ExpandedChange {
                operations: Vec::new(),
                actor_id: log.actor(),
                hash: None,
                seq,
                start_op: std::num::NonZeroU64::MIN,
                time: hlc.ms as i64,
                message: None,
                deps: Vec::new(),
                extra_bytes: Vec::new(),
                author: None,
            },
        };
        let old = e.start_op.get();
        let actor = log.actor();
        let shift = |id: &mut am::legacy::OpId| {
            if id.1 == actor && id.0 >= old {
                id.0 = id.0 - old + start;
            }
        };
        for op in &mut e.operations {
            if let am::legacy::ObjectId::Id(id) = &mut op.obj {
                shift(id);
            }
            if let am::legacy::Key::Seq(am::legacy::ElementId::Id(id)) = &mut op.key {
                shift(id);
            }
            let mut pred: Vec<am::legacy::OpId> = op.pred.iter().cloned().collect();
            pred.iter_mut().for_each(shift);
            op.pred = pred.into();
        }
        e.start_op = std::num::NonZeroU64::new(start).ok_or("op counter overflow")?;
        e.deps = heads;
        e.hash = None;
        Ok((am::Change::from(e), ends))
    }

    /// Why a carried change differs from the one its action implies, for
    /// the quarantine: the first difference found, in the terms of §3.
    fn mismatch(
        &self,
        carried: &am::Change,
        expected: Option<&am::Change>,
        deps: &[ChangeHash],
        writes: &[Write],
        ends: &[usize],
        action: &'static str,
    ) -> Rejection {
        let touches = match touched(&self.doc, Some(deps), carried) {
            Ok(t) => t,
            Err(e) => return Rejection::BadChange(e),
        };
        let allowed: BTreeSet<Touch> = writes_touch(writes).collect();
        if let Some(t) = touches.difference(&allowed).next() {
            return Rejection::OutOfScope {
                path: path_text(t),
                action,
            };
        }
        let Some(expected) = expected else {
            return Rejection::BadChange(format!("it is not the change {action} implies"));
        };
        if carried.start_op() != expected.start_op() {
            return Rejection::BadChange(format!(
                "its start_op {} is not {}",
                carried.start_op(),
                expected.start_op()
            ));
        }
        if sorted(carried.deps().to_vec()) != sorted(expected.deps().to_vec()) {
            return Rejection::BadChange("its deps are not those of its causal past".into());
        }
        let (got, want) = (carried.decode().operations, expected.decode().operations);
        let first = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        let write = ends
            .iter()
            .position(|&end| first < end)
            .or(writes.len().checked_sub(1))
            .and_then(|k| writes.get(k));
        match write {
            Some(w) => Rejection::EffectMismatch {
                action,
                collection: w.collection,
                id: w.id.clone(),
            },
            None => Rejection::BadChange(format!("it is not the change {action} implies")),
        }
    }

    /// The typed view at `heads`, a set of applied changes. An entity that
    /// no change outside the causal past of `heads` wrote is the same there
    /// as now, so only the entities those concurrent changes wrote are read
    /// at `heads`; the rest is the current view. (A full read at historical
    /// heads costs a clock computation per field and grows with the team.)
    #[doc(hidden)]
    pub fn state_at(&mut self, heads: &[ChangeHash]) -> Result<TeamState, Rejection> {
        let past = self.past_of(heads);
        self.state_at_past(heads, &past).map(|(state, _)| state)
    }

    /// The applied ops in the causal past of `heads` (or among them), in
    /// applied order.
    #[doc(hidden)]
    pub fn past_ops(&self, heads: &[ChangeHash]) -> Vec<OpHash> {
        let past = self.past_of(heads);
        self.applied
            .iter()
            .zip(past)
            .filter(|(_, p)| *p)
            .map(|(a, _)| a.hash)
            .collect()
    }

    /// [`Replica::state_at`] with the causal past of `heads` known; also
    /// the entities the ops outside that past wrote, when they were worked
    /// out (`None`: unknown, any entity may have been).
    fn state_at_past(
        &mut self,
        heads: &[ChangeHash],
        past: &[bool],
    ) -> Result<(TeamState, Option<Concurrent>), Rejection> {
        if heads.iter().any(|h| !self.by_change.contains_key(h)) {
            return Err(internal("a head that is not applied"));
        }
        if let Some(s) = self.after.get(heads) {
            return Ok((s.clone(), None));
        }
        let mut stale: Concurrent = BTreeSet::new();
        let mut full = false;
        for (i, _) in past.iter().enumerate().filter(|(_, p)| !**p) {
            match self.touches_of(i) {
                Some(ts) => {
                    for t in ts {
                        match t {
                            Touch::Entity(c, id) => {
                                stale.insert((*c, id.clone()));
                            }
                            Touch::RootKey(_) => full = true,
                        }
                    }
                }
                None => full = true,
            }
            if full {
                break;
            }
        }
        if !full && stale.is_empty() {
            // Nothing to read: no clock to work out at the heads.
            return Ok((self.state.clone(), Some(stale)));
        }
        let at = AtHeads::new(&self.doc, heads);
        if full {
            return Ok((read_state(&at).map_err(internal)?, None));
        }
        let mut state = self.state.clone();
        // A collection's map is looked up once, not once per entity, and
        // only for the collections concurrent ops wrote into (a root key's
        // lookup is a seek; all ten were a quarter of this function). It is
        // looked up in the live document: a read at heads first works out
        // the heads' clock, a walk of the change graph. The maps are the
        // same at the heads: genesis, in every op's past, made them, and
        // any op outside the past that touched a root key made this a full
        // read.
        let mut colls: Vec<Collection> = stale.iter().map(|(c, _)| *c).collect();
        colls.dedup();
        for c in colls {
            let ids: Vec<&String> = stale
                .range((c, String::new())..)
                .take_while(|(k, _)| *k == c)
                .map(|(_, id)| id)
                .collect();
            let Some(coll) = collection_obj(&self.doc, c).map_err(internal)? else {
                ids.iter().for_each(|id| state.set(c, id, None));
                continue;
            };
            // Many concurrent ops mostly create entities the past does not
            // hold: one scan of the collection's keys at the heads answers
            // for all of them, where a lookup each costs more.
            let present: Option<HashSet<String>> = (ids.len() > MANY_STALE).then(|| {
                autosurgeon::ReadDoc::map_range(&at, &coll, ..)
                    .map(|i| i.key.into_owned())
                    .collect()
            });
            for id in ids {
                let e = match &present {
                    Some(p) if !p.contains(id.as_str()) => None,
                    _ => read_entity_in(&at, &coll, c, id).map_err(internal)?,
                };
                state.set(c, id, e);
            }
        }
        Ok((state, Some(stale)))
    }

    /// Which applied ops are in the causal past of `deps` (by index).
    fn past_of(&self, deps: &[ChangeHash]) -> Vec<bool> {
        let mut past = vec![false; self.applied.len()];
        let mut stack: Vec<usize> = deps
            .iter()
            .filter_map(|d| self.by_change.get(d).copied())
            .collect();
        // Everything below the floor is in the past: the walk stops there.
        let floor = self.floors.of(&stack).min(past.len());
        past[..floor].fill(true);
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut past[i], true) {
                continue;
            }
            stack.extend(self.dep_idx[i].iter().map(|&d| d as usize));
        }
        past
    }

    /// The typed view at applied op `i`'s causal past.
    fn state_before(&mut self, i: usize) -> Result<TeamState, Rejection> {
        let deps = self.deps.get(i).cloned().unwrap_or_default();
        self.state_at(&deps)
    }

    /// Revocation wins: the applied revocation, concurrent with `op` (not in
    /// `past`), that takes a right `op` uses, if any. Of two concurrent
    /// revocations that each take the other's right, the earlier by
    /// (HLC, op hash) stands.
    fn voided_by_applied(
        &mut self,
        past: &[bool],
        op: &Op,
        hash: OpHash,
        pre: &TeamState,
        ctx: &OpContext,
    ) -> Option<OpHash> {
        let mut found: Vec<(Hlc, OpHash)> = Vec::new();
        for (rh, rw) in &self.revokes {
            let Some(&ri) = self.by_hash.get(rh) else {
                continue;
            };
            let r = &self.applied[ri].op;
            if past.get(ri).copied().unwrap_or(true) || !may_affect(&r.body.action, op) {
                continue;
            }
            if loses(pre, rw, ctx, &op.body.action) {
                found.push((r.body.hlc, *rh));
            }
        }
        found.sort();
        let own = is_revocation(&op.body.action).then(|| effect::effect(pre, ctx, &op.body.action));
        for (rhlc, rh) in found {
            // A revocation earlier than `rh` that takes `rh`'s right stands.
            if let Some(w) = &own
                && (op.body.hlc, hash) < (rhlc, rh)
                && let Some(&ri) = self.by_hash.get(&rh)
            {
                let r = self.applied[ri].op.clone();
                if may_affect(&op.body.action, &r)
                    && let Ok(rpre) = self.state_before(ri)
                    && loses(&rpre, w, &op_context(self.team, &r), &r.body.action)
                {
                    continue;
                }
                // Or it takes the right of an op `rh` depends on (not in
                // this op's past): voiding that op voids `rh`. The two still
                // revoke each other, and the earlier stands, whichever of
                // them a replica saw first.
                if self.voids_past_of(ri, past, op, w) {
                    continue;
                }
            }
            return Some(rh);
        }
        None
    }

    /// A revocation `op` that depends on an op voided by revocation `by`
    /// still contends with `by`: when `op` is the earlier of the two by
    /// (HLC, op hash) and takes the right `by` uses, `by` is void instead
    /// (and what it voided comes back, `op`'s dependencies with it).
    /// Returns whether `by` was voided. The state at `op`'s causal past is
    /// read from a copy of the document holding the voided changes too.
    fn contend(&mut self, op: &Op, hash: OpHash, by: OpHash) -> bool {
        if !is_revocation(&op.body.action) {
            return false;
        }
        let Some(&ri) = self.by_hash.get(&by) else {
            return false;
        };
        let r = self.applied[ri].op.clone();
        if (op.body.hlc, hash) >= (r.body.hlc, by) || !self.revokes.contains_key(&by) {
            return false;
        }
        let Ok(change) = parse_change(op) else {
            return false;
        };
        let mut voided: Vec<&Quarantined> = self
            .quarantine
            .iter()
            .filter(|(h, _)| self.void_by.contains_key(*h))
            .map(|(_, q)| q)
            .collect();
        voided.sort_by_key(|q| q.op.body.hlc);
        let changes: Vec<am::Change> = voided
            .iter()
            .filter_map(|q| decode_change(&q.op.body.change).ok())
            .collect();
        let mut doc = self.doc.clone();
        if doc.apply_changes(changes.clone()).is_err() {
            return false;
        }
        let deps = sorted(change.deps().to_vec());
        if deps.iter().any(|d| doc.get_change_by_hash(d).is_none()) {
            return false;
        }
        let Ok(pre) = read_state(&AtHeads::new(&doc, &deps)) else {
            return false;
        };
        let ctx = op_context(self.team, op);
        if rules::check(&pre, &ctx, &op.body.action).is_err() {
            return false;
        }
        let writes = effect::effect(&pre, &ctx, &op.body.action);
        let Ok(rpre) = self.state_before(ri) else {
            return false;
        };
        // It takes `by`'s right, or the right of an op `by` depends on
        // (voiding that op voids `by`): the two revoke each other, and this
        // one is the earlier.
        if !(may_affect(&op.body.action, &r)
            && loses(&rpre, &writes, &op_context(self.team, &r), &r.body.action))
        {
            let past = self.past_through_voided(&deps, &changes);
            if !self.voids_past_of(ri, &past, op, &writes) {
                return false;
            }
        }
        self.void_applied(vec![(ri, Rejection::Voided { by: hash })]);
        true
    }

    /// After revocation `hash` is applied: voids the applied ops concurrent
    /// with it whose right it takes (not an earlier revocation taking its
    /// own author's right: that one stands, and `hash` was refused).
    /// Which applied ops are in the causal past of `deps`, also through
    /// voided `changes` (a contending op may build on voided ops).
    fn past_through_voided(&self, deps: &[ChangeHash], changes: &[am::Change]) -> Vec<bool> {
        let voided: HashMap<ChangeHash, &am::Change> =
            changes.iter().map(|c| (c.hash(), c)).collect();
        let mut past = vec![false; self.applied.len()];
        let mut seen: HashSet<ChangeHash> = HashSet::new();
        let mut stack: Vec<ChangeHash> = deps.to_vec();
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            if let Some(&i) = self.by_change.get(&h) {
                if !std::mem::replace(&mut past[i], true) {
                    stack.extend(self.deps[i].iter().copied());
                }
            } else if let Some(c) = voided.get(&h) {
                stack.extend(c.deps().iter().copied());
            }
        }
        past
    }

    /// Whether revocation `op` (with `writes`, its causal past `past`)
    /// takes the right of an applied op in the causal past of applied op
    /// `ri` that is not in `op`'s causal past.
    fn voids_past_of(&mut self, ri: usize, past: &[bool], op: &Op, writes: &[Write]) -> bool {
        let rpast = self.past_of(&self.deps[ri].clone());
        let candidates: Vec<usize> = rpast
            .iter()
            .enumerate()
            .filter(|&(y, &in_r)| {
                in_r && !past.get(y).copied().unwrap_or(true)
                    && may_affect(&op.body.action, &self.applied[y].op)
            })
            .map(|(y, _)| y)
            .collect();
        for y in candidates {
            let z = self.applied[y].op.clone();
            if let Ok(zpre) = self.state_before(y)
                && loses(&zpre, writes, &op_context(self.team, &z), &z.body.action)
            {
                return true;
            }
        }
        false
    }

    fn void_concurrent(&mut self, hash: OpHash) {
        let Some(&ri) = self.by_hash.get(&hash) else {
            return;
        };
        let Some(rw) = self.revokes.get(&hash).cloned() else {
            return;
        };
        let r = self.applied[ri].op.clone();
        let past = self.past_of(&self.deps[ri].clone());
        let mut roots = Vec::new();
        for (i, in_past) in past.into_iter().enumerate() {
            if i == ri || in_past || !may_affect(&r.body.action, &self.applied[i].op) {
                continue;
            }
            let z = self.applied[i].op.clone();
            let Ok(zpre) = self.state_before(i) else {
                continue;
            };
            let zctx = op_context(self.team, &z);
            if !loses(&zpre, &rw, &zctx, &z.body.action) {
                continue;
            }
            roots.push((i, Rejection::Voided { by: hash }));
        }
        if !roots.is_empty() {
            self.void_applied(roots);
        }
    }

    /// Takes applied ops `roots` and every applied op depending on them out
    /// of the state: they go to quarantine with the root's reason, the
    /// document and typed view are rebuilt from the remaining ops (already
    /// validated, so not validated again), and ops that a voided op had
    /// voided are offered again.
    fn void_applied(&mut self, roots: Vec<(usize, Rejection)>) {
        let n = self.applied.len();
        let mut mark: Vec<Option<Rejection>> = vec![None; n];
        // Roots keep their seats; ops void only through them do not, as if
        // they had arrived after them (see `Step::Unverified`).
        let mut root = vec![false; n];
        for (i, why) in roots {
            if let Some(m) = mark.get_mut(i) {
                *m = Some(why);
                root[i] = true;
            }
        }
        for i in 0..n {
            if mark[i].is_some() {
                continue;
            }
            let inherited = self.deps[i]
                .iter()
                .filter_map(|d| self.by_change.get(d))
                .find_map(|&j| mark[j].clone());
            mark[i] = inherited;
        }
        let old = std::mem::take(&mut self.applied);
        let old_deps = std::mem::take(&mut self.deps);
        self.dep_idx.clear();
        self.floors.clear();
        let old_max = std::mem::take(&mut self.max_ops);
        let old_touches = std::mem::take(&mut self.touches);
        self.by_hash.clear();
        self.by_change.clear();
        self.logs.clear();
        self.max_op = 0;
        let mut voided = Vec::new();
        for (i, ((a, deps), max_op)) in old.into_iter().zip(old_deps).zip(old_max).enumerate() {
            match mark[i].take() {
                Some(why) => {
                    self.revokes.remove(&a.hash);
                    self.newly_voided.push(a.hash);
                    voided.push((a.op, a.hash, why, root[i]));
                }
                None => {
                    let idx = self.applied.len();
                    if let Some(t) = old_touches.get(&i) {
                        self.touches.insert(idx, t.clone());
                    }
                    self.record(a.op, a.hash, a.change, deps, max_op);
                }
            }
        }
        // Quarantined with the root's reason; ops they had voided come back.
        for (op, hash, why, seat) in voided {
            // Ops waiting on a voided op can never apply: offer them again
            // so they are refused the same way.
            let mut wake = self
                .waiting
                .remove(&Wait::Log(op.log(), op.body.seq))
                .unwrap_or_default();
            if let Ok(c) = decode_change(&op.body.change) {
                wake.extend(
                    self.waiting
                        .remove(&Wait::Change(c.hash()))
                        .unwrap_or_default(),
                );
            }
            for h in wake {
                if let Some((o, _)) = self.pending.remove(&h) {
                    self.reoffer.push(o);
                }
            }
            self.reject(&op, hash, why, seat);
        }
        self.rebuild();
    }

    /// What the change of applied op `i` wrote, located at its own deps.
    fn touches_of(&mut self, i: usize) -> Option<&[Touch]> {
        if !self.touches.contains_key(&i) {
            let change = decode_change(&self.applied.get(i)?.op.body.change).ok()?;
            let deps = sorted(change.deps().to_vec());
            let t = touched(&self.doc, Some(&deps), &change).ok()?;
            self.touches.insert(i, t.into_iter().collect());
        }
        self.touches.get(&i).map(|t| &**t)
    }

    /// Rebuilds the document and typed view from the applied ops, dropping
    /// anything applied after them (a change that failed its checks).
    fn rebuild(&mut self) {
        let mut doc = am::Automerge::new();
        let changes: Vec<am::Change> = self
            .applied
            .iter()
            .filter_map(|a| decode_change(&a.op.body.change).ok())
            .collect();
        // These changes were all applied before, so this succeeds.
        let _ = doc.apply_changes(changes);
        self.state = read_state(&doc).unwrap_or_default();
        self.doc = doc;
        self.after.clear();
    }

    /// A snapshot for fast restarts: the saved document and the typed view,
    /// so a restart needs no field-by-field read of the document. Ops remain
    /// the source of truth. Layout: [`SNAPSHOT_MAGIC`] ++ postcard((doc, state)).
    pub fn save_doc(&self) -> Vec<u8> {
        let out = SNAPSHOT_MAGIC.to_vec();
        match postcard::to_extend(&(self.doc.save(), &self.state), out) {
            Ok(v) => v,
            // Plain data always encodes; fall back to the bare document.
            Err(_) => self.doc.save(),
        }
    }

    /// Recomputes the typed view from the document (used by tests to check
    /// that the incrementally maintained view matches).
    pub fn recompute_state(&self) -> TeamState {
        read_state(&self.doc).unwrap_or_default()
    }

    /// A replica from a snapshot and the ops it contains, trusted because this
    /// node verified them before it stored them. `ops` must be the applied
    /// ops in order, genesis first.
    pub fn restore(doc_bytes: &[u8], ops: Vec<Op>) -> Result<Replica, GenesisError> {
        let mut iter = ops.into_iter();
        let genesis = iter
            .next()
            .ok_or_else(|| GenesisError::Invalid("no ops".into()))?;
        let team = TeamId(genesis.hash().0);
        let invalid = |e: String| GenesisError::Invalid(format!("snapshot: {e}"));
        let (doc, state) = match doc_bytes.strip_prefix(SNAPSHOT_MAGIC) {
            Some(rest) => {
                let (doc, state): (Vec<u8>, TeamState) =
                    postcard::from_bytes(rest).map_err(|e| invalid(e.to_string()))?;
                let doc = am::Automerge::load(&doc).map_err(|e| invalid(e.to_string()))?;
                (doc, state)
            }
            None => {
                let doc = am::Automerge::load(doc_bytes).map_err(|e| invalid(e.to_string()))?;
                let state = read_state(&doc).map_err(|e| invalid(e.to_string()))?;
                (doc, state)
            }
        };
        let mut r = Replica {
            team,
            doc: am::Automerge::new(),
            state: TeamState::default(),
            applied: Vec::new(),
            by_hash: HashMap::new(),
            by_change: HashMap::default(),
            logs: HashMap::new(),
            pending: Pending::default(),
            waiting: HashMap::new(),
            quarantine: BTreeMap::new(),
            quarantine_meta: BTreeMap::new(),
            rejected_changes: HashSet::new(),
            rejected_ops: HashSet::new(),
            max_hlc: Hlc::ZERO,
            deps: Vec::new(),
            dep_idx: Vec::new(),
            floors: Floors::default(),
            touches: HashMap::new(),
            max_op: 0,
            max_ops: Vec::new(),
            revokes: HashMap::new(),
            void_by: HashMap::new(),
            void_changes: HashMap::new(),
            seats: HashMap::new(),
            newly_voided: Vec::new(),
            reoffer: Vec::new(),
            after: StatesAfter::default(),
            keys: Default::default(),
        };
        // Ops voided after they were stored are not in the snapshot: they
        // are offered again once the rest is restored (and voided again).
        let mut again = Vec::new();
        for op in std::iter::once(genesis).chain(iter) {
            let c =
                decode_change(&op.body.change).map_err(|e| GenesisError::Invalid(e.to_string()))?;
            if doc.get_change_meta_by_hash(&c.hash()).is_none() && !r.applied.is_empty() {
                again.push(op);
                continue;
            }
            let hash = op.hash();
            r.record(op, hash, c.hash(), c.deps().to_vec(), c.max_op());
        }
        // The store keeps ops in the order they were applied, so `record`
        // found every dep; indexing them again once all are known guards
        // the walks of causal pasts against a store written otherwise.
        r.dep_idx = r
            .deps
            .iter()
            .map(|ds| {
                ds.iter()
                    .filter_map(|d| r.by_change.get(d).map(|&i| i as u32))
                    .collect()
            })
            .collect();
        r.floors.clear();
        for (i, ds) in r.dep_idx.iter().enumerate() {
            r.floors.push(i, ds);
        }
        // The snapshot must hold exactly the changes of the ops.
        let heads = doc.get_heads();
        let complete = r.by_change.len() == r.applied.len()
            && heads.iter().all(|h| r.by_change.contains_key(h))
            && r.by_change
                .keys()
                .all(|h| doc.get_change_meta_by_hash(h).is_some());
        if !complete {
            return Err(GenesisError::Invalid(
                "the snapshot does not match the stored ops".into(),
            ));
        }
        r.doc = doc;
        r.state = state;
        // Revocations keep voiding concurrent ops that arrive later.
        for i in 0..r.applied.len() {
            let op = r.applied[i].op.clone();
            if is_revocation(&op.body.action) {
                let pre = r
                    .state_before(i)
                    .map_err(|e| GenesisError::Invalid(e.to_string()))?;
                let w = effect::effect(&pre, &op_context(r.team, &op), &op.body.action);
                r.revokes.insert(r.applied[i].hash, w);
            }
        }
        for op in again {
            let now = op.body.hlc.ms;
            r.apply(op, now);
        }
        Ok(r)
    }
}

enum Step {
    Wait(Wait),
    Reject(Rejection),
    /// Refused as void because it builds on a void op, its change never
    /// checked: it does not hold its seat of the log (an honest op at that
    /// seat must not lose it to a forged one on some replicas only).
    Unverified(Rejection),
}

/// Actions that take a right away: removal, role change, node removal,
/// invite revocation.
fn is_revocation(a: &Action) -> bool {
    matches!(
        a,
        Action::MemberRemove { .. }
            | Action::MemberRole { .. }
            | Action::NodeRemove { .. }
            | Action::InviteRevoke { .. }
    )
}

/// Whether revocation `r` can take a right `op` uses: it names the op's
/// author or origin, or the op redeems an invite (whose creator or
/// itself `r` may revoke). A cheap filter before the rules are run again.
fn may_affect(r: &Action, op: &Op) -> bool {
    let b = &op.body;
    let joins = matches!(
        b.action,
        Action::MemberJoin { .. } | Action::NodeJoin { .. }
    );
    match r {
        Action::MemberRemove { member } | Action::MemberRole { member, .. } => {
            b.author == *member || joins
        }
        Action::NodeRemove { node } => b.author == *node || b.origin == *node,
        Action::InviteRevoke { .. } => joins,
        _ => false,
    }
}

/// Whether `action` by `ctx`, valid at `pre`, fails once `writes` (a
/// revocation's) are applied on top of `pre`.
fn loses(pre: &TeamState, writes: &[Write], ctx: &OpContext, action: &Action) -> bool {
    let mut s = pre.clone();
    for w in writes {
        s.set(w.collection, &w.id, w.value.clone());
    }
    rules::check(&s, ctx, action).is_err()
}

fn op_context(team: TeamId, op: &Op) -> OpContext {
    OpContext {
        team: Some(team),
        author: op.body.author,
        origin: op.body.origin,
        seq: op.body.seq,
        hlc: op.body.hlc,
    }
}

/// The entities `writes` names, in path-scope terms.
fn writes_touch(writes: &[Write]) -> impl Iterator<Item = Touch> + '_ {
    writes
        .iter()
        .map(|w| Touch::Entity(w.collection, w.id.clone()))
}

/// Commits `writes` to `doc` as one change of `log` at `hlc`, exactly as
/// [`Replica::prepare`] does: the document's actor becomes the log's, a
/// genesis change first creates every collection, and a change with no
/// writes is an empty commit. Returns the change's hash and, per write, the
/// number of ops written up to and including it.
fn commit_expected(
    doc: &mut am::Automerge,
    log: LogId,
    hlc: Hlc,
    writes: &[Write],
) -> Result<(ChangeHash, Vec<usize>), String> {
    use am::transaction::Transactable as _;
    doc.set_actor(log.actor());
    let opts = || am::transaction::CommitOptions::default().with_time(hlc.ms as i64);
    let genesis = doc.get_heads().is_empty();
    let mut tx = doc.transaction();
    if genesis {
        for c in Collection::ALL {
            tx.put_object(am::ROOT, c.key(), am::ObjType::Map)
                .map_err(|e| e.to_string())?;
        }
    }
    let ends = write_all(&mut tx, writes)?;
    let (hash, _) = tx.commit_with(opts());
    let hash = match hash {
        Some(h) => h,
        None => doc.empty_commit(opts()),
    };
    Ok((hash, ends))
}

/// The change `writes` make as one change of `log`, on top of the whole
/// document (`at` `None`) or isolated at the heads `at`, built without
/// landing in `doc`: the transaction is exported, then rolled back. `None`
/// when the writes make no operation. Also returns, per write, the number
/// of ops written up to it.
fn export_change(
    doc: &mut am::Automerge,
    log: LogId,
    hlc: Hlc,
    writes: &[Write],
    at: Option<&[ChangeHash]>,
) -> Result<(Option<am::Change>, Vec<usize>), String> {
    doc.set_actor(log.actor());
    let mut tx = match at {
        None => doc.transaction(),
        Some(heads) => doc
            .transaction_at(am::PatchLog::inactive(), heads)
            .map_err(|e| e.to_string())?,
    };
    // On an error the dropped transaction rolls back.
    let ends = write_all(&mut tx, writes)?;
    let opts = am::transaction::CommitOptions::default().with_time(hlc.ms as i64);
    Ok((tx.export_and_rollback(opts), ends))
}

/// Writes `writes` in `tx`; returns, per write, the number of ops written
/// up to it (what names the entity of a mismatching op).
fn write_all(
    tx: &mut am::transaction::Transaction<'_>,
    writes: &[Write],
) -> Result<Vec<usize>, String> {
    use am::transaction::Transactable as _;
    let mut ends = Vec::with_capacity(writes.len());
    for w in writes {
        write_entity(tx, w.collection, &w.id, w.value.as_ref()).map_err(|e| e.to_string())?;
        ends.push(tx.pending_ops());
    }
    Ok(ends)
}

/// The bytes of the change `writes` make as the next change (`seq`) of
/// `log` on top of `doc`. `doc` is left as it was (it is changed and
/// restored; a panic inside can leave it half-written, so callers that
/// catch one must rebuild it).
fn make_change(
    doc: &mut am::Automerge,
    log: LogId,
    hlc: Hlc,
    writes: &[Write],
    seq: u64,
) -> Result<Vec<u8>, PrepareError> {
    // Genesis creates the collections and an op may write nothing (an empty
    // change): both are committed on a copy, as `commit_expected` writes
    // them. Every other change is built in place.
    let exported = if doc.get_heads().is_empty() {
        None
    } else {
        export_change(doc, log, hlc, writes, None)
            .map_err(PrepareError::Internal)?
            .0
    };
    let change = match exported {
        Some(c) => c,
        None => {
            let mut doc = doc.fork();
            commit_expected(&mut doc, log, hlc, writes).map_err(PrepareError::Internal)?;
            doc.get_last_local_change()
                .ok_or_else(|| PrepareError::Internal("no change was made".into()))?
        }
    };
    if change.seq() != seq {
        return Err(PrepareError::Internal(format!(
            "change seq {} but log seq {seq}",
            change.seq()
        )));
    }
    Ok(change.raw_bytes().to_vec())
}
