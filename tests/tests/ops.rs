//! Operating a node, over real daemons on loopback: `node show -o json`
//! (peers and their sync lag, quarantined ops, runtime health, the store),
//! the running version in `node list`, the metrics endpoint against the
//! names `docs/api.md` documents, and a store of a newer schema refused by
//! the daemon without being touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::Value;
use shoal_protocol::Action;
use shoal_tests::api::{api, prepared, profile_key, signed, submit};
use shoal_tests::{Peer, Run, WAIT, form_team, wait_for};

fn parse(r: &Run) -> Value {
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

fn show(p: &Peer, node: Option<&str>) -> Value {
    let mut args = vec!["node", "show"];
    args.extend(node);
    args.extend(["-o", "json"]);
    parse(&p.shoal(&args))
}

/// Submits an op of `p`'s owner, signed, whose action (`description`) is
/// not what its change does: it is refused and kept in quarantine. Returns
/// its hash.
fn submit_forged_op(p: &Peer) -> String {
    submit_refused(p, "forged", false)
}

/// Prepares a `team.update` of `p`'s owner, changes its action's description
/// to `description` (so the change no longer matches it) and submits it
/// signed, or with its signature altered when `bad_sig`. Returns its hash.
fn submit_refused(p: &Peer, description: &str, bad_sig: bool) -> String {
    let key = profile_key(p);
    let action = Action::TeamUpdate {
        name: "crew".into(),
        description: "honest".into(),
    };
    let mut body = prepared(p, &key, &action);
    body.action = Action::TeamUpdate {
        name: "crew".into(),
        description: description.into(),
    };
    let mut op = body.sign(&key).unwrap();
    if bad_sig {
        op.sig.0[0] ^= 1;
    }
    let (status, v) = submit(p, &op);
    assert_eq!(status, 422, "the forged op was not refused: {v}");
    op.hash().to_hex()
}

/// Signs and submits `action` as `p`'s owner; returns the answer.
fn submit_action(p: &Peer, action: &Action) -> (u16, Value) {
    let key = profile_key(p);
    submit(p, &signed(p, &key, action))
}

/// The quarantine counts the daemon, `audit verify` and `audit list` give.
fn quarantine_views(p: &Peer) -> (u64, usize, usize) {
    let sync = show(p, None)["ops"]["quarantined"].as_u64().unwrap();
    let verify = p.shoal(&["audit", "verify", "-o", "json"]);
    let in_verify = verify.stdout.matches("was refused").count();
    let list = p.shoal(&["audit", "list", "-o", "json"]);
    let in_list = list.stdout.matches("quarantined:").count();
    (sync, in_verify, in_list)
}

/// The peer entry of `key` in a `node show` answer.
fn peer_of<'a>(shown: &'a Value, key: &str) -> Option<&'a Value> {
    shown["peers"]
        .as_array()?
        .iter()
        .find(|p| p["key"].as_str() == Some(key))
}

