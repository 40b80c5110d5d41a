//! The team's domain from the CLI, over real daemons: registries, products,
//! versions, images and deployments walked through the rules of §2 (each
//! refusal asserted with its message and exit code), roles, registry tags
//! with sealed credentials against the local test registry, secrets that
//! never leak, compose import and the audit log.
//!
//! Nothing executes deployments here: where a rule needs the target node's
//! report (`successful`, `failed`), the test signs it with the node's own
//! key, read from its data dir before the daemon starts, exactly as the
//! node's executor would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_node::secrets::EncSecret;
use shoal_protocol::action::Outcome;
use shoal_protocol::model::{ContainerConfig, ContainerState, FrozenConfig, Image, ImageRef};
use shoal_protocol::{Action, SecretKey};
use shoal_tests::api::{api, api_at, profile_key, signed, submit};
use shoal_tests::{Peer, Run, WAIT, wait_for};

/// A machine whose daemon runs deployments (runtime docker); returns the
/// node's signing key and encryption secret, read from its data dir.
fn docker_peer(name: &str) -> (Peer, SecretKey, EncSecret) {
    let mut p = Peer::new(name).unwrap();
    p.runtime = "docker".into();
    // The test reports tries itself, in the node's name.
    p.extra = vec!["--pause-deployments".into()];
    let node = shoal_node::daemon::Node::open(p.data.path()).unwrap();
    let key = SecretKey::from_seed(node.key_seed());
    let enc = node.enc_secret();
    drop(node);
    (p, key, enc)
}

/// Owner's machine with team `crew`.
fn start_team(p: &mut Peer) {
    p.ok(&["profile", "init", "--name", &format!("{}-person", p.name)]);
    p.start().unwrap();
    p.ok(&["team", "create", "crew"]);
}

fn parse(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// Asserts that the command was refused with exit code `code` and a
/// message containing `msg`.
#[track_caller]
fn refused(r: &Run, code: i32, msg: &str) {
    assert_eq!(r.code, code, "expected exit {code}: {r:?}");
    assert!(
        r.stderr.contains(msg),
        "expected {msg:?} in stderr: {}",
        r.stderr
    );
}

/// The version's images as the protocol types (for a frozen config).
fn images_of(p: &Peer, product: &str, version: &str) -> Vec<Image> {
    let v = parse(&p.ok(&["version", "show", product, version, "-o", "json"]));
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Image {
            name: i["name"].as_str().unwrap().into(),
            image: ImageRef {
                registry: i["registry_id"].as_str().unwrap().into(),
                name: i["image"].as_str().unwrap().into(),
                tag: i["tag"].as_str().unwrap().into(),
            },
            config: serde_json::from_value::<ContainerConfig>(i["config"].clone()).unwrap(),
        })
        .collect()
}

fn show(p: &Peer, id: &str) -> Value {
    parse(&p.ok(&["deploy", "show", id, "-o", "json"]))
}

/// Reports the end of try `attempt` of deployment `id` as its target node.
fn finish(p: &Peer, node: &SecretKey, id: &str, attempt: u32, outcome: Outcome) {
    let d = show(p, id);
    let frozen = matches!(outcome, Outcome::Successful).then(|| FrozenConfig {
        version_name: d["version"].as_str().unwrap().into(),
        images: images_of(
            p,
            d["product"].as_str().unwrap(),
            d["version"].as_str().unwrap(),
        ),
    });
    let state = if frozen.is_some() {
        "running"
    } else {
        "exited"
    };
    let containers = d["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let c = ContainerState {
                state: state.into(),
                exit_code: frozen.is_none().then_some(1),
                image: i["ref"].as_str().unwrap().into(),
            };
            (i["name"].as_str().unwrap().to_string(), c)
        })
        .collect();
    let action = Action::DeploymentFinish {
        id: d["id"].as_str().unwrap().into(),
        attempt,
        outcome,
        containers,
        events: vec![format!("try {attempt} done")],
        frozen,
    };
    let (status, v) = submit(p, &signed(p, node, &action));
    assert_eq!(status, 200, "finish: {v}");
}

fn status_of(p: &Peer, id: &str) -> (String, u64) {
    let d = show(p, id);
    (
        d["status"].as_str().unwrap().to_string(),
        d["tries"].as_u64().unwrap(),
    )
}

fn ids_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

