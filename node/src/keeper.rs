//! The key keeper (§5): every node and every admin holds the team secrets
//! key; the keeper seals it to those who do not yet.
//!
//! One actor per team on every node. It wakes when the team's state changes
//! (and every [`RESCAN_INTERVAL`]); when this node holds a key that is
//! needed — the current team key, or an older one a registry password is
//! still sealed to (one stored concurrently with a rotation, or with a
//! second first key) — while a live node or admin does not (a newcomer, a
//! member made admin, a node a concurrent rotation missed), it seals the key
//! to them in one `key.seal` op signed by this node. Holders take turns by rank (the order of their keys): the first
//! acts at once, the n-th only once a recipient has waited n ×
//! [`TURN_DELAY`], so a newcomer usually gets one op and an offline holder
//! blocks nobody. It stops when its [`CancellationToken`] is cancelled.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_protocol::model::SealedKey;
use shoal_protocol::{Action, SecretKey, TeamId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::secrets::{self, EncSecret};
use crate::sync::{SyncError, SyncHandle};

/// A rescan even without a change, so turns come round.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// How long the holder of rank n waits (× n) before sealing in its turn.
pub const TURN_DELAY: Duration = Duration::from_secs(10);
/// How long after sealing to a recipient this node tries again if the
/// recipient still waits (its op was refused, say).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The running keeper of one team.
#[derive(Debug)]
pub struct KeyKeeper {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl KeyKeeper {
    /// Spawns the actor for `team`; `key` signs its ops and `enc` opens the
    /// team key sealed to this node.
    pub fn spawn(
        team: TeamId,
        sync: SyncHandle,
        key: SecretKey,
        enc: EncSecret,
        cancel: CancellationToken,
    ) -> KeyKeeper {
        let actor = Actor {
            team,
            changes: sync.subscribe(),
            sync,
            me: key.public().to_hex(),
            key,
            enc,
            cancel: cancel.clone(),
            waiting: BTreeMap::new(),
            sealed: BTreeMap::new(),
        };
        KeyKeeper {
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

/// One key the keeper hands out, as one pass reads it from the replica.
struct Needed {
    epoch: u32,
    public: String,
    /// The key as sealed to this node, when it holds it.
    mine: Option<SealedKey>,
    /// (recipient, encryption key) of those still waiting for it.
    missing: Vec<(String, String)>,
    /// This node's rank among the holders of the key.
    rank: u32,
}

struct Actor {
    team: TeamId,
    sync: SyncHandle,
    changes: watch::Receiver<u64>,
    me: String,
    key: SecretKey,
    enc: EncSecret,
    cancel: CancellationToken,
    /// (team public key, recipient) → when this node first saw it waiting.
    waiting: BTreeMap<(String, String), Instant>,
    /// (team public key, recipient) → when this node sealed the key to it.
    sealed: BTreeMap<(String, String), Instant>,
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
                }
                _ = rescan.tick() => {}
            }
            match self.pass().await {
                Ok(()) => {}
                Err(SyncError::Closed) => break,
                Err(e) => debug!(team = %self.team.short(), "key keeper: {e}"),
            }
        }
    }

    async fn pass(&mut self) -> Result<(), SyncError> {
        let me = self.me.clone();
        let needed = self
            .sync
            .read(move |r| {
                let s = r.state();
                let recipient = format!("node:{me}");
                secrets::needed_keys(s)
                    .into_iter()
                    .map(|(epoch, public)| {
                        let mine = secrets::copies(s, &recipient, epoch, Some(&public))
                            .next()
                            .cloned();
                        let mut holders = secrets::key_holders(s, epoch, Some(&public));
                        holders.sort();
                        let rank = holders.iter().position(|k| *k == me).unwrap_or(0);
                        Needed {
                            missing: secrets::missing_key(s, epoch, &public),
                            epoch,
                            public,
                            mine,
                            rank: u32::try_from(rank).unwrap_or(u32::MAX),
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        let now = Instant::now();
        let waiting_now: Vec<(String, String)> = needed
            .iter()
            .flat_map(|n| n.missing.iter().map(|(r, _)| (n.public.clone(), r.clone())))
            .collect();
        self.waiting.retain(|k, _| waiting_now.contains(k));
        self.sealed
            .retain(|k, at| waiting_now.contains(k) && now.duration_since(*at) < RETRY_AFTER);
        let mut keys = Vec::new();
        let mut names = Vec::new();
        for n in needed {
            let Some(mine) = &n.mine else {
                continue;
            };
            let turn = TURN_DELAY.saturating_mul(n.rank);
            let mut due = Vec::new();
            for (recipient, enc_key) in &n.missing {
                let k = (n.public.clone(), recipient.clone());
                let since = *self.waiting.entry(k.clone()).or_insert(now);
                if !self.sealed.contains_key(&k) && now.duration_since(since) >= turn {
                    due.push((recipient, enc_key));
                }
            }
            if due.is_empty() {
                continue;
            }
            let team_key = match secrets::open_sealed_key(&self.enc, mine) {
                Ok(k) => k,
                Err(e) => {
                    warn!(team = %self.team.short(), epoch = n.epoch, "cannot open the team key sealed to this node: {e}");
                    continue;
                }
            };
            for (recipient, enc_key) in due {
                match secrets::seal_team_key(&team_key, recipient, enc_key) {
                    Ok(k) => {
                        keys.push(k);
                        names.push((n.public.clone(), recipient.clone()));
                    }
                    Err(e) => {
                        warn!(team = %self.team.short(), %recipient, "cannot seal the team key: {e}")
                    }
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        for k in &names {
            self.sealed.insert(k.clone(), now);
        }
        let key = &self.key;
        self.sync
            .write_with(key.public(), Action::KeySeal { keys }, |body| {
                body.sign(key).map_err(|e| e.to_string())
            })
            .await?;
        let recipients: Vec<&String> = names.iter().map(|(_, r)| r).collect();
        info!(team = %self.team.short(), ?recipients, "sealed the team key");
        Ok(())
    }
}
