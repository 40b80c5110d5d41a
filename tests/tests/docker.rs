//! Deployments executed for real: two daemons on 127.0.0.1, `a` (runtime
//! `none`, a member's laptop) and `b` (runtime `docker`, against this
//! machine's Docker engine). Everything is done from `a`'s CLI; what runs
//! on `b` is checked through the Docker engine itself (`docker inspect`)
//! and by talking to the published HTTP port.
//!
//! Images come from the local registry with htpasswd auth
//! (`scripts/test.sh`, `/tmp/shoal-test-env/env`), so a node that did not
//! open the registry's sealed password could not pull them. Every run uses
//! prefixes of its own, and removes what it made, even when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{Follower, Peer, Run, WAIT, form_team, wait_for};

/// Long enough for pulls and the runtime's settle times on a busy machine.
const DEPLOY_WAIT: Duration = Duration::from_secs(240);

/// The test environment written by `scripts/test.sh`, or `None` (the test
/// skips, except in CI).
fn test_env() -> Option<BTreeMap<String, String>> {
    let vars = shoal_tests::test_env_vars();
    let ok = vars.contains_key("SHOAL_TEST_AUTH_REGISTRY")
        && vars.contains_key("SHOAL_TEST_REGISTRY_PASSWORD")
        && docker(&["version"]).is_some();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("CI runs need Docker and the test registries: run scripts/test.sh");
        }
        println!(
            "skipping: no Docker engine or no /tmp/shoal-test-env/env (run SHOAL_TEST_ENV_ONLY=1 scripts/test.sh)"
        );
        return None;
    }
    Some(vars)
}

