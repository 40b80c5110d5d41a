//! Transport and behaviour of the mesh swarm.
//!
//! TCP, then the private-network layer (a stranger without the pre-shared key
//! cannot complete even the Noise handshake), then Noise, then Yamux.

use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{PeerId, Swarm, identify, mdns, noise, ping, tcp, yamux};

use super::MeshError;
use super::wire::{
    Codec, JOIN_PROTOCOL, MAX_JOIN_REPLY_BYTES, MAX_JOIN_REQUEST_BYTES, MAX_SYNC_MESSAGE_BYTES,
    SYNC_PROTOCOL,
};

/// Bound on TCP connect + pnet + Noise + Yamux negotiation.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one request-response exchange, including the daemon's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections are never closed for being idle: connections to allowed peers
/// are meant to stay up, and the actor closes the others itself.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::MAX;
/// Protocol version string announced through identify.
pub const IDENTIFY_PROTOCOL: &str = "/shoal/1";

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Carries encoded [`super::SyncRequest`] / [`super::SyncResponse`].
    pub(crate) sync: request_response::Behaviour<Codec>,
    /// Carries encoded [`super::JoinRequest`] / [`super::JoinReply`].
    pub(crate) join: request_response::Behaviour<Codec>,
    /// The push streams ([`super::stream`]).
    pub(crate) stream: libp2p_stream::Behaviour,
}

/// The authenticated, multiplexed transport, gated by the pre-shared key.
pub(crate) fn transport(
    keypair: &Keypair,
    psk: [u8; 32],
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, MeshError> {
    let noise = noise::Config::new(keypair).map_err(|e| MeshError::Transport(e.to_string()))?;
    let pnet = PnetConfig::new(PreSharedKey::new(psk));
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |socket, _| pnet.handshake(socket))
            .upgrade(upgrade::Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(HANDSHAKE_TIMEOUT)
            .boxed(),
    )
}

pub(crate) fn build(
    keypair: &Keypair,
    psk: [u8; 32],
    enable_mdns: bool,
    agent_version: String,
) -> Result<Swarm<Behaviour>, MeshError> {
    let peer_id = keypair.public().to_peer_id();
    let mdns = if enable_mdns {
        let m = mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
            .map_err(|e| MeshError::Transport(format!("mDNS: {e}")))?;
        Some(m)
    } else {
        None
    };
    let rr_config = request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT);
    let behaviour = Behaviour {
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
                .with_agent_version(agent_version),
        ),
        ping: ping::Behaviour::new(ping::Config::new()),
        mdns: Toggle::from(mdns),
        sync: request_response::Behaviour::with_codec(
            Codec::new(MAX_SYNC_MESSAGE_BYTES, MAX_SYNC_MESSAGE_BYTES),
            [(SYNC_PROTOCOL, ProtocolSupport::Full)],
            rr_config.clone(),
        ),
        join: request_response::Behaviour::with_codec(
            Codec::new(MAX_JOIN_REQUEST_BYTES, MAX_JOIN_REPLY_BYTES),
            [(JOIN_PROTOCOL, ProtocolSupport::Full)],
            rr_config,
        ),
        stream: libp2p_stream::Behaviour::new(),
    };
    let config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
    Ok(Swarm::new(
        transport(keypair, psk)?,
        behaviour,
        peer_id,
        config,
    ))
}
