//! The member's profile: name, email and key pairs, kept in the config dir
//! (`$XDG_CONFIG_HOME/shoal/profile.json`, mode 0600). The daemon never sees
//! the private key: the CLI signs what the daemon prepares.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use shoal_protocol::{PublicKey, SecretKey};

/// Version of the profile file format.
pub const PROFILE_VERSION: u8 = 1;
const FILE: &str = "profile.json";

#[derive(Serialize, Deserialize)]
struct ProfileFile {
    version: u8,
    name: String,
    email: Option<String>,
    /// ed25519 seed, hex.
    signing_seed: String,
    /// Seed of the encryption key secrets are sealed to, hex.
    encryption_seed: String,
}

/// A loaded profile.
pub struct Profile {
    pub name: String,
    pub email: Option<String>,
    pub key: SecretKey,
    /// The member's X25519 encryption key: what the team secrets key is
    /// sealed to for an admin (§5). Its public half is published at join.
    pub enc: shoal_node::secrets::EncSecret,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("key", &self.key.public())
            .finish_non_exhaustive()
    }
}

impl Profile {
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }
}

/// The config dir: `--config-dir`/`SHOAL_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/shoal`, else `~/.config/shoal`.
pub fn config_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d.to_path_buf());
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("shoal"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("shoal")),
        None => bail!("cannot find a config dir: set HOME, XDG_CONFIG_HOME or pass --config-dir"),
    }
}

pub fn random32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(b)
}

fn seed(hex_str: &str, what: &str, path: &Path) -> Result<[u8; 32]> {
    let v = hex::decode(hex_str)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok());
    v.with_context(|| {
        format!(
            "{}: the {what} is not 64 hex characters; restore the file from a backup or move it away and run `shoal profile init`",
            path.display()
        )
    })
}

/// Loads the profile from `dir`.
pub fn load(dir: &Path) -> Result<Profile> {
    let path = dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no profile in {}: create one with `shoal profile init --name NAME`",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let f: ProfileFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid profile file; fix it, or move it away and run `shoal profile init`",
            path.display()
        )
    })?;
    if f.version != PROFILE_VERSION {
        bail!(
            "{} has profile format {} but this shoal reads format {PROFILE_VERSION}: upgrade shoal",
            path.display(),
            f.version
        );
    }
    Ok(Profile {
        name: f.name,
        email: f.email,
        key: SecretKey::from_seed(seed(&f.signing_seed, "signing key", &path)?),
        enc: shoal_node::secrets::EncSecret::from_bytes(seed(
            &f.encryption_seed,
            "encryption key",
            &path,
        )?),
    })
}

/// Creates a new profile in `dir`; refuses to overwrite an existing one.
pub fn init(dir: &Path, name: &str, email: Option<&str>) -> Result<Profile> {
    shoal_protocol::rules::check_name("profile name", name)?;
    let path = dir.join(FILE);
    if path.exists() {
        bail!(
            "a profile already exists in {}; it holds your key, so it is never overwritten",
            path.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    let (signing, encryption) = (random32()?, random32()?);
    let file = ProfileFile {
        version: PROFILE_VERSION,
        name: name.to_string(),
        email: email.map(str::to_string),
        signing_seed: hex::encode(signing),
        encryption_seed: hex::encode(encryption),
    };
    let text = serde_json::to_string_pretty(&file)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    load(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_round_trips_with_private_modes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cfg");
        let p = init(&dir, "alice", Some("a@example.org")).unwrap();
        let q = load(&dir).unwrap();
        assert_eq!(p.public(), q.public());
        assert_eq!(q.email.as_deref(), Some("a@example.org"));
        let mode = fs::metadata(dir.join(FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let again = init(&dir, "bob", None).unwrap_err().to_string();
        assert!(again.contains("never overwritten"), "{again}");
    }

    #[test]
    fn broken_files_give_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let missing = load(d.path()).unwrap_err().to_string();
        assert!(missing.contains("shoal profile init"), "{missing}");
        fs::write(d.path().join(FILE), "{not json").unwrap();
        let bad = format!("{:#}", load(d.path()).unwrap_err());
        assert!(bad.contains("not a valid profile file"), "{bad}");
        fs::write(
            d.path().join(FILE),
            r#"{"version":9,"name":"x","email":null,"signing_seed":"","encryption_seed":""}"#,
        )
        .unwrap();
        let newer = load(d.path()).unwrap_err().to_string();
        assert!(newer.contains("upgrade shoal"), "{newer}");
        fs::write(
            d.path().join(FILE),
            r#"{"version":1,"name":"x","email":null,"signing_seed":"abcd","encryption_seed":""}"#,
        )
        .unwrap();
        let short = load(d.path()).unwrap_err().to_string();
        assert!(short.contains("64 hex characters"), "{short}");
        assert!(init(d.path(), "has space", None).is_err());
    }
}
