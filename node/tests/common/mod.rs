//! Helpers shared by the node's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shoal_protocol::{Action, Op, OpBody, SecretKey};

/// The test environment written by `scripts/test.sh`.
pub struct TestEnv {
    pub registry: String,
    pub auth_registry: String,
    pub user: String,
    pub password: String,
}

pub fn test_env() -> Option<TestEnv> {
    let dir =
        std::env::var("SHOAL_TEST_STATE_DIR").unwrap_or_else(|_| "/tmp/shoal-test-env".into());
    let path = format!("{dir}/env");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
                panic!("CI is set but {path} cannot be read ({e}): run scripts/test.sh first");
            }
            eprintln!(
                "skipping: {path} not found; run `SHOAL_TEST_ENV_ONLY=1 bash scripts/test.sh` to set up Docker and the registries"
            );
            return None;
        }
    };
    let vars: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches(['\'', '"']).replace('\\', "")))
        .collect();
    let get = |k: &str| {
        std::env::var(k)
            .ok()
            .or_else(|| vars.get(k).cloned())
            .unwrap_or_else(|| panic!("{k} missing from {path}"))
    };
    Some(TestEnv {
        registry: get("SHOAL_TEST_REGISTRY"),
        auth_registry: get("SHOAL_TEST_AUTH_REGISTRY"),
        user: get("SHOAL_TEST_REGISTRY_USER"),
        password: get("SHOAL_TEST_REGISTRY_PASSWORD"),
    })
}

#[allow(unused_macros)]
macro_rules! env_or_skip {
    () => {
        match test_env() {
            Some(env) => env,
            None => return,
        }
    };
}

// ------------------------------------------------- control API over a socket

pub async fn call(
    sock: &Path,
    method: Method,
    route: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let bytes = body
        .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()))
        .unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(route)
        .header("host", "shoal")
        .header("connection", "close")
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    drop(sender);
    let _ = conn.await;
    (status, serde_json::from_slice(&body).unwrap())
}

pub async fn prepare(
    sock: &Path,
    team: &str,
    author: &SecretKey,
    action: &Action,
) -> (StatusCode, Value) {
    call(
        sock,
        Method::POST,
        &format!("/v1/teams/{team}/prepare"),
        Some(json!({ "author": author.public().to_hex(), "action": action })),
    )
    .await
}

pub fn sign(answer: &Value, key: &SecretKey) -> Op {
    let bytes = hex::decode(answer["body"].as_str().unwrap()).unwrap();
    let body: OpBody = postcard::from_bytes(&bytes).unwrap();
    body.sign(key).unwrap()
}

pub async fn submit(sock: &Path, team: &str, op: &Op) -> (StatusCode, Value) {
    call(
        sock,
        Method::POST,
        &format!("/v1/teams/{team}/ops"),
        Some(json!({ "op": hex::encode(op.encode()) })),
    )
    .await
}

pub async fn new_ids(sock: &Path, author: &SecretKey) -> Vec<String> {
    let (s, v) = call(
        sock,
        Method::POST,
        "/v1/teams/team/ids",
        Some(json!({ "author": author.public().to_hex(), "count": 2 })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v["ids"].clone()).unwrap()
}
