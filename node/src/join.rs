//! The join protocol, carried by the mesh's `/shoal/join/1` requests.
//!
//! A newcomer holds a ticket (`shoal_protocol::ticket`): the team's network
//! key lets it reach a node, the invite key lets it prove it holds an invite.
//! 1. `Fetch`: with the proof for the key that will sign its join op, it asks
//!    a node for the team's ops, page by page, by version vector. The node
//!    answers only while the invite is valid (exists, not revoked, expired or
//!    used) and the proof verifies, so a ticket shows the team to its holder
//!    once, and nobody else.
//! 2. `Submit`: it signs its join op (`member.join` or `node.join`) against
//!    that state and hands it over. The node checks the ticket again, applies
//!    and commits the op, and from then on the newcomer is a node of the team:
//!    allowed on every mesh, synced like any other.
//!
//! The admitting side runs inside the team's sync engine (the only writer of
//! the replica); this module holds the messages and the newcomer's side.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use shoal_protocol::replica::VersionVector;
use shoal_protocol::{Op, PublicKey, Replica, Signature, TeamId};
use tracing::debug;

use crate::mesh::wire::{self, WireError, WireMessage};
use crate::mesh::{JoinReply, JoinRequest, MeshError, MeshHandle};

/// Most op bytes in one `Fetch` answer; stays under the mesh's join reply
/// limit with room for framing.
pub const MAX_FETCH_BYTES: usize = 768 * 1024;
/// Most ops in one `Fetch` answer.
pub const MAX_FETCH_OPS: usize = 2048;
/// Most `Fetch` pages a newcomer asks for before giving up (a node that
/// keeps answering "more" without progress is broken or hostile).
pub const MAX_FETCH_PAGES: usize = 10_000;

/// A join message, inside [`JoinRequest::payload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinMsg {
    Fetch {
        team: TeamId,
        invite: String,
        /// The key that will sign the join op (profile or node key).
        newcomer: PublicKey,
        proof: Signature,
        /// What the newcomer already holds.
        have: VersionVector,
    },
    Submit {
        team: TeamId,
        op: Vec<u8>,
    },
}

/// The answer to a [`JoinMsg`], inside [`JoinReply::Accepted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinAnswer {
    /// Ops in an order they can be applied in; `more` when there are others.
    Ops { ops: Vec<Vec<u8>>, more: bool },
    /// The join op is applied and committed.
    Admitted,
}

impl WireMessage for JoinMsg {}
impl WireMessage for JoinAnswer {}

/// Errors of the newcomer's side.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "the ticket names no reachable node (no bootstrap address with a /p2p/ peer id): ask for a new ticket"
    )]
    NoBootstrap,
    #[error(
        "no node of the team answered ({0}): check that one of the ticket's nodes is running and reachable from here"
    )]
    Unreachable(String),
    #[error("the team refused: {0}")]
    Refused(String),
    #[error("the node sent something unexpected: {0}")]
    Protocol(String),
    #[error("the node sent ops of another team: the ticket is forged or the node is misconfigured")]
    WrongTeam,
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Peer ids and addresses of the ticket's bootstrap multiaddrs (each must
/// end in `/p2p/<peer id>`; others are skipped).
pub fn bootstrap_peers(addrs: &[String]) -> Vec<(PeerId, Multiaddr)> {
    addrs
        .iter()
        .filter_map(|a| {
            let addr: Multiaddr = a.parse().ok()?;
            let peer = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                _ => None,
            })?;
            Some((peer, addr))
        })
        .collect()
}

/// Attempts per join message when the connection fails (not when the team
/// refuses): a connection can drop while the two sides settle.
pub const JOIN_ATTEMPTS: u32 = 3;
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