/// Runs `deploy start ARGS` (waiting) in the background while the test
/// plays the node: once try `attempt` is in progress, it reports `outcome`.
fn start_and_finish(
    p: &Peer,
    node: &SecretKey,
    args: &[&str],
    id: &str,
    attempt: u32,
    outcome: Outcome,
) -> Run {
    let mut cmd = p.user.command(args);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for(WAIT, || {
        (status_of(p, id) == ("in-progress".into(), u64::from(attempt))).then_some(())
    })
    .expect("the deployment is started");
    // Let the waiting CLI see in-progress first.
    std::thread::sleep(Duration::from_millis(700));
    finish(p, node, id, attempt, outcome);
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn the_rules_of_the_domain_walked_through_from_the_cli() {
    let (mut a, node_key, _) = docker_peer("n1");
    start_team(&mut a);

    // Registries.
    let r = a.shoal(&["registry", "add", "local", "--kind", "nope"]);
    refused(&r, 2, "unknown registry kind");
    let r = a.shoal(&["registry", "add", "local", "--kind", "v2"]);
    refused(
        &r,
        1,
        "invalid registry \"local\": a v2 registry needs --url",
    );
    a.ok(&[
        "registry",
        "add",
        "local",
        "--kind",
        "v2",
        "--url",
        "127.0.0.1:5000",
    ]);
    let r = a.shoal(&["registry", "add", "local", "--kind", "unchecked"]);
    refused(
        &r,
        1,
        "registry name \"local\" is already taken: choose another name",
    );
    let r = a.shoal(&["registry", "remove", "hub"]);
    refused(&r, 1, "the built-in Docker Hub registry cannot be removed");
    let regs = parse(&a.ok(&["registry", "list", "-o", "json"]));
    assert_eq!(regs.as_array().unwrap().len(), 2, "{regs}");

    // Products: names are unique; a simple product has exactly one version.
    a.ok(&["product", "create", "shop", "--description", "the shop"]);
    let r = a.shoal(&["product", "create", "shop"]);
    refused(&r, 1, "product name \"shop\" is already taken");
    a.ok(&["product", "create", "cache", "--simple"]);
    let r = a.shoal(&["version", "create", "cache", "2"]);
    refused(
        &r,
        1,
        "a simple product has exactly one version: versions cannot be added",
    );
    let r = a.shoal(&["version", "remove", "cache", "rolling"]);
    refused(
        &r,
        1,
        "a simple product has exactly one version: its version is removed with the product",
    );
    let cache = parse(&a.ok(&["product", "show", "cache", "-o", "json"]));
    assert_eq!(cache["default_version"], "rolling");

    // A version needs an image before anything is deployed.
    a.ok(&["version", "create", "shop", "1.0.0", "--changelog", "first"]);
    let r = a.shoal(&[
        "deploy", "create", "shop", "1.0.0", "--node", "n1", "--prefix", "prod",
    ]);
    refused(
        &r,
        1,
        "version 1.0.0 has no image: add one with `shoal image add` first",
    );
    let r = a.shoal(&["image", "add", "shop", "1.0.0", "quay.io/x/y:1"]);
    refused(&r, 1, "no registry of this team serves quay.io");
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.0.0",
        "127.0.0.1:5000/shoal-test/busybox:latest",
    ]);
    let images = parse(&a.ok(&["image", "list", "shop", "1.0.0", "-o", "json"]));
    assert_eq!(images[0]["name"], "busybox");
    assert_eq!(images[0]["registry"], "local");

    // Start order: the containers named go first, the others keep theirs.
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.0.0",
        "127.0.0.1:5000/shoal-test/busybox:latest",
        "--name",
        "sidecar",
    ]);
    let order = |a: &Peer| -> Vec<String> {
        parse(&a.ok(&["image", "list", "shop", "1.0.0", "-o", "json"]))
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(order(&a), ["busybox", "sidecar"]);
    let r = a.ok(&["image", "order", "shop", "1.0.0", "sidecar"]);
    assert!(r.stdout.contains("sidecar, busybox"), "{}", r.stdout);
    assert_eq!(order(&a), ["sidecar", "busybox"]);
    refused(
        &a.shoal(&["image", "order", "shop", "1.0.0", "cache"]),
        1,
        "there is no container \"cache\" in this version: see `shoal image list shop 1.0.0`",
    );
    let audit = a.ok(&["audit", "list", "--action", "image.order"]);
    assert!(audit.stdout.contains("image.order"), "{}", audit.stdout);
    a.ok(&["image", "remove", "shop", "1.0.0", "sidecar"]);
    assert_eq!(order(&a), ["busybox"]);
    let r = a.shoal(&["registry", "remove", "local"]);
    refused(
        &r,
        1,
        "registry local is used by 1 image(s): change or remove those images first",
    );

    // Container config, field by field.
    let r = a.shoal(&[
        "image", "config", "shop", "1.0.0", "busybox", "--port", "80:x",
    ]);
    refused(&r, 2, "not a port number");
    a.ok(&[
        "image",
        "config",
        "shop",
        "1.0.0",
        "busybox",
        "--env",
        "GREETING=hi {{version}}",
        "--port",
        "8080:80",
        "--volume",
        "data:/data",
        "--restart",
        "unless-stopped",
        "--cmd",
        "httpd",
        "--cmd",
        "-f",
        "--label",
        "tier=front",
        "--secret",
        "DB_PASSWORD",
    ]);
    let shown = a.ok(&["image", "config", "shop", "1.0.0", "busybox", "--show"]);
    for want in [
        "GREETING: hi {{version}}",
        "external: 8080",
        "restart: unless-stopped",
        "DB_PASSWORD",
        "required: true",
        "registry: local",
    ] {
        assert!(shown.stdout.contains(want), "{want}: {}", shown.stdout);
    }

    // Create: a prefix is a DNS label; one preparing deployment per slot.
    let r = a.shoal(&[
        "deploy",
        "create",
        "shop",
        "1.0.0",
        "--node",
        "n1",
        "--prefix",
        "Bad_Prefix",
    ]);
    refused(
        &r,
        1,
        "invalid prefix \"Bad_Prefix\": a prefix is a DNS label",
    );
    let d1 = a
        .ok(&[
            "deploy", "create", "shop", "1.0.0", "--node", "n1", "--prefix", "prod", "--note",
            "first",
        ])
        .last_line();
    let r = a.shoal(&[
        "deploy", "create", "shop", "1.0.0", "--node", "n1", "--prefix", "prod",
    ]);
    refused(
        &r,
        1,
        &format!(
            "deployment {d1} already exists for this version on n1 with prefix prod and is still preparing: start, edit or delete that one"
        ),
    );

    // A long poll on a deployment answers when it changes.
    let route = format!("/v1/teams/crew/deployments/{d1}");
    let (status, first) = api(&a, "GET", &route, None);
    assert_eq!(status, 200, "{first}");
    let fp = first["fingerprint"].as_str().unwrap().to_owned();
    let (_, same) = api(&a, "GET", &route, None);
    assert_eq!(
        same["fingerprint"],
        fp.as_str(),
        "a view keeps its fingerprint"
    );
    let waiting = {
        let (sock, route) = (a.user.socket(), format!("{route}?unless={fp}&wait_ms=5000"));
        std::thread::spawn(move || api_at(&sock, "GET", &route, None))
    };
    std::thread::sleep(Duration::from_millis(300));
    a.ok(&["deploy", "update", &d1, "--note", "watched"]);
    let (status, changed) = waiting.join().unwrap();
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed["note"], "watched",
        "the long poll answers with the change"
    );
    assert_ne!(changed["fingerprint"], fp.as_str());
    let (_, stale) = api(
        &a,
        "GET",
        &format!("{route}?unless={fp}&wait_ms=5000"),
        None,
    );
    assert_eq!(
        stale["note"], "watched",
        "an old fingerprint answers at once"
    );

    // The instance layer: image <- deployment <- instance, rightmost wins.
    let effective =
        |a: &Peer| parse(&a.ok(&["deploy", "config", &d1, "busybox", "--show", "-o", "json"]));
    a.ok(&["deploy", "update", &d1, "--env", "LEVEL=deployment"]);
    let r = a.ok(&[
        "deploy",
        "config",
        &d1,
        "busybox",
        "--env",
        "GREETING=override",
        "--env",
        "EXTRA=1",
        "--port",
        "9090:80",
        "--label",
        "tier=back",
    ]);
    assert!(
        r.stdout.contains("updated the overrides of busybox"),
        "{}",
        r.stdout
    );
    let e = effective(&a);
    assert_eq!(e["env"]["GREETING"], "override");
    assert_eq!(e["env"]["EXTRA"], "1");
    assert_eq!(e["env"]["LEVEL"], "deployment");
    assert_eq!(e["labels"]["tier"], "back");
    assert_eq!(e["ports"].as_array().unwrap().len(), 1, "{e}");
    assert_eq!(e["ports"][0]["external"], 9090);
    assert_eq!(e["restart"], "unless-stopped", "{e}");
    let shown = parse(&a.ok(&["deploy", "show", &d1, "-o", "json"]));
    assert_eq!(shown["instances"]["busybox"]["env"]["GREETING"], "override");
    a.ok(&["deploy", "config", &d1, "busybox", "--unset-env", "EXTRA"]);
    assert!(effective(&a)["env"].get("EXTRA").is_none());
    refused(
        &a.shoal(&["deploy", "config", &d1, "nosuch", "--env", "A=1"]),
        1,
        "version 1.0.0 of shop has no container \"nosuch\"",
    );
    refused(
        &a.shoal(&["deploy", "config", &d1, "busybox", "--unset", "colour"]),
        2,
        "--unset \"colour\": not a field that can be unset",
    );
    a.ok(&["deploy", "config", &d1, "busybox", "--reset"]);
    a.ok(&["deploy", "update", &d1, "--unset-env", "LEVEL"]);
    let e = effective(&a);
    assert_eq!(e["env"]["GREETING"], "hi {{version}}");
    assert_eq!(e["ports"][0]["external"], 8080);
    let shown = parse(&a.ok(&["deploy", "show", &d1, "-o", "json"]));
    assert_eq!(shown["instances"], json!({}));

    // Unsetting in the image layer.
    a.ok(&[
        "image", "config", "shop", "1.0.0", "busybox", "--env", "TMP=1", "--label", "x=y",
    ]);
    a.ok(&[
        "image",
        "config",
        "shop",
        "1.0.0",
        "busybox",
        "--unset-env",
        "TMP",
        "--unset-label",
        "x",
        "--unset",
        "restart",
    ]);
    let c = parse(&a.ok(&[
        "image", "config", "shop", "1.0.0", "busybox", "--show", "-o", "json",
    ]));
    assert!(c["env"].get("TMP").is_none(), "{c}");
    assert!(c["labels"].get("x").is_none(), "{c}");
    assert!(c["restart"].is_null(), "{c}");
    assert_eq!(c["env"]["GREETING"], "hi {{version}}");
    a.ok(&[
        "image",
        "config",
        "shop",
        "1.0.0",
        "busybox",
        "--restart",
        "unless-stopped",
    ]);

    // Start: every required secret needs a value sealed for the node.
    let short = &d1[..8];
    let r = a.shoal(&["deploy", "start", short, "--detach"]);
    refused(
        &r,
        1,
        "required secret DB_PASSWORD of container busybox has no value sealed for the target node: set it with `--secret DB_PASSWORD`",
    );
    let r = a.shoal(&["deploy", "update", short, "--secret", "DB_PASSWORD"]);
    refused(&r, 2, "the environment variable DB_PASSWORD is not set");
    let r = a.shoal_with(
        &["deploy", "update", short, "--secret", "DB_PASSWORD"],
        &[("DB_PASSWORD", "pw-1")],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let started = a.ok(&["deploy", "start", short, "--detach"]);
    assert!(started.stdout.contains("(try 1)"), "{}", started.stdout);
    assert_eq!(status_of(&a, &d1), ("in-progress".into(), 1));

    // In progress: not deletable, copyable, mutable or deployable; its
    // version is frozen and neither it nor its product can be removed.
    let state = |what: &str, allowed: &str| {
        format!("deployment {d1} is in-progress; {what} needs it to be {allowed}")
    };
    refused(
        &a.shoal(&["deploy", "delete", &d1]),
        1,
        &state("deleting", "anything but in-progress"),
    );
    refused(
        &a.shoal(&["deploy", "copy", &d1, "--node", "n1", "--prefix", "qa"]),
        1,
        &state("copying", "anything but in-progress"),
    );
    refused(
        &a.shoal(&["deploy", "update", &d1, "--note", "x"]),
        1,
        &state(
            "editing",
            "preparing or failed (or successful, for a rolling version)",
        ),
    );
    refused(
        &a.shoal(&["deploy", "start", &d1, "--detach"]),
        1,
        &state(
            "starting",
            "preparing, failed or obsolete (or successful, for a rolling version)",
        ),
    );
    refused(
        &a.shoal(&["image", "add", "shop", "1.0.0", "redis:7"]),
        1,
        &format!(
            "version 1.0.0 is frozen (deployment {d1} is in-progress): increase it to make a new version"
        ),
    );
    refused(
        &a.shoal(&["version", "remove", "shop", "1.0.0"]),
        1,
        &format!(
            "version 1.0.0 cannot be removed: its deployment {d1} is in-progress and cannot change"
        ),
    );
    refused(
        &a.shoal(&["product", "remove", "shop"]),
        1,
        &state("removing its product", "anything but in-progress"),
    );
    let v = parse(&a.ok(&["version", "show", "shop", "1.0.0", "-o", "json"]));
    assert_eq!(
        v["frozen"],
        format!("deployment {d1} is in-progress"),
        "{v}"
    );

    // Incremental: the slot takes another deployment once d1 is no longer
    // preparing, but only one preparing at a time.
    let d2 = a
        .ok(&[
            "deploy", "create", "shop", "1.0.0", "--node", "n1", "--prefix", "prod",
        ])
        .last_line();
    refused(
        &a.shoal(&[
            "deploy", "create", "shop", "1.0.0", "--node", "n1", "--prefix", "prod",
        ]),
        1,
        &format!("deployment {d2} already exists for this version"),
    );
    a.ok(&["deploy", "delete", &d2]);

    // The node reports try 1 failed: the version is mutable again.
    finish(
        &a,
        &node_key,
        &d1,
        1,
        Outcome::Failed {
            reason: "image pull failed".into(),
        },
    );
    let d = show(&a, &d1);
    assert_eq!(d["status"], "failed");
    assert_eq!(d["reason"], "image pull failed");
    let v = parse(&a.ok(&["version", "show", "shop", "1.0.0", "-o", "json"]));
    assert!(v["frozen"].is_null(), "{v}");
    let shown = a.ok(&["deploy", "show", short]).stdout;
    assert!(shown.contains("image pull failed"), "{shown}");
    assert!(
        shown.contains("events of the last try:\n  try 1 done"),
        "{shown}"
    );
    // The table gains live columns (actual state, restarts, drift) once the
    // node's live report is in: read the columns by their header.
    let column = |name: &str| -> Option<String> {
        let header: Vec<&str> = shown
            .lines()
            .find(|l| l.starts_with("CONTAINER "))?
            .split_whitespace()
            .collect();
        let row: Vec<&str> = shown
            .lines()
            .find(|l| l.starts_with("busybox "))?
            .split_whitespace()
            .collect();
        let i = header.iter().position(|h| *h == name)?;
        row.get(i).map(|v| v.to_string())
    };
    assert_eq!(column("STATE").as_deref(), Some("exited"), "{shown}");
    assert_eq!(column("EXIT").as_deref(), Some("1"), "{shown}");
    assert!(shown.contains("DB_PASSWORD (sealed for n1)"), "{shown}");

    // `start` waits for the node's report by default: a failure exits 1
    // with the reason, a success 0; progress lines show the status.
    let r = start_and_finish(
        &a,
        &node_key,
        &["deploy", "start", short],
        &d1,
        2,
        Outcome::Failed {
            reason: "health check timed out".into(),
        },
    );
    refused(&r, 1, "failed: health check timed out");
    assert!(r.stdout.contains("try 2: in-progress"), "{r:?}");
    let r = start_and_finish(
        &a,
        &node_key,
        &["deploy", "start", short, "--wait"],
        &d1,
        3,
        Outcome::Successful,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("try 3: successful"), "{}", r.stdout);
    let d = show(&a, &d1);
    assert_eq!(d["containers"]["busybox"]["state"], "running");
    assert_eq!(d["frozen"], "1.0.0");

    // A successful deployment freezes its incremental version.
    refused(
        &a.shoal(&["image", "add", "shop", "1.0.0", "redis:7"]),
        1,
        &format!(
            "version 1.0.0 is frozen (deployment {d1} is successful): increase it to make a new version"
        ),
    );
    // Increase: one child only; a version with a child is kept.
    a.ok(&["version", "increase", "shop", "1.0.0", "1.1.0"]);
    refused(
        &a.shoal(&["version", "increase", "shop", "1.0.0", "1.2.0"]),
        1,
        "version 1.0.0 already has a child (1.1.0): increase 1.1.0 instead",
    );
    refused(
        &a.shoal(&["version", "remove", "shop", "1.0.0"]),
        1,
        "version 1.0.0 cannot be removed: it has a child version 1.1.0",
    );
    let child = parse(&a.ok(&["version", "show", "shop", "1.1.0", "-o", "json"]));
    assert_eq!(child["parent"], "1.0.0");
    assert_eq!(
        child["images"].as_array().unwrap().len(),
        1,
        "images copied"
    );
    a.ok(&[
        "image", "add", "shop", "1.1.0", "redis:7", "--name", "cache",
    ]);

    // 1.1.0 succeeds on the slot: 1.0.0's deployment becomes obsolete, and
    // rolling back redeploys it.
    let d4 = a
        .ok(&[
            "deploy", "create", "shop", "1.1.0", "--node", "n1", "--prefix", "prod",
        ])
        .last_line();
    refused(
        &a.shoal(&["deploy", "start", &d4, "--detach"]),
        1,
        "required secret DB_PASSWORD",
    );
    let r = a.shoal_with(
        &["deploy", "update", &d4, "--secret", "DB_PASSWORD"],
        &[("DB_PASSWORD", "pw-2")],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    a.ok(&["deploy", "start", &d4, "--detach"]);
    finish(&a, &node_key, &d4, 1, Outcome::Successful);
    let obsolete = parse(&a.ok(&["deploy", "list", "--status", "obsolete", "-o", "json"]));
    assert_eq!(ids_of(&obsolete), vec![d1.clone()]);
    refused(
        &a.shoal(&[
            "deploy", "rollback", "shop", "--node", "n1", "--prefix", "other",
        ]),
        1,
        "nothing to roll back to for shop on n1/other",
    );
    let r = a.ok(&[
        "deploy", "rollback", "shop", "--node", "n1", "--prefix", "prod", "--detach",
    ]);
    assert!(r.stdout.contains("to version 1.0.0"), "{}", r.stdout);
    assert_eq!(status_of(&a, &d1), ("in-progress".into(), 4));
    finish(&a, &node_key, &d1, 4, Outcome::Successful);
    assert_eq!(status_of(&a, &d4).0, "downgraded");

    // Rolling versions: one deployment per slot whatever its status,
    // mutable and deployable when successful; protected blocks others.
    a.ok(&["product", "create", "api"]);
    a.ok(&["version", "create", "api", "main", "--rolling"]);
    a.ok(&["image", "add", "api", "main", "nginx:1.27", "--name", "web"]);
    let p1 = a
        .ok(&[
            "deploy",
            "create",
            "api",
            "main",
            "--node",
            "n1",
            "--prefix",
            "edge",
            "--protected",
        ])
        .last_line();
    refused(
        &a.shoal(&[
            "deploy", "create", "api", "main", "--node", "n1", "--prefix", "edge",
        ]),
        1,
        &format!(
            "deployment {p1} already exists for this version on n1 with prefix edge: a rolling version has one deployment per node and prefix; start or edit that one"
        ),
    );
    a.ok(&["deploy", "start", &p1, "--detach"]);
    finish(&a, &node_key, &p1, 1, Outcome::Successful);
    a.ok(&[
        "deploy",
        "update",
        &p1,
        "--note",
        "live",
        "--env",
        "MODE=fast",
    ]);
    a.ok(&["deploy", "start", &p1, "--detach"]);
    finish(&a, &node_key, &p1, 2, Outcome::Successful);
    let d = show(&a, &p1);
    assert_eq!(
        (d["note"].as_str(), d["tries"].as_u64()),
        (Some("live"), Some(2))
    );
    assert_eq!(d["env"]["MODE"], "fast");
    a.ok(&["version", "create", "api", "canary", "--rolling"]);
    a.ok(&[
        "image",
        "add",
        "api",
        "canary",
        "nginx:1.27",
        "--name",
        "web",
    ]);
    refused(
        &a.shoal(&[
            "deploy", "create", "api", "canary", "--node", "n1", "--prefix", "edge",
        ]),
        1,
        &format!("deployment {p1} is protected on n1/edge: pass --force to replace it"),
    );
    a.ok(&[
        "deploy", "create", "api", "canary", "--node", "n1", "--prefix", "edge", "--force",
    ]);
    refused(
        &a.shoal(&["version", "increase", "api", "main", "2"]),
        1,
        "only an incremental version can be increased",
    );

    // Auto-copy: increasing copies the version's deployments as preparing.
    a.ok(&["version", "create", "shop", "2.0.0", "--auto-copy"]);
    a.ok(&["image", "add", "shop", "2.0.0", "redis:7"]);
    a.ok(&[
        "deploy", "create", "shop", "2.0.0", "--node", "n1", "--prefix", "stage",
    ]);
    let r = a.ok(&["version", "increase", "shop", "2.0.0", "2.1.0"]);
    assert!(r.stdout.contains("1 deployment(s) copied"), "{}", r.stdout);
    let copies = parse(&a.ok(&["deploy", "list", "--product", "shop", "-o", "json"]));
    let copied: Vec<&Value> = copies
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["version"] == "2.1.0")
        .collect();
    assert_eq!(copied.len(), 1, "{copies}");
    assert_eq!(
        (copied[0]["prefix"].as_str(), copied[0]["status"].as_str()),
        (Some("stage"), Some("preparing"))
    );

    // Default version, and removal of a version whose deployments may change.
    a.ok(&["version", "default", "shop", "1.1.0"]);
    let shop = parse(&a.ok(&["product", "show", "shop", "-o", "json"]));
    assert_eq!(shop["default_version"], "1.1.0");
    a.ok(&["version", "remove", "shop", "2.1.0"]);
    let list = parse(&a.ok(&["version", "list", "shop", "-o", "json"]));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1.0.0", "1.1.0", "2.0.0"]);

    // Copy keeps the config; copy and delete by id prefix.
    let c = a
        .ok(&[
            "deploy",
            "copy",
            &d4[..10],
            "--node",
            "n1",
            "--prefix",
            "qa",
        ])
        .last_line();
    let copy = show(&a, &c);
    assert_eq!(
        (copy["prefix"].as_str(), copy["status"].as_str()),
        (Some("qa"), Some("preparing"))
    );
    assert_eq!(copy["secrets"], json!(["DB_PASSWORD"]));
    a.ok(&["deploy", "delete", &c[..10]]);

    // Guards: a node with deployments cannot be removed.
    let all = parse(&a.ok(&["deploy", "list", "--node", "n1", "-o", "json"]));
    let n = all.as_array().unwrap().len();
    refused(
        &a.shoal(&["node", "remove", "n1"]),
        1,
        &format!("node n1 still has {n} deployment(s): delete them first"),
    );
    refused(
        &a.shoal(&["deploy", "list", "--status", "done"]),
        2,
        "--status \"done\": use preparing, in-progress",
    );
    let table = a.ok(&["deploy", "list", "--product", "api"]).stdout;
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    a.ok(&["product", "remove", "api"]);
    assert!(
        parse(&a.ok(&["deploy", "list", "--product", "shop", "-o", "json"]))
            .as_array()
            .is_some_and(|l| l.len() == n - 2)
    );

    // Every listing speaks JSON.
    for args in [
        &["registry", "list"][..],
        &["product", "list"],
        &["version", "list", "shop"],
        &["image", "list", "shop", "1.1.0"],
        &["deploy", "list"],
        &["audit", "list"],
    ] {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        assert!(parse(&a.ok(&full)).is_array(), "{args:?}");
    }

    // The audit log: filters, then verification.
    let rollbacks = parse(&a.ok(&[
        "audit",
        "list",
        "--action",
        "deployment.rollback",
        "-o",
        "json",
    ]));
    assert_eq!(rollbacks.as_array().unwrap().len(), 1, "{rollbacks}");
    assert_eq!(rollbacks[0]["author_name"], "n1-person");
    let finishes = parse(&a.ok(&[
        "audit",
        "list",
        "--author",
        "n1",
        "--action",
        "deployment.",
        "-o",
        "json",
    ]));
    assert!(
        finishes
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "deployment.finish"),
        "{finishes}"
    );
    assert_eq!(finishes.as_array().unwrap().len(), 7, "{finishes}");
    let recent = parse(&a.ok(&["audit", "list", "--since", "1h", "-o", "json"]));
    let everything = parse(&a.ok(&["audit", "list", "-o", "json"]));
    assert_eq!(recent, everything);
    let old = parse(&a.ok(&["audit", "list", "--until", "2020-01-01", "-o", "json"]));
    assert_eq!(old, json!([]));
    let about_shop = parse(&a.ok(&["audit", "list", "--target", "shop", "-o", "json"]));
    assert!(
        about_shop
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "product.create"),
        "{about_shop}"
    );
    refused(
        &a.shoal(&["audit", "list", "--since", "last tuesday"]),
        2,
        "RFC 3339",
    );
    let table = a.ok(&["audit", "list", "--action", "registry.add"]).stdout;
    assert!(table.contains("registry.add"), "{table}");
    let ok = a.ok(&["audit", "verify"]);
    assert!(ok.stdout.starts_with("ok: "), "{}", ok.stdout);
    audit_verify_names_forks_and_bad_signatures(&a);
}

