//! The node's durable identity and its teams: opens the store, keeps the
//! node key, creates teams and loads every team's replica (snapshot first,
//! then the ops after it), and snapshots on the way out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_protocol::action::{NewMember, NewNode};
use shoal_protocol::keys::OpHash;
use shoal_protocol::model::Runtime;
use shoal_protocol::replica::{GenesisError, PrepareError};
use shoal_protocol::{Op, OpBody, PublicKey, Replica, SecretKey, TeamId};

use crate::secrets::EncSecret;
use crate::store::{Store, StoreError, TeamRecord, VoidedEntry};

const LOCAL_NS: &str = "node";
const NODE_SEED_KEY: &str = "seed";
/// Every this many ops a team's document is snapshotted, so restarts apply
/// only the ops after the last snapshot.
pub const SNAPSHOT_EVERY: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the stored node key is damaged; restore the data dir from a backup or start with an empty one"
    )]
    NodeKey,
    #[error(
        "team {team}: stored op {index} cannot be read: {why}; run `shoal audit verify` on another node and resync"
    )]
    StoredOp {
        team: String,
        index: u64,
        why: String,
    },
    #[error("team {team}: {0}", team = .1)]
    Genesis(GenesisError, String),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("this node already holds team {0}")]
    TeamExists(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// 32 random bytes from the operating system.
pub fn random32() -> Result<[u8; 32], DaemonError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| DaemonError::Random(e.to_string()))?;
    Ok(b)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The default data dir: `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("shoal");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/var/lib".into());
    PathBuf::from(home).join(".local/share/shoal")
}

/// `docker` if a Docker engine answers on its socket, else `none`.
pub fn detect_runtime() -> Runtime {
    use std::io::{Read as _, Write as _};
    let sock = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let answered = (|| -> std::io::Result<bool> {
        let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"HTTP/1.") && buf[..n].windows(3).any(|w| w == b"200"))
    })();
    if answered.unwrap_or(false) {
        Runtime::Docker
    } else {
        Runtime::None
    }
}

/// A node: its key, its store and the replicas of its teams.
#[derive(Debug)]
pub struct Node {
    data_dir: PathBuf,
    store: Arc<Store>,
    key: SecretKey,
    teams: BTreeMap<TeamId, Replica>,
}

impl Node {
    /// Opens (or creates) the node in `data_dir` and loads every team.
    pub fn open(data_dir: &Path) -> Result<Node, DaemonError> {
        let store = Store::open(data_dir.join("shoal.redb"))?;
        let key = match store.get_local(LOCAL_NS, NODE_SEED_KEY)? {
            Some(seed) => SecretKey::from_seed(seed.try_into().map_err(|_| DaemonError::NodeKey)?),
            None => {
                let seed = random32()?;
                store.put_local(LOCAL_NS, NODE_SEED_KEY, &seed)?;
                SecretKey::from_seed(seed)
            }
        };
        let mut teams = BTreeMap::new();
        for (team, _) in store.teams()? {
            teams.insert(team, load_replica(&store, team)?);
        }
        Ok(Node {
            data_dir: data_dir.to_path_buf(),
            store: Arc::new(store),
            key,
            teams,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn key(&self) -> PublicKey {
        self.key.public()
    }

    /// The node's secret key seed (its libp2p identity).
    pub fn key_seed(&self) -> [u8; 32] {
        self.key.seed()
    }

    /// The node's X25519 encryption secret, derived from its key seed:
    /// deployment secrets and registry passwords are sealed to its public
    /// half (§5, `crate::secrets`).
    pub fn enc_secret(&self) -> EncSecret {
        EncSecret::from_node_seed(&self.key.seed())
    }

    /// The public half of [`Node::enc_secret`], hex: the node's `enc_key`.
    pub fn enc_public(&self) -> String {
        self.enc_secret().public_hex()
    }

    /// The encryption secret of the node whose store `store` is, for code
    /// that holds the store rather than the [`Node`] (the control API).
    pub fn stored_enc_secret(store: &Store) -> Result<EncSecret, DaemonError> {
        let seed = store
            .get_local(LOCAL_NS, NODE_SEED_KEY)?
            .ok_or(DaemonError::NodeKey)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| DaemonError::NodeKey)?;
        Ok(EncSecret::from_node_seed(&seed))
    }

    pub fn teams(&self) -> &BTreeMap<TeamId, Replica> {
        &self.teams
    }

    /// The node's store, shared with the actors that replicate its teams.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// Hands a team's replica over to whoever replicates it (the sync
    /// actor); the node no longer snapshots it.
    pub fn take_replica(&mut self, team: TeamId) -> Option<Replica> {
        self.teams.remove(&team)
    }

    pub fn record(&self, team: TeamId) -> Result<Option<TeamRecord>, DaemonError> {
        Ok(self.store.team(team)?)
    }

    /// The unsigned genesis op of a new team owned by `owner`, with this
    /// node as its first node. The owner's CLI signs it.
    pub fn new_team_body(
        &self,
        name: &str,
        owner: NewMember,
        node_name: &str,
        runtime: Runtime,
        now_ms: u64,
    ) -> Result<OpBody, DaemonError> {
        let node = NewNode {
            key: self.key.public(),
            name: node_name.to_string(),
            runtime,
            enc_key: self.enc_public(),
            addresses: Vec::new(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version: shoal_protocol::PROTOCOL_VERSION,
        };
        Ok(Replica::genesis_body(now_ms, name, "", owner, node)?)
    }

    /// Stores a signed genesis op as a new team, with a fresh private-network key.
    pub fn install_genesis(&mut self, op: Op) -> Result<TeamId, DaemonError> {
        let name = match &op.body.action {
            shoal_protocol::Action::TeamCreate { name, .. } => name.clone(),
            _ => String::new(),
        };
        let replica =
            Replica::from_genesis(op.clone()).map_err(|e| DaemonError::Genesis(e, name.clone()))?;
        let team = replica.team();
        let record = TeamRecord::new(name, random32()?, now_ms());
        self.store.put_team(team, &record)?;
        self.store
            .append_ops(team, &[(op.hash(), op.log(), op.body.seq, op.encode())])?;
        self.store.put_snapshot(team, 1, &replica.save_doc())?;
        self.teams.insert(team, replica);
        Ok(team)
    }

    /// Installs an existing team from its ops (genesis first, any order
    /// after) and its record (the team's network key). Every op is verified;
    /// the applied ones are stored in the order applied, refused ones are
    /// kept in quarantine, and ops still waiting are dropped (anti-entropy
    /// brings them again).
    pub fn install_team(
        &mut self,
        record: TeamRecord,
        ops: Vec<Op>,
    ) -> Result<TeamId, DaemonError> {
        let mut it = ops.into_iter();
        let genesis = it.next().ok_or_else(|| {
            DaemonError::Genesis(GenesisError::Invalid("no ops".into()), record.name.clone())
        })?;
        let mut replica = Replica::from_genesis(genesis)
            .map_err(|e| DaemonError::Genesis(e, record.name.clone()))?;
        let team = replica.team();
        if self.teams.contains_key(&team) || self.store.team(team)?.is_some() {
            return Err(DaemonError::TeamExists(team.short()));
        }
        let now = now_ms();
        for op in it {
            replica.apply(op, now);
        }
        let entries: Vec<_> = replica
            .ops()
            .iter()
            .map(|a| (a.hash, a.op.log(), a.op.body.seq, a.op.encode()))
            .collect();
        self.store.put_team(team, &record)?;
        self.store.append_ops(team, &entries)?;
        for (hash, q) in replica.quarantine() {
            self.store
                .put_quarantined(team, *hash, &q.reason.to_string(), &q.op.encode())?;
        }
        self.store
            .put_snapshot(team, entries.len() as u64, &replica.save_doc())?;
        self.teams.insert(team, replica);
        Ok(team)
    }

    /// Signs an op body with the node key (ops the node makes in its own
    /// name: joins, address updates, deployment reports).
    pub fn sign(&self, body: OpBody) -> Result<Op, DaemonError> {
        body.sign(&self.key)
            .map_err(|e| DaemonError::Sign(e.to_string()))
    }

    /// Commits a team this node has just joined: its record, every applied
    /// op in application order, its quarantine and a snapshot. The replica
    /// stays with the caller.
    pub fn persist_team(&self, record: &TeamRecord, replica: &Replica) -> Result<(), DaemonError> {
        let team = replica.team();
        if self.store.team(team)?.is_some() {
            return Err(DaemonError::TeamExists(team.short()));
        }
        let entries: Vec<_> = replica
            .ops()
            .iter()
            .map(|a| (a.hash, a.op.log(), a.op.body.seq, a.op.encode()))
            .collect();
        self.store.append_ops(team, &entries)?;
        for (hash, q) in replica.quarantine() {
            self.store
                .put_quarantined(team, *hash, &q.reason.to_string(), &q.op.encode())?;
        }
        self.store
            .put_snapshot(team, entries.len() as u64, &replica.save_doc())?;
        // The record last: a team without one is not loaded at start, so a
        // crash half-way leaves nothing that looks joined.
        self.store.put_team(team, record)?;
        Ok(())
    }

    /// Snapshots every team whose snapshot is behind, so the next start is fast.
    pub fn snapshot_all(&self) -> Result<(), DaemonError> {
        for (team, r) in &self.teams {
            let covers = self.store.snapshot(*team)?.map_or(0, |(c, _)| c);
            let count = r.ops().len() as u64;
            if count > covers {
                self.store.put_snapshot(*team, count, &r.save_doc())?;
            }
        }
        Ok(())
    }
}

/// Loads a team: the latest snapshot and the ops it covers are restored as
/// they are (this node verified them before storing them); the ops after it
/// are applied with full validation; then the quarantine is restored from the
/// store, so the audit and the sync counts agree across restarts.
pub fn load_replica(store: &Store, team: TeamId) -> Result<Replica, DaemonError> {
    let mut replica = load_applied(store, team)?;
    let dropped = replica.restore_quarantine(store.quarantined(team)?);
    // Entries an older release kept (unsigned ones, or beyond the bounds).
    store.delete_quarantined(team, &dropped)?;
    // Voided ops and lost forks are judged again against what is stored
    // now; the store follows when an outcome changed.
    let report = replica.rejudge(now_ms());
    if !report.applied.is_empty() || !report.voided.is_empty() {
        let order: Vec<OpHash> = replica.ops().iter().map(|a| a.hash).collect();
        let new: Vec<_> = report
            .applied
            .iter()
            .filter_map(|h| replica.op(h))
            .map(|a| (a.hash, a.op.log(), a.op.body.seq, a.op.encode()))
            .collect();
        let voided: Vec<_> = report
            .voided
            .iter()
            .filter_map(|h| Some((*h, replica.quarantine().get(h)?)))
            .map(|(h, q)| VoidedEntry {
                op: (h, q.op.log(), q.op.body.seq, q.op.encode()),
                reason: q.reason.to_string(),
            })
            .collect();
        store.rewrite_order(team, &order, &new, &voided)?;
        store.put_snapshot(team, order.len() as u64, &replica.save_doc())?;
    }
    for (hash, why) in &report.rejected {
        if let Some(q) = replica.quarantine().get(hash) {
            store.put_quarantined(team, *hash, &why.to_string(), &q.op.encode())?;
        }
    }
    Ok(replica)
}

/// The replica of `team` with every stored applied op.
fn load_applied(store: &Store, team: TeamId) -> Result<Replica, DaemonError> {
    let decode = |i: u64, b: &[u8]| {
        Op::decode(b).map_err(|e| DaemonError::StoredOp {
            team: team.short(),
            index: i,
            why: e.to_string(),
        })
    };
    let all = store.ops_in_order(team)?;
    let (covers, doc) = store.snapshot(team)?.unwrap_or((0, Vec::new()));
    let covers = covers.min(all.len() as u64);
    let mut ops = Vec::with_capacity(all.len());
    for (i, b) in all.iter().enumerate() {
        ops.push(decode(i as u64, b)?);
    }
    let rest = ops.split_off(covers as usize);
    let mut replica = if covers > 0 {
        Replica::restore(&doc, ops).map_err(|e| DaemonError::Genesis(e, team.short()))?
    } else {
        let mut it = rest.iter();
        let genesis = it.next().cloned().ok_or_else(|| DaemonError::StoredOp {
            team: team.short(),
            index: 0,
            why: "the team has no ops".into(),
        })?;
        let mut r =
            Replica::from_genesis(genesis).map_err(|e| DaemonError::Genesis(e, team.short()))?;
        for op in it {
            r.apply(op.clone(), now_ms());
        }
        return Ok(r);
    };
    for op in rest {
        replica.apply(op, now_ms());
    }
    Ok(replica)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(k: &SecretKey) -> NewMember {
        NewMember {
            key: k.public(),
            name: "owner".into(),
            email: None,
            enc_key: String::new(),
        }
    }

    #[test]
    fn a_node_keeps_its_key_and_teams_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let me = SecretKey::from_seed([3; 32]);
        let (key, team, state) = {
            let mut node = Node::open(dir.path()).unwrap();
            let body = node
                .new_team_body("crew", owner(&me), "laptop", Runtime::None, now_ms())
                .unwrap();
            let team = node.install_genesis(body.sign(&me).unwrap()).unwrap();
            let state = node.teams()[&team].state().clone();
            node.snapshot_all().unwrap();
            (node.key(), team, state)
        };
        let node = Node::open(dir.path()).unwrap();
        assert_eq!(node.key(), key);
        assert_eq!(node.teams()[&team].state(), &state);
        assert_eq!(node.record(team).unwrap().unwrap().name, "crew");
    }

    #[test]
    fn a_forged_genesis_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let me = SecretKey::from_seed([3; 32]);
        let mut node = Node::open(dir.path()).unwrap();
        let body = node
            .new_team_body("crew", owner(&me), "laptop", Runtime::None, now_ms())
            .unwrap();
        let mut op = body.sign(&me).unwrap();
        op.body.hlc.ms += 1;
        assert!(node.install_genesis(op).is_err());
        assert!(node.teams().is_empty());
        drop(node);
        assert!(Node::open(dir.path()).unwrap().teams().is_empty());
    }
}
