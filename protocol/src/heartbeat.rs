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
//! The live state travels in its own signed message ([`SignedLive`]), not
//! in the heartbeat: the heartbeat keeps the encoding every release
//! decodes, and live reports go only to peers whose heartbeat says they
//! speak [`LIVE_PROTOCOL_VERSION`] or later. Everything in a live report
//! is bounded ([`Live::check`]), so one stays far below the wire's
//! message limit.

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey, Signature, TeamId};

/// Version of the heartbeat encoding. It must not change while nodes of
/// older releases may be in the team: they refuse the peer of a message
/// they cannot decode.
pub const HEARTBEAT_VERSION: u8 = 1;
/// Most addresses a heartbeat carries.
pub const MAX_HEARTBEAT_ADDRESSES: usize = 32;
/// Version of the live report encoding.
pub const LIVE_REPORT_VERSION: u8 = 1;
/// The first protocol version ([`crate::PROTOCOL_VERSION`]) whose nodes
/// decode live reports; none is sent to a peer speaking an older one.
pub const LIVE_PROTOCOL_VERSION: u32 = 2;
/// Most containers a live report lists; a node with more sends
/// the first ones by name and sets [`Live::truncated`].
pub const MAX_LIVE_CONTAINERS: usize = 256;
/// Longest text field (bytes) of a live container.
pub const MAX_LIVE_TEXT: usize = 253;
/// Most published ports listed per live container.
pub const MAX_LIVE_PORTS: usize = 16;
/// What the live state's bounds above allow at most, encoded (a live
/// report at every limit stays below it; the sync protocol's message limit
/// is 4 MiB).
pub const MAX_LIVE_BYTES: usize = 2 * 1024 * 1024;
const DOMAIN: &[u8] = b"shoal/heartbeat/v1";
const LIVE_DOMAIN: &[u8] = b"shoal/live/v1";

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
}

/// What a node says runs on it: sent next to its heartbeat, to peers that
/// speak [`LIVE_PROTOCOL_VERSION`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveReport {
    pub version: u8,
    pub team: TeamId,
    pub node: PublicKey,
    /// The sender's clock, milliseconds since the Unix epoch; orders a
    /// node's reports (the same clock as its heartbeats' `sent_ms`).
    pub made_ms: u64,
    pub live: Live,
}

/// A live report and the sending node's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedLive {
    pub report: LiveReport,
    pub signature: Signature,
}

/// A node's containers of the team and its host load, as its runtime
/// reported them when the live report was made.
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

fn message<T: Serialize>(domain: &[u8], body: &T) -> Result<Vec<u8>, HeartbeatError> {
    let mut m = domain.to_vec();
    m.extend(postcard::to_stdvec(body).map_err(|e| HeartbeatError::Encode(e.to_string()))?);
    Ok(m)
}

impl Live {
    /// Checks the bounds a live report must keep.
    pub fn check(&self) -> Result<(), HeartbeatError> {
        if self.containers.len() > MAX_LIVE_CONTAINERS {
            return Err(HeartbeatError::TooManyContainers(self.containers.len()));
        }
        let long = self
            .containers
            .iter()
            .any(|c| c.ports.len() > MAX_LIVE_PORTS || c.texts().any(|t| t.len() > MAX_LIVE_TEXT));
        if long {
            return Err(HeartbeatError::TextTooLong);
        }
        Ok(())
    }
}

impl SignedLive {
    /// Signs `report` with the node's key (which must be `report.node`'s).
    pub fn sign(report: LiveReport, key: &SecretKey) -> Result<SignedLive, HeartbeatError> {
        let signature = key.sign(&message(LIVE_DOMAIN, &report)?);
        Ok(SignedLive { report, signature })
    }

    /// Checks the version, the bounds and the signature (strict).
    pub fn verify(&self) -> Result<(), HeartbeatError> {
        if self.report.version != LIVE_REPORT_VERSION {
            return Err(HeartbeatError::Version(self.report.version));
        }
        self.report.live.check()?;
        if !self
            .report
            .node
            .verify(&message(LIVE_DOMAIN, &self.report)?, &self.signature)
        {
            return Err(HeartbeatError::Signature);
        }
        Ok(())
    }
}

impl SignedHeartbeat {
    /// Signs `beat` with the node's key (which must be `beat.node`'s).
    pub fn sign(beat: Heartbeat, key: &SecretKey) -> Result<SignedHeartbeat, HeartbeatError> {
        let signature = key.sign(&message(DOMAIN, &beat)?);
        Ok(SignedHeartbeat { beat, signature })
    }