/// `docker ARGS`; its stdout when it succeeds.
fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker inspect NAME`, or `None` when there is no such container.
fn inspect(name: &str) -> Option<Value> {
    let text = docker(&["inspect", "--type", "container", name])?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get(0).cloned()
}

/// A container's environment as a map.
fn env_of(c: &Value) -> BTreeMap<String, String> {
    c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn label<'a>(c: &'a Value, key: &str) -> &'a str {
    c["Config"]["Labels"][key].as_str().unwrap_or_default()
}

fn running(c: &Value) -> bool {
    c["State"]["Running"].as_bool() == Some(true)
}

/// One HTTP GET to 127.0.0.1:`port`; the response, when there is one.
fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/").then_some(body)
}

/// A TCP port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Removes the containers, networks and volumes of its prefixes when
/// dropped (so a failing run leaves nothing behind either).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let filter = format!("label=io.shoal.prefix={p}");
            if let Some(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
                for id in ids.split_whitespace() {
                    let _ = docker(&["rm", "-f", "-v", id]);
                }
            }
            if let Some(names) = docker(&["ps", "-aq", "--filter", &format!("name=^{p}-")]) {
                for id in names.split_whitespace() {
                    let _ = docker(&["rm", "-f", "-v", id]);
                }
            }
            let _ = docker(&["network", "rm", &format!("shoal-{p}")]);
            if let Some(vols) = docker(&["volume", "ls", "-q"]) {
                for v in vols.split_whitespace() {
                    if v.starts_with(&format!("{p}-")) {
                        let _ = docker(&["volume", "rm", "-f", v]);
                    }
                }
            }
        }
    }
}

fn parse(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

fn show(a: &Peer, id: &str) -> Value {
    parse(&a.ok(&["deploy", "show", id, "-o", "json"]))
}

fn status(a: &Peer, id: &str) -> String {
    show(a, id)["status"].as_str().unwrap().to_string()
}

/// Waits until `a` sees deployment `id` in `want`.
fn wait_status(a: &Peer, id: &str, want: &str) -> Value {
    wait_for(WAIT, || {
        let d = show(a, id);
        (d["status"] == want).then_some(d)
    })
    .unwrap_or_else(|| panic!("deployment {id} never became {want}: {}", show(a, id)))
}

/// `a` (runtime none) and `b` (runtime docker) in team `crew`, with the
/// authenticated test registry added from `a` (its password sealed to both).
fn setup(env: &BTreeMap<String, String>) -> (Peer, Peer) {
    setup_with(env, &[])
}

/// [`setup`] with more `node run` arguments for both daemons.
fn setup_with(env: &BTreeMap<String, String>, extra: &[&str]) -> (Peer, Peer) {
    let mut a = Peer::new("a").unwrap();
    let mut b = Peer::new("b").unwrap();
    b.runtime = "docker".into();
    for p in [&mut a, &mut b] {
        p.extra = extra.iter().map(|s| s.to_string()).collect();
    }
    let mut peers = vec![a, b];
    form_team(&mut peers).unwrap();
    let b = peers.pop().unwrap();
    let a = peers.pop().unwrap();
    // b is a node of the team (as seen from a) before the password is sealed.
    wait_for(WAIT, || {
        let nodes = parse(&a.ok(&["node", "list", "-o", "json"]));
        (nodes.as_array()?.len() == 2).then_some(())
    })
    .expect("a sees b's node");
    let r = a.shoal_with(
        &[
            "registry",
            "add",
            "auth",
            "--kind",
            "v2",
            "--url",
            &env["SHOAL_TEST_AUTH_REGISTRY"],
            "--user",
            &env["SHOAL_TEST_REGISTRY_USER"],
            "--password-stdin",
        ],
        &[],
        Some(&format!("{}\n", env["SHOAL_TEST_REGISTRY_PASSWORD"])),
    );
    assert_eq!(r.code, 0, "{r:?}");
    (a, b)
}

/// A shell command that ends at once on SIGTERM (a shell as PID 1 ignores
/// it otherwise, and every replacement would wait for the stop timeout).
fn sh(script: &str) -> String {
    format!("trap 'exit 0' TERM; {script}")
}

/// Sets `args` (the container's command line) with `image config`.
fn set_cmd(a: &Peer, product: &str, version: &str, image: &str, args: &[&str], extra: &[&str]) {
    let mut all = vec!["image", "config", product, version, image];
    for x in args {
        all.extend(["--cmd", x]);
    }
    all.extend_from_slice(extra);
    a.ok(&all);
}

/// `deploy start ID --wait`.
fn start_wait(a: &Peer, id: &str) -> Run {
    let mut cmd = a
        .user
        .command(&["deploy", "start", id, "--wait", "--timeout", "4m"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Run::from(cmd.output().unwrap())
}

#[test]
fn a_member_deploys_rolls_back_and_manages_containers_on_a_docker_node() {
    let Some(env) = test_env() else { return };
    let prefix = unique("prod");
    let rolling_prefix = unique("edge");
    let _cleanup = Cleanup(vec![prefix.clone(), rolling_prefix.clone()]);
    let (a, b) = setup(&env);
    let registry = &env["SHOAL_TEST_AUTH_REGISTRY"];
    let port = free_port();
    let token = format!("token-{}", unique("s"));

    // Product shop 1.0.0: a web server and a worker.
    a.ok(&["product", "create", "shop"]);
    a.ok(&["version", "create", "shop", "1.0.0"]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.0.0",
        &format!("{registry}/shoal-test/httpd:1.0"),
        "--name",
        "web",
    ]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.0.0",
        &format!("{registry}/shoal-test/busybox:1.0"),
        "--name",
        "worker",
    ]);
    let images = parse(&a.ok(&["image", "list", "shop", "1.0.0", "-o", "json"]));
    assert!(
        images
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["registry"] == "auth"),
        "{images}"
    );
    set_cmd(
        &a,
        "shop",
        "1.0.0",
        "web",
        &[
            "sh",
            "-c",
            &sh("httpd -f -p 8080 -h /www & wait $!; wait $!"),
        ],
        &["--port", &format!("{port}:8080"), "--env", "ROLE=web"],
    );
    set_cmd(
        &a,
        "shop",
        "1.0.0",
        "worker",
        &[
            "sh",
            "-c",
            &sh(
                "echo worker $GREETING up; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1 & wait $!; done",
            ),
        ],
        &[
            "--env",
            "GREETING=hello {{version}}",
            "--volume",
            "data:/data",
            "--secret",
            "API_TOKEN",
        ],
    );

    let created = a.shoal_with(
        &[
            "deploy",
            "create",
            "shop",
            "1.0.0",
            "--node",
            "b",
            "--prefix",
            &prefix,
            "--secret",
            "API_TOKEN",
        ],
        &[("API_TOKEN", &token)],
        None,
    );
    assert_eq!(created.code, 0, "{created:?}");
    let d1 = created.last_line();
    // Layers: a deployment-wide env and an override of one container.
    a.ok(&["deploy", "update", &d1, "--env", "REGION=eu"]);
    a.ok(&["deploy", "config", &d1, "worker", "--env", "STAGE=canary"]);
    let r = start_wait(&a, &d1);
    assert_eq!(r.code, 0, "deploy start --wait: {r:?}\n{}", show(&a, &d1));
    assert!(r.stdout.contains("successful"), "{}", r.stdout);
    assert_eq!(status(&a, &d1), "successful");

    // What runs on b, as the engine sees it.
    let team = a.team().unwrap();
    let team_id = team["id"].as_str().unwrap_or_default().to_string();
    let web_name = format!("{prefix}-web");
    let worker_name = format!("{prefix}-worker");
    let web = inspect(&web_name).expect("the web container exists");
    let worker = inspect(&worker_name).expect("the worker container exists");
    for (c, name) in [(&web, "web"), (&worker, "worker")] {
        assert!(running(c), "{name} runs: {}", c["State"]);
        assert_eq!(label(c, "io.shoal.prefix"), prefix);
        assert_eq!(label(c, "io.shoal.deployment"), d1);
        assert_eq!(label(c, "io.shoal.version"), "1.0.0");
        assert_eq!(label(c, "io.shoal.try"), "1");
        assert_eq!(label(c, "io.shoal.container"), name);
        if !team_id.is_empty() {
            assert_eq!(label(c, "io.shoal.team"), team_id);
        } else {
            assert!(!label(c, "io.shoal.team").is_empty());
        }
        let nets = c["NetworkSettings"]["Networks"].as_object().unwrap();
        assert!(nets.contains_key(&format!("shoal-{prefix}")), "{nets:?}");
    }
    let wenv = env_of(&worker);
    assert_eq!(wenv["GREETING"], "hello 1.0.0");
    assert_eq!(wenv["API_TOKEN"], token, "the secret reaches the container");
    assert_eq!(wenv["REGION"], "eu");
    assert_eq!(
        wenv["STAGE"], "canary",
        "the instance override reaches its container"
    );
    assert_eq!(env_of(&web)["ROLE"], "web");
    assert_eq!(env_of(&web)["REGION"], "eu");
    assert!(
        !env_of(&web).contains_key("STAGE"),
        "only worker is overridden"
    );
    assert!(
        worker["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["Destination"] == "/data" && m["Name"] == format!("{prefix}-data")),
        "{}",
        worker["Mounts"]
    );
    let bound = &web["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"];
    assert_eq!(bound.as_str(), Some(port.to_string().as_str()), "{bound}");
    let body = wait_for(WAIT, || http_get(port)).expect("the web port answers");
    assert!(body.contains("hello from shoal-test/httpd:1.0"), "{body}");
    // The secret's value shows nowhere on a's side.
    let shown = a.ok(&["deploy", "show", &d1]).stdout;
    assert!(
        shown.contains("API_TOKEN") && !shown.contains(&token),
        "{shown}"
    );
    let inspected = a.ok(&["container", "inspect", "b", &worker_name]).stdout;
    assert!(!inspected.contains(&token), "inspect redacts: {inspected}");

    // 1.1.0 with a changed env: 1.0.0's deployment becomes obsolete.
    a.ok(&["version", "increase", "shop", "1.0.0", "1.1.0"]);
    a.ok(&[
        "image",
        "config",
        "shop",
        "1.1.0",
        "worker",
        "--env",
        "GREETING=bonjour {{version}}",
    ]);
    let created = a.shoal_with(
        &[
            "deploy",
            "create",
            "shop",
            "1.1.0",
            "--node",
            "b",
            "--prefix",
            &prefix,
            "--secret",
            "API_TOKEN",
        ],
        &[("API_TOKEN", &token)],
        None,
    );
    assert_eq!(created.code, 0, "{created:?}");
    let d2 = created.last_line();
    let r = start_wait(&a, &d2);
    assert_eq!(r.code, 0, "{r:?}\n{}", show(&a, &d2));
    assert_eq!(status(&a, &d2), "successful");
    wait_status(&a, &d1, "obsolete");
    let worker = inspect(&worker_name).unwrap();
    assert!(running(&worker));
    assert_eq!(env_of(&worker)["GREETING"], "bonjour 1.1.0");
    assert_eq!(env_of(&worker)["API_TOKEN"], token);
    assert!(
        !env_of(&worker).contains_key("STAGE"),
        "{:?}",
        env_of(&worker)
    );
    assert_eq!(label(&worker, "io.shoal.deployment"), d2);
    assert_eq!(label(&worker, "io.shoal.version"), "1.1.0");
    assert!(wait_for(WAIT, || http_get(port)).is_some());

    // Rollback: 1.0.0 runs again, exactly as frozen; 1.1.0's is downgraded.
    let r = a.shoal(&[
        "deploy",
        "rollback",
        "shop",
        "--node",
        "b",
        "--prefix",
        &prefix,
        "--timeout",
        "4m",
    ]);
    assert_eq!(r.code, 0, "{r:?}\n{}", show(&a, &d1));
    assert!(r.stdout.contains("to version 1.0.0"), "{}", r.stdout);
    assert_eq!(status(&a, &d1), "successful");
    wait_status(&a, &d2, "downgraded");
    let worker = inspect(&worker_name).unwrap();
    assert!(running(&worker));
    assert_eq!(env_of(&worker)["GREETING"], "hello 1.0.0");
    assert_eq!(env_of(&worker)["API_TOKEN"], token);
    assert_eq!(
        env_of(&worker)["STAGE"],
        "canary",
        "the frozen config keeps the override"
    );
    assert_eq!(label(&worker, "io.shoal.deployment"), d1);
    assert_eq!(label(&worker, "io.shoal.version"), "1.0.0");
    assert_eq!(label(&worker, "io.shoal.try"), "2");
    let body = wait_for(WAIT, || http_get(port)).expect("the web port answers again");
    assert!(body.contains("hello from shoal-test/httpd:1.0"), "{body}");

    // A rolling version redeploys in place.
    a.ok(&["product", "create", "tools", "--simple"]);
    a.ok(&[
        "image",
        "add",
        "tools",
        "rolling",
        &format!("{registry}/shoal-test/busybox:1.0"),
        "--name",
        "cron",
    ]);
    set_cmd(
        &a,
        "tools",
        "rolling",
        "cron",
        &[
            "sh",
            "-c",
            &sh("echo cron $MODE; while true; do sleep 1 & wait $!; done"),
        ],
        &["--env", "MODE=one"],
    );
    let d3 = a
        .ok(&[
            "deploy",
            "create",
            "tools",
            "rolling",
            "--node",
            "b",
            "--prefix",
            &rolling_prefix,
        ])
        .last_line();
    let r = start_wait(&a, &d3);
    assert_eq!(r.code, 0, "{r:?}\n{}", show(&a, &d3));
    let cron_name = format!("{rolling_prefix}-cron");
    let first = inspect(&cron_name).unwrap();
    assert_eq!(env_of(&first)["MODE"], "one");
    a.ok(&[
        "image", "config", "tools", "rolling", "cron", "--env", "MODE=two",
    ]);
    // `deploy logs --follow` on a streams the redeploy from b as it happens.
    let mut follower = Follower::spawn(&a.user, &["deploy", "logs", &d3, "--follow"], &[]).unwrap();
    follower
        .until(DEPLOY_WAIT, |l, _| {
            l.iter().any(|x| x == &format!("{cron_name} | cron one"))
        })
        .unwrap();
    let r = start_wait(&a, &d3);
    assert_eq!(r.code, 0, "{r:?}\n{}", show(&a, &d3));
    let d = show(&a, &d3);
    assert_eq!(
        (d["status"].as_str(), d["tries"].as_u64()),
        (Some("successful"), Some(2))
    );
    follower
        .until(DEPLOY_WAIT, |l, _| {
            l.iter().any(|x| x == "try 2 | try 2: successful")
                && l.iter().any(|x| x == &format!("{cron_name} | cron two"))
        })
        .unwrap();
    let seen = follower.seen.clone();
    drop(follower);
    for want in ["try 1 | try 1: started", "try 2 | try 2: started"] {
        assert!(seen.iter().any(|x| x == want), "{want} in {seen:#?}");
    }
    assert!(
        seen.iter().any(|x| x.starts_with("try 2 | Create cron")),
        "{seen:#?}"
    );
    let second = inspect(&cron_name).unwrap();
    assert!(running(&second));
    assert_ne!(
        first["Id"], second["Id"],
        "a new container replaced the old one"
    );
    assert_eq!(env_of(&second)["MODE"], "two");
    assert_eq!(label(&second, "io.shoal.deployment"), d3);
    assert_eq!(label(&second, "io.shoal.try"), "2");
    // The other prefix was not touched.
    assert!(running(&inspect(&worker_name).unwrap()));

    // Container commands from a act on b's containers.
    let listed = parse(&a.ok(&["container", "list", "b", "--prefix", &prefix, "-o", "json"]));
    let mut names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [web_name.as_str(), worker_name.as_str()]);
    // The table shows the published port as docker ps does.
    let table = a
        .ok(&["container", "list", "b", "--prefix", &prefix])
        .stdout;
    assert!(table.contains(&format!(":{port}->8080/tcp")), "{table}");
    let logs = a
        .ok(&["container", "logs", "b", &worker_name, "--tail", "2000"])
        .stdout;
    assert!(logs.contains("worker hello 1.0.0 up"), "{logs}");
    // Without --follow, deploy logs prints every try's progress and the
    // containers' last lines.
    let logs = a.ok(&["deploy", "logs", &d1]).stdout;
    for want in [
        "try 1 | try 1: successful".to_string(),
        "try 2 | try 2: successful".to_string(),
        format!("{worker_name} | worker hello 1.0.0 up"),
    ] {
        assert!(logs.lines().any(|l| l == want), "{want} in {logs}");
    }
    // container logs --follow streams each new line once, in order.
    let mut follower = Follower::spawn(
        &a.user,
        &["container", "logs", "b", &worker_name, "-f", "--tail", "1"],
        &[],
    )
    .unwrap();
    let ticks = |l: &[String]| -> Vec<u64> {
        l.iter()
            .filter_map(|x| x.strip_prefix("tick ")?.parse().ok())
            .collect()
    };
    follower
        .until(DEPLOY_WAIT, |l, _| ticks(l).len() >= 4)
        .unwrap();
    let seen = follower.seen.clone();
    drop(follower);
    let t = ticks(&seen);
    assert!(
        t.windows(2).all(|w| w[1] == w[0] + 1),
        "ticks in order, none twice or lost: {t:?}"
    );

    a.ok(&["container", "stop", "b", &worker_name]);
    assert!(!running(&inspect(&worker_name).unwrap()));
    a.ok(&["container", "start", "b", &worker_name]);
    assert!(running(&inspect(&worker_name).unwrap()));
    let before = inspect(&web_name).unwrap()["State"]["StartedAt"].clone();
    a.ok(&["container", "restart", "b", &web_name]);
    let after = inspect(&web_name).unwrap();
    assert!(running(&after));
    assert_ne!(
        after["State"]["StartedAt"], before,
        "the web container restarted"
    );
    assert!(wait_for(WAIT, || http_get(port)).is_some());
    let audit = parse(&a.ok(&[
        "audit",
        "list",
        "--action",
        "container.command",
        "-o",
        "json",
    ]));
    let entries = audit.as_array().unwrap();
    assert_eq!(entries.len(), 3, "{audit}");
    let b_key = parse(&a.ok(&["node", "show", "b", "-o", "json"]))["key"]
        .as_str()
        .unwrap()
        .to_string();
    for e in entries {
        assert_eq!(e["author_name"], "a-person", "{e}");
        assert_eq!(e["status"], "applied", "{e}");
        assert!(
            e["targets"]
                .as_array()
                .unwrap()
                .contains(&Value::from(b_key.clone())),
            "{e}"
        );
    }
    let what: Vec<&str> = entries
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        what,
        [
            format!("stop container {worker_name} on b"),
            format!("start container {worker_name} on b"),
            format!("restart container {web_name} on b"),
        ],
        "{audit}"
    );
    let table = a.ok(&["audit", "list", "--action", "container.command"]);
    assert!(
        table
            .stdout
            .contains(&format!("restart container {web_name} on b")),
        "{}",
        table.stdout
    );

    drop(b);
}

#[test]
fn failures_and_a_killed_node_end_in_a_definite_state() {
    let Some(env) = test_env() else { return };
    let bad_prefix = unique("bad");
    let kill_prefix = unique("kill");
    let _cleanup = Cleanup(vec![bad_prefix.clone(), kill_prefix.clone()]);
    let (a, mut b) = setup(&env);
    let registry = &env["SHOAL_TEST_AUTH_REGISTRY"];

    // A tag the registry does not have: failed, with the reason.
    a.ok(&["product", "create", "broken"]);
    a.ok(&["version", "create", "broken", "1"]);
    a.ok(&[
        "image",
        "add",
        "broken",
        "1",
        &format!("{registry}/shoal-test/busybox:no-such-tag"),
    ]);
    let id = a
        .ok(&[
            "deploy",
            "create",
            "broken",
            "1",
            "--node",
            "b",
            "--prefix",
            &bad_prefix,
        ])
        .last_line();
    let r = start_wait(&a, &id);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("failed"), "{r:?}");
    let d = show(&a, &id);
    assert_eq!(d["status"], "failed", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("no-such-tag") && reason.contains("not found"),
        "{reason}"
    );
    let text = a.ok(&["deploy", "show", &id]).stdout;
    assert!(text.contains(reason), "{text}");

    // Kill -9 of b while it deploys, then restart it.
    a.ok(&["product", "create", "app"]);
    a.ok(&["version", "create", "app", "1"]);
    for name in ["one", "two"] {
        a.ok(&[
            "image",
            "add",
            "app",
            "1",
            &format!("{registry}/shoal-test/busybox:1.1"),
            "--name",
            name,
        ]);
        set_cmd(
            &a,
            "app",
            "1",
            name,
            &["sh", "-c", &sh("while true; do sleep 1 & wait $!; done")],
            &[],
        );
    }
    let id = a
        .ok(&[
            "deploy",
            "create",
            "app",
            "1",
            "--node",
            "b",
            "--prefix",
            &kill_prefix,
        ])
        .last_line();
    a.ok(&["deploy", "start", &id, "--detach"]);
    // The try is under way on b once its containers exist (the runtime
    // then waits for them to settle before b reports).
    let filter = format!("label=io.shoal.prefix={kill_prefix}");
    wait_for(DEPLOY_WAIT, || {
        let ids = docker(&["ps", "-aq", "--filter", &filter])?;
        (!ids.trim().is_empty()).then_some(())
    })
    .expect("b starts the deployment");
    b.kill();
    let during = status(&a, &id);
    b.start().unwrap();
    let d = wait_for(DEPLOY_WAIT, || {
        let d = show(&a, &id);
        let done =
            d["finished_try"].as_u64() >= d["tries"].as_u64() && d["status"] != "in-progress";
        done.then_some(d)
    })
    .unwrap_or_else(|| panic!("the try never ended after the restart: {}", show(&a, &id)));
    println!("status when b was killed: {during}; after its restart: {d}");
    match d["status"].as_str().unwrap() {
        "successful" => {
            for name in ["one", "two"] {
                let c = inspect(&format!("{kill_prefix}-{name}")).unwrap();
                assert!(running(&c), "{name}: {}", c["State"]);
                assert_eq!(label(&c, "io.shoal.deployment"), id);
            }
            let states = d["containers"].as_object().unwrap();
            assert!(states.values().all(|s| s["state"] == "running"), "{d}");
        }
        "failed" => assert!(
            !d["reason"].as_str().unwrap_or_default().is_empty(),
            "a failed try says why: {d}"
        ),
        other => panic!("not a definite state: {other}: {d}"),
    }
}

/// The names of the containers labelled `label=value`, also stopped ones.
fn names_labelled(label: &str, value: &str) -> Vec<String> {
    let filter = format!("label={label}={value}");
    docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &filter])
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Adds images `one` and `two` (busybox sleeping) to `product` `version`.
fn sleeping_images(a: &Peer, registry: &str, product: &str, version: &str, names: &[&str]) {
    for name in names {
        a.ok(&[
            "image",
            "add",
            product,
            version,
            &format!("{registry}/shoal-test/busybox:1.1"),
            "--name",
            name,
        ]);
        set_cmd(
            a,
            product,
            version,
            name,
            &["sh", "-c", &sh("while true; do sleep 1 & wait $!; done")],
            &[],
        );
    }
}

#[test]
fn products_share_a_prefix_upgrades_survive_a_kill_and_deletes_tear_down() {
    let Some(env) = test_env() else { return };
    let prefix = unique("share");
    let _cleanup = Cleanup(vec![prefix.clone()]);
    let (a, mut b) = setup(&env);
    let registry = &env["SHOAL_TEST_AUTH_REGISTRY"];
    let create = |product: &str, version: &str| {
        a.ok(&[
            "deploy", "create", product, version, "--node", "b", "--prefix", &prefix,
        ])
        .last_line()
    };

    // Two products on one node and prefix.
    a.ok(&["product", "create", "db"]);
    a.ok(&["version", "create", "db", "1"]);
    sleeping_images(&a, registry, "db", "1", &["store"]);
    a.ok(&["product", "create", "app"]);
    a.ok(&["version", "create", "app", "1"]);
    sleeping_images(&a, registry, "app", "1", &["one", "two"]);
    let db = create("db", "1");
    let r = start_wait(&a, &db);
    assert_eq!(r.code, 0, "{r:?}");
    let app1 = create("app", "1");
    let r = start_wait(&a, &app1);
    assert_eq!(r.code, 0, "{r:?}");
    let store = inspect(&format!("{prefix}-store")).unwrap();
    assert!(running(&store), "the app's deploy left the db running");
    let store_id = store["Id"].as_str().unwrap().to_owned();

    // Kill -9 of b while it replaces the app with version 2, then restart:
    // exactly one version of the app runs, the db is untouched.
    a.ok(&["version", "create", "app", "2"]);
    sleeping_images(&a, registry, "app", "2", &["one", "two"]);
    let app2 = create("app", "2");
    a.ok(&["deploy", "start", &app2, "--detach"]);
    wait_for(DEPLOY_WAIT, || {
        (!names_labelled("io.shoal.deployment", &app2).is_empty()).then_some(())
    })
    .expect("b starts replacing the app");
    b.kill();
    let during = names_labelled("io.shoal.prefix", &prefix);
    b.start().unwrap();
    let d = wait_for(DEPLOY_WAIT, || {
        let d = show(&a, &app2);
        let done =
            d["finished_try"].as_u64() >= d["tries"].as_u64() && d["status"] != "in-progress";
        done.then_some(d)
    })
    .unwrap_or_else(|| panic!("the try never ended after the restart: {}", show(&a, &app2)));
    println!("containers when b was killed: {during:?}; after its restart: {d}");
    let winner = match d["status"].as_str().unwrap() {
        "successful" => &app2,
        "failed" => &app1,
        other => panic!("not a definite state: {other}: {d}"),
    };
    let mut names = names_labelled("io.shoal.prefix", &prefix);
    names.sort();
    assert_eq!(
        names,
        vec![
            format!("{prefix}-one"),
            format!("{prefix}-store"),
            format!("{prefix}-two")
        ],
        "one version of the app, nothing set aside"
    );
    for name in ["one", "two"] {
        let c = inspect(&format!("{prefix}-{name}")).unwrap();
        assert!(running(&c), "{name}: {}", c["State"]);
        assert_eq!(label(&c, "io.shoal.deployment"), winner.as_str());
    }
    let store = inspect(&format!("{prefix}-store")).unwrap();
    assert!(running(&store));
    assert_eq!(
        store["Id"].as_str().unwrap(),
        store_id,
        "the db was not touched"
    );

    // The db deleted while b is stopped: b tears it down when it is back,
    // and only it.
    assert_eq!(b.stop().unwrap(), 0);
    let r = a.shoal(&["deploy", "delete", &db]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(inspect(&format!("{prefix}-store")).is_some());
    b.start().unwrap();
    wait_for(DEPLOY_WAIT, || {
        names_labelled("io.shoal.deployment", &db)
            .is_empty()
            .then_some(())
    })
    .expect("b tears the deleted db down after its restart");
    for name in ["one", "two"] {
        assert!(running(&inspect(&format!("{prefix}-{name}")).unwrap()));
    }
    let network = format!("shoal-{prefix}");
    assert!(docker(&["network", "inspect", &network]).is_some());

    // The app's deployments deleted while b is up: nothing is left.
    for id in [&app1, &app2] {
        let r = a.shoal(&["deploy", "delete", id]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    wait_for(DEPLOY_WAIT, || {
        names_labelled("io.shoal.prefix", &prefix)
            .is_empty()
            .then_some(())
    })
    .expect("b tears the deleted app down");
    wait_for(WAIT, || {
        docker(&["network", "inspect", &network])
            .is_none()
            .then_some(())
    })
    .expect("the prefix's network goes with its last container");
}

/// The numbers of the `tick N` lines among `lines` (with or without a
/// `NAME | ` label).
fn ticks_of(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|x| {
            let text = x.rsplit_once(" | ").map_or(x.as_str(), |(_, t)| t);
            text.strip_prefix("tick ")?.parse().ok()
        })
        .collect()
}

fn said(notes: &[String], what: &str) -> usize {
    notes.iter().filter(|x| x.contains(what)).count()
}

#[test]
fn following_outlives_restarted_daemons() {
    let Some(env) = test_env() else { return };
    let prefix = unique("follow");
    let _cleanup = Cleanup(vec![prefix.clone()]);
    let (mut a, mut b) = setup(&env);
    let registry = &env["SHOAL_TEST_AUTH_REGISTRY"];

    // A rolling version (so it can be redeployed) whose container prints
    // a numbered line every second.
    a.ok(&["product", "create", "ticker", "--simple"]);
    a.ok(&[
        "image",
        "add",
        "ticker",
        "rolling",
        &format!("{registry}/shoal-test/busybox:1.0"),
        "--name",
        "tick",
    ]);
    set_cmd(
        &a,
        "ticker",
        "rolling",
        "tick",
        &[
            "sh",
            "-c",
            &sh("i=0; while true; do i=$((i+1)); echo tick $i; sleep 1 & wait $!; done"),
        ],
        &[],
    );
    let d = a
        .ok(&[
            "deploy", "create", "ticker", "rolling", "--node", "b", "--prefix", &prefix,
        ])
        .last_line();
    let r = start_wait(&a, &d);
    assert_eq!(r.code, 0, "{r:?}\n{}", show(&a, &d));
    let name = format!("{prefix}-tick");

    // Followers through a's daemon (the container, and the deployment's
    // progress and output) and through b's own.
    let follow = ["container", "logs", "b", &name, "-f", "--tail", "1"];
    let mut via_a = Follower::spawn(&a.user, &follow, &[]).unwrap();
    let mut deploy = Follower::spawn(
        &a.user,
        &["deploy", "logs", &d, "--follow", "--tail", "1"],
        &[],
    )
    .unwrap();
    let mut via_b = Follower::spawn(&b.user, &follow, &[]).unwrap();
    for f in [&mut via_a, &mut deploy, &mut via_b] {
        f.until(DEPLOY_WAIT, |l, _| ticks_of(l).len() >= 2).unwrap();
    }
    deploy
        .until(WAIT, |l, _| {
            l.iter().any(|x| x == "try 1 | try 1: successful")
        })
        .unwrap();

    // a's daemon stops: its followers say so once and wait.
    a.stop().unwrap();
    for f in [&mut via_a, &mut deploy] {
        f.until(WAIT, |_, e| said(e, "retrying") > 0).unwrap();
    }
    let shown = [via_a.seen.len(), deploy.seen.len()];
    // Started again on the same data dir and socket: they go on from
    // where they were (b still holds the follow session).
    a.start().unwrap();
    for (f, n) in [(&mut via_a, shown[0]), (&mut deploy, shown[1])] {
        f.until(WAIT, |l, e| {
            said(e, "reconnected") > 0 && ticks_of(&l[n.min(l.len())..]).len() >= 3
        })
        .unwrap();
        assert_eq!(said(&f.notes, "retrying"), 1, "{:#?}", f.notes);
        assert_eq!(said(&f.notes, "reconnected"), 1, "{:#?}", f.notes);
        assert!(f.child.try_wait().unwrap().is_none(), "still following");
    }
    let t = ticks_of(&via_a.seen);
    assert!(
        t.windows(2).all(|w| w[1] == w[0] + 1),
        "across a's restart: every line once, in order, none lost: {t:?}"
    );

    // b's daemon restarts: the node's follow sessions are gone with it, so
    // the followers open new ones from the end (saying lines may have been
    // missed) and never show a line twice.
    let before = [via_a.seen.len(), via_b.seen.len(), deploy.seen.len()];
    b.stop().unwrap();
    via_b.until(WAIT, |_, e| said(e, "retrying") > 0).unwrap();
    b.start().unwrap();
    for (f, n) in [
        (&mut via_a, before[0]),
        (&mut via_b, before[1]),
        (&mut deploy, before[2]),
    ] {
        f.until(WAIT, |l, e| {
            said(e, "may be missing") > 0 && ticks_of(&l[n.min(l.len())..]).len() >= 3
        })
        .unwrap();
        let t = ticks_of(&f.seen);
        assert!(
            t.windows(2).all(|w| w[1] > w[0]),
            "every line once, in order: {t:?}"
        );
        assert!(f.child.try_wait().unwrap().is_none(), "still following");
    }
    assert_eq!(said(&via_b.notes, "reconnected"), 1, "{:#?}", via_b.notes);
    drop(via_a);
    drop(via_b);

    // A new try after both restarts: the deployment's follower prints its
    // progress as it comes, every line once and in order.
    let r = start_wait(&a, &d);
    assert_eq!(r.code, 0, "{r:?}\n{}", show(&a, &d));
    deploy
        .until(DEPLOY_WAIT, |l, _| {
            l.iter().any(|x| x == "try 2 | try 2: successful")
        })
        .unwrap();
    let progress = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|x| x.starts_with("try "))
            .cloned()
            .collect()
    };
    let all = a.ok(&["deploy", "logs", &d, "--tail", "0"]);
    let all: Vec<String> = all.stdout.lines().map(str::to_string).collect();
    assert_eq!(progress(&deploy.seen), progress(&all));
    assert!(
        deploy.child.try_wait().unwrap().is_none(),
        "still following"
    );
}

/// The text of `GET /metrics` on 127.0.0.1:`port`.
fn metrics(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.0 200").then_some(body)
}

/// The deployment's container `name` as `deploy show -o json` reports it live.
fn live_of(d: &Value, name: &str) -> Option<Value> {
    d["live"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["container"] == name)
        .cloned()
}

#[test]
fn heartbeats_carry_live_state_and_show_drift() {
    let Some(env) = test_env() else { return };
    let prefix = unique("live");
    let _cleanup = Cleanup(vec![prefix.clone()]);
    let (a, mut b) = setup(&env);
    // b serves its metrics.
    let metrics_port = free_port();
    assert_eq!(b.stop().unwrap(), 0);
    b.extra = vec!["--metrics".into(), format!("127.0.0.1:{metrics_port}")];
    b.start().unwrap();
    let registry = &env["SHOAL_TEST_AUTH_REGISTRY"];
    a.ok(&["product", "create", "pulse"]);
    a.ok(&["version", "create", "pulse", "1"]);
    sleeping_images(&a, registry, "pulse", "1", &["beat"]);
    a.ok(&["image", "config", "pulse", "1", "beat", "--restart", "no"]);
    let id = a
        .ok(&[
            "deploy", "create", "pulse", "1", "--node", "b", "--prefix", &prefix,
        ])
        .last_line();
    let r = start_wait(&a, &id);
    assert_eq!(r.code, 0, "{r:?}");

    // a (no runtime) learns what runs on b from b's heartbeats alone.
    let d = wait_for(WAIT, || {
        let d = show(&a, &id);
        let c = live_of(&d, "beat")?;
        (c["actual"] == "running").then_some(d)
    })
    .unwrap_or_else(|| panic!("no live state of b: {}", show(&a, &id)));
    assert_eq!(d["live"]["drift"], false, "{d}");
    let c = live_of(&d, "beat").unwrap();
    assert_eq!(
        (&c["expected"], &c["drift"]),
        (&"running".into(), &false.into())
    );
    let table = a.ok(&["deploy", "show", &id]).stdout;
    assert!(table.contains("ACTUAL") && table.contains("ok"), "{table}");

    // Host load: b's memory in use is known to a.
    let nodes = parse(&a.ok(&["node", "list", "-o", "json"]));
    let b_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "b")
        .cloned()
        .unwrap();
    assert!(
        b_node["load"]["memory_used_bytes"].as_u64().unwrap() > 0,
        "{b_node}"
    );
    assert!(
        b_node["load"]["memory_total_bytes"].as_u64()
            >= b_node["load"]["memory_used_bytes"].as_u64(),
        "{b_node}"
    );
    let shown = parse(&a.ok(&["node", "show", "b", "-o", "json"]));
    assert!(
        shown["load"]["disk_total_bytes"].as_u64().unwrap() > 0,
        "{shown}"
    );
    assert_eq!(shown["running"], 1, "{shown}");
    let table = a.ok(&["node", "list"]).stdout;
    assert!(table.contains("MEM") && table.contains("% of "), "{table}");
    // b's metrics hold the same live state and load.
    let sample = format!("name=\"{prefix}-beat\",deployment=\"{id}\",state=\"running\"}} 1");
    let text = wait_for(WAIT, || {
        let text = metrics(metrics_port)?;
        text.contains(&sample).then_some(text)
    })
    .unwrap_or_else(|| panic!("no {sample} in b's metrics: {:?}", metrics(metrics_port)));
    let memory: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("shoal_node_memory_used_bytes ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no memory gauge: {text}"));
    assert!(memory > 0, "{text}");

    // The container dies behind shoal's back: every member sees the drift.
    let name = format!("{prefix}-beat");
    let killed = std::time::Instant::now();
    docker(&["kill", &name]).expect("docker kill");
    let d = wait_for(WAIT, || {
        let d = show(&a, &id);
        (d["live"]["drift"] == true).then_some(d)
    })
    .unwrap_or_else(|| panic!("the drift never showed: {}", show(&a, &id)));
    // A figure, not an assertion: how long another node took to see it.
    println!(
        "drift seen by a {:.1}s after docker kill",
        killed.elapsed().as_secs_f64()
    );
    let c = live_of(&d, "beat").unwrap();
    assert_eq!(c["actual"], "exited", "{d}");
    assert_eq!(c["drift"], true, "{d}");
    assert_eq!(
        d["status"], "successful",
        "drift is not a status change: {d}"
    );
    let table = a.ok(&["deploy", "show", &id]).stdout;
    assert!(table.contains("DRIFT"), "{table}");
    // `container list` from a answers from the same live state.
    let listed = parse(&a.ok(&["container", "list", "b", "--prefix", &prefix, "-o", "json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], name.as_str());
    assert_eq!(listed[0]["state"]["state"], "exited");

    // Started again, the drift is gone.
    a.ok(&["container", "start", "b", &name]);
    wait_for(WAIT, || {
        let d = show(&a, &id);
        (d["live"]["drift"] == false && live_of(&d, "beat")?["actual"] == "running").then_some(())
    })
    .unwrap_or_else(|| panic!("the drift never cleared: {}", show(&a, &id)));
}

/// A container killed behind shoal's back shows on another node without
/// waiting for a heartbeat: both nodes beat once an hour (and once as they
/// connect) and `b` looks at its containers once an hour unless Docker
/// reports a change, so only Docker's event, the look it brings and the
/// live report `b` pushes on change can carry the kill to `a`.
#[test]
fn a_killed_container_reaches_another_node_between_heartbeats() {
    let Some(env) = test_env() else { return };
    let prefix = unique("push");
    let _cleanup = Cleanup(vec![prefix.clone()]);
    let hourly = ["--heartbeat-ms", "3600000", "--live-refresh-ms", "3600000"];
    let (a, _b) = setup_with(&env, &hourly);
    let registry = &env["SHOAL_TEST_AUTH_REGISTRY"];
    a.ok(&["product", "create", "flare"]);
    a.ok(&["version", "create", "flare", "1"]);
    sleeping_images(&a, registry, "flare", "1", &["beat"]);
    a.ok(&["image", "config", "flare", "1", "beat", "--restart", "no"]);
    let id = a
        .ok(&[
            "deploy", "create", "flare", "1", "--node", "b", "--prefix", &prefix,
        ])
        .last_line();
    let r = start_wait(&a, &id);
    assert_eq!(r.code, 0, "{r:?}");
    // The container's start reached a the same way.
    wait_for(WAIT, || {
        (live_of(&show(&a, &id), "beat")?["actual"] == "running").then_some(())
    })
    .unwrap_or_else(|| panic!("a never saw the container run: {}", show(&a, &id)));

    let killed = std::time::Instant::now();
    docker(&["kill", &format!("{prefix}-beat")]).expect("docker kill");
    let d = wait_for(WAIT, || {
        let d = show(&a, &id);
        (live_of(&d, "beat")?["actual"] == "exited").then_some(d)
    })
    .unwrap_or_else(|| panic!("the kill never reached a: {}", show(&a, &id)));
    // A figure, not an assertion.
    println!(
        "the kill reached a {:.2}s after docker kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(d["live"]["drift"], true, "{d}");
}

/// Named volumes of the engine whose name starts with `prefix-`.
fn volumes_of(prefix: &str) -> Vec<String> {
    docker(&["volume", "ls", "-q"])
        .unwrap_or_default()
        .split_whitespace()
        .filter(|v| v.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn deleting_a_deployment_keeps_its_volumes_unless_asked() {
    let Some(env) = test_env() else { return };
    let keep = unique("keepvol");
    let drop = unique("dropvol");
    let _cleanup = Cleanup(vec![keep.clone(), drop.clone()]);
    let (a, mut b) = setup(&env);
    let registry = &env["SHOAL_TEST_AUTH_REGISTRY"];
    a.ok(&["product", "create", "vault"]);
    a.ok(&["version", "create", "vault", "1"]);
    sleeping_images(&a, registry, "vault", "1", &["data"]);
    a.ok(&[
        "image",
        "config",
        "vault",
        "1",
        "data",
        "--volume",
        "store:/data",
    ]);
    let mut ids = Vec::new();
    for prefix in [&keep, &drop] {
        let id = a
            .ok(&[
                "deploy", "create", "vault", "1", "--node", "b", "--prefix", prefix,
            ])
            .last_line();
        let r = start_wait(&a, &id);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(volumes_of(prefix), [format!("{prefix}-store")]);
        ids.push(id);
    }

    // Without --volumes: the containers go, the volume stays.
    a.ok(&["deploy", "delete", &ids[0]]);
    wait_for(DEPLOY_WAIT, || {
        names_labelled("io.shoal.deployment", &ids[0])
            .is_empty()
            .then_some(())
    })
    .expect("b tears the deleted deployment down");
    assert_eq!(volumes_of(&keep), [format!("{keep}-store")]);

    // With --volumes, while b is stopped: when b is back, both go, and the
    // audit log says so.
    assert_eq!(b.stop().unwrap(), 0);
    let r = a.ok(&["deploy", "delete", &ids[1], "--volumes"]);
    assert!(r.stdout.contains("named volumes"), "{r:?}");
    assert_eq!(volumes_of(&drop), [format!("{drop}-store")]);
    b.start().unwrap();
    wait_for(DEPLOY_WAIT, || volumes_of(&drop).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("the volume stays: {:?}", volumes_of(&drop)));
    assert!(names_labelled("io.shoal.deployment", &ids[1]).is_empty());
    assert_eq!(
        volumes_of(&keep),
        [format!("{keep}-store")],
        "the other deployment's volume is kept"
    );
    let audit = parse(&a.ok(&[
        "audit",
        "list",
        "--action",
        "deployment.delete-volumes",
        "-o",
        "json",
    ]));
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
}

/// `docker image inspect REF` succeeds.
fn image_present(reference: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference]).is_some()
}

#[test]
fn node_prune_removes_only_images_no_deployment_can_roll_back_to() {
    let Some(env) = test_env() else { return };
    let prefix = unique("prune");
    let _cleanup = Cleanup(vec![prefix.clone()]);
    // Two tags of a repository only this run uses, in the plain registry.
    let plain = &env["SHOAL_TEST_REGISTRY"];
    let repo = format!("{plain}/{prefix}/busybox");
    let (old, new) = (format!("{repo}:a"), format!("{repo}:b"));
    for (from, to) in [("1.0", &old), ("1.1", &new)] {
        let src = format!("{plain}/shoal-test/busybox:{from}");
        docker(&["pull", "-q", &src]).expect("pull the test image");
        docker(&["tag", &src, to]).unwrap();
        docker(&["push", "-q", to]).expect("push to the plain registry");
        docker(&["rmi", to]).unwrap();
    }
    let (a, _b) = setup(&env);
    a.ok(&["registry", "add", "plain", "--kind", "v2", "--url", plain]);
    a.ok(&["product", "create", "tool", "--simple"]);
    a.ok(&["image", "add", "tool", "rolling", &old, "--name", "t"]);
    set_cmd(
        &a,
        "tool",
        "rolling",
        "t",
        &["sh", "-c", &sh("while true; do sleep 1 & wait $!; done")],
        &[],
    );
    let id = a
        .ok(&[
            "deploy", "create", "tool", "rolling", "--node", "b", "--prefix", &prefix,
        ])
        .last_line();
    let r = start_wait(&a, &id);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(image_present(&old));
    // The rolling version moves to tag b: nothing can run tag a again. The
    // reference has no host: the image stays in its registry.
    let r = a.ok(&[
        "image",
        "config",
        "tool",
        "rolling",
        "t",
        "--image",
        &format!("{prefix}/busybox:b"),
    ]);
    assert!(r.stdout.contains("from registry plain"), "{r:?}");
    let r = start_wait(&a, &id);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(image_present(&old) && image_present(&new));

    let r = a.ok(&["node", "prune", "b"]);
    assert!(
        r.stdout.lines().any(|l| l == format!("removed {old}")),
        "{r:?}"
    );
    assert!(!r.stdout.contains(&new), "{r:?}");
    assert!(!image_present(&old), "the unreferenced tag is gone");
    assert!(image_present(&new), "the running tag stays");
    // The shared test images of other repositories are untouched.
    assert!(image_present(&format!("{plain}/shoal-test/busybox:1.0")));
    // Nothing left to remove the second time.
    let r = a.ok(&["node", "prune", "b"]);
    assert!(r.stdout.contains("nothing to remove"), "{r:?}");
    let audit = parse(&a.ok(&["audit", "list", "--action", "node.prune", "-o", "json"]));
    assert_eq!(audit.as_array().unwrap().len(), 2, "{audit}");
    let _ = docker(&["rmi", &new]);
}
