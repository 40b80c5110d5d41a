//! Registries: `GET /v1/teams/{team}/registries[/{registry}[/tags]]`.

use serde::{Deserialize, Serialize};

pub use shoal_protocol::model::RegistryKind;

/// A registry, without its password (only whether it has one, and which
/// nodes can open it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub id: String,
    pub name: String,
    pub kind: RegistryKind,
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub user: Option<String>,
    /// The registry has a password.
    pub password: bool,
    /// The team key epoch the password is sealed to (null otherwise).
    pub key_epoch: Option<u32>,
    /// The nodes the password is sealed for (null without a password).
    pub sealed_for: Option<Vec<String>>,
    /// How many images use the registry.
    pub images: u64,
    /// The built-in Docker Hub registry.
    pub builtin: bool,
    pub created_ms: u64,
}

/// `GET /v1/teams/{team}/registries`: oldest first.
pub type RegistryList = Vec<Registry>;

/// `GET .../registries/{registry}/tags` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsQuery {
    /// The image, relative to the registry's namespace.
    pub image: String,
}

/// `GET .../registries/{registry}/tags` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    /// The registry's name.
    pub registry: String,
    pub image: String,
    pub tags: Vec<String>,
}
