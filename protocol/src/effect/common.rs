//! What the effect families share: the write they produce and the helpers
//! that build one.

use std::collections::BTreeMap;

use crate::context::OpContext;
use crate::model::{Collection, Deployment, DeploymentStatus, Entity};

/// One entity's value after the op (`None`: deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub collection: Collection,
    pub id: String,
    pub value: Option<Entity>,
}

pub(super) fn put(value: Entity, id: &str) -> Write {
    Write {
        collection: value.collection(),
        id: id.to_string(),
        value: Some(value),
    }
}

pub(super) fn del(collection: Collection, id: &str) -> Write {
    Write {
        collection,
        id: id.to_string(),
        value: None,
    }
}

/// A new `preparing` deployment with the settings of `base`: the copies that
/// `version.increase` (auto-copy) and `deployment.copy` make.
pub(super) fn new_deployment(ctx: &OpContext, id: &str, base: &Deployment) -> Deployment {
    Deployment {
        id: id.to_string(),
        status: DeploymentStatus::Preparing,
        tries: 0,
        created: ctx.hlc,
        created_by: ctx.author.to_hex(),
        reason: None,
        finished_try: 0,
        containers: BTreeMap::new(),
        events: Vec::new(),
        frozen: None,
        ..base.clone()
    }
}