/// The metric names `docs/api.md` documents: the first column of the
/// table under `## Metrics`.
fn documented_metrics() -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"))
        .unwrap();
    let section = doc
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section");
    let section = section.split("\n## ").next().unwrap();
    let names: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `shoal_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("shoal_{n}"))
        .collect();
    assert!(names.len() >= 10, "too few documented metrics: {names:?}");
    names
}

fn scrape(addr: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    assert!(out.status.success(), "the metrics endpoint did not answer");
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the sample line starting with `prefix` (name and labels).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn node_show_and_metrics_report_peers_lag_quarantine_health_and_store() {
    let mut peers = vec![Peer::new("a").unwrap(), Peer::new("b").unwrap()];
    peers[0].extra = vec!["--metrics".into(), "127.0.0.1:0".into()];
    form_team(&mut peers).unwrap();
    let metrics_addr = peers[0]
        .daemon
        .as_ref()
        .unwrap()
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .expect("the daemon says where metrics are")
        .to_string();
    let b_key = show(&peers[1], None)["key"].as_str().unwrap().to_string();
    let a = &peers[0];

    // This node's own view: B connected, nothing lacking on either side.
    let shown = wait_for(WAIT, || {
        let s = show(a, None);
        let p = peer_of(&s, &b_key)?;
        (p["connected"] == true && p["they_lack"] == 0 && p["we_lack"] == 0).then_some(s)
    })
    .expect("B listed as a connected peer in sync");
    assert_eq!(shown["this_node"], true);
    assert_eq!(shown["name"], "a");
    assert_eq!(shown["runtime"], "none");
    assert_eq!(
        shown["agent_version"],
        format!("shoal/{}", env!("CARGO_PKG_VERSION"))
    );
    let b = peer_of(&shown, &b_key).unwrap();
    assert_eq!(b["name"], "b");
    assert!(
        b["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().starts_with("/ip4/127.0.0.1/tcp/")),
        "{b}"
    );
    // Health of runtime none: nothing to ask, and it says so.
    let h = &shown["runtime_health"];
    assert_eq!(h["runtime"], "none");
    assert_eq!(h["ok"], true);
    assert!(
        h["detail"].as_str().unwrap().contains("no containers"),
        "{h}"
    );
    // The store.
    let s = &shown["store"];
    assert!(s["size_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["schema_version"], shoal_node::store::SCHEMA_VERSION);
    assert_eq!(s["written_by"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        Path::new(s["path"].as_str().unwrap()),
        a.data.path().join("shoal.redb")
    );
    assert_eq!(shown["ops"]["quarantined"], 0);
    assert_eq!(shown["ops"]["rejected_since_start"], 0);
    let applied = shown["ops"]["applied"].as_u64().unwrap();
    assert!(applied >= 3, "{shown}");

    // A refused op lands in quarantine, and the count says so.
    let _ = submit_forged_op(a);
    let shown = show(a, None);
    assert_eq!(shown["ops"]["quarantined"], 1, "{shown}");
    assert_eq!(shown["ops"]["rejected_since_start"], 1, "{shown}");

    // Another node: what heartbeats and the state tell; no local details.
    let other = show(a, Some("b"));
    assert_eq!(other["this_node"], false);
    assert_eq!(other["key"], b_key.as_str());
    assert_eq!(other["status"], "connected");
    assert_eq!(
        other["agent_version"],
        format!("shoal/{}", env!("CARGO_PKG_VERSION"))
    );
    for k in ["peers", "ops", "runtime_health", "store"] {
        assert!(other[k].is_null(), "{k} of another node: {other}");
    }
    let table = a.ok(&["node", "show"]).stdout;
    assert!(table.contains("health      ok"), "{table}");
    assert!(table.contains("1 quarantined"), "{table}");

    // The running version is visible to the team.
    let list = a.ok(&["node", "list"]).stdout;
    let header = list.lines().next().unwrap();
    assert!(header.contains("VERSION"), "{list}");
    let b_row = list.lines().find(|l| l.starts_with("b ")).unwrap();
    assert!(
        b_row.contains(&format!("shoal/{}", env!("CARGO_PKG_VERSION"))),
        "{list}"
    );

    // Metrics: every documented name is served, with the values above.
    let team = a.team().unwrap()["id"].as_str().unwrap().to_string();
    let text = wait_for(WAIT, || {
        let t = scrape(&metrics_addr);
        let lag = sample(
            &t,
            "shoal_sync_lag_ops",
            &[("team", &team), ("peer", "b"), ("direction", "to_peer")],
        )?;
        (lag == 0.0).then_some(t)
    })
    .expect("a sync lag sample for B");
    // Per-container families have samples only on a node that runs the
    // team's containers (the Docker tests read them); these nodes run none.
    for name in documented_metrics()
        .into_iter()
        .filter(|n| !n.starts_with("shoal_container_"))
    {
        let (family, kind) = match name.strip_suffix("_total") {
            Some(f) => (f.to_string(), Some("counter")),
            None => (name.clone(), None),
        };
        let typed = text.lines().any(|l| {
            l.strip_prefix(&format!("# TYPE {family} "))
                .is_some_and(|k| kind.is_none_or(|want| k == want))
        });
        assert!(typed, "documented metric {name} not served:\n{text}");
    }
    let t = [("team", team.as_str())];
    assert_eq!(sample(&text, "shoal_peers_connected", &t), Some(1.0));
    assert_eq!(sample(&text, "shoal_ops_quarantined", &t), Some(1.0));
    assert_eq!(sample(&text, "shoal_ops_rejected_total", &t), Some(1.0));
    assert!(sample(&text, "shoal_ops_applied", &t).unwrap() >= applied as f64);
    assert!(sample(&text, "shoal_store_size_bytes", &[]).unwrap() > 0.0);
    assert!(
        sample(
            &text,
            "shoal_sync_lag_ops",
            &[("team", &team), ("peer", "b"), ("direction", "from_peer")]
        )
        .is_some(),
        "{text}"
    );

    // B stops; A makes ops B has not got: the lag toward B shows them.
    let mut peers = peers;
    peers[1].stop().unwrap();
    let a = &peers[0];
    wait_for(WAIT, || {
        let p = peer_of(&show(a, None), &b_key)?.clone();
        (p["connected"] == false).then_some(())
    })
    .expect("B disconnected");
    a.ok(&["team", "invite"]);
    a.ok(&["team", "invite"]);
    let p = peer_of(&show(a, None), &b_key).unwrap().clone();
    assert_eq!(p["they_lack"], 2, "{p}");
    assert_eq!(p["we_lack"], 0, "{p}");
    let text = scrape(&metrics_addr);
    assert_eq!(
        sample(
            &text,
            "shoal_sync_lag_ops",
            &[("team", &team), ("peer", "b"), ("direction", "to_peer")]
        ),
        Some(2.0),
        "{text}"
    );
    // Back up, B catches up and the lag is gone.
    peers[1].start().unwrap();
    let a = &peers[0];
    wait_for(WAIT, || {
        let p = peer_of(&show(a, None), &b_key)?.clone();
        (p["connected"] == true && p["they_lack"] == 0).then_some(())
    })
    .expect("B caught up");
}

/// A team of one on a daemon with `runtime`, started under `wrap`
/// (e.g. `env DOCKER_HOST=... shoal`).
fn solo(runtime: &str, wrap: &[&str]) -> Peer {
    let mut p = Peer::new("solo").unwrap();
    p.runtime = runtime.into();
    p.wrap = wrap.iter().map(|s| s.to_string()).collect();
    form_team(std::slice::from_mut(&mut p)).unwrap();
    p
}

#[test]
fn runtime_health_answers_ok_or_the_error() {
    // A Docker runtime whose engine is not there: the error, not ok.
    let p = solo(
        "docker",
        &[
            "env",
            "DOCKER_HOST=unix:///nonexistent/docker.sock",
            "shoal",
        ],
    );
    let h = show(&p, None)["runtime_health"].clone();
    assert_eq!(h["runtime"], "docker");
    assert_eq!(h["ok"], false, "{h}");
    let detail = h["detail"].as_str().unwrap();
    assert!(
        detail.contains("/nonexistent/docker.sock"),
        "the error names the endpoint: {h}"
    );
    let (status, v) = api(&p, "GET", "/v1/node/health", None);
    assert_eq!(status, 200);
    assert_eq!(v["ok"], false);
    let table = p.ok(&["node", "show"]).stdout;
    assert!(table.contains("health      FAILING"), "{table}");
    drop(p);

    // A Kubernetes runtime whose cluster does not answer: the error, not ok.
    // (The kubeconfig loads, so the daemon starts; the API server is a
    // loopback port nothing listens on.)
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n\
         clusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:1\n\
         users:\n- name: u\n  user:\n    token: t\n\
         contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\n",
    )
    .unwrap();
    let env = format!("KUBECONFIG={}", kubeconfig.display());
    let p = solo(
        "kubernetes",
        &["env", &env, "KUBERNETES_SERVICE_HOST=", "shoal"],
    );
    let h = show(&p, None)["runtime_health"].clone();
    assert_eq!(h["runtime"], "kubernetes");
    assert_eq!(h["ok"], false, "{h}");
    assert!(
        h["detail"].as_str().unwrap().contains("127.0.0.1:1"),
        "the error names the endpoint: {h}"
    );
    drop(p);

    // The test engine, when this run has one.
    if std::env::var_os("SHOAL_TEST_DOCKER").is_none() {
        eprintln!("SHOAL_TEST_DOCKER unset: the healthy Docker case is skipped");
        return;
    }
    let p = solo("docker", &[]);
    let h = show(&p, None)["runtime_health"].clone();
    assert_eq!(h["ok"], true, "{h}");
    assert!(h["detail"].as_str().unwrap().starts_with("Docker "), "{h}");
}

#[test]
fn a_store_of_a_newer_schema_stops_the_daemon_untouched() {
    let mut p = Peer::new("n").unwrap();
    form_team(std::slice::from_mut(&mut p)).unwrap();
    assert_eq!(p.stop().unwrap(), 0);
    let path = p.data.path().join("shoal.redb");
    {
        const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta_v1");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            let newer = shoal_node::store::SCHEMA_VERSION + 1;
            meta.insert("schema_version", newer.to_be_bytes().as_slice())
                .unwrap();
            meta.insert("written_by", b"77.0.0".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let data = p.data.path().to_str().unwrap().to_string();
    let r = p.shoal(&[
        "node",
        "run",
        "--data-dir",
        &data,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
        "--runtime",
        "none",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("install shoal 77.0.0 or newer"),
        "the daemon says what to install: {r:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the store was changed"
    );
}

/// Nothing unsigned is stored: big ops with a bad signature are refused and
/// leave the store as it was. Authentic refused ops are kept, and after a
/// restart `/sync`, `audit verify` and `audit list` still agree on them; a
/// `quarantine.purge` by the owner drops them for good.
#[test]
fn the_quarantine_keeps_no_forgeries_survives_restarts_and_is_purged() {
    let mut peers = vec![Peer::new("a").unwrap()];
    form_team(&mut peers).unwrap();
    let size = |p: &Peer| show(p, None)["store"]["size_bytes"].as_u64().unwrap();
    let before = size(&peers[0]);
    let big = "x".repeat(3 << 20);
    for _ in 0..5 {
        submit_refused(&peers[0], &big, true);
    }
    let after = size(&peers[0]);
    assert!(
        after < before + (4 << 20),
        "the store grew from {before} to {after} bytes"
    );
    assert_eq!(show(&peers[0], None)["ops"]["quarantined"], 0);

    let one = submit_refused(&peers[0], "one", false);
    let two = submit_refused(&peers[0], "two", false);
    let views = quarantine_views(&peers[0]);
    assert_eq!(views.0, 2, "{views:?}");
    assert_eq!((views.1, views.2), (2, 2), "{views:?}");

    peers[0].stop().unwrap();
    peers[0].start().unwrap();
    assert_eq!(quarantine_views(&peers[0]), views);

    // A purge is an audited op (here one through the API, the rest with
    // `audit purge --all`); the store forgets the ops.
    let purge = Action::QuarantinePurge {
        ops: vec![one.parse().unwrap()],
    };
    let (status, v) = submit_action(&peers[0], &purge);
    assert_eq!(status, 200, "{v}");
    assert_eq!(quarantine_views(&peers[0]).0, 1);
    assert_eq!(peers[0].shoal(&["audit", "purge"]).code, 2);
    let r = peers[0].ok(&["audit", "purge", "--all"]);
    assert!(r.stdout.contains("purged 1 op(s)"), "{r:?}");
    assert_eq!(quarantine_views(&peers[0]), (0, 0, 0));
    let r = peers[0].ok(&["audit", "purge", "--all"]);
    assert!(r.stdout.contains("nothing to purge"), "{r:?}");
    let audit = peers[0].ok(&["audit", "list", "--action", "quarantine.purge"]);
    assert_eq!(
        audit.stdout.matches("purged refused op").count(),
        2,
        "{audit:?}"
    );
    assert!(audit.stdout.contains(&two[..8]), "{audit:?}");
    peers[0].stop().unwrap();
    peers[0].start().unwrap();
    assert_eq!(quarantine_views(&peers[0]), (0, 0, 0));
}
