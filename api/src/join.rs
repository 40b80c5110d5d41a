//! Joining a team with a ticket: `POST /v1/join` and `POST /v1/join/{team}`.

use serde::{Deserialize, Serialize};
use shoal_protocol::action::NewMember;

/// `POST /v1/join` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The ticket text (`shoal1...`).
    pub ticket: String,
    /// The joining member's profile (member tickets); left out for a node ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<NewMember>,
}

/// `POST /v1/join` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinStep {
    /// The team id.
    pub team: String,
    pub name: String,
    /// The unsigned `member.join` op body (hex) for the member to sign and
    /// send to `POST /v1/join/{team}`; `null` for a node ticket (joined).
    pub body: Option<String>,
}

/// `POST /v1/join/{team}` answer (its request is an [`crate::ops::OpRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub team: String,
    pub name: String,
}
