//! Heartbeats: a node's signed "I am here" (§4 "Ephemeral messages").
//!
//! Every node sends one to its connected peers at a fixed interval; peers
//! forward newer ones, so every node learns every other node's status
//! (`connected` while fresh, `unreachable` after), version and addresses
//! across a partial mesh. Heartbeats are never ops: they do not enter the
//! document or the audit log.
//!
//! A node with a container runtime also says what runs on it ([`Live`]):
//! the live state of the team's containers and its host load, so any
//! member sees drift (expected against actual) without asking the node.
//! Everything in a heartbeat is bounded ([`Heartbeat::check`]), so one
//! stays far below the wire's message limit.

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey, Signature, TeamId};

/// Version of the heartbeat encoding. Version 2 added [`Heartbeat::live`].
pub const HEARTBEAT_VERSION: u8 = 2;
/// Most addresses a heartbeat carries.
pub const MAX_HEARTBEAT_ADDRESSES: usize = 32;
/// Most containers a heartbeat's live state lists; a node with more sends
/// the first ones by name and sets [`Live::truncated`].
pub const MAX_LIVE_CONTAINERS: usize = 256;
/// Longest text field (bytes) of a live container.
pub const MAX_LIVE_TEXT: usize = 253;
/// Most published ports listed per live container.
pub const MAX_LIVE_PORTS: usize = 16;
/// What the live state's bounds above allow at most, encoded (a heartbeat
/// whose live state is at every limit, with 32 addresses of 253 bytes,
/// stays below it; the sync protocol's message limit is 4 MiB).
pub const MAX_HEARTBEAT_BYTES: usize = 2 * 1024 * 1024;
const DOMAIN: &[u8] = b"shoal/heartbeat/v2";

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
    /// What runs on the node now; `None` before its first look. Boxed:
    /// the encoding is the same, and heartbeats stay small in memory.
    pub live: Option<Box<Live>>,
}

/// A node's containers of the team and its host load, as its runtime
/// reported them when the heartbeat was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// `containers` is what the runtime answered; false when the node has
    /// no runtime or it did not answer (the list is then empty).
    pub runtime: bool,
    /// The team's containers, by runtime name.
    pub containers: Vec<LiveContainer>,
    /// More containers ran than [`MAX_LIVE_CONTAINERS`].
    pub truncated: bool,
    /// `None` when the node could not read it.
    pub load: Option<HostLoad>,
}

/// One container as the runtime sees it now (what `container list` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveContainer {
    /// The runtime's name, `<prefix>-<container>` (init containers:
    /// `<prefix>-<container>-init-<init>`).
    pub name: String,
    /// The engine's id.
    pub id: String,
    pub prefix: String,
    /// Its name in its version.
    pub container: String,
    /// The deployment id that made it.
    pub deployment: String,
    pub version: String,
    pub try_number: u32,
    /// The init container's name, for init containers.
    pub init: Option<String>,
    /// The engine's state: `running`, `exited`, `restarting`, `paused`,
    /// `created`, `dead` (Kubernetes: `running`, `starting`, `stopped` or
    /// the pods' failure reason).
    pub state: String,
    /// The exit code of an exited container.
    pub exit_code: Option<i64>,
    pub image: String,
    /// The engine's human status ("Up 3 minutes (healthy)").
    pub status: String,
    /// `healthy`, `unhealthy` or `starting` for a container with a health
    /// check.
    pub health: Option<String>,
    /// How often the engine restarted it.
    pub restarts: u32,
    /// Published ports: (internal, `udp`, host ip, host port); at most
    /// [`MAX_LIVE_PORTS`].
    pub ports: Vec<LivePort>,
}

/// A published port of a [`LiveContainer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePort {
    pub internal: u16,
    pub udp: bool,
    pub host_ip: String,
    pub host_port: u16,
}

impl LiveContainer {
    fn texts(&self) -> impl Iterator<Item = &String> {
        [
            &self.name,
            &self.id,
            &self.prefix,
            &self.container,
            &self.deployment,
            &self.version,
            &self.state,
            &self.image,
            &self.status,
        ]
        .into_iter()
        .chain(self.init.as_ref())
        .chain(self.health.as_ref())
        .chain(self.ports.iter().map(|p| &p.host_ip))
    }

    fn texts_mut(&mut self) -> impl Iterator<Item = &mut String> {
        [
            &mut self.name,
            &mut self.id,
            &mut self.prefix,
            &mut self.container,
            &mut self.deployment,
            &mut self.version,
            &mut self.state,
            &mut self.image,
            &mut self.status,
        ]
        .into_iter()
        .chain(self.init.as_mut())
        .chain(self.health.as_mut())
        .chain(self.ports.iter_mut().map(|p| &mut p.host_ip))
    }
}

/// A node's host load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLoad {
    /// Busy share of all CPUs since the previous look, in per mille.
    pub cpu_permille: u16,
    pub cpus: u16,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Of the file system holding the node's data.
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

impl Live {
    /// Keeps the first [`MAX_LIVE_CONTAINERS`] containers and cuts text
    /// fields to [`MAX_LIVE_TEXT`] bytes, so the result passes the checks.
    pub fn bounded(mut self) -> Live {
        if self.containers.len() > MAX_LIVE_CONTAINERS {
            self.containers.truncate(MAX_LIVE_CONTAINERS);
            self.truncated = true;
        }
        for c in &mut self.containers {
            c.ports.truncate(MAX_LIVE_PORTS);
            c.texts_mut().for_each(cut);
        }
        self
    }
}

