//! A node's libp2p identity is its shoal node key: the same ed25519 key pair.
//! These helpers convert between the two representations.

use libp2p::PeerId;
use libp2p::identity::{self, Keypair, ed25519};
use shoal_protocol::PublicKey;

use super::MeshError;

/// Multihash code of an identity (inline) multihash: ed25519 peer ids embed
/// the public key instead of hashing it.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The libp2p key pair of a node from its 32-byte ed25519 secret seed.
pub fn keypair_from_seed(seed: [u8; 32]) -> Result<Keypair, MeshError> {
    Keypair::ed25519_from_bytes(seed).map_err(|e| MeshError::Key(e.to_string()))
}

/// The peer id of a shoal node key.
pub fn peer_id_from_key(key: &PublicKey) -> Result<PeerId, MeshError> {
    let pk = ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .map_err(|e| MeshError::Key(e.to_string()))?;
    Ok(identity::PublicKey::from(pk).to_peer_id())
}

/// The shoal node key behind a peer id. Fails for peer ids that are not
/// ed25519 keys (other key types, hashed ids) or whose key shoal refuses
/// (weak points).
pub fn key_from_peer_id(peer: &PeerId) -> Result<PublicKey, MeshError> {
    let mh = peer.as_ref();
    if mh.code() != IDENTITY_MULTIHASH {
        return Err(MeshError::Key(format!(
            "peer id {peer} does not embed its key"
        )));
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest())
        .map_err(|e| MeshError::Key(e.to_string()))?
        .try_into_ed25519()
        .map_err(|e| MeshError::Key(e.to_string()))?;
    PublicKey::from_bytes(pk.to_bytes()).map_err(|e| MeshError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use shoal_protocol::SecretKey;

    #[test]
    fn peer_id_and_key_roundtrip() {
        let sk = SecretKey::from_seed([7; 32]);
        let kp = keypair_from_seed(sk.seed()).unwrap();
        let peer = kp.public().to_peer_id();
        assert_eq!(peer_id_from_key(&sk.public()).unwrap(), peer);
        assert_eq!(key_from_peer_id(&peer).unwrap(), sk.public());
    }

    #[test]
    fn hashed_peer_id_is_refused() {
        let peer = PeerId::from_bytes(
            &[0x12, 0x20]
                .into_iter()
                .chain([1u8; 32])
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(key_from_peer_id(&peer).is_err());
    }
}