    /// Checks the version, the size and the signature (strict).
    pub fn verify(&self) -> Result<(), HeartbeatError> {
        if self.beat.version != HEARTBEAT_VERSION {
            return Err(HeartbeatError::Version(self.beat.version));
        }
        if self.beat.addresses.len() > MAX_HEARTBEAT_ADDRESSES {
            return Err(HeartbeatError::TooManyAddresses(self.beat.addresses.len()));
        }
        if !self
            .beat
            .node
            .verify(&message(DOMAIN, &self.beat)?, &self.signature)
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
        }
    }

    fn report(node: &SecretKey) -> LiveReport {
        LiveReport {
            version: LIVE_REPORT_VERSION,
            team: TeamId([1; 32]),
            node: node.public(),
            made_ms: 1_000,
            live: Live {
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
            },
        }
    }

    /// A signed heartbeat as the first release encodes it (postcard), made
    /// by that release's code: key seed `[7; 32]`, team `[9; 32]`, sent at
    /// 1_700_000_000_123, agent `0.1.0`, protocol 1, one address.
    const FIRST_RELEASE_HEARTBEAT: &str = "010909090909090909090909090909090909090909090909090909090909090909ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22cfbd095ffbc3105302e312e300101162f6970342f31302e302e302e372f7463702f3430303140a7c3caf00dd3a478cbbe2813f6ffcfb606f94b1df95150fba9729770cb884f21c80655995b4964bfe18add673dc25935cf40c3df60e3371519cac9c450ceef0b";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_heartbeat_keeps_the_first_releases_encoding_and_signature() {
        // Nodes of older releases decode heartbeats strictly and drop the
        // peer of one they cannot decode: the encoding must not drift.
        let bytes = unhex(FIRST_RELEASE_HEARTBEAT);
        let s: SignedHeartbeat = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(s.verify(), Ok(()));
        let k = SecretKey::from_seed([7; 32]);
        let expected = Heartbeat {
            version: HEARTBEAT_VERSION,
            team: TeamId([9; 32]),
            node: k.public(),
            sent_ms: 1_700_000_000_123,
            agent_version: "0.1.0".into(),
            protocol_version: 1,
            addresses: vec!["/ip4/10.0.0.7/tcp/4001".into()],
        };
        assert_eq!(s.beat, expected);
        // Signing it today gives the same bytes (same domain, same layout).
        let again = SignedHeartbeat::sign(expected, &k).unwrap();
        assert_eq!(postcard::to_stdvec(&again).unwrap(), bytes);
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
        future.version = 2;
        let future = SignedHeartbeat::sign(future, &k).unwrap();
        assert_eq!(future.verify(), Err(HeartbeatError::Version(2)));
    }

    #[test]
    fn a_signed_live_report_verifies_and_any_change_breaks_it() {
        let k = SecretKey::from_seed([4; 32]);
        let s = SignedLive::sign(report(&k), &k).unwrap();
        assert_eq!(s.verify(), Ok(()));
        // A relay cannot fake a container's state.
        let mut dead = s.clone();
        dead.report.live.containers[0].state = "exited".into();
        assert_eq!(dead.verify(), Err(HeartbeatError::Signature));
        let other = SecretKey::from_seed([5; 32]);
        let forged = SignedLive::sign(report(&k), &other).unwrap();
        assert_eq!(forged.verify(), Err(HeartbeatError::Signature));
        let mut future = report(&k);
        future.version = 2;
        let future = SignedLive::sign(future, &k).unwrap();
        assert_eq!(future.verify(), Err(HeartbeatError::Version(2)));
        // A heartbeat's signature does not pass for a live report's: the
        // domains differ.
        let hb = SignedHeartbeat::sign(beat(&k), &k).unwrap();
        let mut swapped = s.clone();
        swapped.signature = hb.signature;
        assert_eq!(swapped.verify(), Err(HeartbeatError::Signature));
    }

    #[test]
    fn live_state_is_bounded_and_bounded_makes_it_fit() {
        let k = SecretKey::from_seed([4; 32]);
        let mut r = report(&k);
        let one = r.live.containers[0].clone();
        let mut live = r.live.clone();
        live.containers = vec![one; MAX_LIVE_CONTAINERS + 1];
        live.containers[0].name = "é".repeat(MAX_LIVE_TEXT);
        r.live = live.clone();
        let s = SignedLive::sign(r.clone(), &k).unwrap();
        assert_eq!(
            s.verify(),
            Err(HeartbeatError::TooManyContainers(MAX_LIVE_CONTAINERS + 1))
        );
        live.containers.truncate(MAX_LIVE_CONTAINERS);
        r.live = live.clone();
        let s = SignedLive::sign(r.clone(), &k).unwrap();
        assert_eq!(s.verify(), Err(HeartbeatError::TextTooLong));
        live.containers.push(live.containers[1].clone());
        let fitted = live.bounded();
        assert!(fitted.truncated);
        assert!(fitted.containers[0].name.len() <= MAX_LIVE_TEXT);
        r.live = fitted;
        let s = SignedLive::sign(r, &k).unwrap();
        assert_eq!(s.verify(), Ok(()));
    }

    #[test]
    fn a_live_report_at_every_limit_fits_its_size_bound() {
        let k = SecretKey::from_seed([4; 32]);
        let mut r = report(&k);
        let long = "x".repeat(MAX_LIVE_TEXT);
        let mut c = r.live.containers[0].clone();
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
        r.live.containers = vec![c; MAX_LIVE_CONTAINERS];
        r.made_ms = u64::MAX;
        let s = SignedLive::sign(r, &k).unwrap();
        assert_eq!(s.verify(), Ok(()));
        let len = postcard::to_stdvec(&s).unwrap().len();
        assert!(len < MAX_LIVE_BYTES, "{len}");
    }
}
