//! Encoding of the keys of the store's tables (their layouts are documented
//! in `schema.rs`): fixed-width, big-endian byte strings that start with the
//! team id, and the length-prefixed keys of `local_v1`.

use shoal_protocol::keys::{LogId, OpHash, TeamId};

use super::error::StoreError;

/// The concatenation of `parts`, which must fill exactly `N` bytes.
fn cat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    debug_assert_eq!(at, N, "key parts do not fill the key");
    out
}

/// Key of an op in `ops_v1` and `quarantine_v1`.
pub(super) fn op_key(team: &TeamId, hash: &OpHash) -> [u8; 64] {
    cat(&[&team.0, &hash.0])
}

/// Key of an op's position in `order_v1`.
pub(super) fn order_key(team: &TeamId, index: u64) -> [u8; 40] {
    cat(&[&team.0, &index.to_be_bytes()])
}

/// Key of an op's seq in its log in `logs_v1`.
pub(super) fn log_key(team: &TeamId, log: &LogId, seq: u64) -> [u8; 104] {
    cat(&[
        &team.0,
        log.author.as_bytes(),
        log.origin.as_bytes(),
        &seq.to_be_bytes(),
    ])
}

/// The big-endian u64 that ends a fixed-width key.
pub(super) fn tail_u64<const N: usize>(key: &[u8; N]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[N - 8..]);
    u64::from_be_bytes(b)
}

/// The prefix of every key of namespace `ns` in `local_v1`.
pub(super) fn local_prefix(ns: &str) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(ns.len()).map_err(|_| {
        StoreError::Invalid(format!(
            "local namespace is {} bytes, at most {} allowed",
            ns.len(),
            u16::MAX
        ))
    })?;
    let mut k = Vec::with_capacity(2 + ns.len());
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(ns.as_bytes());
    Ok(k)
}

/// Key of `key` in namespace `ns` in `local_v1`.
pub(super) fn local_key(ns: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut k = local_prefix(ns)?;
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}
