//! The team secrets key: `GET /v1/teams/{team}/keys` and
//! `POST /v1/teams/{team}/keys/rotation`.

use serde::{Deserialize, Serialize};
use shoal_protocol::Action;

/// `GET /v1/teams/{team}/keys`: the key as the state holds it, without any
/// sealed copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamKeys {
    /// The current epoch; null before the team has a key.
    pub epoch: Option<u32>,
    /// The current X25519 public key, hex; null before the team has a key.
    pub public: Option<String>,
    /// One entry per sealed copy.
    pub holders: Vec<KeyHolder>,
    /// Live nodes and admins without the current key.
    pub waiting: Vec<KeyWaiting>,
}

/// A recipient holding a copy of one epoch's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHolder {
    /// `node:<key>` or `member:<key>`.
    pub recipient: String,
    pub epoch: u32,
}

/// A recipient waiting for the current key, with the key to seal it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWaiting {
    pub recipient: String,
    pub enc_key: String,
}

/// `POST /v1/teams/{team}/keys/rotation`: a `key.rotate` to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotation {
    pub action: Action,
    pub epoch: u32,
    /// Who the new key is sealed to.
    pub recipients: Vec<String>,
    /// The names of the registries whose passwords are sealed again.
    pub registries: Vec<String>,
}
