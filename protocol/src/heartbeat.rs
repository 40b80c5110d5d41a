//! Heartbeats: a node's signed "I am here" (§4 "Ephemeral messages").
//!
//! Every node sends one to its connected peers at a fixed interval; peers
//! forward newer ones, so every node learns every other node's status
//! (`connected` while fresh, `unreachable` after), version and addresses
//! across a partial mesh. Heartbeats are never ops: they do not enter the
//! document or the audit log.

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey, Signature, TeamId};

/// Version of the heartbeat encoding.
pub const HEARTBEAT_VERSION: u8 = 1;
/// Most addresses a heartbeat carries.
pub const MAX_HEARTBEAT_ADDRESSES: usize = 32;
const DOMAIN: &[u8] = b"shoal/heartbeat/v1";

/// What a node says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub version: u8,
    pub team: TeamId,
    pub node: PublicKey,
    /// The sender's clock, milliseconds since the Unix epoch; orders a
    /// node's heartbeats.
    pub sent_ms: u64,
    pub agent_version: String,
    pub protocol_version: u32,
    pub addresses: Vec<String>,
}

/// A heartbeat and the sending node's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeartbeat {
    pub beat: Heartbeat,
    pub signature: Signature,
}

/// Why a heartbeat is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("unsupported heartbeat version {0}")]
    Version(u8),
    #[error("the heartbeat's signature does not verify")]
    Signature,
    #[error("too many addresses ({0})")]
    TooManyAddresses(usize),
    #[error("the heartbeat cannot be encoded: {0}")]
    Encode(String),
}

fn message(beat: &Heartbeat) -> Result<Vec<u8>, HeartbeatError> {
    let mut m = DOMAIN.to_vec();
    m.extend(postcard::to_stdvec(beat).map_err(|e| HeartbeatError::Encode(e.to_string()))?);
    Ok(m)
}

impl SignedHeartbeat {
    /// Signs `beat` with the node's key (which must be `beat.node`'s).
    pub fn sign(beat: Heartbeat, key: &SecretKey) -> Result<SignedHeartbeat, HeartbeatError> {
        let signature = key.sign(&message(&beat)?);
        Ok(SignedHeartbeat { beat, signature })
    }

    /// Checks the version, the size and the signature (strict).
    pub fn verify(&self) -> Result<(), HeartbeatError> {
        if self.beat.version != HEARTBEAT_VERSION {
            return Err(HeartbeatError::Version(self.beat.version));
        }
        if self.beat.addresses.len() > MAX_HEARTBEAT_ADDRESSES {
            return Err(HeartbeatError::TooManyAddresses(self.beat.addresses.len()));
        }
        if !self
            .beat
            .node
            .verify(&message(&self.beat)?, &self.signature)
        {
            return Err(HeartbeatError::Signature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &SecretKey) -> Heartbeat {
        Heartbeat {
            version: HEARTBEAT_VERSION,
            team: TeamId([1; 32]),
            node: node.public(),
            sent_ms: 1_000,
            agent_version: "shoal/0.1.0".into(),
            protocol_version: 1,
            addresses: vec!["/ip4/127.0.0.1/tcp/1".into()],
        }
    }

    #[test]
    fn a_signed_heartbeat_verifies_and_any_change_breaks_it() {
        let k = SecretKey::from_seed([4; 32]);
        let s = SignedHeartbeat::sign(beat(&k), &k).unwrap();
        assert_eq!(s.verify(), Ok(()));
        let mut later = s.clone();
        later.beat.sent_ms += 1;
        assert_eq!(later.verify(), Err(HeartbeatError::Signature));
        let mut moved = s.clone();
        moved.beat.addresses.push("/ip4/10.0.0.1/tcp/1".into());
        assert_eq!(moved.verify(), Err(HeartbeatError::Signature));
        // Signed by another key than the node it names.
        let other = SecretKey::from_seed([5; 32]);
        let forged = SignedHeartbeat::sign(beat(&k), &other).unwrap();
        assert_eq!(forged.verify(), Err(HeartbeatError::Signature));
        let mut future = beat(&k);
        future.version = 2;
        let future = SignedHeartbeat::sign(future, &k).unwrap();
        assert_eq!(future.verify(), Err(HeartbeatError::Version(2)));
    }
}
