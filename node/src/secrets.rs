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
//!   sealed to the team's public key (recipient `team:<epoch>`,
//!   [`seal_to_team`]), so whoever writes one needs only the public half,
//!   and every holder of the key opens it ([`open_sealed`]). The admin whose
//!   CLI first stores a team secret makes epoch 1 and seals it to every
//!   node and admin; from then on every node seals it to newcomers
//!   (`crate::keeper`).

use std::collections::BTreeMap;
use std::fmt;

use crypto_box::aead::OsRng;
use shoal_protocol::keys::hash_parts;
use shoal_protocol::model::{Deployment, Registry, Sealed, SealedKey, TeamState};

/// Prefix of one sealed value in its text form.
pub const SEAL_PREFIX: &str = "shoal-seal-v1:";
/// Recipient of a value sealed to each of several nodes.
pub const NODES_RECIPIENT: &str = "nodes";
/// First line of a set of per-node sealed copies.
const SET_HEADER: &str = "shoal-sealed-set-v1";
/// Domain of the derivation of a node's encryption key from its key seed.
const ENC_KEY_DOMAIN: &str = "shoal/node-encryption-key/v1";
/// Prefix of a sealed team secrets key.
pub const TEAM_KEY_PREFIX: &str = "shoal-team-key-v1:";
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

/// The team's current key epoch and its public key, hex: the newest epoch
/// any recipient holds (`None` before the team has a key). Should two keys
/// of one epoch exist (made concurrently), the one of the smallest
/// recipient counts, the same on every replica.
pub fn team_public(state: &TeamState) -> Option<(u32, String)> {
    let mut best: Option<(u32, String)> = None;
    // Keys iterate in recipient order: the first of an epoch wins.
    for k in state.keys.values() {
        let Ok((epoch, public, _)) = team_key_parts(&k.sealed) else {
            continue;
        };
        if epoch != k.epoch {
            continue;
        }
        if best.as_ref().is_none_or(|(e, _)| epoch > *e) {
            best = Some((epoch, public.to_string()));
        }
    }
    best
}

/// Opens the team key of `epoch` that `recipient` holds in `state`, with
/// the recipient's encryption secret.
pub fn open_team_key(
    secret: &EncSecret,
    recipient: &str,
    state: &TeamState,
    epoch: u32,
) -> Result<TeamKey, SecretsError> {
    match state.keys.get(recipient) {
        Some(k) if k.epoch == epoch => open_sealed_key(secret, k),
        _ => Err(SecretsError::NoTeamKey {
            what: "the team key".into(),
            epoch,
            holder: recipient.to_string(),
        }),
    }
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
        recipient: format!("{TEAM_RECIPIENT_PREFIX}{epoch}"),
        data: seal(public, value.as_bytes())?,
    })
}

/// The live nodes and admins who should hold the team key and do not hold
/// `epoch` yet, with their encryption keys: (recipient, enc key).
pub fn key_recipients_missing(state: &TeamState, epoch: u32) -> Vec<(String, String)> {
    let holds = |r: &str| state.keys.get(r).is_some_and(|k| k.epoch >= epoch);
    let mut out = Vec::new();
    for n in state.nodes.values() {
        let r = format!("node:{}", n.key);
        if shoal_protocol::view::effective_node(state, &n.key).is_some()
            && !n.enc_key.is_empty()
            && !holds(&r)
        {
            out.push((r, n.enc_key.clone()));
        }
    }
    for m in state.members.values() {
        let r = format!("member:{}", m.key);
        if shoal_protocol::view::effective_role(state, &m.key)
            .is_some_and(|role| role >= shoal_protocol::model::Role::Admin)
            && !m.enc_key.is_empty()
            && !holds(&r)
        {
            out.push((r, m.enc_key.clone()));
        }
    }
    out
}