async fn call(
    mesh: &MeshHandle,
    peer: PeerId,
    addr: &Multiaddr,
    msg: &JoinMsg,
) -> Result<JoinAnswer, JoinError> {
    let request = JoinRequest {
        payload: wire::encode(msg)?,
    };
    let mut attempt = 1;
    loop {
        let err = match mesh.join(peer, vec![addr.clone()], request.clone()).await {
            Ok(JoinReply::Accepted(bytes)) => return Ok(wire::decode::<JoinAnswer>(&bytes)?),
            Ok(JoinReply::Refused(why)) => return Err(JoinError::Refused(why)),
            Err(MeshError::Closed) => {
                return Err(JoinError::Unreachable("the mesh is shut down".into()));
            }
            Err(e) => e,
        };
        if attempt >= JOIN_ATTEMPTS {
            return Err(JoinError::Unreachable(err.to_string()));
        }
        debug!(%peer, attempt, "join call failed, retrying: {err}");
        attempt += 1;
        tokio::time::sleep(RETRY_DELAY * attempt).await;
    }
}

/// Fetches the whole team from the first bootstrap node that admits the
/// ticket. Returns that node and the team's replica (every op verified).
pub async fn fetch(
    mesh: &MeshHandle,
    bootstrap: &[(PeerId, Multiaddr)],
    team: TeamId,
    invite: &str,
    newcomer: PublicKey,
    proof: Signature,
    now_ms: impl Fn() -> u64,
) -> Result<(PeerId, Multiaddr, Replica), JoinError> {
    if bootstrap.is_empty() {
        return Err(JoinError::NoBootstrap);
    }
    let mut last = None;
    for (peer, addr) in bootstrap {
        match fetch_from(mesh, *peer, addr, team, invite, newcomer, proof, &now_ms).await {
            Ok(replica) => return Ok((*peer, addr.clone(), replica)),
            // The team's answer is the same on every node: stop at once.
            Err(e @ (JoinError::Refused(_) | JoinError::WrongTeam)) => return Err(e),
            Err(e) => {
                debug!(%peer, "join fetch failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(JoinError::NoBootstrap))
}

#[allow(clippy::too_many_arguments)]
async fn fetch_from(
    mesh: &MeshHandle,
    peer: PeerId,
    addr: &Multiaddr,
    team: TeamId,
    invite: &str,
    newcomer: PublicKey,
    proof: Signature,
    now_ms: &impl Fn() -> u64,
) -> Result<Replica, JoinError> {
    let mut replica: Option<Replica> = None;
    for _ in 0..MAX_FETCH_PAGES {
        let have = replica
            .as_ref()
            .map(Replica::version_vector)
            .unwrap_or_default();
        let msg = JoinMsg::Fetch {
            team,
            invite: invite.to_string(),
            newcomer,
            proof,
            have,
        };
        let (ops, more) = match call(mesh, peer, addr, &msg).await? {
            JoinAnswer::Ops { ops, more } => (ops, more),
            JoinAnswer::Admitted => {
                return Err(JoinError::Protocol("an admission instead of ops".into()));
            }
        };
        if ops.is_empty() && more {
            return Err(JoinError::Protocol(
                "an empty page with more to come".into(),
            ));
        }
        for bytes in ops {
            let op = Op::decode(&bytes).map_err(|e| JoinError::Protocol(e.to_string()))?;
            match replica.as_mut() {
                Some(r) => {
                    r.apply(op, now_ms());
                }
                None => {
                    let r = Replica::from_genesis(op)
                        .map_err(|e| JoinError::Protocol(format!("the first op: {e}")))?;
                    if r.team() != team {
                        return Err(JoinError::WrongTeam);
                    }
                    replica = Some(r);
                }
            }
        }
        if !more {
            return replica.ok_or_else(|| JoinError::Protocol("no ops at all".into()));
        }
    }
    Err(JoinError::Protocol("too many pages".into()))
}

/// Hands the signed join op to `peer`; `Ok` once the team applied it.
pub async fn submit(
    mesh: &MeshHandle,
    peer: PeerId,
    addr: &Multiaddr,
    team: TeamId,
    op: &Op,
) -> Result<(), JoinError> {
    let msg = JoinMsg::Submit {
        team,
        op: op.encode(),
    };
    match call(mesh, peer, addr, &msg).await? {
        JoinAnswer::Admitted => Ok(()),
        JoinAnswer::Ops { .. } => Err(JoinError::Protocol("ops instead of an admission".into())),
    }
}

/// The admitting side's answer to a `Fetch`: a page of the ops the newcomer
/// lacks, in application order (the caller has checked the ticket).
pub fn fetch_page(replica: &Replica, have: &VersionVector) -> JoinAnswer {
    fetch_page_within(replica, have, MAX_FETCH_OPS, MAX_FETCH_BYTES)
}

fn fetch_page_within(
    replica: &Replica,
    have: &VersionVector,
    max_ops: usize,
    max_bytes: usize,
) -> JoinAnswer {
    let missing = replica.missing_for(have);
    let mut ops = Vec::new();
    let mut bytes = 0;
    for a in &missing {
        let enc = a.op.encode();
        if !ops.is_empty() && (ops.len() >= max_ops || bytes + enc.len() > max_bytes) {
            break;
        }
        bytes += enc.len();
        ops.push(enc);
    }
    let more = ops.len() < missing.len();
    JoinAnswer::Ops { ops, more }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::testkit;

    #[test]
    fn pages_rebuild_the_whole_team() {
        // One page when it all fits; otherwise as many as the limits need.
        let pages_of = |n: usize| [1, n.div_ceil(50), n];
        for (i, (max_ops, max_bytes)) in [
            (MAX_FETCH_OPS, MAX_FETCH_BYTES),
            (50, MAX_FETCH_BYTES),
            (MAX_FETCH_OPS, 1),
        ]
        .into_iter()
        .enumerate()
        {
            rebuild_in_pages(max_ops, max_bytes, |n| pages_of(n)[i]);
        }
    }

    fn rebuild_in_pages(max_ops: usize, max_bytes: usize, want_pages: impl Fn(usize) -> usize) {
        let (genesis, ops) = testkit::history(300);
        let mut full = Replica::from_genesis(genesis).unwrap();
        for op in ops {
            full.apply(op, u64::MAX / 2);
        }
        let mut have = VersionVector::new();
        let mut copy: Option<Replica> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            let JoinAnswer::Ops { ops, more } = fetch_page_within(&full, &have, max_ops, max_bytes)
            else {
                panic!("not ops");
            };
            assert!(!ops.is_empty());
            for b in ops {
                let op = Op::decode(&b).unwrap();
                match copy.as_mut() {
                    Some(r) => assert!(!r.apply(op, u64::MAX / 2).applied.is_empty()),
                    None => copy = Some(Replica::from_genesis(op).unwrap()),
                }
            }
            have = copy.as_ref().unwrap().version_vector();
            if !more {
                break;
            }
        }
        let copy = copy.unwrap();
        assert_eq!(copy.heads(), full.heads());
        assert_eq!(copy.state(), full.state());
        assert!(full.ops().len() > 250);
        assert_eq!(pages, want_pages(full.ops().len()));
        let JoinAnswer::Ops { ops, more } = fetch_page(&full, &have) else {
            panic!("not ops");
        };
        assert!(ops.is_empty() && !more);
    }

    #[test]
    fn bootstrap_addresses_need_a_peer_id() {
        let peer = PeerId::random();
        let good = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}");
        let got = bootstrap_peers(&[
            good.clone(),
            "/ip4/127.0.0.1/tcp/4002".into(),
            "junk".into(),
        ]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, peer);
        assert_eq!(got[0].1.to_string(), good);
    }

    #[test]
    fn join_messages_round_trip_and_refuse_garbage() {
        let m = JoinMsg::Submit {
            team: TeamId([1; 32]),
            op: vec![1, 2, 3],
        };
        assert_eq!(
            wire::decode::<JoinMsg>(&wire::encode(&m).unwrap()).unwrap(),
            m
        );
        assert!(wire::decode::<JoinMsg>(&[wire::WIRE_VERSION, 0xff, 0xff]).is_err());
    }
}
