//! Invite tickets: what a newcomer needs to find a team's mesh and redeem an
//! invite, as one copy-pasteable string.
//!
//! A ticket carries the team id and name, the team's private-network key,
//! bootstrap addresses, the invite id, the secret half of the invite's
//! one-time key, what the invite admits and when it expires. It is a bearer
//! credential: whoever holds it can join once, before it expires.
//!
//! Text form: `shoal1` + base64url (no padding) of
//! `[TICKET_VERSION] ++ postcard(TicketBody) ++ sha256(..)[..4]`. The
//! checksum catches a ticket damaged by copying; a deliberately altered one
//! fails the invite proof or the private-network handshake instead.

use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::keys::{PublicKey, SecretKey, Signature, TeamId};
use crate::model::InviteKind;
use crate::rules::join_proof_message;

/// Version byte of the ticket encoding.
pub const TICKET_VERSION: u8 = 1;
/// Text prefix of every ticket (the `1` is the text form's own version).
pub const TICKET_PREFIX: &str = "shoal1";
/// Longest ticket text accepted.
pub const MAX_TICKET_LEN: usize = 8 * 1024;
const CHECKSUM_LEN: usize = 4;

/// The contents of a ticket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub team: TeamId,
    pub team_name: String,
    /// The team's private-network key.
    pub psk: [u8; 32],
    /// Multiaddrs (each ending in `/p2p/<peer id>`) of nodes to join through.
    pub bootstrap: Vec<String>,
    /// The invite this ticket redeems.
    pub invite: String,
    /// Seed of the invite's one-time signing key.
    pub invite_seed: [u8; 32],
    pub kind: InviteKind,
    /// Expiry, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The network key and the invite seed are secrets.
        f.debug_struct("Ticket")
            .field("team", &self.team)
            .field("team_name", &self.team_name)
            .field("bootstrap", &self.bootstrap)
            .field("invite", &self.invite)
            .field("kind", &self.kind)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// Why a ticket cannot be read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error(
        "this is not a shoal ticket (it should start with `{TICKET_PREFIX}`): copy the whole last line that `shoal team invite` or `shoal node add` printed"
    )]
    Prefix,
    #[error("the ticket is too long to be a shoal ticket")]
    TooLong,
    #[error("the ticket is damaged ({0}): copy it again, whole and unchanged")]
    Damaged(&'static str),
    #[error(
        "the ticket was made by a newer shoal (ticket version {0}): upgrade shoal on this machine"
    )]
    Version(u8),
    #[error("the ticket expired: ask for a new one")]
    Expired,
    #[error("the ticket cannot be encoded: {0}")]
    Encode(String),
}

impl Ticket {
    /// The text form.
    pub fn encode(&self) -> Result<String, TicketError> {
        let mut bytes = vec![TICKET_VERSION];
        bytes.extend(postcard::to_stdvec(self).map_err(|e| TicketError::Encode(e.to_string()))?);
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        Ok(format!("{TICKET_PREFIX}{}", BASE64URL_NOPAD.encode(&bytes)))
    }