fn cut(s: &mut String) {
    if s.len() > MAX_LIVE_TEXT {
        let mut end = MAX_LIVE_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
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
    #[error("too many live containers ({0})")]
    TooManyContainers(usize),
    #[error(
        "a live container's text field is longer than {MAX_LIVE_TEXT} bytes, or it lists more than {MAX_LIVE_PORTS} ports"
    )]
    TextTooLong,
    #[error("the heartbeat cannot be encoded: {0}")]
    Encode(String),
}

fn message(beat: &Heartbeat) -> Result<Vec<u8>, HeartbeatError> {
    let mut m = DOMAIN.to_vec();
    m.extend(postcard::to_stdvec(beat).map_err(|e| HeartbeatError::Encode(e.to_string()))?);
    Ok(m)
}

impl Heartbeat {
    /// Checks the bounds a heartbeat must keep.
    pub fn check(&self) -> Result<(), HeartbeatError> {
        if self.addresses.len() > MAX_HEARTBEAT_ADDRESSES {
            return Err(HeartbeatError::TooManyAddresses(self.addresses.len()));
        }
        if let Some(live) = &self.live {
            if live.containers.len() > MAX_LIVE_CONTAINERS {
                return Err(HeartbeatError::TooManyContainers(live.containers.len()));
            }
            let long = live.containers.iter().any(|c| {
                c.ports.len() > MAX_LIVE_PORTS || c.texts().any(|t| t.len() > MAX_LIVE_TEXT)
            });
            if long {
                return Err(HeartbeatError::TextTooLong);
            }
        }
        Ok(())
    }
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
        self.beat.check()?;
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
            live: Some(Box::new(Live {
                runtime: true,
                containers: vec![LiveContainer {
                    name: "prod-web".into(),
                    id: "0123abcd".into(),
                    prefix: "prod".into(),
                    container: "web".into(),
                    deployment: "d1".into(),
                    version: "1.0".into(),
                    try_number: 1,
                    init: None,
                    state: "running".into(),
                    exit_code: None,
                    image: "web:1.0".into(),
                    status: "Up 3 minutes (healthy)".into(),
                    health: Some("healthy".into()),
                    restarts: 0,
                    ports: vec![LivePort {
                        internal: 80,
                        udp: false,
                        host_ip: "0.0.0.0".into(),
                        host_port: 8080,
                    }],
                }],
                truncated: false,
                load: Some(HostLoad {
                    cpu_permille: 120,
                    cpus: 2,
                    memory_used_bytes: 1 << 30,
                    memory_total_bytes: 4 << 30,
                    disk_used_bytes: 1 << 34,
                    disk_total_bytes: 1 << 35,
                }),
            })),
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
        future.version = 3;
        let future = SignedHeartbeat::sign(future, &k).unwrap();
        assert_eq!(future.verify(), Err(HeartbeatError::Version(3)));
        // The live state is signed too: a relay cannot fake a container's state.
        let mut dead = s.clone();
        if let Some(live) = &mut dead.beat.live {
            live.containers[0].state = "exited".into();
        }
        assert_eq!(dead.verify(), Err(HeartbeatError::Signature));
    }

    #[test]
    fn live_state_is_bounded_and_bounded_makes_it_fit() {
        let k = SecretKey::from_seed([4; 32]);
        let mut b = beat(&k);
        let one = b.live.as_ref().unwrap().containers[0].clone();
        let mut live = b.live.take().unwrap();
        live.containers = vec![one; MAX_LIVE_CONTAINERS + 1];
        live.containers[0].name = "é".repeat(MAX_LIVE_TEXT);
        b.live = Some(live.clone());
        let s = SignedHeartbeat::sign(b.clone(), &k).unwrap();
        assert_eq!(
            s.verify(),
            Err(HeartbeatError::TooManyContainers(MAX_LIVE_CONTAINERS + 1))
        );
        live.containers.truncate(MAX_LIVE_CONTAINERS);
        b.live = Some(live.clone());
        let s = SignedHeartbeat::sign(b.clone(), &k).unwrap();
        assert_eq!(s.verify(), Err(HeartbeatError::TextTooLong));
        live.containers.push(live.containers[1].clone());
        let fitted = live.bounded();
        assert!(fitted.truncated);
        assert!(fitted.containers[0].name.len() <= MAX_LIVE_TEXT);
        b.live = Some(Box::new(fitted));
        let s = SignedHeartbeat::sign(b, &k).unwrap();
        assert_eq!(s.verify(), Ok(()));
        // A full heartbeat stays far below the wire's message limit.
        assert!(postcard::to_stdvec(&s).unwrap().len() < 1024 * 1024);
    }

    #[test]
    fn a_heartbeat_at_every_limit_fits_its_size_bound() {
        let k = SecretKey::from_seed([4; 32]);
        let mut b = beat(&k);
        let long = "x".repeat(MAX_LIVE_TEXT);
        b.addresses = vec![long.clone(); MAX_HEARTBEAT_ADDRESSES];
        let mut live = *b.live.take().unwrap();
        let mut c = live.containers[0].clone();
        c.texts_mut().for_each(|t| *t = long.clone());
        c.init = Some(long.clone());
        c.health = Some(long.clone());
        c.exit_code = Some(i64::MIN);
        c.restarts = u32::MAX;
        c.try_number = u32::MAX;
        c.ports = vec![
            LivePort {
                internal: u16::MAX,
                udp: true,
                host_ip: long.clone(),
                host_port: u16::MAX,
            };
            MAX_LIVE_PORTS
        ];
        live.containers = vec![c; MAX_LIVE_CONTAINERS];
        b.live = Some(Box::new(live));
        let s = SignedHeartbeat::sign(b, &k).unwrap();
        assert_eq!(s.verify(), Ok(()));
        let len = postcard::to_stdvec(&s).unwrap().len();
        assert!(len < MAX_HEARTBEAT_BYTES, "{len}");
    }
}