/// Two ops of one log at one seq (a fork) and an op whose signature was
/// altered are refused; the fork is kept in quarantine and named by
/// `audit verify`, the unsigned op is not kept.
fn audit_verify_names_forks_and_bad_signatures(a: &Peer) {
    let me = profile_key(a);
    let update = |name: &str| Action::TeamUpdate {
        name: name.into(),
        description: String::new(),
    };
    let first = signed(a, &me, &update("crew"));
    let fork = signed(a, &me, &update("crew-forked"));
    assert_eq!(first.body.seq, fork.body.seq);
    assert_eq!(submit(a, &first).0, 200);
    // The lower hash holds the seat on every replica, whatever arrived
    // first: the second op either takes the seat (and the first is voided)
    // or is refused.
    let fork_wins = fork.hash() < first.hash();
    let (status, v) = submit(a, &fork);
    assert_eq!(status, if fork_wins { 200 } else { 422 }, "{v}");
    let mut forged = signed(a, &me, &update("crew-forged"));
    forged.sig.0[0] ^= 1;
    let (status, v) = submit(a, &forged);
    assert_eq!(status, 422, "{v}");

    // The fork is authentic evidence and kept; the op whose signature does
    // not verify was refused but not kept (nothing unsigned is stored).
    let r = a.shoal(&["audit", "verify"]);
    refused(&r, 1, "the audit log has 1 problem(s)");
    assert!(r.stdout.contains("fork"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("signature does not verify"),
        "{}",
        r.stdout
    );
    let v = parse(&a.shoal(&["audit", "verify", "-o", "json"]));
    assert_eq!(v["ok"], false);
    assert_eq!(v["counts"]["refused"], 1);
    // `node show` of this node counts the lost fork.
    let shown = parse(&a.ok(&["node", "show", "-o", "json"]));
    assert_eq!(shown["ops"]["forks"], 1, "{shown}");
    assert_eq!(shown["ops"]["voided"], 0, "{shown}");
    // The team's name is the fork winner's; the forged op was not applied.
    let t = a.team().unwrap();
    assert_eq!(t["name"], if fork_wins { "crew-forked" } else { "crew" });
}

/// Two members create a deployment for one slot from the same state (the
/// ops are concurrent): both are applied, the later is marked `conflict`
/// on every replica and cannot be started.
fn concurrent_creates_mark_the_later_one_in_conflict(a: &Peer, b: &Peer) {
    let version = parse(&a.ok(&["version", "show", "app", "1", "-o", "json"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let node: shoal_protocol::PublicKey = parse(&a.ok(&["node", "show", "a", "-o", "json"]))["key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let create = |author: &SecretKey| {
        let (status, v) = api(
            a,
            "POST",
            "/v1/teams/crew/ids",
            Some(&json!({ "author": author.public().to_hex(), "count": 1 })),
        );
        assert_eq!(status, 200, "{v}");
        Action::DeploymentCreate {
            id: v["ids"][0].as_str().unwrap().into(),
            version: version.clone(),
            node,
            prefix: "race".into(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            instances: BTreeMap::new(),
            protected: false,
            note: String::new(),
            force: false,
        }
    };
    let (ka, kb) = (profile_key(a), profile_key(b));
    let first = signed(a, &ka, &create(&ka));
    let second = signed(a, &kb, &create(&kb));
    assert_eq!(submit(a, &first).0, 200);
    assert_eq!(submit(a, &second).0, 200);
    let loser = match &second.body.action {
        Action::DeploymentCreate { id, .. } => id.clone(),
        _ => unreachable!(),
    };
    for p in [a, b] {
        let list = wait_for(WAIT, || {
            let l = parse(&p.ok(&["deploy", "list", "-o", "json"]));
            (l.as_array()?
                .iter()
                .filter(|d| d["prefix"] == "race")
                .count()
                == 2)
                .then_some(l)
        })
        .expect("both deployments reach every replica");
        for d in list
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["prefix"] == "race")
        {
            assert_eq!(d["conflict"], d["id"] == loser.as_str(), "{d}");
        }
    }
    let table = a.ok(&["deploy", "list"]).stdout;
    assert!(table.contains("preparing (conflict)"), "{table}");
    let shown = a.ok(&["deploy", "show", &loser]).stdout;
    assert!(
        shown.contains("conflict: a concurrent deployment won"),
        "{shown}"
    );
    refused(
        &a.shoal(&["deploy", "start", &loser, "--detach"]),
        1,
        &format!(
            "deployment {loser} lost a concurrent conflict for its slot: delete it or change its prefix"
        ),
    );
}

/// The key of the member named `name`, as `p` lists it.
fn member_key(p: &Peer, name: &str) -> String {
    parse(&p.ok(&["member", "list", "-o", "json"]))
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["key"].as_str())
        .unwrap_or_else(|| panic!("no member {name}"))
        .to_string()
}

/// Every copy of the team key in `p`'s replica: (recipient, epoch).
fn key_copies(p: &Peer) -> Vec<(String, u64)> {
    api(p, "GET", "/v1/teams/crew/keys", None).1["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["recipient"].as_str().unwrap().to_string(),
                h["epoch"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The local test environment (scripts/test.sh): the env file, else the
/// process environment.
fn test_env() -> Option<BTreeMap<String, String>> {
    let vars = shoal_tests::test_env_vars();
    vars.contains_key("SHOAL_TEST_AUTH_REGISTRY")
        .then_some(vars)
}

#[test]
fn roles_runtimes_and_registry_credentials_sealed_for_every_node() {
    let (mut a, _, _) = docker_peer("a");
    start_team(&mut a);
    let mut b = Peer::new("b").unwrap();
    b.ok(&["profile", "init", "--name", "b-person"]);
    b.start().unwrap();
    let ticket = a.ok(&["team", "invite", "--role", "user"]).last_line();
    b.ok(&["team", "join", &ticket]);

    // A user may not touch registries or nodes; an admin may.
    let r = b.shoal(&["registry", "add", "x", "--kind", "unchecked"]);
    refused(&r, 1, "registry.add needs the admin role; b-person");
    refused(
        &b.shoal(&["node", "remove", "a"]),
        1,
        "node.remove needs the admin role",
    );
    // A user manages products, versions and deployments, on nodes that run
    // containers only.
    b.ok(&["product", "create", "app"]);
    b.ok(&["version", "create", "app", "1"]);
    b.ok(&["image", "add", "app", "1", "nginx:1.27"]);
    refused(
        &b.shoal(&[
            "deploy", "create", "app", "1", "--node", "b", "--prefix", "p",
        ]),
        1,
        "node b has runtime `none` and cannot run deployments: pick a docker or kubernetes node",
    );
    refused(
        &b.shoal(&[
            "deploy", "create", "app", "1", "--node", "zz", "--prefix", "p",
        ]),
        1,
        "no node \"zz\" in this team",
    );
    let id = b
        .ok(&[
            "deploy", "create", "app", "1", "--node", "a", "--prefix", "p",
        ])
        .last_line();
    assert_eq!(id.len(), 24, "{id}");
    let listed = parse(&a.ok(&["deploy", "list", "-o", "json"]));
    wait_for(WAIT, || {
        let l = parse(&a.ok(&["deploy", "list", "-o", "json"]));
        (ids_of(&l) == vec![id.clone()]).then_some(())
    })
    .unwrap_or_else(|| panic!("the deployment reaches a: {listed}"));

    concurrent_creates_mark_the_later_one_in_conflict(&a, &b);

    let Some(env) = test_env() else {
        if std::env::var_os("CI").is_some() {
            panic!("CI runs need the test registries: run scripts/test.sh");
        }
        println!(
            "skipping registry tags: no /tmp/shoal-test-env/env (start the test registries with SHOAL_TEST_ENV_ONLY=1 scripts/test.sh)"
        );
        return;
    };
    let host = &env["SHOAL_TEST_AUTH_REGISTRY"];
    let user = &env["SHOAL_TEST_REGISTRY_USER"];
    let password = &env["SHOAL_TEST_REGISTRY_PASSWORD"];
    let add = |name: &str, pw: Option<&str>| {
        let mut args = vec!["registry", "add", name, "--kind", "v2", "--url", host];
        if pw.is_some() {
            args.extend(["--user", user, "--password-stdin"]);
        }
        a.shoal_with(&args, &[], pw)
    };
    let r = add("auth", Some(&format!("{password}\n")));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains(password.as_str()), "{}", r.stdout);
    assert!(
        r.stdout.contains("made the team secrets key"),
        "the team's first secret makes its key: {}",
        r.stdout
    );
    assert_eq!(add("anon", None).code, 0);
    assert_eq!(add("wrong", Some("not-the-password")).code, 0);
    let r = a.shoal_with(
        &[
            "registry",
            "add",
            "empty",
            "--kind",
            "v2",
            "--url",
            host,
            "--user",
            user,
            "--password-stdin",
        ],
        &[],
        Some(""),
    );
    refused(&r, 2, "stdin held no password");

    // The password is sealed to both nodes: b's daemon opens its own copy.
    let regs = wait_for(WAIT, || {
        let v = parse(&b.ok(&["registry", "list", "-o", "json"]));
        (v.as_array()?.len() == 4).then_some(v)
    })
    .expect("the registries reach b");
    let auth = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "auth")
        .unwrap();
    assert_eq!(auth["password"], true);
    let mut sealed_for: Vec<&str> = auth["sealed_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    sealed_for.sort();
    assert_eq!(sealed_for, ["a", "b"]);
    assert!(!regs.to_string().contains(password.as_str()));
    for p in [&a, &b] {
        let tags = parse(&p.ok(&["registry", "tags", "auth", "shoal-test/many", "-o", "json"]));
        let tags = tags["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 120, "{tags:?}");
        assert!(tags.contains(&json!("t001")) && tags.contains(&json!("t120")));
    }
    let table = b
        .ok(&["registry", "tags", "auth", "shoal-test/many"])
        .stdout;
    assert_eq!(table.lines().count(), 121, "a header and 120 tags");
    refused(
        &b.shoal(&["registry", "tags", "wrong", "shoal-test/many"]),
        1,
        "refused the credentials",
    );
    refused(
        &b.shoal(&["registry", "tags", "anon", "shoal-test/many"]),
        1,
        "needs credentials to list the tags",
    );
    refused(
        &b.shoal(&["registry", "tags", "auth", "shoal-test/nothing-here"]),
        1,
        "has no image shoal-test/nothing-here",
    );

    // A node that joins later gets the team secrets key from a node that
    // holds it, and with it the registry's password.
    let mut c = Peer::new("c").unwrap();
    c.ok(&["profile", "init", "--name", "c-person"]);
    c.start().unwrap();
    let ticket = a.ok(&["team", "invite", "--role", "user"]).last_line();
    c.ok(&["team", "join", &ticket]);
    wait_for(WAIT, || {
        let v = parse(&c.ok(&["registry", "list", "-o", "json"]));
        let auth = v.as_array()?.iter().find(|r| r["name"] == "auth")?;
        auth["sealed_for"]
            .as_array()?
            .contains(&json!("c"))
            .then_some(())
    })
    .expect("the team key is sealed to c");
    let tags = parse(&c.ok(&["registry", "tags", "auth", "shoal-test/many", "-o", "json"]));
    assert_eq!(tags["tags"].as_array().unwrap().len(), 120, "{tags}");
    let audit = parse(&a.ok(&["audit", "list", "--action", "key.seal", "-o", "json"]));
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["what"]
            .as_str()
            .unwrap_or("")
            .contains("node c")
            && e["author_name"].as_str().unwrap_or("").starts_with("node ")),
        "a node sealed the key to c: {audit}"
    );
    // A second password uses the same key: no new one is made.
    let r = add("again", Some(&format!("{password}\n")));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !r.stdout.contains("made the team secrets key"),
        "{}",
        r.stdout
    );
    wait_for(WAIT, || {
        (c.shoal(&["registry", "tags", "again", "shoal-test/many", "-o", "json"])
            .code
            == 0)
            .then_some(())
    })
    .expect("c opens a password added after it joined");

    // Removing a node rotates the team key: the new one is sealed to those
    // who remain, and every password again to it.
    refused(
        &b.shoal(&["team", "rotate-key"]),
        1,
        "key.rotate needs the admin role",
    );
    let r = a.ok(&["node", "remove", "c"]);
    for want in [
        "removed node c",
        "rotated the team secrets key to epoch 2: sealed to 3 node(s) and admin(s)",
        "the password(s) of registry",
        "node c could read these passwords until now",
    ] {
        assert!(r.stdout.contains(want), "{want:?} in {}", r.stdout);
    }
    assert!(!r.stdout.contains(password.as_str()));
    let with_password = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["password"] == true)
            .cloned()
            .collect()
    };
    wait_for(WAIT, || {
        let v = parse(&b.ok(&["registry", "list", "-o", "json"]));
        with_password(&v)
            .iter()
            .all(|r| {
                let mut holders: Vec<&str> = r["sealed_for"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                holders.sort_unstable();
                r["key_epoch"] == 2 && holders == ["a", "b"]
            })
            .then_some(())
    })
    .expect("every password is sealed to the epoch-2 key, held by a and b");
    for p in [&a, &b] {
        for name in ["auth", "again"] {
            let tags = parse(&p.ok(&["registry", "tags", name, "shoal-test/many", "-o", "json"]));
            assert_eq!(tags["tags"].as_array().unwrap().len(), 120, "{tags}");
        }
    }
    let audit = parse(&b.ok(&["audit", "list", "--action", "key.rotate", "-o", "json"]));
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["what"]
            .as_str()
            .unwrap_or("")
            .starts_with("rotated the team key to epoch 2")),
        "{audit}"
    );
    // The owner holds the new key too, sealed to its profile's encryption
    // key; c holds nothing any more.
    let holders = key_copies(&a);
    let owner_key = member_key(&a, "a-person");
    assert!(
        holders.contains(&(format!("member:{owner_key}"), 2)),
        "{holders:?}"
    );
    assert_eq!(
        holders.iter().filter(|(_, e)| *e == 2).count(),
        3,
        "{holders:?}"
    );
    // An explicit rotation makes epoch 3.
    let r = a.ok(&["team", "rotate-key"]);
    assert!(r.stdout.contains("epoch 3"), "{}", r.stdout);

    // A password changed at the registry is changed in the team with
    // `registry update`; a wrong one is refused by the registry.
    let update = |pw: &str| {
        a.shoal_with(
            &[
                "registry",
                "update",
                "auth",
                "--user",
                user,
                "--password-stdin",
            ],
            &[],
            Some(pw),
        )
    };
    let r = update("not-it");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("updated registry auth"), "{}", r.stdout);
    wait_for(WAIT, || {
        let r = b.shoal(&["registry", "tags", "auth", "shoal-test/many"]);
        r.stderr.contains("refused the credentials").then_some(())
    })
    .expect("b uses the updated (wrong) password");
    assert_eq!(update(password).code, 0);
    wait_for(WAIT, || {
        (b.shoal(&["registry", "tags", "auth", "shoal-test/many"])
            .code
            == 0)
            .then_some(())
    })
    .expect("b uses the updated password");
    refused(
        &a.shoal(&["registry", "update", "auth"]),
        1,
        "nothing to change",
    );
    let r = a.ok(&["registry", "update", "auth", "--no-credentials"]);
    assert!(r.stdout.contains("updated registry auth"), "{}", r.stdout);
    wait_for(WAIT, || {
        let r = b.shoal(&["registry", "tags", "auth", "shoal-test/many"]);
        r.stderr.contains("needs credentials").then_some(())
    })
    .expect("without credentials the registry asks for them");
    let audit = parse(&a.ok(&["audit", "list", "--action", "registry.update", "-o", "json"]));
    assert_eq!(audit.as_array().unwrap().len(), 3, "{audit}");
    assert!(!audit.to_string().contains(password.as_str()));

    // A user made admin is handed the key by a node; made a user again, a
    // rotation leaves it without any copy.
    let b_key = member_key(&a, "b-person");
    let copies_of_b = || -> Vec<u64> {
        key_copies(&a)
            .into_iter()
            .filter(|(r, _)| *r == format!("member:{b_key}"))
            .map(|(_, epoch)| epoch)
            .collect()
    };
    assert!(copies_of_b().is_empty());
    a.ok(&["member", "role", "b-person", "admin"]);
    wait_for(WAIT, || (copies_of_b() == vec![3]).then_some(()))
        .expect("a node seals the current key to the new admin");
    let r = a.ok(&["member", "role", "b-person", "user"]);
    assert!(
        r.stdout.contains("rotated the team secrets key to epoch 4"),
        "{}",
        r.stdout
    );
    assert!(copies_of_b().is_empty());
}

