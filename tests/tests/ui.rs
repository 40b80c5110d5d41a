//! The web dashboard (`shoal ui`) driven in a real browser: two daemons on
//! 127.0.0.1, `a` (runtime `none`, the member's laptop, where `shoal ui`
//! runs) and `b` (runtime `docker`, this machine's Docker engine). The
//! browser part is `tests/ui/dashboard.mjs` (headless Chromium from
//! Debian's `chromium`, driven by `playwright-core` from `tests/ui/`, both
//! installed by `scripts/test.sh`): log in with the printed URL, make a
//! registry and list its tags, see each node's load, make a product,
//! version and image, deploy and watch the status turn successful without
//! a reload, read the container's log line and see lines written later
//! arrive on the followed log, see the container as expected, then as
//! drift once `docker kill` stopped it, restart the container (the drift
//! clears), edit the product's description and a version's changelog, see
//! an idle page make no requests and a change made from another page
//! arrive through the change feed, increase the version and
//! make it the default, deploy it, roll back, be refused with the rule's
//! message, delete the downgraded deployment, find every action in the
//! audit log, filter it and verify it, make an
//! invite, change a member's role, fit a phone's width, and be refused
//! forged writes. What the page did is then checked from the CLI and the
//! Docker engine.
//! Screenshots of each page go to `target/tmp/ui-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use shoal_tests::{Follower, Peer, WAIT, form_team, wait_for};

fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn chromium() -> PathBuf {
    std::env::var_os("SHOAL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The test environment (`scripts/test.sh`: Docker, the registries, the
/// browser and its driver), or `None` (the test skips, except in CI).
fn test_env() -> Option<BTreeMap<String, String>> {
    let vars = shoal_tests::test_env_vars();
    let mut missing = Vec::new();
    if !vars.contains_key("SHOAL_TEST_REGISTRY") || docker(&["version"]).is_none() {
        missing.push("Docker and the test registries");
    }
    if !chromium().exists() {
        missing.push("chromium");
    }
    let driver = tests_dir().join("ui/node_modules/playwright-core");
    let node = Command::new("node").arg("--version").output();
    if !driver.exists() || !node.is_ok_and(|o| o.status.success()) {
        missing.push("node and tests/ui/node_modules (npm ci in tests/ui)");
    }
    if !missing.is_empty() {
        if std::env::var_os("CI").is_some() {
            panic!("CI runs need {}: run scripts/test.sh", missing.join(", "));
        }
        println!(
            "skipping: no {} (run SHOAL_TEST_ENV_ONLY=1 scripts/test.sh)",
            missing.join(", ")
        );
        return None;
    }
    Some(vars)
}

/// A prefix no other run uses.
fn unique(base: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!(
        "{base}{:x}",
        (t ^ u128::from(std::process::id())) & 0xff_ffff
    )
}

/// Removes the containers and network of a prefix when dropped, also when
/// the test fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=io.shoal.prefix={}", self.0);
        if let Some(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", "-v", id]);
            }
        }
        let _ = docker(&["network", "rm", &format!("shoal-{}", self.0)]);
    }
}

fn json(p: &Peer, args: &[&str]) -> Value {
    let r = p.ok(args);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[test]
fn a_member_drives_the_team_from_the_dashboard_in_a_browser() {
    let Some(env) = test_env() else { return };
    let prefix = unique("ui");
    let _cleanup = Cleanup(prefix.clone());
    let a = Peer::new("a").unwrap();
    let mut b = Peer::new("b").unwrap();
    b.runtime = "docker".into();
    let mut peers = vec![a, b];
    form_team(&mut peers).unwrap();
    let a = &peers[0];
    wait_for(WAIT, || {
        (json(a, &["node", "list", "-o", "json"]).as_array()?.len() == 2).then_some(())
    })
    .expect("a sees b's node");

    let started = Instant::now();
    let mut ui = Follower::spawn(&a.user, &["ui", "--listen", "127.0.0.1:0"], &[]).unwrap();
    ui.until(WAIT, |out, _| out.iter().any(|l| l.starts_with("http://")))
        .unwrap();
    let printed = started.elapsed();
    let url = ui
        .seen
        .iter()
        .find(|l| l.starts_with("http://"))
        .unwrap()
        .clone();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.contains("/login?token="), "{url}");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let run = Command::new("node")
        .arg(tests_dir().join("ui/dashboard.mjs"))
        .args([
            url.as_str(),
            env["SHOAL_TEST_REGISTRY"].as_str(),
            prefix.as_str(),
            "b",
        ])
        .arg(&shots)
        .env("SHOAL_CHROMIUM", chromium())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    println!(
        "figures: `shoal ui` printed its URL {} ms after it started; screenshots in {}",
        printed.as_millis(),
        shots.display()
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "the browser test failed (screenshots in {})",
        shots.display()
    );

    // What the page did, seen from the CLI and the engine.
    let deps = json(a, &["deploy", "list", "-o", "json"]);
    let by_version: BTreeMap<String, String> = deps
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_version.get("1.0.0").map(String::as_str),
        Some("successful")
    );
    assert_eq!(by_version.get("1.1.0"), None, "deleted from the page");
    let running = docker(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("{prefix}-worker"),
    ]);
    assert_eq!(running.as_deref().map(str::trim), Some("true"));
    let verify = json(a, &["audit", "verify", "-o", "json"]);
    assert_eq!(verify["ok"], true, "{verify}");
    let products = json(a, &["product", "list", "-o", "json"]);
    let names: Vec<&str> = products
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let shop = json(a, &["product", "show", "shop", "-o", "json"]);
    assert_eq!(shop["default_version"], "1.1.0", "{shop}");
    assert_eq!(shop["description"], "edited in the dashboard", "{shop}");
    let first = json(a, &["version", "show", "shop", "1.0.0", "-o", "json"]);
    assert_eq!(
        first["changelog"], "first release, edited in the dashboard",
        "{first}"
    );
    let updates = json(
        a,
        &["audit", "list", "--action", "product.update", "-o", "json"],
    );
    assert_eq!(
        updates.as_array().map(Vec::len),
        Some(3),
        "the page's two description edits and the other page's one: {updates}"
    );
    let members = json(a, &["member", "list", "-o", "json"]);
    let b_role = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "b-person")
        .map(|m| m["role"].clone());
    assert_eq!(b_role, Some(Value::from("user")), "{members}");
    // `forged` is the one well-formed write the script sends after the
    // refused ones: it proves the refusals were refusals.
    assert_eq!(names, ["forged", "shop"], "{products}");

    // SIGTERM stops the dashboard cleanly.
    let pid = ui.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(ui.exit(WAIT), Some(0), "{:?}", ui.notes);
}

