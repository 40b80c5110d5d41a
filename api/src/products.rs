//! Products and their versions:
//! `GET /v1/teams/{team}/products[/{product}[/versions[/{version}]|/rollback]]`.

use serde::{Deserialize, Serialize};

pub use shoal_protocol::model::{ContainerConfig, ProductKind, VersionKind};

/// A product. `V` is what `versions` holds: a count in the list
/// ([`ProductSummary`]), the versions themselves for one product
/// ([`ProductDetail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product<V> {
    pub id: String,
    pub name: String,
    pub kind: ProductKind,
    pub description: String,
    /// The default version's name.
    pub default_version: Option<String>,
    pub default_version_id: Option<String>,
    pub versions: V,
    pub deployments: u64,
    pub created_ms: u64,
}

/// An item of `GET /v1/teams/{team}/products`.
pub type ProductSummary = Product<u64>;
/// `GET /v1/teams/{team}/products/{product}`: its versions oldest first.
pub type ProductDetail = Product<Vec<VersionSummary>>;
/// `GET /v1/teams/{team}/products`: by name.
pub type ProductList = Vec<ProductSummary>;

/// A version. `I` is what `images` holds: a count in lists
/// ([`VersionSummary`]), the images in start order for one version
/// ([`VersionDetail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version<I> {
    pub id: String,
    /// The product's name.
    pub product: Option<String>,
    pub product_id: String,
    pub name: String,
    pub kind: VersionKind,
    pub changelog: String,
    pub auto_copy: bool,
    /// This is the product's default version.
    pub default: bool,
    /// Why the version is frozen; null when mutable.
    pub frozen: Option<String>,
    /// The parent version's name.
    pub parent: Option<String>,
    /// The child version's name.
    pub child: Option<String>,
    pub images: I,
    pub deployments: u64,
    /// How many deployments an increase copies (auto-copy on).
    pub copies: u64,
    pub created_ms: u64,
}

/// An item of `GET .../products/{product}/versions`.
pub type VersionSummary = Version<u64>;
/// `GET .../products/{product}/versions/{version}`.
pub type VersionDetail = Version<Vec<Image>>;
/// `GET .../products/{product}/versions`: oldest first.
pub type VersionList = Vec<VersionSummary>;

/// An image of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The container's name.
    pub name: String,
    /// The registry's name.
    pub registry: String,
    pub registry_id: String,
    pub image: String,
    pub tag: String,
    /// `image:tag` as the engine pulls it.
    #[serde(rename = "ref")]
    pub reference: String,
    pub config: ContainerConfig,
}

/// `GET .../products/{product}/rollback` query: the deployment slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackQuery {
    /// Node name or key.
    pub node: String,
    pub prefix: String,
}