#[test]
fn secret_values_never_leak() {
    let (mut a, _, enc) = docker_peer("n1");
    a.log = Some("debug".into());
    start_team(&mut a);
    let node = a.ok(&["node", "show", "n1", "-o", "json"]);
    assert_eq!(parse(&node)["enc_key"], enc.public_hex());

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let from_env = format!("canary-env-{stamp}");
    let from_file = format!("canary-file-{stamp}");
    let plain = format!("plain-env-{stamp}");
    a.ok(&["product", "create", "app"]);
    a.ok(&["version", "create", "app", "1.0"]);
    a.ok(&["image", "add", "app", "1.0", "nginx:1.27", "--name", "web"]);
    a.ok(&[
        "image",
        "config",
        "app",
        "1.0",
        "web",
        "--secret",
        "API_TOKEN",
        "--secret",
        "DB_PASSWORD",
    ]);
    let file = a.user.config_dir().join("secrets.env");
    std::fs::write(&file, format!("# secrets\nDB_PASSWORD='{from_file}'\n")).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let args = [
        "deploy",
        "create",
        "app",
        "1.0",
        "--node",
        "n1",
        "--prefix",
        "prod",
        "--secret",
        "API_TOKEN",
        "--secret-file",
        &file_arg,
        "--env",
        &format!("PLAIN={plain}"),
    ];
    // While the CLI runs, no process's arguments hold a value.
    let mut cmd = a.user.command(&args);
    cmd.env("API_TOKEN", &from_env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    loop {
        let done = child.try_wait().unwrap().is_some();
        let out = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !text.contains(&from_env) && !text.contains(&from_file),
            "{text}"
        );
        if done {
            break;
        }
    }
    let created = Run::from(child.wait_with_output().unwrap());
    assert_eq!(created.code, 0, "{created:?}");
    let id = created.last_line();

    // The node opens both values; they are sealed to it.
    let sealed = api(
        &a,
        "GET",
        &format!("/v1/teams/crew/deployments/{id}/sealed"),
        None,
    )
    .1;
    let mut d: shoal_protocol::model::Deployment = {
        let full = show(&a, &id);
        serde_json::from_value(json!({
            "id": id, "product": full["product_id"], "version": full["version_id"],
            "node": full["node_key"], "prefix": "prod", "note": "", "protected": false,
            "env": {}, "secrets": sealed["secrets"], "instances": {}, "status": "preparing",
            "tries": 0, "created": {"ms": 0, "c": 0}, "created_by": "", "reason": null,
            "finished_try": 0, "containers": {}, "events": [], "frozen": null,
        }))
        .unwrap()
    };
    let open = shoal_node::secrets::open_deployment_secrets(&enc, &d.node.clone(), &d).unwrap();
    assert_eq!(open["API_TOKEN"], from_env);
    assert_eq!(open["DB_PASSWORD"], from_file);
    d.node = "someone-else".into();
    assert!(shoal_node::secrets::open_deployment_secrets(&enc, "someone-else", &d).is_err());

    // A registry password, through its first seal, a rotation of the team
    // key (the node opens and seals it again) and an update.
    let reg_first = format!("canary-registry-{stamp}");
    let reg_second = format!("canary-registry-again-{stamp}");
    let mut outputs = vec![created.stdout, created.stderr];
    for (args, pw) in [
        (
            &[
                "registry",
                "add",
                "private",
                "--kind",
                "v2",
                "--url",
                "127.0.0.1:9",
                "--user",
                "u",
                "--password-stdin",
            ][..],
            Some(&reg_first),
        ),
        (&["team", "rotate-key"][..], None),
        (
            &[
                "registry",
                "update",
                "private",
                "--user",
                "u",
                "--password-stdin",
            ][..],
            Some(&reg_second),
        ),
    ] {
        let r = a.shoal_with(args, &[], pw.map(String::as_str));
        assert_eq!(r.code, 0, "{r:?}");
        outputs.push(r.stdout);
        outputs.push(r.stderr);
    }

    // Never in any output, JSON included.
    a.ok(&["deploy", "start", &id, "--detach"]);
    for args in [
        &["deploy", "show", &id][..],
        &["deploy", "show", &id, "-o", "json"],
        &["deploy", "list", "-o", "json"],
        &["version", "show", "app", "1.0", "-o", "json"],
        &[
            "image", "config", "app", "1.0", "web", "--show", "-o", "json",
        ],
        &["audit", "list", "-o", "json"],
        &["registry", "list", "-o", "json"],
    ] {
        let r = a.ok(args);
        outputs.push(r.stdout);
        outputs.push(r.stderr);
    }
    let all = outputs.join("\n");
    assert!(all.contains(&plain), "the plain env value shows");
    assert!(all.contains("API_TOKEN") && all.contains("DB_PASSWORD"));
    assert!(
        !all.contains(&from_env) && !all.contains(&from_file),
        "{all}"
    );
    assert!(all.contains("rotated the team secrets key to epoch 2"));
    assert!(!all.contains(&reg_first) && !all.contains(&reg_second));

    // Nor in the daemon's debug log, nor in the store's bytes (where the
    // plain env value, stored alike, is found).
    a.stop().unwrap();
    let log = std::fs::read_to_string(a.log_file()).unwrap();
    assert!(log.contains("DEBUG"), "the daemon logged at debug level");
    assert!(!log.contains(&from_env) && !log.contains(&from_file));
    assert!(!log.contains(&reg_first) && !log.contains(&reg_second));
    let store = std::fs::read(a.data.path().join("shoal.redb")).unwrap();
    let found = |needle: &str| store.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(found(&plain), "the store holds the plain env value as text");
    assert!(
        !found(&from_env) && !found(&from_file),
        "a secret is in the store"
    );
    assert!(
        !found(&reg_first) && !found(&reg_second),
        "a registry password is in the store"
    );
}

