//! Signed ops and their versioned, canonical encoding (§3).
//!
//! Wire and disk form: `postcard(Op)`, whose first byte is [`OP_VERSION`].
//! Decoding re-encodes and compares, so there is exactly one byte string per
//! op: any flipped byte either fails to decode or changes what was signed.

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::hlc::Hlc;
use crate::keys::{LogId, OpHash, PublicKey, SecretKey, Signature, TeamId, hash_parts};

/// Version of the op encoding.
pub const OP_VERSION: u8 = 1;

/// Ops larger than this are refused before decoding.
pub const MAX_OP_BYTES: usize = 4 * 1024 * 1024;

const SIGN_DOMAIN: &[u8] = b"shoal/op-signature/v1";

/// Everything that is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpBody {
    pub version: u8,
    /// `None` only in the genesis op, whose hash *is* the team id.
    pub team: Option<TeamId>,
    pub author: PublicKey,
    /// The node whose daemon made the op; `(author, origin)` is the log.
    pub origin: PublicKey,
    pub seq: u64,
    /// Hash of this log's op `seq - 1`.
    pub prev: Option<OpHash>,
    pub hlc: Hlc,
    pub action: Action,
    /// The Automerge change carrying the state change.
    pub change: Vec<u8>,
}

impl OpBody {
    pub fn log(&self) -> LogId {
        LogId {
            author: self.author,
            origin: self.origin,
        }
    }

    fn signing_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut msg = SIGN_DOMAIN.to_vec();
        postcard::to_io(self, &mut msg).map_err(|e| EncodeError(e.to_string()))?;
        Ok(msg)
    }

    /// Signs with `key`, which must be the author's.
    pub fn sign(self, key: &SecretKey) -> Result<Op, SignError> {
        if key.public() != self.author {
            return Err(SignError::WrongKey {
                author: self.author,
                key: key.public(),
            });
        }
        let sig = key.sign(&self.signing_bytes()?);
        Ok(Op { body: self, sig })
    }

    /// The bytes a signer must sign (for a CLI that holds the key apart).
    pub fn to_sign(&self) -> Result<Vec<u8>, EncodeError> {
        self.signing_bytes()
    }
}

/// A signed op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub body: OpBody,
    pub sig: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode op: {0}")]
pub struct EncodeError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error(
        "the op's author is {author:?} but the key given is {key:?}: sign with the author's profile key"
    )]
    WrongKey { author: PublicKey, key: PublicKey },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("op is {0} bytes, more than the {MAX_OP_BYTES} allowed")]
    TooLarge(usize),
    #[error(
        "op encoding version {0} is not supported (this build speaks {OP_VERSION}); upgrade shoal"
    )]
    Version(u8),
    #[error("malformed op: {0}")]
    Malformed(String),
    #[error("op encoding is not canonical")]
    NotCanonical,
}

impl Op {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Op, DecodeError> {
        if bytes.len() > MAX_OP_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        match bytes.first() {
            None => return Err(DecodeError::Malformed("empty".into())),
            Some(&v) if v != OP_VERSION => return Err(DecodeError::Version(v)),
            _ => {}
        }
        let op: Op =
            postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if op.encode() != bytes {
            return Err(DecodeError::NotCanonical);
        }
        Ok(op)
    }

    pub fn hash(&self) -> OpHash {
        OpHash(hash_parts("shoal/op-hash/v1", &[&self.encode()]))
    }

    /// Strict signature check against the author key.
    pub fn verify_signature(&self) -> bool {
        match self.body.signing_bytes() {
            Ok(msg) => self.body.author.verify(&msg, &self.sig),
            Err(_) => false,
        }
    }

    /// [`Op::verify_signature`] with the author's key parsed once per
    /// `cache`.
    pub fn verify_signature_cached(&self, cache: &mut crate::keys::KeyCache) -> bool {
        match self.body.signing_bytes() {
            Ok(msg) => self.body.author.verify_cached(&msg, &self.sig, cache),
            Err(_) => false,
        }
    }

    /// Attaches a signature made elsewhere (the CLI signs what the daemon prepared).
    pub fn from_parts(body: OpBody, sig: Signature) -> Op {
        Op { body, sig }
    }

    pub fn log(&self) -> LogId {
        self.body.log()
    }
}
