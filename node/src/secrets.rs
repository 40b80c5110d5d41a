//! Sealed secrets (§5): values are encrypted to a node's X25519 encryption
//! key with a NaCl sealed box (`crypto_box`: X25519 + XSalsa20Poly1305, an
//! ephemeral sender key per value). Only the node holding the secret half
//! can open them; the replicated state only ever holds ciphertext.
//!
//! - A node's encryption key is derived from its node key seed
//!   ([`EncSecret::from_node_seed`]); the public half is published as the
//!   node's `enc_key` when it creates or joins a team.
//! - One sealed value is text: `shoal-seal-v1:` followed by the hex of the
//!   sealed box ([`seal`], [`EncSecret::open`]).
//! - A deployment's secret values are each sealed to the target node
//!   (recipient `node:<node key>`): [`seal_for_node`],
//!   [`open_deployment_secrets`].
//! - A registry password is sealed to every node of the team at the time
//!   it is added (recipient [`NODES_RECIPIENT`]): the `data` is a set of
//!   per-node sealed copies, `shoal-sealed-set-v1` and then one
//!   `<node key> <sealed value>` line per node ([`seal_for_nodes`],
//!   [`open_registry_password`]). That was the first form; registries are
//!   now sealed with the team secrets key (below), and these sets are
//!   still opened.
//! - The **team secrets key** (§5) is an X25519 key of the team, in epochs.
//!   Each node and each admin holds it sealed to its own encryption key: a
//!   [`SealedKey`] (recipient `node:<key>` or `member:<key>`) whose text is
//!   `shoal-team-key-v1:<epoch>:<team public key hex>:<sealed secret>`
//!   ([`seal_team_key`]). Team-wide secrets such as registry passwords are
//!   sealed to the team's public key (recipient `team:<epoch>:<first 16 hex
//!   of the public key>`, [`seal_to_team_key`]; the first release wrote
//!   `team:<epoch>`), so whoever writes one needs only the public half,
//!   and every holder of the key opens it ([`open_sealed`]). The admin whose
//!   CLI first stores a team secret makes epoch 1 and seals it to every
//!   node and admin; from then on every node seals it to newcomers
//!   (`crate::keeper`). Removing a member or a node rotates it: [`rotate`]
//!   makes the next epoch's key, sealed to those who remain, with every
//!   registry password sealed again to it (a `key.rotate` the admin signs).

use std::collections::BTreeMap;
use std::fmt;

use crypto_box::aead::OsRng;
use shoal_protocol::keys::hash_parts;
use shoal_protocol::model::{
    Deployment, Registry, Sealed, SealedKey, TEAM_KEY_PREFIX, TeamState, parse_team_recipient,
    team_recipient,
};
use shoal_protocol::{Action, view};

/// Prefix of one sealed value in its text form.
pub const SEAL_PREFIX: &str = "shoal-seal-v1:";
/// Recipient of a value sealed to each of several nodes.
pub const NODES_RECIPIENT: &str = "nodes";
/// First line of a set of per-node sealed copies.
const SET_HEADER: &str = "shoal-sealed-set-v1";
/// Domain of the derivation of a node's encryption key from its key seed.
const ENC_KEY_DOMAIN: &str = "shoal/node-encryption-key/v1";
/// Prefix of the recipient of a value sealed to the team secrets key.
pub const TEAM_RECIPIENT_PREFIX: &str = "team:";
/// Largest secret value accepted (a certificate or a key file fits).
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// Why a value cannot be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("{what} is not an encryption key (64 hex characters): {why}")]
    BadKey { what: String, why: String },
    #[error(
        "node {node} has no encryption key: it runs an older shoal; upgrade it and join it again"
    )]
    NoEncKey { node: String },
    #[error("the sealed value is malformed: {0}")]
    Malformed(String),
    #[error("the sealed value uses format {0:?}, which this shoal does not know: upgrade it")]
    UnknownFormat(String),
    #[error(
        "the sealed value cannot be opened with this node's key: it was sealed to another key, or damaged"
    )]
    Open,
    #[error("secret {key} is sealed to {recipient}, not to this node: seal it again for this node")]
    NotForThisNode { key: String, recipient: String },
    #[error("the value of {key} is not UTF-8 text")]
    NotText { key: String },
    #[error("the value of {key} is longer than {MAX_SECRET_LEN} bytes")]
    TooLong { key: String },
    #[error("cannot seal: {0}")]
    Seal(String),
    #[error(
        "the team has no secrets key yet: it is made when an admin first stores a team secret (a registry password)"
    )]
    NoKeyYet,
    #[error(
        "{what} is sealed with the team secrets key (epoch {epoch}), which {holder} does not hold yet: a node of the team seals it to every node and admin; wait for it to sync"
    )]
    NoTeamKey {
        what: String,
        epoch: u32,
        holder: String,
    },
}

/// A node's X25519 encryption secret. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct EncSecret(crypto_box::SecretKey);

