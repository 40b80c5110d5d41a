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
//!   [`open_registry_password`]).

use std::collections::BTreeMap;
use std::fmt;

use crypto_box::aead::OsRng;
use shoal_protocol::keys::hash_parts;
use shoal_protocol::model::{Deployment, Registry, Sealed};

/// Prefix of one sealed value in its text form.
pub const SEAL_PREFIX: &str = "shoal-seal-v1:";
/// Recipient of a value sealed to each of several nodes.
pub const NODES_RECIPIENT: &str = "nodes";
/// First line of a set of per-node sealed copies.
const SET_HEADER: &str = "shoal-sealed-set-v1";
/// Domain of the derivation of a node's encryption key from its key seed.
const ENC_KEY_DOMAIN: &str = "shoal/node-encryption-key/v1";
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
/// registry has none). A node that joined after the registry was added has
/// no copy: the registry must be added again.
pub fn open_registry_password(
    secret: &EncSecret,
    node_key_hex: &str,
    r: &Registry,
) -> Result<Option<String>, SecretsError> {
    let Some(sealed) = &r.password else {
        return Ok(None);
    };
    let copies = sealed_set(sealed)?;
    let copy = copies
        .get(node_key_hex)
        .ok_or_else(|| SecretsError::NotForThisNode {
            key: format!("the password of registry {}", r.name),
            recipient: format!("{} other node(s)", copies.len()),
        })?;
    open_text(secret, "password", copy).map(Some)
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
        assert_eq!(
            open_registry_password(&a, &key_a, &r).unwrap().as_deref(),
            Some("pa55")
        );
        assert_eq!(
            open_registry_password(&b, &key_b, &r).unwrap().as_deref(),
            Some("pa55")
        );
        assert!(matches!(
            open_registry_password(&c, &key_c, &r),
            Err(SecretsError::NotForThisNode { .. })
        ));
        let none = Registry {
            password: None,
            ..r.clone()
        };
        assert_eq!(open_registry_password(&c, &key_c, &none).unwrap(), None);
        assert!(matches!(
            seal_for_nodes(&[("x".into(), String::new())], "p"),
            Err(SecretsError::NoEncKey { .. })
        ));
    }
}
