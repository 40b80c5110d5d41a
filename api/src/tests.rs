//! The wire shapes the types give, against the JSON the API documents.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use crate::audit::{AuditVerify, Problem, ProblemKind};
use crate::deployments::{Deployment, DeploymentDetail, DeploymentStatus};
use crate::ops::{OpReason, SubmitReport};
use crate::products::{Image, ProductDetail, ProductSummary, VersionKind, VersionSummary};
use crate::{ErrorBody, join, nodes, teams};

fn round_trip<T>(v: &T) -> Value
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let j = serde_json::to_value(v).unwrap();
    let back: T = serde_json::from_value(j.clone()).unwrap();
    assert_eq!(&back, v);
    j
}

#[test]
fn error_body() {
    assert_eq!(round_trip(&ErrorBody::new("no")), json!({ "error": "no" }));
}

#[test]
fn submit_report_leaves_error_out_unless_set() {
    let mut r = SubmitReport {
        error: None,
        applied: vec!["aa".into()],
        rejected: vec![],
        waiting: vec![OpReason {
            op: "bb".into(),
            reason: "later".into(),
        }],
        duplicate: false,
    };
    assert_eq!(
        round_trip(&r),
        json!({
            "applied": ["aa"], "rejected": [],
            "waiting": [{ "op": "bb", "reason": "later" }], "duplicate": false,
        })
    );
    r.error = Some("refused".into());
    assert_eq!(round_trip(&r)["error"], "refused");
}

#[test]
fn join_step_sends_a_null_body() {
    let s = join::JoinStep {
        team: "t".into(),
        name: "crew".into(),
        body: None,
    };
    assert_eq!(
        round_trip(&s),
        json!({ "team": "t", "name": "crew", "body": null })
    );
    // A node ticket's request may leave `member` out.
    let r: join::JoinRequest = serde_json::from_value(json!({ "ticket": "shoal1x" })).unwrap();
    assert_eq!(r.member, None);
    assert_eq!(round_trip(&r), json!({ "ticket": "shoal1x" }));
}

#[test]
fn ids_request_counts_one_by_default() {
    let r: teams::IdsRequest = serde_json::from_value(json!({ "author": "ab" })).unwrap();
    assert_eq!(r.count, 1);
}

#[test]
fn liveness_is_kebab_case() {
    let s = nodes::NodeStatus {
        key: "k".into(),
        name: "a".into(),
        status: nodes::Liveness::Unreachable,
        this_node: false,
        seen_ms_ago: None,
        agent_version: "0.1.0".into(),
        addresses: vec![],
        load: None,
        running: None,
    };
    let j = round_trip(&s);
    assert_eq!(j["status"], "unreachable");
    assert_eq!(j["seen_ms_ago"], Value::Null);
    assert!(j.get("load").is_none());
}

fn deployment() -> Deployment {
    Deployment {
        id: "d1".into(),
        product: Some("shop".into()),
        product_id: "p1".into(),
        version: None,
        version_id: "v1".into(),
        version_kind: Some(VersionKind::Incremental),
        node: "web-1".into(),
        node_key: "k".into(),
        prefix: "prod".into(),
        status: DeploymentStatus::InProgress,
        tries: 1,
        finished_try: 0,
        reason: None,
        note: String::new(),
        protected: false,
        conflict: false,
        mutable: true,
        deployable: true,
        created_ms: 5,
        created_by: "ann".into(),
        secrets: vec!["DB".into()],
    }
}

#[test]
fn deployment_detail_is_flat() {
    let j = round_trip(&deployment());
    assert_eq!(j["status"], "in-progress");
    assert_eq!(j["version"], Value::Null);
    assert_eq!(j["version_kind"], "incremental");
    assert!(j.get("fingerprint").is_none());
    let mut d = DeploymentDetail {
        deployment: deployment(),
        env: Default::default(),
        instances: Default::default(),
        containers: Default::default(),
        events: vec![],
        frozen: None,
        images: vec![],
        fingerprint: None,
        live: None,
    };
    let j = round_trip(&d);
    assert_eq!(j["id"], "d1");
    assert_eq!(j["frozen"], Value::Null);
    assert!(j.get("fingerprint").is_none());
    d.fingerprint = Some("00ff".into());
    assert_eq!(round_trip(&d)["fingerprint"], "00ff");
}

#[test]
fn products_and_versions_count_or_list() {
    let v = VersionSummary {
        id: "v1".into(),
        product: Some("shop".into()),
        product_id: "p1".into(),
        name: "1.0.0".into(),
        kind: VersionKind::Incremental,
        changelog: String::new(),
        auto_copy: false,
        default: true,
        frozen: None,
        parent: None,
        child: None,
        images: 2,
        deployments: 0,
        copies: 0,
        created_ms: 1,
    };
    assert_eq!(round_trip(&v)["images"], 2);
    let p = ProductSummary {
        id: "p1".into(),
        name: "shop".into(),
        kind: shoal_protocol::model::ProductKind::Complex,
        description: String::new(),
        default_version: Some("1.0.0".into()),
        default_version_id: Some("v1".into()),
        versions: 1,
        deployments: 0,
        created_ms: 1,
    };
    let j = round_trip(&p);
    assert_eq!(j["kind"], "complex");
    assert_eq!(j["versions"], 1);
    let detail = ProductDetail {
        versions: vec![v],
        ..serde_json::from_value(json!({
            "id": "p1", "name": "shop", "kind": "complex", "description": "",
            "default_version": null, "default_version_id": null,
            "versions": [], "deployments": 0, "created_ms": 1,
        }))
        .unwrap()
    };
    assert_eq!(round_trip(&detail)["versions"][0]["name"], "1.0.0");
}

#[test]
fn image_ref_is_named_ref() {
    let i = Image {
        name: "web".into(),
        registry: "hub".into(),
        registry_id: "hub".into(),
        image: "nginx".into(),
        tag: "1.27".into(),
        reference: "nginx:1.27".into(),
        config: Default::default(),
    };
    let j = round_trip(&i);
    assert_eq!(j["ref"], "nginx:1.27");
    assert!(j["config"].is_object());
}

#[test]
fn audit_counts_by_kind_name() {
    let v = AuditVerify {
        ok: false,
        ops: 3,
        logs: 1,
        stored_ops: 3,
        problems: vec![Problem {
            kind: ProblemKind::BadSignature,
            message: "bad".into(),
        }],
        counts: [(ProblemKind::BadSignature, 1)].into_iter().collect(),
    };
    let j = round_trip(&v);
    assert_eq!(j["problems"][0]["kind"], "bad-signature");
    assert_eq!(j["counts"], json!({ "bad-signature": 1 }));
}