impl fmt::Debug for EncSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncSecret")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl EncSecret {
    /// The encryption secret of the node whose key seed is `seed`:
    /// SHA-256 of a domain string and the seed, as an X25519 scalar.
    pub fn from_node_seed(seed: &[u8; 32]) -> EncSecret {
        EncSecret(crypto_box::SecretKey::from(hash_parts(
            ENC_KEY_DOMAIN,
            &[seed],
        )))
    }

    /// From raw secret bytes (for example a member's profile seed).
    pub fn from_bytes(bytes: [u8; 32]) -> EncSecret {
        EncSecret(crypto_box::SecretKey::from(bytes))
    }

    /// The public half, hex: what values are sealed to.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.public_key().as_bytes())
    }

    /// Opens one sealed value (text form).
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretsError> {
        let Some(body) = sealed.strip_prefix(SEAL_PREFIX) else {
            let format = sealed.split(':').next().unwrap_or_default();
            return Err(if format.starts_with("shoal-seal-") {
                SecretsError::UnknownFormat(format.to_string())
            } else {
                SecretsError::Malformed("it does not start with shoal-seal-v1:".into())
            });
        };
        let bytes = hex::decode(body.trim())
            .map_err(|e| SecretsError::Malformed(format!("not hex after the prefix ({e})")))?;
        self.0.unseal(&bytes).map_err(|_| SecretsError::Open)
    }
}

fn public_key(what: &str, hex_key: &str) -> Result<crypto_box::PublicKey, SecretsError> {
    let bad = |why: String| SecretsError::BadKey {
        what: what.to_string(),
        why,
    };
    let bytes = hex::decode(hex_key.trim()).map_err(|e| bad(e.to_string()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|v: Vec<u8>| bad(format!("{} bytes instead of 32", v.len())))?;
    Ok(crypto_box::PublicKey::from(bytes))
}

/// Seals `plaintext` to the X25519 public key `enc_key_hex`; returns the
/// text form `shoal-seal-v1:<hex>`.
pub fn seal(enc_key_hex: &str, plaintext: &[u8]) -> Result<String, SecretsError> {
    let pk = public_key("the recipient", enc_key_hex)?;
    let sealed = pk
        .seal(&mut OsRng, plaintext)
        .map_err(|e| SecretsError::Seal(e.to_string()))?;
    Ok(format!("{SEAL_PREFIX}{}", hex::encode(sealed)))
}

/// Seals a deployment secret `value` of `key` to the node `node_key_hex`
/// whose encryption key is `enc_key_hex`.
pub fn seal_for_node(
    node_key_hex: &str,
    enc_key_hex: &str,
    key: &str,
    value: &str,
) -> Result<Sealed, SecretsError> {
    if enc_key_hex.is_empty() {
        return Err(SecretsError::NoEncKey {
            node: node_key_hex.chars().take(8).collect(),
        });
    }
    if value.len() > MAX_SECRET_LEN {
        return Err(SecretsError::TooLong {
            key: key.to_string(),
        });
    }
    Ok(Sealed {
        recipient: format!("node:{node_key_hex}"),
        data: seal(enc_key_hex, value.as_bytes())?,
    })
}

/// Seals `value` to each node of `nodes` (node key, encryption key), as
/// one [`Sealed`] for [`NODES_RECIPIENT`]. Nodes without an encryption key
/// are left out; at least one must have one.
pub fn seal_for_nodes(nodes: &[(String, String)], value: &str) -> Result<Sealed, SecretsError> {
    if value.len() > MAX_SECRET_LEN {
        return Err(SecretsError::TooLong {
            key: "password".into(),
        });
    }
    let mut data = String::from(SET_HEADER);
    let mut count = 0;
    for (node, enc) in nodes {
        if enc.is_empty() {
            continue;
        }
        data.push('\n');
        data.push_str(node);
        data.push(' ');
        data.push_str(&seal(enc, value.as_bytes())?);
        count += 1;
    }
    if count == 0 {
        return Err(SecretsError::NoEncKey {
            node: "of this team".into(),
        });
    }
    Ok(Sealed {
        recipient: NODES_RECIPIENT.to_string(),
        data,
    })
}

/// The per-node copies of a value sealed with [`seal_for_nodes`]: node key
/// to sealed value.
pub fn sealed_set(sealed: &Sealed) -> Result<BTreeMap<String, String>, SecretsError> {
    if sealed.recipient != NODES_RECIPIENT {
        return Err(SecretsError::Malformed(format!(
            "sealed to {}, not to a set of nodes",
            sealed.recipient
        )));
    }
    let mut lines = sealed.data.lines();
    match lines.next() {
        Some(SET_HEADER) => {}
        Some(h) if h.starts_with("shoal-sealed-set-") => {
            return Err(SecretsError::UnknownFormat(h.to_string()));
        }
        _ => return Err(SecretsError::Malformed("no shoal-sealed-set header".into())),
    }
    let mut out = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (node, value) = line
            .split_once(' ')
            .ok_or_else(|| SecretsError::Malformed("a line is not `<node> <sealed>`".into()))?;
        out.insert(node.to_string(), value.to_string());
    }
    Ok(out)
}