/// The nodes that can open a value sealed to the team key of `epoch`.
pub fn team_key_holders(state: &TeamState, epoch: u32) -> Vec<String> {
    state
        .nodes
        .values()
        .filter(|n| {
            state
                .keys
                .get(&format!("node:{}", n.key))
                .is_some_and(|k| k.epoch == epoch)
        })
        .map(|n| n.key.clone())
        .collect()
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
    if let Some(epoch) = sealed.recipient.strip_prefix(TEAM_RECIPIENT_PREFIX) {
        let epoch: u32 = epoch
            .parse()
            .map_err(|_| SecretsError::Malformed(format!("recipient {}", sealed.recipient)))?;
        let key =
            open_team_key(secret, &format!("node:{me_hex}"), state, epoch).map_err(
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
        let missing = key_recipients_missing(&st, 1);
        assert_eq!(missing.len(), 2, "{missing:?}");

        // Epoch 1, sealed to a only.
        let k1 = TeamKey::generate(1);
        let sk = seal_team_key(&k1, &format!("node:{key_a}"), &a.public_hex()).unwrap();
        assert!(!sk.sealed.contains(&hex::encode(k1.secret.0.to_bytes())));
        st.keys.insert(sk.recipient.clone(), sk);
        assert_eq!(team_public(&st), Some((1, k1.public_hex())));
        assert_eq!(
            key_recipients_missing(&st, 1),
            vec![(format!("node:{key_b}"), b.public_hex())]
        );
        let sealed = team_seal(&st, "pa55").unwrap();
        assert_eq!(sealed.recipient, "team:1");
        assert!(!sealed.data.contains("pa55"));
        assert_eq!(open_sealed(&a, &key_a, &st, "pw", &sealed).unwrap(), "pa55");
        assert!(matches!(
            open_sealed(&b, &key_b, &st, "pw", &sealed),
            Err(SecretsError::NoTeamKey { epoch: 1, .. })
        ));
        assert_eq!(team_key_holders(&st, 1), vec![key_a.clone()]);

        // a opens its copy and seals it to b: b opens the secret too.
        let opened = open_team_key(&a, &format!("node:{key_a}"), &st, 1).unwrap();
        assert_eq!(opened.public_hex(), k1.public_hex());
        assert!(open_team_key(&b, &format!("node:{key_a}"), &st, 1).is_err());
        let for_b = seal_team_key(&opened, &format!("node:{key_b}"), &b.public_hex()).unwrap();
        st.keys.insert(for_b.recipient.clone(), for_b);
        assert_eq!(open_sealed(&b, &key_b, &st, "pw", &sealed).unwrap(), "pa55");
        assert!(key_recipients_missing(&st, 1).is_empty());

        // A new epoch: secrets of the old one no longer open where the
        // holder only has the new key; new secrets do.
        let k2 = TeamKey::generate(2);
        let sk = seal_team_key(&k2, &format!("node:{key_a}"), &a.public_hex()).unwrap();
        st.keys.insert(sk.recipient.clone(), sk);
        assert_eq!(team_public(&st), Some((2, k2.public_hex())));
        assert!(matches!(
            open_sealed(&a, &key_a, &st, "pw", &sealed),
            Err(SecretsError::NoTeamKey { epoch: 1, .. })
        ));
        let newer = team_seal(&st, "n3w").unwrap();
        assert_eq!(open_sealed(&a, &key_a, &st, "pw", &newer).unwrap(), "n3w");
        assert_eq!(
            key_recipients_missing(&st, 2),
            vec![(format!("node:{key_b}"), b.public_hex())]
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
            assert!(open_team_key(&a, &format!("node:{key_a}"), &st, 1).is_err());
        }
        // A sealed key whose secret does not match its public half.
        let k = TeamKey::generate(1);
        let other = TeamKey::generate(1);
        let mut sk = seal_team_key(&k, &format!("node:{key_a}"), &a.public_hex()).unwrap();
        sk.sealed = sk.sealed.replace(&k.public_hex(), &other.public_hex());
        st.keys.insert(sk.recipient.clone(), sk);
        assert!(matches!(
            open_team_key(&a, &format!("node:{key_a}"), &st, 1),
            Err(SecretsError::Malformed(_))
        ));
    }
}
