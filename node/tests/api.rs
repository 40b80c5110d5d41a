#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The control API served on a temp socket over a real sync engine: reads,
//! and the prepare → sign → submit write path.

use std::sync::Arc;
use std::time::Duration;

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
        heartbeat_interval: shoal_node::sync::HEARTBEAT_INTERVAL,
        live_refresh: shoal_node::live::LIVE_REFRESH,
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

    // The team's long poll: unchanged, it answers with the count it was
    // given once the wait is over; a waiter started before an op lands is
    // answered with the new count.
    let seen = ops.len() + 1;
    let (s, v) = call(
        &sock,
        Method::GET,
        &format!("/v1/teams/team?unless_ops={seen}&wait_ms=50"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ops"], seen);
    let waiter = tokio::spawn({
        let sock = sock.clone();
        async move {
            call(
                &sock,
                Method::GET,
                &format!("/v1/teams/team?unless_ops={seen}&wait_ms=10000"),
                None,
            )
            .await
        }
    });
    // Lets the waiter reach the daemon before the op does (without it the
    // check below still holds, it just proves less).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the long poll answered with no change"
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
    let (s, woke) = waiter.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{woke}");
    assert_eq!(woke["ops"], ops.len() + 2, "the long poll missed the op");

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

/// Sends a raw HTTP/1.1 request and reads the status and the JSON body. The
/// body is written from another task, so a server that answers before
/// reading it all (413) does not block the test.
async fn raw_call(
    sock: &std::path::Path,
    method: &str,
    route: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "{method} {route} HTTP/1.1\r\nhost: shoal\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut out = Vec::new();
    let _ = rd.read_to_end(&mut out).await;
    writer.abort();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let (_, json) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body in {text:?}"));
    (
        status,
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json:?}")),
    )
}

/// Creates a team named `name` through the API (genesis, signed, created).
async fn create_team(sock: &std::path::Path, owner: &SecretKey, name: &str) -> String {
    let (s, v) = call(
        sock,
        Method::POST,
        "/v1/teams/genesis",
        Some(json!({ "name": name, "owner": testkit::new_member(owner, "owner") })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let op = sign(&v, owner);
    let (s, v) = call(
        sock,
        Method::POST,
        "/v1/teams",
        Some(json!({ "op": hex::encode(op.encode()) })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let created: shoal_api::teams::TeamCreated = serde_json::from_value(v).unwrap();
    assert_eq!(created.name, name);
    created.id
}

/// `-` names the daemon's only team (and says why not when there is none or
/// several); the answers read back as the shoal-api types; a wrong method and
/// an oversized body get the API's error body.
#[tokio::test]
async fn only_team_typed_answers_and_error_bodies() {
    use shoal_api::{
        audit, deployments, keys, members, node, nodes, products, registries, sync, teams,
    };

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let config = ServiceConfig {
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        mdns: false,
        socket: sock.clone(),
        name: "laptop".into(),
        runtime: Runtime::None,
        sync: SyncConfig::default(),
        metrics: None,
        pause_deployments: false,
        kube: Default::default(),
        heartbeat_interval: shoal_node::sync::HEARTBEAT_INTERVAL,
        live_refresh: shoal_node::live::LIVE_REFRESH,
    };
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<String>(64);
    let say: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |line| {
        let _ = ready_tx.try_send(line);
    });
    let daemon = tokio::spawn(service::run(
        Node::open(dir.path()).unwrap(),
        config,
        say,
        stop.clone().cancelled_owned(),
    ));
    while let Some(line) = ready_rx.recv().await {
        if line.starts_with("ready") {
            break;
        }
    }

    // No team yet: the message says how to get one.
    let (s, v) = call(&sock, Method::GET, "/v1/teams/-", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        v["error"],
        "this daemon holds no team: create one with `shoal team create NAME` or join one with `shoal team join TICKET`"
    );

    // One team: `-` is that team, for every route under it.
    let owner = testkit::key(1);
    let a = create_team(&sock, &owner, "alpha").await;
    let (s, by_dash) = call(&sock, Method::GET, "/v1/teams/-", None).await;
    assert_eq!(s, StatusCode::OK, "{by_dash}");
    let (_, by_id) = call(&sock, Method::GET, &format!("/v1/teams/{a}"), None).await;
    assert_eq!(by_dash, by_id);
    let info: teams::TeamInfo = serde_json::from_value(by_dash).unwrap();
    assert_eq!(
        (info.id.as_str(), info.name.as_str()),
        (a.as_str(), "alpha")
    );

    // Answers read back as the shoal-api types.
    let get = |route: &'static str| {
        let sock = sock.clone();
        async move {
            let (s, v) = call(&sock, Method::GET, route, None).await;
            assert_eq!(s, StatusCode::OK, "{route}: {v}");
            v
        }
    };
    let n: node::NodeInfo = serde_json::from_value(get("/v1/node").await).unwrap();
    assert_eq!((n.name.as_str(), n.teams), ("laptop", 1));
    let _: node::StoreInfo = serde_json::from_value(get("/v1/node/store").await).unwrap();
    let list: teams::TeamList = serde_json::from_value(get("/v1/teams").await).unwrap();
    assert_eq!(list[0].name, "alpha");
    let m: members::MemberList = serde_json::from_value(get("/v1/teams/-/members").await).unwrap();
    assert_eq!(m[0].role, members::Role::Owner);
    let _: nodes::NodeList = serde_json::from_value(get("/v1/teams/-/nodes").await).unwrap();
    let st: nodes::StatusList = serde_json::from_value(get("/v1/teams/-/status").await).unwrap();
    assert!(st[0].this_node);
    let _: sync::TeamSync = serde_json::from_value(get("/v1/teams/-/sync").await).unwrap();
    let _: teams::Peers = serde_json::from_value(get("/v1/teams/-/peers").await).unwrap();
    let _: teams::Bootstrap = serde_json::from_value(get("/v1/teams/-/bootstrap").await).unwrap();
    let r: registries::RegistryList =
        serde_json::from_value(get("/v1/teams/-/registries").await).unwrap();
    assert!(r[0].builtin);
    let _: products::ProductList =
        serde_json::from_value(get("/v1/teams/-/products").await).unwrap();
    let _: deployments::DeploymentList =
        serde_json::from_value(get("/v1/teams/-/deployments").await).unwrap();
    let _: keys::TeamKeys = serde_json::from_value(get("/v1/teams/-/keys").await).unwrap();
    let log: audit::AuditList = serde_json::from_value(get("/v1/teams/-/audit").await).unwrap();
    assert!(!log.is_empty());
    let verify: audit::AuditVerify =
        serde_json::from_value(get("/v1/teams/-/audit/verify").await).unwrap();
    assert!(verify.ok, "{verify:?}");

    // A wrong method on a route, and a body over the limit: `{ "error" }`.
    let (s, v) = call(&sock, Method::DELETE, "/v1/teams", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"].as_str().unwrap().contains("docs/api.md"), "{v}");
    let (s, v) = raw_call(
        &sock,
        "POST",
        "/v1/teams/-/ops",
        vec![b' '; 10 * 1024 * 1024],
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("MiB"), "{v}");

    // Several teams: `-` is refused with their names; names still resolve,
    // the second team's too (the name cache learns new teams).
    let b = create_team(&sock, &testkit::key(2), "beta").await;
    let (s, v) = call(&sock, Method::GET, "/v1/teams/-", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let mut names = ["alpha", "beta"];
    if b < a {
        names.reverse();
    }
    assert_eq!(
        v["error"],
        format!(
            "this daemon holds several teams ({}): pass --team NAME",
            names.join(", ")
        )
    );
    let (s, v) = call(&sock, Method::GET, "/v1/teams/beta", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], b.as_str());

    // A renamed team is found by its new name at once, no longer by the old.
    let rename = Action::TeamUpdate {
        name: "gamma".into(),
        description: String::new(),
    };
    let (s, v) = prepare(&sock, "alpha", &owner, &rename).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = submit(&sock, "alpha", &sign(&v, &owner)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(&sock, Method::GET, "/v1/teams/gamma", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["name"].as_str()),
        (Some(a.as_str()), Some("gamma"))
    );
    let (s, _) = call(&sock, Method::GET, "/v1/teams/alpha", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    stop.cancel();
    daemon.await.unwrap().unwrap();
}

/// Reads from `stream` until the server closes it, within `limit`; returns
/// what it sent.
async fn read_to_close(stream: &mut tokio::net::UnixStream, limit: Duration) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut out))
        .await
        .expect("the server kept a stalled connection open")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// A client that sends half a request and stalls is cut off: half the
/// headers within the header read time, a half-sent body within the body
/// read time; other clients are answered meanwhile.
#[tokio::test]
async fn half_sent_requests_are_cut_off() {
    use tokio::io::AsyncWriteExt as _;

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let config = ServiceConfig {
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        mdns: false,
        socket: sock.clone(),
        name: "laptop".into(),
        runtime: Runtime::None,
        sync: SyncConfig::default(),
        metrics: None,
        pause_deployments: false,
        kube: Default::default(),
        heartbeat_interval: shoal_node::sync::HEARTBEAT_INTERVAL,
        live_refresh: shoal_node::live::LIVE_REFRESH,
    };
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<String>(64);
    let say: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |line| {
        let _ = ready_tx.try_send(line);
    });
    let daemon = tokio::spawn(service::run(
        Node::open(dir.path()).unwrap(),
        config,
        say,
        stop.clone().cancelled_owned(),
    ));
    while let Some(line) = ready_rx.recv().await {
        if line.starts_with("ready") {
            break;
        }
    }

    let started = std::time::Instant::now();
    let mut headers = tokio::net::UnixStream::connect(&sock).await.unwrap();
    headers
        .write_all(b"GET /v1/teams HTTP/1.1\r\nHost: shoal\r\n")
        .await
        .unwrap();
    let mut body = tokio::net::UnixStream::connect(&sock).await.unwrap();
    body.write_all(
        b"POST /v1/teams/-/ops HTTP/1.1\r\nHost: shoal\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"op\":",
    )
    .await
    .unwrap();

    // Others are still answered while both stall.
    let (s, _) = call(&sock, Method::GET, "/v1/teams", None).await;
    assert_eq!(s, StatusCode::OK);

    let margin = Duration::from_secs(10);
    read_to_close(&mut headers, api::HEADER_READ_TIMEOUT + margin).await;
    assert!(started.elapsed() >= api::HEADER_READ_TIMEOUT - Duration::from_millis(500));
    let answer = read_to_close(&mut body, api::BODY_READ_TIMEOUT + margin).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    assert!(started.elapsed() >= api::BODY_READ_TIMEOUT - Duration::from_millis(500));

    stop.cancel();
    daemon.await.unwrap().unwrap();
}