/// Request headers, as (name, value).
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// One HTTP/1.1 exchange with the dashboard at `addr`: (status, headers
/// in lower case, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| *k == "host") {
        req.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Without a browser: the login token works once and sets a strict
/// cookie; reads need the cookie; writes need the cookie, the dashboard's
/// origin and its anti-forgery token, and another host is not answered.
/// Only the write with everything right changes the team.
#[test]
fn the_dashboard_refuses_requests_without_its_token_cookie_or_origin() {
    let mut a = Peer::new("a").unwrap();
    a.ok(&["profile", "init", "--name", "ann"]);
    a.start().unwrap();
    a.ok(&["team", "create", "crew"]);

    // Only loopback is served.
    let r = a.shoal(&["ui", "--listen", "0.0.0.0:0"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("loopback"), "{r:?}");

    let mut ui = Follower::spawn(&a.user, &["ui"], &[]).unwrap();
    ui.until(WAIT, |out, _| out.iter().any(|l| l.starts_with("http://")))
        .unwrap();
    let url = ui.seen.iter().find(|l| l.starts_with("http://")).unwrap();
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, login) = rest.split_at(rest.find('/').unwrap());
    let origin = format!("http://{addr}");
    let token = login.split("token=").nth(1).unwrap();

    // A wrong token is refused; the right one gives a strict cookie, once.
    let wrong = format!("/login?token={}", "0".repeat(token.len()));
    assert_eq!(http(addr, "GET", &wrong, &[], "").0, 403);
    let (status, head, _) = http(addr, "GET", login, &[], "");
    assert_eq!(status, 303, "{head}");
    let cookie_line = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    for part in ["httponly", "samesite=strict", "path=/"] {
        assert!(cookie_line.contains(part), "{cookie_line}");
    }
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    let cookie = cookie_line
        .trim_start_matches("set-cookie:")
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        http(addr, "GET", login, &[], "").0,
        403,
        "the token works once"
    );

    // Reads need the cookie; another host is not answered even with it.
    assert_eq!(http(addr, "GET", "/api/team", &[], "").0, 401);
    let (status, _, body) = http(addr, "GET", "/api/session", &[("cookie", &cookie)], "");
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap();
    let csrf = session["csrf"].as_str().unwrap().to_string();
    assert_eq!(session["team_name"], "crew");
    let rebound = [("host", "attacker.example"), ("cookie", cookie.as_str())];
    assert_eq!(http(addr, "GET", "/api/team", &rebound, "").0, 403);
    assert_eq!(
        http(
            addr,
            "GET",
            "/api/team/bootstrap",
            &[("cookie", &cookie)],
            ""
        )
        .0,
        404,
        "the network key is not readable through the dashboard"
    );

    // Writes.
    let intent = r#"{"op":"product.create","name":"forged"}"#;
    let refused: [(&str, Headers, u16); 5] = [
        (
            "no cookie",
            vec![("origin", &origin), ("x-shoal-csrf", &csrf)],
            401,
        ),
        (
            "another origin",
            vec![
                ("cookie", &cookie),
                ("origin", "http://attacker.example"),
                ("x-shoal-csrf", &csrf),
            ],
            403,
        ),
        (
            "no origin",
            vec![("cookie", &cookie), ("x-shoal-csrf", &csrf)],
            403,
        ),
        (
            "no anti-forgery token",
            vec![("cookie", &cookie), ("origin", &origin)],
            403,
        ),
        (
            "a cross-site fetch",
            vec![
                ("cookie", &cookie),
                ("origin", &origin),
                ("sec-fetch-site", "cross-site"),
                ("x-shoal-csrf", &csrf),
            ],
            403,
        ),
    ];
    for (what, headers, want) in &refused {
        let (status, _, body) = http(addr, "POST", "/api/act", headers, intent);
        assert_eq!(status, *want, "a write with {what}: {body}");
    }
    let products = json(&a, &["product", "list", "-o", "json"]);
    assert_eq!(
        products,
        serde_json::json!([]),
        "a refused write changed the team"
    );
    let good = [
        ("cookie", cookie.as_str()),
        ("origin", &origin),
        ("x-shoal-csrf", &csrf),
    ];
    let (status, _, body) = http(addr, "POST", "/api/act", &good, intent);
    assert_eq!(status, 200, "{body}");
    let products = json(&a, &["product", "list", "-o", "json"]);
    assert_eq!(products[0]["name"], "forged", "{products}");

    // A refused op answers the daemon's status and the rule's message.
    let (status, _, body) = http(
        addr,
        "POST",
        "/api/act",
        &good,
        r#"{"op":"member.remove","member":"ann"}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("owner"), "{body}");
}
