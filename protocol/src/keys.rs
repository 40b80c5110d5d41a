//! Keys, signatures and the printable ids built from hashes.
//!
//! Profiles and nodes are ed25519 key pairs. Verification is always strict
//! (`verify_strict`) and weak (small-order) public keys are refused at parse
//! time, so a signature can only ever verify under one canonical key.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors turning bytes or text into keys and ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid hex: {0}")]
    Hex(String),
    #[error("expected {expected} bytes, got {got}")]
    Length { expected: usize, got: usize },
    #[error("not a valid ed25519 public key")]
    InvalidPoint,
    #[error("weak ed25519 public key refused")]
    Weak,
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], KeyError> {
    let bytes = hex::decode(s.trim()).map_err(|e| KeyError::Hex(e.to_string()))?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| KeyError::Length { expected: N, got })
}

/// Keys one cache holds at most; past that it starts again, so a stream of
/// ops under ever new keys costs what it would without a cache.
pub const KEY_CACHE: usize = 1024;

/// Public keys already parsed into curve points: parsing one is a point
/// decompression, a tenth of a strict verification, and a team signs with
/// few keys.
#[derive(Clone, Default)]
pub struct KeyCache {
    keys: std::collections::HashMap<[u8; 32], Option<VerifyingKey>>,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyCache({} keys)", self.keys.len())
    }
}

/// An ed25519 public key: a profile (member) or a node. Printed as 64 hex chars.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses and checks a key: it must be a valid, non-weak curve point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPoint)?;
        if vk.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Strict verification; a key that fails to parse (only possible for keys
    /// built by deserialization) never verifies.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        if vk.is_weak() {
            return false;
        }
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify_strict(msg, &sig).is_ok()
    }

    /// [`PublicKey::verify`] with the key parsed once per `cache`.
    pub fn verify_cached(&self, msg: &[u8], sig: &Signature, cache: &mut KeyCache) -> bool {
        if cache.keys.len() >= KEY_CACHE && !cache.keys.contains_key(&self.0) {
            cache.keys.clear();
        }
        let vk = cache.keys.entry(self.0).or_insert_with(|| {
            VerifyingKey::from_bytes(&self.0)
                .ok()
                .filter(|vk| !vk.is_weak())
        });
        match vk {
            Some(vk) => vk
                .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
                .is_ok(),
            None => false,
        }
    }

    /// Short form for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(parse_hex::<32>(s)?)
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..6]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let arr: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(arr))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A private signing key. The seed is the only secret; it never leaves the
/// profile file (members) or the node's store (nodes).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from 32 random bytes supplied by the caller (this crate
    /// does no I/O, randomness included).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public={})", self.public().short())
    }
}

/// SHA-256 of the concatenation of `parts`, with a domain separator.
pub fn hash_parts(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((domain.len() as u32).to_be_bytes());
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

macro_rules! hash_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
        impl FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self(parse_hex::<32>(s)?))
            }
        }
    };
}

hash_id!(
    /// A team: the hash of its signed genesis op.
    TeamId
);
hash_id!(
    /// The hash of one encoded, signed op.
    OpHash
);

/// The id of one log: the (author, origin node) pair. Its automerge actor id
/// is derived from it, so a log and an automerge actor are one and the same.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct LogId {
    pub author: PublicKey,
    pub origin: PublicKey,
}

impl LogId {
    pub fn actor_bytes(&self) -> [u8; 16] {
        let h = hash_parts(
            "shoal/log-actor/v1",
            &[self.author.as_bytes(), self.origin.as_bytes()],
        );
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        out
    }

    pub fn actor(&self) -> automerge::ActorId {
        automerge::ActorId::from(self.actor_bytes().as_slice())
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.author.short(), self.origin.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verification's curve arithmetic is built with the AVX-512 IFMA
    /// backend on x86-64 (.cargo/config.toml); the crate picks it per CPU at
    /// run time. A build that lost the flag (a RUSTFLAGS that replaces it)
    /// still verifies, only slower: this says so instead of a bench figure.
    #[test]
    #[cfg(target_arch = "x86_64")]
    // The constant is the build's configuration: what this test checks.
    #[allow(clippy::assertions_on_constants)]
    fn verification_is_built_with_the_ifma_backend() {
        assert!(
            cfg!(curve25519_dalek_backend = "avx512"),
            "built without curve25519_dalek_backend=\"avx512\": is RUSTFLAGS set? (see .cargo/config.toml)"
        );
    }

    #[test]
    fn public_key_round_trips_through_text() {
        let sk = SecretKey::from_seed([7; 32]);
        let pk = sk.public();
        let parsed: PublicKey = pk.to_string().parse().unwrap();
        assert_eq!(parsed, pk);
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point is of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::Weak));
        assert!(matches!(
            "abcd".parse::<PublicKey>(),
            Err(KeyError::Length {
                expected: 32,
                got: 2
            })
        ));
        assert!(matches!("zz".parse::<PublicKey>(), Err(KeyError::Hex(_))));
    }

    #[test]
    fn a_key_cache_verifies_exactly_as_without_it() {
        let mut cache = KeyCache::default();
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]);
        let sig = a.sign(b"hello");
        let mut bad = sig;
        bad.0[63] ^= 0x80;
        // Keys only deserialization can make: a small-order point and bytes
        // that are no point at all.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = PublicKey(identity);
        let not_a_point = (0u8..=255)
            .map(|n| PublicKey([n; 32]))
            .find(|k| VerifyingKey::from_bytes(&k.0).is_err())
            .unwrap();
        let cases = [
            (a.public(), &b"hello"[..], sig),
            (a.public(), b"hellp", sig),
            (b.public(), b"hello", sig),
            (a.public(), b"hello", bad),
            (weak, b"hello", sig),
            (not_a_point, b"hello", sig),
        ];
        // Twice: the second time every key comes from the cache.
        for _ in 0..2 {
            for (key, msg, sig) in &cases {
                assert_eq!(
                    key.verify_cached(msg, sig, &mut cache),
                    key.verify(msg, sig)
                );
            }
        }
        assert!(a.public().verify_cached(b"hello", &sig, &mut cache));
        // Past its bound the cache starts again, and still verifies.
        for n in 0..KEY_CACHE as u32 + 8 {
            let mut seed = [3u8; 32];
            seed[..4].copy_from_slice(&n.to_le_bytes());
            let k = SecretKey::from_seed(seed);
            assert!(k.public().verify_cached(b"x", &k.sign(b"x"), &mut cache));
            assert!(cache.keys.len() <= KEY_CACHE);
        }
        assert!(a.public().verify_cached(b"hello", &sig, &mut cache));
        assert!(!a.public().verify_cached(b"hello", &bad, &mut cache));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]);
        let sig = a.sign(b"hello");
        assert!(a.public().verify(b"hello", &sig));
        assert!(!a.public().verify(b"hellp", &sig));
        assert!(!b.public().verify(b"hello", &sig));
        let mut bad = sig;
        bad.0[63] ^= 0x80;
        assert!(!a.public().verify(b"hello", &bad));
    }

    #[test]
    fn hash_parts_separates_fields() {
        assert_ne!(
            hash_parts("d", &[b"ab", b"c"]),
            hash_parts("d", &[b"a", b"bc"])
        );
        assert_ne!(hash_parts("d1", &[b"x"]), hash_parts("d2", &[b"x"]));
    }
}