    /// Reads a ticket's text form (surrounding whitespace ignored).
    pub fn decode(text: &str) -> Result<Ticket, TicketError> {
        let text = text.trim();
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong);
        }
        let body = text
            .strip_prefix(TICKET_PREFIX)
            .ok_or(TicketError::Prefix)?;
        let bytes = BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| TicketError::Damaged("not base64url"))?;
        if bytes.len() < 1 + CHECKSUM_LEN {
            return Err(TicketError::Damaged("too short"));
        }
        let (payload, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(payload)[..CHECKSUM_LEN] != *sum {
            return Err(TicketError::Damaged("checksum mismatch"));
        }
        match payload.first() {
            Some(&TICKET_VERSION) => {}
            Some(&v) => return Err(TicketError::Version(v)),
            None => return Err(TicketError::Damaged("empty")),
        }
        let (ticket, rest) = postcard::take_from_bytes::<Ticket>(&payload[1..])
            .map_err(|_| TicketError::Damaged("unreadable contents"))?;
        if !rest.is_empty() {
            return Err(TicketError::Damaged("trailing bytes"));
        }
        Ok(ticket)
    }

    /// Refuses an expired ticket (`now_ms`: milliseconds since the epoch).
    pub fn check_fresh(&self, now_ms: u64) -> Result<(), TicketError> {
        if now_ms > self.expires_ms {
            return Err(TicketError::Expired);
        }
        Ok(())
    }

    /// The invite's one-time key.
    pub fn invite_key(&self) -> SecretKey {
        SecretKey::from_seed(self.invite_seed)
    }

    /// The proof that lets `newcomer` redeem this ticket's invite.
    pub fn proof_for(&self, newcomer: &PublicKey) -> Signature {
        self.invite_key()
            .sign(&join_proof_message(&self.team, &self.invite, newcomer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, Runtime};

    fn ticket() -> Ticket {
        Ticket {
            team: TeamId([7; 32]),
            team_name: "crew".into(),
            psk: [9; 32],
            bootstrap: vec!["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW".into()],
            invite: "abc".into(),
            invite_seed: [5; 32],
            kind: InviteKind::Member { role: Role::User },
            expires_ms: 1_000,
        }
    }

    #[test]
    fn a_ticket_round_trips_through_its_text() {
        let t = ticket();
        let text = t.encode().unwrap();
        assert!(text.starts_with(TICKET_PREFIX));
        assert_eq!(Ticket::decode(&format!("  {text}\n")).unwrap(), t);
        let node = Ticket {
            kind: InviteKind::Node {
                name: "edge-1".into(),
                runtime: Runtime::Docker,
            },
            ..t
        };
        assert_eq!(Ticket::decode(&node.encode().unwrap()).unwrap(), node);
    }

    #[test]
    fn damaged_tickets_are_refused_with_a_reason() {
        let text = ticket().encode().unwrap();
        assert_eq!(Ticket::decode("hello"), Err(TicketError::Prefix));
        assert_eq!(
            Ticket::decode(&text[..text.len() - 3]),
            Err(TicketError::Damaged("checksum mismatch"))
        );
        // Every single-character change is caught.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in TICKET_PREFIX.len()..text.len() {
            let orig = text.as_bytes()[i] as char;
            let swap = alphabet.chars().find(|c| *c != orig).unwrap();
            let mut t = text.clone();
            t.replace_range(i..=i, &swap.to_string());
            assert!(
                matches!(Ticket::decode(&t), Err(TicketError::Damaged(_))),
                "change at {i} not caught"
            );
        }
        assert_eq!(
            Ticket::decode(&"x".repeat(MAX_TICKET_LEN + 1)),
            Err(TicketError::TooLong)
        );
    }

    #[test]
    fn a_newer_ticket_version_says_to_upgrade() {
        let mut bytes = vec![TICKET_VERSION + 1];
        bytes.extend(postcard::to_stdvec(&ticket()).unwrap());
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        let text = format!("{TICKET_PREFIX}{}", BASE64URL_NOPAD.encode(&bytes));
        assert_eq!(
            Ticket::decode(&text),
            Err(TicketError::Version(TICKET_VERSION + 1))
        );
    }

    #[test]
    fn expiry_and_proof() {
        let t = ticket();
        assert_eq!(t.check_fresh(1_000), Ok(()));
        assert_eq!(t.check_fresh(1_001), Err(TicketError::Expired));
        let who = SecretKey::from_seed([1; 32]).public();
        let msg = join_proof_message(&t.team, &t.invite, &who);
        assert!(t.invite_key().public().verify(&msg, &t.proof_for(&who)));
        let other = SecretKey::from_seed([2; 32]).public();
        assert!(!t.invite_key().public().verify(&msg, &t.proof_for(&other)));
    }
}
