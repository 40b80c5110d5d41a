//! The types of shoal's local control API (HTTP+JSON on a Unix socket): the
//! request and answer body of every route, shared by the daemon that serves
//! them and the CLI that reads them, so a renamed field breaks the build
//! instead of a command. The reference is `docs/api.md`.
//!
//! Modules follow the API's resources. Types reuse the protocol's own serde
//! types (members, nodes, actions, container configs, sealed values) where
//! the API sends them as the replicated state holds them. Answers keep the
//! wire shape exactly: an `Option` is sent as `null` unless its field says
//! it is left out.

pub mod audit;
pub mod containers;
pub mod deployments;
pub mod error;
pub mod join;
pub mod keys;
pub mod members;
pub mod node;
pub mod nodes;
pub mod ops;
pub mod products;
pub mod registries;
pub mod sync;
pub mod teams;

pub use error::ErrorBody;

/// The `{team}` path segment that names the daemon's only team, so a client
/// need not list the teams first (`/v1/teams/-/deployments`). It is an
/// error when the daemon holds no team or several.
pub const ONLY_TEAM: &str = "-";

/// The prefix of every route.
pub const PREFIX: &str = "/v1";

#[cfg(test)]
mod tests;