/// One epoch of the team secrets key (its `Debug` never shows the key).
#[derive(Clone)]
pub struct TeamKey {
    pub epoch: u32,
    secret: EncSecret,
}

impl fmt::Debug for TeamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeamKey")
            .field("epoch", &self.epoch)
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl TeamKey {
    /// A new random key for `epoch`.
    pub fn generate(epoch: u32) -> TeamKey {
        TeamKey {
            epoch,
            secret: EncSecret(crypto_box::SecretKey::generate(&mut OsRng)),
        }
    }

    pub fn public_hex(&self) -> String {
        self.secret.public_hex()
    }

    /// Opens a value sealed to this key with [`seal_to_team`].
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretsError> {
        self.secret.open(sealed)
    }
}

/// The parts of a sealed team key's text: (epoch, team public key, sealed
/// secret).
fn team_key_parts(text: &str) -> Result<(u32, &str, &str), SecretsError> {
    let Some(rest) = text.strip_prefix(TEAM_KEY_PREFIX) else {
        let format = text.split(':').next().unwrap_or_default();
        return Err(if format.starts_with("shoal-team-key-") {
            SecretsError::UnknownFormat(format.to_string())
        } else {
            SecretsError::Malformed("a team key does not start with shoal-team-key-v1:".into())
        });
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(epoch), Some(public), Some(sealed)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SecretsError::Malformed(
            "a team key is not <epoch>:<public key>:<sealed key>".into(),
        ));
    };
    let epoch = epoch
        .parse()
        .map_err(|_| SecretsError::Malformed(format!("team key epoch {epoch:?}")))?;
    public_key("the team key", public)?;
    Ok((epoch, public, sealed))
}

/// Seals `key` to `recipient` (`node:<key>` or `member:<key>`) whose
/// encryption key is `enc_key_hex`, for a `key.seal` op.
pub fn seal_team_key(
    key: &TeamKey,
    recipient: &str,
    enc_key_hex: &str,
) -> Result<SealedKey, SecretsError> {
    if enc_key_hex.is_empty() {
        return Err(SecretsError::NoEncKey {
            node: recipient.to_string(),
        });
    }
    let sealed = seal(enc_key_hex, key.secret.0.to_bytes().as_slice())?;
    Ok(SealedKey {
        recipient: recipient.to_string(),
        epoch: key.epoch,
        sealed: format!(
            "{TEAM_KEY_PREFIX}{}:{}:{sealed}",
            key.epoch,
            key.public_hex()
        ),
    })
}

/// The team's current key epoch and its public key, hex (`None` before the
/// team has a key): see [`view::team_key`].
pub fn team_public(state: &TeamState) -> Option<(u32, String)> {
    view::team_key(state)
}

/// The copies of team keys of `epoch` that `recipient` holds, of the key
/// whose public half starts with `fp` (any, when `None`).
pub fn copies<'a>(
    state: &'a TeamState,
    recipient: &'a str,
    epoch: u32,
    fp: Option<&'a str>,
) -> impl Iterator<Item = &'a SealedKey> {
    state.keys.values().filter(move |k| {
        k.recipient == recipient
            && k.epoch == epoch
            && fp.is_none_or(|fp| k.public().is_some_and(|p| p.starts_with(fp)))
    })
}

/// Opens the team key of `epoch` (public half starting with `fp`, when
/// given) that `recipient` holds in `state`, with the recipient's
/// encryption secret.
pub fn open_team_key(
    secret: &EncSecret,
    recipient: &str,
    state: &TeamState,
    epoch: u32,
    fp: Option<&str>,
) -> Result<TeamKey, SecretsError> {
    let mut last = None;
    for k in copies(state, recipient, epoch, fp) {
        match open_sealed_key(secret, k) {
            Ok(key) => return Ok(key),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| SecretsError::NoTeamKey {
        what: "the team key".into(),
        epoch,
        holder: recipient.to_string(),
    }))
}

/// Opens one sealed team key with the recipient's encryption secret, and
/// checks it is the secret half of the public key it names.
pub fn open_sealed_key(secret: &EncSecret, k: &SealedKey) -> Result<TeamKey, SecretsError> {
    let (epoch, public, sealed) = team_key_parts(&k.sealed)?;
    let bytes: [u8; 32] = secret
        .open(sealed)?
        .try_into()
        .map_err(|_| SecretsError::Malformed("a team key is not 32 bytes".into()))?;
    let key = TeamKey {
        epoch,
        secret: EncSecret::from_bytes(bytes),
    };
    if key.public_hex() != public {
        return Err(SecretsError::Malformed(
            "a sealed team key does not match its public key".into(),
        ));
    }
    Ok(key)
}

/// Seals `value` to the team key of `epoch` whose public half is `public`.
pub fn seal_to_team_key(epoch: u32, public: &str, value: &str) -> Result<Sealed, SecretsError> {
    if value.len() > MAX_SECRET_LEN {
        return Err(SecretsError::TooLong {
            key: "password".into(),
        });
    }
    Ok(Sealed {
        recipient: team_recipient(epoch, public),
        data: seal(public, value.as_bytes())?,
    })
}

