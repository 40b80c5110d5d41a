//! `GET /v1/teams/{team}/members`: every member as the replicated state
//! holds it, removed ones included, in key order.

pub use shoal_protocol::model::{Member, Role};

/// `GET /v1/teams/{team}/members`.
pub type MemberList = Vec<Member>;
