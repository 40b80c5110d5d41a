//! What both the rules and the effects of an action need: who made the op
//! (its context), the ids it may create, and which deployments an
//! auto-copying `version.increase` copies. It sits below `rules` and
//! `effect` so neither imports the other.

use std::collections::BTreeMap;

use crate::hlc::Hlc;
use crate::keys::{LogId, PublicKey, TeamId, hash_parts};
use crate::model::{Deployment, TeamState, Version};

/// Most ids an op may create.
pub const MAX_NEW_IDS: u32 = 4096;

/// Who made an op, where and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpContext {
    pub team: Option<TeamId>,
    pub author: PublicKey,
    pub origin: PublicKey,
    pub seq: u64,
    pub hlc: Hlc,
}

impl OpContext {
    pub fn log(&self) -> LogId {
        LogId {
            author: self.author,
            origin: self.origin,
        }
    }

    /// The `k`-th id an op of this log and seq may create.
    pub fn new_id(&self, k: u32) -> String {
        entity_id(&self.log(), self.seq, k)
    }

    /// Whether `id` is one this op may create.
    pub(crate) fn is_new_id(&self, id: &str) -> bool {
        (0..MAX_NEW_IDS).any(|k| self.new_id(k) == id)
    }
}

/// Ids of created entities: derived from the creating op's log and seq, so
/// concurrent creations on different logs can never collide.
pub fn entity_id(log: &LogId, seq: u64, k: u32) -> String {
    let h = hash_parts(
        "shoal/entity-id/v1",
        &[&log.actor_bytes(), &seq.to_be_bytes(), &k.to_be_bytes()],
    );
    hex::encode(&h[..12])
}

/// Deployments copied by `increase` with auto-copy: the newest deployment of
/// `v` on each (node, prefix), ordered by (node, prefix).
pub fn copy_sources<'a>(s: &'a TeamState, v: &Version) -> Vec<&'a Deployment> {
    let mut by_slot: BTreeMap<(&str, &str), &Deployment> = BTreeMap::new();
    for d in s.deployments.find_by(crate::table::By::Version, &v.id) {
        let slot = (d.node.as_str(), d.prefix.as_str());
        match by_slot.get(&slot) {
            Some(e) if (e.created, &e.id) >= (d.created, &d.id) => {}
            _ => {
                by_slot.insert(slot, d);
            }
        }
    }
    by_slot.into_values().collect()
}
