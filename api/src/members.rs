//! `GET /v1/teams/{team}/members`: every member as the replicated state
//! holds it, removed ones included, in key order; `GET
//! /v1/teams/{team}/invites`: the team's invites and who redeemed them.

pub use shoal_protocol::model::{Member, Role};

/// `GET /v1/teams/{team}/members`.
pub type MemberList = Vec<Member>;

/// One invite of `GET /v1/teams/{team}/invites`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InviteEntry {
    pub id: String,
    /// `member` or `node`.
    pub kind: String,
    /// The role a member ticket gives, or the node name a node ticket names.
    pub grants: String,
    /// Key (hex) and name of the member who made it.
    pub creator: String,
    pub creator_name: Option<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub revoked: bool,
    /// Keys (hex) of the members and nodes that joined with it.
    pub used_by: Vec<String>,
}

/// `GET /v1/teams/{team}/invites`, in id order.
pub type InviteList = Vec<InviteEntry>;