#[test]
fn a_compose_file_becomes_a_product_version() {
    let mut a = Peer::new("a").unwrap();
    start_team(&mut a);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compose/shop.yml");
    let file = file.to_string_lossy().into_owned();

    // Images from a registry the team does not have are refused.
    let r = a.shoal(&["product", "import", "shop", "--compose", &file]);
    refused(
        &r,
        1,
        "no registry of this team serves 127.0.0.1:5000: add it with `shoal registry add NAME --kind v2 --url 127.0.0.1:5000`",
    );
    assert!(
        parse(&a.ok(&["product", "list", "-o", "json"]))
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );
    a.ok(&[
        "registry",
        "add",
        "local",
        "--kind",
        "v2",
        "--url",
        "127.0.0.1:5000",
    ]);
    let r = a.ok(&["product", "import", "shop", "--compose", &file]);
    assert!(
        r.stdout.contains("imported 6 service(s) into shop 1.0.0"),
        "{}",
        r.stdout
    );
    // Every key not imported is reported.
    for w in [
        "service web: environment: SENTRY_DSN has no value",
        "service web: env_file .env is not imported",
        "service web: depends_on.db: condition service_healthy is not supported",
        "service proxy: volumes: bind mount ./nginx/conf.d:/etc/nginx/conf.d:ro is not supported",
        "service worker: restart: the retry count 3 is not supported",
        "service db: container_name is not imported",
        "service db: networks is not supported",
        "service metrics: privileged is not supported",
        "networks are not imported",
        "top-level secrets is not supported",
        "the options of volume pgdata are not supported",
    ] {
        assert!(r.stderr.contains(w), "{w:?} missing:\n{}", r.stderr);
    }

    let v = parse(&a.ok(&["version", "show", "shop", "1.0.0", "-o", "json"]));
    assert_eq!(v["kind"], "incremental");
    assert_eq!(v["default"], true);
    let images = v["images"].as_array().unwrap();
    let order: Vec<&str> = images.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["db", "cache", "web", "proxy", "worker", "metrics"]);
    let by = |n: &str| images.iter().find(|i| i["name"] == n).unwrap().clone();

    let web = by("web");
    assert_eq!(
        (web["registry"].as_str(), web["ref"].as_str()),
        (Some("local"), Some("shoal-test/httpd:latest"))
    );
    let c = &web["config"];
    assert_eq!(c["env"]["DATABASE_URL"], "postgres://shop@db:5432/shop");
    assert_eq!(c["env"]["APP_VERSION"], "{{version}}");
    assert_eq!(c["args"], json!(["httpd", "-f", "-p", "8080"]));
    assert_eq!(c["restart"], "always");
    assert_eq!(c["user"], "1000:1000");
    assert_eq!(c["working_dir"], "/srv/app");
    assert_eq!(
        c["health"],
        json!({
            "command": ["CMD", "wget", "-q", "-O-", "http://localhost:8080/health"],
            "interval_ms": 15000, "timeout_ms": 3000, "retries": 5, "start_period_ms": 20000,
        })
    );

    let proxy = by("proxy");
    assert_eq!(proxy["registry"], "hub");
    assert_eq!(proxy["ref"], "nginx:1.27-alpine");
    let c = &proxy["config"];
    assert_eq!(
        c["ports"],
        json!([
            {"internal": 8080, "external": 80, "protocol": "tcp"},
            {"internal": 8443, "external": 443, "protocol": "tcp"},
        ])
    );
    assert_eq!(
        c["volumes"],
        json!([{"name": "proxy-cache", "path": "/var/cache/nginx", "kind": "rw", "size": null}])
    );
    assert_eq!(c["labels"]["com.example.tier"], "edge");
    assert_eq!(c["restart"], "unless-stopped");
    assert_eq!(c["log_driver"], "json-file");
    assert_eq!(c["log_options"]["max-size"], "10m");

    let worker = by("worker")["config"].clone();
    assert_eq!(
        worker["args"],
        json!(["sh", "-c", "while true; do echo \"tick\"; sleep 30; done"])
    );
    assert_eq!(worker["env"]["CONCURRENCY"], "4");
    assert_eq!(worker["env"]["DEBUG"], "false");
    assert_eq!(worker["restart"], "on-failure");
    assert_eq!(
        (worker["memory"].as_str(), worker["cpu"].as_str()),
        (Some("256m"), Some("0.5"))
    );

    let db = by("db")["config"].clone();
    assert_eq!(db["env"]["POSTGRES_DB"], "shop");
    assert_eq!(
        db["volumes"],
        json!([
            {"name": "pgdata", "path": "/var/lib/postgresql/data", "kind": "rw", "size": null},
            {"name": "tmpfs", "path": "/run/postgresql", "kind": "tmpfs", "size": null},
        ])
    );
    assert_eq!(
        db["health"]["command"],
        json!(["CMD-SHELL", "pg_isready -U shop"])
    );

    let cache = by("cache")["config"].clone();
    assert_eq!(cache["command"], json!(["redis-server"]));
    assert_eq!(cache["args"], json!(["--appendonly", "yes"]));
    assert_eq!(
        cache["ports"],
        json!([{"internal": 6379, "external": null, "protocol": "tcp"}])
    );

    let metrics = by("metrics")["config"].clone();
    assert_eq!(
        metrics["ports"][0],
        json!({"internal": 9125, "external": 9125, "protocol": "udp"})
    );
    assert_eq!(
        metrics["port_ranges"],
        json!([{"internal_from": 10000, "internal_to": 10002, "external_from": 10000, "external_to": 10002, "protocol": "tcp"}])
    );

    // Importing again adds another version to the same product.
    a.ok(&[
        "product",
        "import",
        "shop",
        "--compose",
        &file,
        "--version",
        "1.1.0",
    ]);
    let versions = parse(&a.ok(&["version", "list", "shop", "-o", "json"]));
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let r = a.shoal(&["product", "import", "shop", "--compose", "/nonexistent.yml"]);
    refused(&r, 1, "cannot read /nonexistent.yml");
}
