//! shoal's pure core: keys, signed ops, the team document and its typed
//! view, the rules (§2) and op validation (§3), the audit view.
//!
//! Nothing here does I/O: no tokio, no sockets, no disk, no clock, no
//! randomness. Callers pass the time and random seeds in.

pub mod action;
pub mod audit;
pub mod context;
pub mod doc;
pub mod effect;
pub mod heartbeat;
pub mod hlc;
pub mod keys;
pub mod kubernetes;
pub mod model;
pub mod op;
pub mod replica;
pub mod rules;
pub mod table;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod ticket;
pub mod view;

pub use action::Action;
pub use hlc::Hlc;
pub use keys::{LogId, OpHash, PublicKey, SecretKey, Signature, TeamId};
pub use op::{Op, OpBody};
pub use replica::{Rejection, Replica, Report};
pub use rules::{OpContext, RuleError};

/// Protocol version spoken by this build; nodes publish it (§1 `outdated`)
/// in the document and in their heartbeats. 2: live reports
/// ([`heartbeat::SignedLive`]), sent only to peers speaking 2 or later.
/// 3: pushes that say their origin reached every node (the receiver relays
/// none), sent only to peers speaking 3 or later.
pub const PROTOCOL_VERSION: u32 = 3;
