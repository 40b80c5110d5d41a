#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The control API served on a temp socket over a real sync engine: reads,
//! and the prepare → sign → submit write path.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::json;
use shoal_node::api;
use shoal_node::daemon::{Node, now_ms};
use shoal_node::service::{self, ServiceConfig, ServiceError};
use shoal_node::store::TeamRecord;
use shoal_node::sync::SyncConfig;
use shoal_protocol::model::{ProductKind, Role, Runtime};
use shoal_protocol::{Action, Replica, SecretKey, testkit};
use tokio_util::sync::CancellationToken;

#[macro_use]
mod common;
use common::{call, new_ids, prepare, sign, submit};

#[tokio::test]
async fn reads_and_the_prepare_sign_submit_path() {
    let dir = tempfile::tempdir().unwrap();
    let node_key = SecretKey::from_seed(Node::open(dir.path()).unwrap().key_seed());
    let owner = testkit::key(1);
    let bob = testkit::key(2);
    let now = now_ms();
    let genesis = testkit::genesis(&owner, &node_key, now);
    let mut r = Replica::from_genesis(genesis.clone()).unwrap();
    let mut ops = vec![genesis];
    ops.extend(
        testkit::invite_and_join(
            &mut r,
            &owner,
            node_key.public(),
            &bob,
            "bob",
            Role::User,
            None,
            now + 10,
        )
        .unwrap(),
    );
    let team = r.team();
    let mut node = Node::open(dir.path()).unwrap();
    node.install_team(TeamRecord::new("team", [7; 32], now), ops.clone())
        .unwrap();
    let node_pub = node.key();

    let sock = dir.path().join("run").join("api.sock");
    let config = ServiceConfig {
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        mdns: false,
        socket: sock.clone(),
        name: "laptop".into(),
        runtime: Runtime::None,
        sync: SyncConfig::default(),
    };
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<String>(64);
    let say: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |line| {
        let _ = ready_tx.try_send(line);
    });
    let daemon = tokio::spawn(service::run(
        node,
        config.clone(),
        say,
        stop.clone().cancelled_owned(),
    ));
    while let Some(line) = ready_rx.recv().await {
        if line.starts_with("ready") {
            break;
        }
    }
    // A second daemon on the same socket is refused while the first answers.
    let other = tempfile::tempdir().unwrap();
    let again = service::run(
        Node::open(other.path()).unwrap(),
        config,
        Arc::new(|_| {}),
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(again, Err(ServiceError::Api(api::ApiError::InUse(_)))),
        "{again:?}"
    );

    let (s, v) = call(&sock, Method::GET, "/v1/node", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["key"], node_pub.to_hex().as_str());
    assert_eq!(v["name"], "laptop");
    assert_eq!(v["runtime"], "none");
    assert!(v["agent_version"].as_str().unwrap().starts_with("shoal/"));

    let (s, v) = call(&sock, Method::GET, "/v1/teams", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["id"], team.to_hex().as_str());
    assert_eq!(v[0]["ops"], ops.len());

    // By name and by id.
    let (s, by_name) = call(&sock, Method::GET, "/v1/teams/team", None).await;
    assert_eq!(s, StatusCode::OK, "{by_name}");
    let (_, by_id) = call(&sock, Method::GET, &format!("/v1/teams/{team}"), None).await;
    assert_eq!(by_name, by_id);
    assert_eq!(by_id["members"], 2);
    assert_eq!(by_id["nodes"], 1);
    assert_eq!(by_id["state_hash"].as_str().unwrap().len(), 64);

    let (s, v) = call(&sock, Method::GET, "/v1/teams/team/members", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (s, v) = call(&sock, Method::GET, "/v1/teams/team/nodes", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["key"], node_pub.to_hex().as_str());

    let (s, v) = call(&sock, Method::GET, "/v1/teams/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["error"].as_str().unwrap().contains("shoal team list"),
        "{v}"
    );

    // Prepare, sign here, submit: applied.
    let ids = new_ids(&sock, &owner).await;
    let create = Action::ProductCreate {
        id: ids[0].clone(),
        name: "web".into(),
        kind: ProductKind::Simple,
        description: String::new(),
        version: Some(ids[1].clone()),
    };
    let (s, v) = prepare(&sock, "team", &owner, &create).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let op = sign(&v, &owner);
    let (s, v) = submit(&sock, "team", &op).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], json!([op.hash().to_hex()]));
    let (_, v) = call(&sock, Method::GET, "/v1/teams/team", None).await;
    assert_eq!(v["ops"], ops.len() + 1);

    // The rules refuse a user's admin-only action at prepare: 409.
    let (s, v) = prepare(
        &sock,
        "team",
        &bob,
        &Action::RegistryRemove { id: "nope".into() },
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(!v["error"].as_str().unwrap().is_empty());

    // A tampered op is refused at submit: 422 with the reason.
    let ids = new_ids(&sock, &owner).await;
    let create = Action::ProductCreate {
        id: ids[0].clone(),
        name: "db".into(),
        kind: ProductKind::Simple,
        description: String::new(),
        version: Some(ids[1].clone()),
    };
    let (s, v) = prepare(&sock, "team", &owner, &create).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut op = sign(&v, &owner);
    op.body.hlc.ms += 1;
    let (s, v) = submit(&sock, "team", &op).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["rejected"][0]["op"], op.hash().to_hex().as_str());
    assert!(v["error"].as_str().unwrap().contains("signature"), "{v}");

    // Malformed requests get JSON errors.
    let (s, v) = call(
        &sock,
        Method::POST,
        "/v1/teams/team/ops",
        Some(json!({"op": "zz"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].is_string());
    let (s, v) = call(&sock, Method::GET, "/v2/whatever", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());

    // Stop: the socket goes away.
    stop.cancel();
    daemon.await.unwrap().unwrap();
    assert!(!sock.exists());
    // The daemon stopped cleanly: the node reopens with every op.
    let node = Node::open(dir.path()).unwrap();
    assert_eq!(node.teams()[&team].ops().len(), ops.len() + 1);
}
