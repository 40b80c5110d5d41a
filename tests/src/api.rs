//! Raw control-API requests for tests that go around the CLI: ops prepared
//! by the daemon and signed (or tampered with) by the test, as a hostile
//! member with the profile key and curl would.

#![allow(clippy::expect_used)] // A test helper: a failed request fails the test.

use std::path::Path;

use serde_json::{Value, json};
use shoal_protocol::{Action, Op, OpBody, SecretKey};

use crate::Peer;

/// One request to `p`'s control API, with curl: (HTTP status, JSON body or
/// `null`).
pub fn api(p: &Peer, method: &str, route: &str, body: Option<&Value>) -> (u16, Value) {
    api_at(&p.user.socket(), method, route, body)
}

/// [`api`] on a socket path (for a request from another thread).
pub fn api_at(sock: &Path, method: &str, route: &str, body: Option<&Value>) -> (u16, Value) {
    use std::io::Write as _;
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock)
        .args(["-X", method, "-H", "content-type: application/json"]);
    // The body goes through stdin: a big op does not fit in argv.
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(format!("http://shoal{route}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("curl runs");
    if let Some(b) = body {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(b.to_string().as_bytes())
            .expect("curl takes the body");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("curl ends");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl prints the status");
    (
        status.trim().parse().expect("an HTTP status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The signing key of `p`'s profile.
pub fn profile_key(p: &Peer) -> SecretKey {
    let path = p.user.config_dir().join("profile.json");
    let profile: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the profile is readable"))
            .expect("the profile is JSON");
    let seed: [u8; 32] = hex::decode(profile["signing_seed"].as_str().expect("a signing seed"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    SecretKey::from_seed(seed)
}

/// `count` fresh ids for `key`'s next op on `p`'s daemon (team `crew`).
pub fn fresh_ids(p: &Peer, key: &SecretKey, count: u32) -> Vec<String> {
    let (status, v) = api(
        p,
        "POST",
        "/v1/teams/crew/ids",
        Some(&json!({ "author": key.public().to_hex(), "count": count })),
    );
    assert_eq!(status, 200, "ids: {v}");
    v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_str().expect("an id").to_string())
        .collect()
}

/// The unsigned body `p`'s daemon prepares for `action` by `key` (team
/// `crew`).
pub fn prepared(p: &Peer, key: &SecretKey, action: &Action) -> OpBody {
    let (status, v) = api(
        p,
        "POST",
        "/v1/teams/crew/prepare",
        Some(&json!({ "author": key.public().to_hex(), "action": action })),
    );
    assert_eq!(status, 200, "prepare: {v}");
    let bytes = hex::decode(v["body"].as_str().expect("a body")).expect("hex");
    postcard::from_bytes(&bytes).expect("an op body")
}

/// [`prepared`], signed by `key`.
pub fn signed(p: &Peer, key: &SecretKey, action: &Action) -> Op {
    prepared(p, key, action).sign(key).expect("signs")
}

/// Submits `op` to `p`'s daemon (team `crew`).
pub fn submit(p: &Peer, op: &Op) -> (u16, Value) {
    api(
        p,
        "POST",
        "/v1/teams/crew/ops",
        Some(&json!({ "op": hex::encode(op.encode()) })),
    )
}