/// The live nodes and admins who should hold the current team key and do
/// not, with their encryption keys: (recipient, enc key). Before the team
/// has a key, everyone who should get the first.
pub fn key_recipients_missing(state: &TeamState) -> Vec<(String, String)> {
    match view::team_key(state) {
        Some((epoch, public)) => missing_key(state, epoch, &public),
        None => view::key_recipients(state),
    }
}

/// The team keys every node and admin should hold, as (epoch, public key
/// hex): the current one, and every key a registry password is sealed to.
pub fn needed_keys(state: &TeamState) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = view::team_key(state).into_iter().collect();
    for r in state.registries.values() {
        let Some((epoch, fp)) = r
            .password
            .as_ref()
            .and_then(|p| parse_team_recipient(&p.recipient))
        else {
            continue;
        };
        for k in state.keys.values() {
            let Some((e, public)) = k.named() else {
                continue;
            };
            if e == epoch && k.epoch == e && fp.is_none_or(|fp| public.starts_with(fp)) {
                out.push((e, public.to_string()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The live nodes and admins who do not hold the team key (`epoch`,
/// `public`), with their encryption keys: (recipient, enc key).
pub fn missing_key(state: &TeamState, epoch: u32, public: &str) -> Vec<(String, String)> {
    let mut all = view::key_recipients(state);
    all.retain(|(r, _)| !view::holds_key(state, r, epoch, public));
    all
}

/// The nodes that can open a value sealed to `recipient` (`team:...`).
pub fn team_key_holders(state: &TeamState, recipient: &str) -> Vec<String> {
    parse_team_recipient(recipient)
        .map(|(epoch, fp)| key_holders(state, epoch, fp))
        .unwrap_or_default()
}

/// The nodes holding a team key of `epoch` whose public half starts with
/// `fp` (any, when `None`).
pub fn key_holders(state: &TeamState, epoch: u32, fp: Option<&str>) -> Vec<String> {
    state
        .nodes
        .values()
        .filter(|n| {
            copies(state, &format!("node:{}", n.key), epoch, fp)
                .next()
                .is_some()
        })
        .map(|n| n.key.clone())
        .collect()
}

/// A new team key for the epoch after the current one, sealed to every
/// node and admin of `state` (a `key.rotate`), with every registry password
/// sealed to a team key opened by this node (`me_hex`, encryption secret
/// `secret`) and sealed again to the new one.
pub fn rotate(
    secret: &EncSecret,
    me_hex: &str,
    state: &TeamState,
) -> Result<Rotation, SecretsError> {
    let (epoch, _) = view::team_key(state).ok_or(SecretsError::NoKeyYet)?;
    let next = epoch
        .checked_add(1)
        .ok_or_else(|| SecretsError::Seal("the team key is at the last epoch there is".into()))?;
    let key = TeamKey::generate(next);
    let mut registries = BTreeMap::new();
    let mut names = Vec::new();
    for r in state.registries.values() {
        let Some(p) = r
            .password
            .as_ref()
            .filter(|p| p.recipient.starts_with("team:"))
        else {
            continue;
        };
        let what = format!("the password of registry {}", r.name);
        let plain = open_sealed(secret, me_hex, state, &what, p)?;
        registries.insert(
            r.id.clone(),
            seal_to_team_key(key.epoch, &key.public_hex(), &plain)?,
        );
        names.push(r.name.clone());
    }
    let keys = view::key_recipients(state)
        .iter()
        .map(|(recipient, enc)| seal_team_key(&key, recipient, enc))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rotation {
        epoch: key.epoch,
        recipients: keys.iter().map(|k| k.recipient.clone()).collect(),
        registries: names,
        action: Action::KeyRotate {
            epoch: key.epoch,
            keys,
            registries,
        },
    })
}

/// A prepared rotation of the team key ([`rotate`]).
#[derive(Debug)]
pub struct Rotation {
    /// The `key.rotate` to sign.
    pub action: Action,
    pub epoch: u32,
    /// Who the new key is sealed to (`node:<key>`, `member:<key>`).
    pub recipients: Vec<String>,
    /// The names of the registries whose passwords are sealed again.
    pub registries: Vec<String>,
}

/// Opens any value sealed for this node `me_hex` (encryption secret
/// `secret`): to the node itself, in a per-node set, or to the team key.
pub fn open_sealed(
    secret: &EncSecret,
    me_hex: &str,
    state: &TeamState,
    what: &str,
    sealed: &Sealed,
) -> Result<String, SecretsError> {
    if sealed.recipient == NODES_RECIPIENT {
        let copies = sealed_set(sealed)?;
        let copy = copies
            .get(me_hex)
            .ok_or_else(|| SecretsError::NotForThisNode {
                key: what.to_string(),
                recipient: format!("{} other node(s); add it again", copies.len()),
            })?;
        return open_text(secret, what, copy);
    }
    if sealed.recipient == format!("node:{me_hex}") {
        return open_text(secret, what, &sealed.data);
    }
    if sealed.recipient.starts_with(TEAM_RECIPIENT_PREFIX) {
        let (epoch, fp) = parse_team_recipient(&sealed.recipient)
            .ok_or_else(|| SecretsError::Malformed(format!("recipient {}", sealed.recipient)))?;
        let key = open_team_key(secret, &format!("node:{me_hex}"), state, epoch, fp).map_err(
            |e| match e {
                SecretsError::NoTeamKey { .. } => SecretsError::NoTeamKey {
                    what: what.to_string(),
                    epoch,
                    holder: "this node".into(),
                },
                other => other,
            },
        )?;
        return String::from_utf8(key.open(&sealed.data)?).map_err(|_| SecretsError::NotText {
            key: what.to_string(),
        });
    }
    Err(SecretsError::NotForThisNode {
        key: what.to_string(),
        recipient: sealed.recipient.clone(),
    })
}

fn open_text(secret: &EncSecret, key: &str, sealed: &str) -> Result<String, SecretsError> {
    String::from_utf8(secret.open(sealed)?).map_err(|_| SecretsError::NotText {
        key: key.to_string(),
    })
}

/// Opens every secret value of `d` on its target node `node_key_hex`, whose
/// encryption secret is `secret`: secret key to plaintext value.
pub fn open_deployment_secrets(
    secret: &EncSecret,
    node_key_hex: &str,
    d: &Deployment,
) -> Result<BTreeMap<String, String>, SecretsError> {
    let want = format!("node:{node_key_hex}");
    let mut out = BTreeMap::new();
    for (key, sealed) in &d.secrets {
        if sealed.recipient != want {
            return Err(SecretsError::NotForThisNode {
                key: key.clone(),
                recipient: sealed.recipient.clone(),
            });
        }
        out.insert(key.clone(), open_text(secret, key, &sealed.data)?);
    }
    Ok(out)
}

/// Opens a registry's password on node `node_key_hex` (`None` when the
/// registry has none).
pub fn open_registry_password(
    secret: &EncSecret,
    node_key_hex: &str,
    state: &TeamState,
    r: &Registry,
) -> Result<Option<String>, SecretsError> {
    let Some(sealed) = &r.password else {
        return Ok(None);
    };
    let what = format!("the password of registry {}", r.name);
    open_sealed(secret, node_key_hex, state, &what, sealed).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shoal_protocol::Hlc;
    use shoal_protocol::model::{DeploymentStatus, RegistryKind};

    fn node(n: u8) -> (String, EncSecret) {
        (hex::encode([n; 32]), EncSecret::from_node_seed(&[n; 32]))
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key() {
        let (_, a) = node(1);
        let (_, b) = node(2);
        let text = seal(&a.public_hex(), b"hunter2").unwrap();
        assert!(text.starts_with(SEAL_PREFIX), "{text}");
        assert!(!text.contains("hunter2"));
        assert_eq!(a.open(&text).unwrap(), b"hunter2");
        assert_eq!(b.open(&text), Err(SecretsError::Open));
        // Every seal uses a fresh ephemeral key.
        assert_ne!(text, seal(&a.public_hex(), b"hunter2").unwrap());
        // Damage is detected.
        let mut bad = text.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert_eq!(a.open(&bad), Err(SecretsError::Open));
        assert!(matches!(
            a.open("shoal-seal-v9:00"),
            Err(SecretsError::UnknownFormat(_))
        ));
        assert!(matches!(a.open("zz"), Err(SecretsError::Malformed(_))));
        assert!(matches!(
            seal("abcd", b"x"),
            Err(SecretsError::BadKey { .. })
        ));
    }

    #[test]
    fn the_encryption_key_is_stable_and_differs_per_seed() {
        assert_eq!(
            EncSecret::from_node_seed(&[7; 32]).public_hex(),
            EncSecret::from_node_seed(&[7; 32]).public_hex()
        );
        assert_ne!(
            EncSecret::from_node_seed(&[7; 32]).public_hex(),
            EncSecret::from_node_seed(&[8; 32]).public_hex()
        );
        let dbg = format!("{:?}", EncSecret::from_node_seed(&[7; 32]));
        assert!(dbg.contains("public"), "{dbg}");
    }

    fn deployment(secrets: BTreeMap<String, Sealed>) -> Deployment {
        Deployment {
            id: "d".into(),
            product: "p".into(),
            version: "v".into(),
            node: "n".into(),
            prefix: "x".into(),
            note: String::new(),
            protected: false,
            env: BTreeMap::new(),
            secrets,
            instances: BTreeMap::new(),
            status: DeploymentStatus::Preparing,
            tries: 0,
            created: Hlc::new(1, 0),
            created_by: String::new(),
            reason: None,
            finished_try: 0,
            containers: BTreeMap::new(),
            events: Vec::new(),
            frozen: None,
        }
    }

    #[test]
    fn deployment_secrets_round_trip_on_the_target_node_only() {
        let (key_a, a) = node(1);
        let (key_b, b) = node(2);
        let sealed = seal_for_node(&key_a, &a.public_hex(), "DB_PASSWORD", "s3cr3t").unwrap();
        assert_eq!(sealed.recipient, format!("node:{key_a}"));
        let d = deployment([("DB_PASSWORD".to_string(), sealed)].into());
        let open = open_deployment_secrets(&a, &key_a, &d).unwrap();
        assert_eq!(open["DB_PASSWORD"], "s3cr3t");
        assert!(matches!(
            open_deployment_secrets(&b, &key_b, &d),
            Err(SecretsError::NotForThisNode { .. })
        ));
        // Relabelled for B, it still opens only with A's key.
        let mut stolen = d.clone();
        if let Some(s) = stolen.secrets.get_mut("DB_PASSWORD") {
            s.recipient = format!("node:{key_b}");
        }
        assert_eq!(
            open_deployment_secrets(&b, &key_b, &stolen),
            Err(SecretsError::Open)
        );
        assert!(matches!(
            seal_for_node(&key_a, "", "K", "v"),
            Err(SecretsError::NoEncKey { .. })
        ));
    }

    #[test]
    fn registry_passwords_open_on_every_node_sealed_for() {
        let (key_a, a) = node(1);
        let (key_b, b) = node(2);
        let (key_c, c) = node(3);
        let nodes = vec![
            (key_a.clone(), a.public_hex()),
            (key_b.clone(), b.public_hex()),
            ("old".to_string(), String::new()),
        ];
        let sealed = seal_for_nodes(&nodes, "pa55").unwrap();
        assert_eq!(sealed.recipient, NODES_RECIPIENT);
        assert!(!sealed.data.contains("pa55"));
        assert_eq!(
            sealed_set(&sealed).unwrap().keys().collect::<Vec<_>>(),
            vec![&key_a, &key_b]
        );
        let r = Registry {
            id: "r".into(),
            name: "private".into(),
            kind: RegistryKind::V2,
            url: Some("127.0.0.1:5001".into()),
            namespace: None,
            user: Some("u".into()),
            password: Some(sealed),
            created: Hlc::new(1, 0),
        };
        let st = TeamState::default();
        assert_eq!(
            open_registry_password(&a, &key_a, &st, &r)
                .unwrap()
                .as_deref(),
            Some("pa55")
        );
        assert_eq!(
            open_registry_password(&b, &key_b, &st, &r)
                .unwrap()
                .as_deref(),
            Some("pa55")
        );
        assert!(matches!(
            open_registry_password(&c, &key_c, &st, &r),
            Err(SecretsError::NotForThisNode { .. })
        ));
        let none = Registry {
            password: None,
            ..r.clone()
        };
        assert_eq!(
            open_registry_password(&c, &key_c, &st, &none).unwrap(),
            None
        );
        assert!(matches!(
            seal_for_nodes(&[("x".into(), String::new())], "p"),
            Err(SecretsError::NoEncKey { .. })
        ));
    }

    /// A value sealed to the team's current key, as an admin's CLI does.
    fn team_seal(st: &TeamState, value: &str) -> Option<Sealed> {
        let (epoch, public) = team_public(st)?;
        Some(seal_to_team_key(epoch, &public, value).unwrap())
    }

    fn node_entity(key: &str, enc: &EncSecret) -> shoal_protocol::model::Node {
        shoal_protocol::model::Node {
            key: key.to_string(),
            name: format!("n-{}", &key[..4]),
            runtime: shoal_protocol::model::Runtime::Docker,
            enc_key: enc.public_hex(),
            addresses: vec![],
            agent_version: String::new(),
            protocol_version: 1,
            joined: Hlc::new(1, 0),
            invite: None,
            sponsor: None,
            removed: None,
        }
    }

    #[test]
    fn the_team_key_opens_team_secrets_on_every_node_that_holds_it() {
        let (key_a, a) = node(1);
        let (key_b, b) = node(2);
        let mut st = TeamState::default();
        assert_eq!(team_public(&st), None);
        assert_eq!(team_seal(&st, "pw"), None);
        st.nodes.insert(key_a.clone(), node_entity(&key_a, &a));
        st.nodes.insert(key_b.clone(), node_entity(&key_b, &b));
        let missing = key_recipients_missing(&st);
        assert_eq!(missing.len(), 2, "{missing:?}");

        // Epoch 1, sealed to a only.
        let k1 = TeamKey::generate(1);
        let sk = seal_team_key(&k1, &format!("node:{key_a}"), &a.public_hex()).unwrap();
        assert!(!sk.sealed.contains(&hex::encode(k1.secret.0.to_bytes())));
        st.keys.insert(sk.entity_id(), sk);
        assert_eq!(team_public(&st), Some((1, k1.public_hex())));
        assert_eq!(
            key_recipients_missing(&st),
            vec![(format!("node:{key_b}"), b.public_hex())]
        );
        let sealed = team_seal(&st, "pa55").unwrap();
        assert_eq!(sealed.recipient, team_recipient(1, &k1.public_hex()));
        assert!(!sealed.data.contains("pa55"));
        assert_eq!(open_sealed(&a, &key_a, &st, "pw", &sealed).unwrap(), "pa55");
        assert!(matches!(
            open_sealed(&b, &key_b, &st, "pw", &sealed),
            Err(SecretsError::NoTeamKey { epoch: 1, .. })
        ));
        assert_eq!(
            team_key_holders(&st, &sealed.recipient),
            vec![key_a.clone()]
        );

        // a opens its copy and seals it to b: b opens the secret too.
        let opened = open_team_key(&a, &format!("node:{key_a}"), &st, 1, None).unwrap();
        assert_eq!(opened.public_hex(), k1.public_hex());
        assert!(open_team_key(&b, &format!("node:{key_a}"), &st, 1, None).is_err());
        let for_b = seal_team_key(&opened, &format!("node:{key_b}"), &b.public_hex()).unwrap();
        st.keys.insert(for_b.entity_id(), for_b);
        assert_eq!(open_sealed(&b, &key_b, &st, "pw", &sealed).unwrap(), "pa55");
        assert!(key_recipients_missing(&st).is_empty());
        // A value of the first release, sealed to `team:1`, opens too.
        let legacy = Sealed {
            recipient: "team:1".into(),
            data: seal(&k1.public_hex(), b"0ld").unwrap(),
        };
        assert_eq!(open_sealed(&b, &key_b, &st, "pw", &legacy).unwrap(), "0ld");

        // A new epoch: a keeps its epoch-1 copy beside the new one, so
        // secrets of both open; b waits for the new one.
        let k2 = TeamKey::generate(2);
        let sk = seal_team_key(&k2, &format!("node:{key_a}"), &a.public_hex()).unwrap();
        st.keys.insert(sk.entity_id(), sk);
        assert_eq!(team_public(&st), Some((2, k2.public_hex())));
        assert_eq!(open_sealed(&a, &key_a, &st, "pw", &sealed).unwrap(), "pa55");
        let newer = team_seal(&st, "n3w").unwrap();
        assert_eq!(open_sealed(&a, &key_a, &st, "pw", &newer).unwrap(), "n3w");
        assert!(matches!(
            open_sealed(&b, &key_b, &st, "pw", &newer),
            Err(SecretsError::NoTeamKey { epoch: 2, .. })
        ));
        assert_eq!(
            key_recipients_missing(&st),
            vec![(format!("node:{key_b}"), b.public_hex())]
        );
    }

    #[test]
    fn a_rotation_leaves_the_removed_node_unable_to_open_what_follows() {
        use shoal_protocol::rules::OpContext;
        let nodes = [node(1), node(2), node(3)];
        let (key_a, a) = &nodes[0];
        let (key_b, b) = &nodes[1];
        let (key_c, c) = &nodes[2];
        let mut st = TeamState::default();
        let k1 = TeamKey::generate(1);
        for (key, enc) in &nodes {
            st.nodes.insert(key.clone(), node_entity(key, enc));
            let sk = seal_team_key(&k1, &format!("node:{key}"), &enc.public_hex()).unwrap();
            st.keys.insert(sk.entity_id(), sk);
        }
        let mut registry = |id: &str, password: Option<Sealed>| {
            st.registries.insert(
                id.into(),
                Registry {
                    id: id.into(),
                    name: format!("reg-{id}"),
                    kind: RegistryKind::V2,
                    url: Some("http://127.0.0.1:5000".into()),
                    namespace: None,
                    user: Some("u".into()),
                    password,
                    created: Hlc::new(1, 0),
                },
            );
        };
        registry(
            "r1",
            Some(seal_to_team_key(1, &k1.public_hex(), "s3cret").unwrap()),
        );
        registry("r2", None);
        // Node c leaves.
        st.nodes.get_mut(key_c).unwrap().removed = Some(Hlc::new(2, 0));
        for id in view::key_entries_of(&st, &format!("node:{key_c}")) {
            st.keys.remove(&id);
        }
        assert!(matches!(
            rotate(c, key_c, &st),
            Err(SecretsError::NoTeamKey { .. })
        ));
        let r = rotate(a, key_a, &st).unwrap();
        assert_eq!(r.epoch, 2);
        assert_eq!(r.registries, vec!["reg-r1".to_string()]);
        assert_eq!(
            r.recipients,
            vec![format!("node:{key_a}"), format!("node:{key_b}")]
        );
        let ctx = OpContext {
            team: None,
            author: shoal_protocol::SecretKey::from_seed([9; 32]).public(),
            origin: shoal_protocol::SecretKey::from_seed([9; 32]).public(),
            seq: 1,
            hlc: Hlc::new(3, 0),
        };
        let old = st.registries["r1"].password.clone().unwrap();
        for w in shoal_protocol::effect::effect(&st, &ctx, &r.action) {
            st.set(w.collection, &w.id, w.value);
        }
        let new = st.registries["r1"].password.clone().unwrap();
        assert_ne!(new, old);
        assert!(new.recipient.starts_with("team:2:"), "{}", new.recipient);
        assert_eq!(st.registries["r2"].password, None);
        for (key, enc) in [(key_a, a), (key_b, b)] {
            let got = open_registry_password(enc, key, &st, &st.registries["r1"]).unwrap();
            assert_eq!(got.as_deref(), Some("s3cret"));
        }
        // c, even with the epoch-1 copy it had, cannot open the new seal.
        let mut with_old = st.clone();
        let sk = seal_team_key(&k1, &format!("node:{key_c}"), &c.public_hex()).unwrap();
        with_old.keys.insert(sk.entity_id(), sk);
        assert!(open_registry_password(c, key_c, &with_old, &st.registries["r1"]).is_err());
        assert!(matches!(
            open_team_key(c, &format!("node:{key_c}"), &with_old, 2, None),
            Err(SecretsError::NoTeamKey { .. })
        ));
        assert!(key_recipients_missing(&st).is_empty());
        // No key, nothing to rotate.
        assert_eq!(
            rotate(a, key_a, &TeamState::default()).unwrap_err(),
            SecretsError::NoKeyYet
        );
    }

    #[test]
    fn keys_a_password_still_needs_are_handed_out_beside_the_current_one() {
        let (key_a, a) = node(1);
        let (key_b, b) = node(2);
        let mut st = TeamState::default();
        st.nodes.insert(key_a.clone(), node_entity(&key_a, &a));
        st.nodes.insert(key_b.clone(), node_entity(&key_b, &b));
        assert!(needed_keys(&st).is_empty());
        // Two epoch-1 keys made at once; a holds both, b only the greater.
        let (k, l) = {
            let (x, y) = (TeamKey::generate(1), TeamKey::generate(1));
            if x.public_hex() < y.public_hex() {
                (x, y)
            } else {
                (y, x)
            }
        };
        for (key, recipient, enc) in [(&k, &key_a, &a), (&l, &key_a, &a), (&l, &key_b, &b)] {
            let sk = seal_team_key(key, &format!("node:{recipient}"), &enc.public_hex()).unwrap();
            st.keys.insert(sk.entity_id(), sk);
        }
        assert_eq!(needed_keys(&st), vec![(1, l.public_hex())]);
        assert!(missing_key(&st, 1, &l.public_hex()).is_empty());
        // A password sealed to the lesser key makes it needed: b lacks it.
        st.registries.insert(
            "r".into(),
            Registry {
                id: "r".into(),
                name: "r".into(),
                kind: RegistryKind::V2,
                url: None,
                namespace: None,
                user: Some("u".into()),
                password: Some(seal_to_team_key(1, &k.public_hex(), "pw").unwrap()),
                created: Hlc::new(1, 0),
            },
        );
        let mut want = vec![(1, k.public_hex()), (1, l.public_hex())];
        want.sort();
        assert_eq!(needed_keys(&st), want);
        assert_eq!(
            missing_key(&st, 1, &k.public_hex()),
            vec![(format!("node:{key_b}"), b.public_hex())]
        );
        assert_eq!(
            team_key_holders(&st, &team_recipient(1, &k.public_hex())),
            vec![key_a.clone()]
        );
        // Once a seals it to b, b opens the password.
        let opened = open_team_key(
            &a,
            &format!("node:{key_a}"),
            &st,
            1,
            Some(&k.public_hex()[..16]),
        )
        .unwrap();
        let for_b = seal_team_key(&opened, &format!("node:{key_b}"), &b.public_hex()).unwrap();
        st.keys.insert(for_b.entity_id(), for_b);
        let r = st.registries["r"].clone();
        assert_eq!(
            open_registry_password(&b, &key_b, &st, &r)
                .unwrap()
                .as_deref(),
            Some("pw")
        );
    }

    #[test]
    fn malformed_team_keys_are_refused_not_trusted() {
        let (key_a, a) = node(1);
        let mut st = TeamState::default();
        for bad in [
            "shoal-team-key-v9:1:00:00",
            "shoal-team-key-v1:x:00:00",
            "shoal-team-key-v1:1:zz:00",
            "nonsense",
        ] {
            st.keys.insert(
                format!("node:{key_a}"),
                SealedKey {
                    recipient: format!("node:{key_a}"),
                    epoch: 1,
                    sealed: bad.into(),
                },
            );
            assert_eq!(team_public(&st), None, "{bad}");
            assert!(open_team_key(&a, &format!("node:{key_a}"), &st, 1, None).is_err());
        }
        // A sealed key whose secret does not match its public half.
        let k = TeamKey::generate(1);
        let other = TeamKey::generate(1);
        let mut sk = seal_team_key(&k, &format!("node:{key_a}"), &a.public_hex()).unwrap();
        sk.sealed = sk.sealed.replace(&k.public_hex(), &other.public_hex());
        st.keys.insert(sk.recipient.clone(), sk);
        assert!(matches!(
            open_team_key(&a, &format!("node:{key_a}"), &st, 1, None),
            Err(SecretsError::Malformed(_))
        ));
    }
}
