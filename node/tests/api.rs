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

/// A plain HTTP/1.0 GET over TCP (the metrics endpoint is not on the socket).
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

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
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        pause_deployments: false,
        kube: Default::default(),
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
    let mut metrics_addr = String::new();
    while let Some(line) = ready_rx.recv().await {
        if let Some(url) = line.strip_prefix("metrics on http://") {
            metrics_addr = url.trim_end_matches("/metrics").to_string();
        }
        if line.starts_with("ready") {
            break;
        }
    }
    // The metrics endpoint answers with the documented names.
    let text = http_get(&metrics_addr, "/metrics").await;
    for name in [
        "shoal_info{version=",
        "shoal_teams 1",
        "shoal_peers_connected{team=",
        "shoal_ops_applied{team=",
        "shoal_ops_quarantined{team=",
        "shoal_ops_waiting{team=",
        "shoal_nodes{team=",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let applied: usize = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("shoal_ops_applied{{team=\"{team}\"}} ")))
        .unwrap()
        .parse()
        .unwrap();
    // The ops installed and this node's address update, made before `ready`.
    assert_eq!(applied, ops.len() + 1, "{text}");
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
    assert_eq!(v[0]["ops"], ops.len() + 1);

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
    assert_eq!(v["ops"], ops.len() + 2);

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
    assert_eq!(node.teams()[&team].ops().len(), ops.len() + 2);
}
