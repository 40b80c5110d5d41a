#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The Docker runtime against a real engine and the local test registries
//! that `scripts/test.sh` sets up (it writes `/tmp/shoal-test-env/env`).
//!
//! Without that file these tests skip themselves with a message, unless
//! `CI` is set: then they fail, since CI must run them. Every test uses its
//! own team id and prefixes, so they run in parallel, and removes what it
//! made even when it fails (see [`Cleanup`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
use futures::StreamExt as _;
use shoal_node::runtime::{
    DeployOutcome, DeployPlan, DockerRuntime, ImageSource, LABEL_CONTAINER, LABEL_DEPLOYMENT,
    LABEL_PREFIX, LABEL_SECRET_KEYS, LABEL_TEAM, LABEL_TRY, LABEL_VERSION, LogLine, LogSource,
    PlannedContainer, ProgressEvent, PullPolicy, REDACTED, RegistryCredentials, Runtime,
    RuntimeError, SecretValues,
};
use shoal_protocol::model::{
    ContainerAction, ContainerConfig, ExpectedRunState, ExpectedState, HealthCheck, ImageRef,
    InitContainer, Port, Protocol, RestartPolicy, Volume, VolumeKind,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

#[macro_use]
mod common;
use common::test_env;

/// Capacity of the progress channel the tests drain.
const PROGRESS_CAPACITY: usize = 64;

// ---------------------------------------------------------------- harness

/// A team id and prefixes no other test (or run) uses.
struct Ids {
    team: String,
    tag: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Ids {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", (nanos ^ std::process::id()) & 0xff_ffff);
        Self {
            team: format!("test-{name}-{tag}"),
            tag,
        }
    }

    fn prefix(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }
}

/// Removes every container, network and volume of the team when dropped,
/// also when the test panics.
struct Cleanup {
    team: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_TEAM}={}", self.team);
        let ids = |args: &[&str]| -> Vec<String> {
            std::process::Command::new("docker")
                .args(args)
                .args(["--filter", &filter])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let run = |args: &[&str], ids: Vec<String>| {
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(args)
                    .args(&ids)
                    .output();
            }
        };
        run(&["rm", "-f", "-v"], ids(&["ps", "-aq"]));
        run(&["network", "rm"], ids(&["network", "ls", "-q"]));
        run(&["volume", "rm", "-f"], ids(&["volume", "ls", "-q"]));
    }
}

async fn runtime() -> DockerRuntime {
    DockerRuntime::connect(None)
        .await
        .expect("the Docker engine answers")
        .with_stop_timeout(Duration::from_secs(1))
}

fn plan(ids: &Ids, prefix: &str, version: &str, containers: Vec<PlannedContainer>) -> DeployPlan {
    DeployPlan {
        team: ids.team.clone(),
        deployment: format!("dep-{prefix}"),
        product: "product-1".into(),
        prefix: prefix.to_owned(),
        version: version.to_owned(),
        try_number: 1,
        containers,
    }
}

fn planned(name: &str, reference: &str, config: ContainerConfig) -> PlannedContainer {
    PlannedContainer {
        name: name.to_owned(),
        config,
        image: ImageSource::public(reference),
        init_images: BTreeMap::new(),
        secrets: SecretValues::default(),
    }
}

/// A busybox container running `script` under `sh -c`.
fn shell(script: &str) -> ContainerConfig {
    ContainerConfig {
        command: Some(vec!["sh".into(), "-c".into()]),
        args: Some(vec![script.into()]),
        ..Default::default()
    }
}

const SLEEP: &str = "sleep 3600";

/// Deploys through the trait object, as the executor does.
async fn deploy(
    rt: &dyn Runtime,
    plan: &DeployPlan,
) -> (Result<DeployOutcome, RuntimeError>, Vec<ProgressEvent>) {
    let (tx, mut rx) = mpsc::channel(PROGRESS_CAPACITY);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let result = rt.deploy(plan, &tx).await;
    drop(tx);
    (result, collector.await.unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16) -> String {
    let mut last = String::new();
    for _ in 0..40 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut s) => {
                s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    .await
                    .unwrap();
                let mut body = String::new();
                let _ = s.read_to_string(&mut body).await;
                if body.starts_with("HTTP/1.") {
                    return body;
                }
                last = body;
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("nothing answered HTTP on 127.0.0.1:{port}: {last}");
}

async fn collect_logs(
    rt: &DockerRuntime,
    team: &str,
    name: &str,
    tail: Option<u64>,
) -> Vec<LogLine> {
    let stream = rt.logs(team, name, false, tail).await.unwrap();
    stream.map(|l| l.unwrap()).collect().await
}

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn deploy_two_containers_with_port_env_secrets_labels_and_volume() {
    let env = env_or_skip!();
    let ids = Ids::new("two");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("two");
    let port = free_port();
    let secret = format!("s3cret-{}", ids.tag);
    let data = Volume {
        name: "data".into(),
        path: "/data".into(),
        kind: VolumeKind::Rw,
        size: None,
    };

    let mut web = planned(
        "web",
        &format!("{}/shoal-test/httpd:1.0", env.registry),
        ContainerConfig {
            image: Some(ImageRef {
                registry: "open".into(),
                name: "shoal-test/httpd".into(),
                tag: "1.0".into(),
            }),
            env: BTreeMap::from([("GREETING".into(), "hi-{{version}}".into())]),
            ports: vec![Port {
                internal: 8080,
                external: Some(port),
                protocol: Protocol::Tcp,
            }],
            volumes: vec![data.clone()],
            labels: BTreeMap::from([
                ("app".into(), "web".into()),
                (LABEL_TEAM.into(), "spoofed".into()),
            ]),
            cpu: Some("0.5".into()),
            memory: Some("64m".into()),
            restart: Some(RestartPolicy::UnlessStopped),
            health: Some(HealthCheck {
                command: vec![
                    "CMD-SHELL".into(),
                    "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1".into(),
                ],
                interval_ms: Some(300),
                timeout_ms: Some(2000),
                retries: Some(5),
                start_period_ms: None,
            }),
            ..Default::default()
        },
    );
    web.secrets = SecretValues::from(BTreeMap::from([("API_TOKEN".into(), secret.clone())]));
    let mut worker_cfg = shell(&format!("echo started; echo $GREETING; {SLEEP}"));
    worker_cfg.user = Some("nobody".into());
    worker_cfg.working_dir = Some("/tmp".into());
    worker_cfg.volumes = vec![Volume {
        kind: VolumeKind::Ro,
        ..data
    }];
    worker_cfg.env = BTreeMap::from([("GREETING".into(), "hi-{{version}}".into())]);
    let worker = planned(
        "worker",
        &format!("{}/shoal-test/busybox:1.0", env.registry),
        worker_cfg,
    );
    let p = plan(&ids, &prefix, "1.0", vec![web, worker]);

    let (result, progress) = deploy(&rt, &p).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.containers.keys().collect::<Vec<_>>(),
        vec!["web", "worker"]
    );
    for (name, state) in &outcome.containers {
        assert_eq!(state.state, "running", "{name}");
        assert!(state.image.contains("@sha256:"), "{name}: {}", state.image);
    }
    assert!(!progress.is_empty());
    let all_text = format!("{progress:?} {:?}", outcome.events);
    assert!(
        !all_text.contains(&secret),
        "a secret value leaked: {all_text}"
    );

    // The published port answers.
    let body = http_get(port).await;
    assert!(body.contains("hello from shoal-test/httpd:1.0"), "{body}");

    // What the engine holds.
    let docker = rt.client();
    let info = docker
        .inspect_container(&format!("{prefix}-web"), None)
        .await
        .unwrap();
    let config = info.config.clone().unwrap();
    let env_list = config.env.clone().unwrap();
    assert!(
        env_list.contains(&"GREETING=hi-1.0".to_owned()),
        "{env_list:?}"
    );
    assert!(env_list.contains(&format!("API_TOKEN={secret}")));
    let labels = config.labels.clone().unwrap();
    assert_eq!(labels[LABEL_TEAM], ids.team);
    assert_eq!(labels[LABEL_DEPLOYMENT], p.deployment);
    assert_eq!(labels[LABEL_PREFIX], prefix);
    assert_eq!(labels[LABEL_VERSION], "1.0");
    assert_eq!(labels[LABEL_TRY], "1");
    assert_eq!(labels[LABEL_CONTAINER], "web");
    assert_eq!(labels[LABEL_SECRET_KEYS], "API_TOKEN");
    assert_eq!(labels["app"], "web");
    let host = info.host_config.clone().unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(
        host.restart_policy.unwrap().name.unwrap().to_string(),
        "unless-stopped"
    );
    let mounts = info.mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.name.as_deref() == Some(&format!("{prefix}-data"))
                && m.destination.as_deref() == Some("/data")
                && m.rw == Some(true)),
        "{mounts:?}"
    );
    let networks = info.network_settings.unwrap().networks.unwrap();
    assert!(
        networks.contains_key(&format!("shoal-{prefix}")),
        "{networks:?}"
    );
    assert_eq!(
        info.state
            .unwrap()
            .health
            .unwrap()
            .status
            .unwrap()
            .to_string(),
        "healthy"
    );

    let worker = docker
        .inspect_container(&format!("{prefix}-worker"), None)
        .await
        .unwrap();
    let wc = worker.config.unwrap();
    assert_eq!(wc.user.as_deref(), Some("nobody"));
    assert_eq!(wc.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(wc.entrypoint, Some(vec!["sh".to_owned(), "-c".to_owned()]));
    assert!(!wc.labels.unwrap().contains_key(LABEL_SECRET_KEYS));
    assert!(
        worker
            .mounts
            .unwrap()
            .iter()
            .any(|m| m.destination.as_deref() == Some("/data") && m.rw == Some(false))
    );
    let lines = collect_logs(&rt, &ids.team, &format!("{prefix}-worker"), None).await;
    assert_eq!(texts(&lines), vec!["started", "hi-1.0"]);

    // The listing.
    let listed = rt.containers(&ids.team, Some(&prefix)).await.unwrap();
    assert_eq!(listed.len(), 2);
    let web = listed.iter().find(|c| c.container == "web").unwrap();
    assert_eq!(web.name, format!("{prefix}-web"));
    assert_eq!(web.state.state, "running");
    assert_eq!(web.version, "1.0");
    assert_eq!(web.try_number, 1);
    assert!(
        web.ports
            .iter()
            .any(|pp| pp.internal == 8080 && pp.host_port == port && pp.protocol == Protocol::Tcp),
        "{:?}",
        web.ports
    );
    assert!(
        rt.containers("another-team", None)
            .await
            .unwrap()
            .iter()
            .all(|c| c.prefix != prefix)
    );

    rt.remove_prefix(&ids.team, &prefix).await.unwrap();
}

#[tokio::test]
async fn pulls_from_the_auth_registry_only_with_the_right_credentials() {
    let env = env_or_skip!();
    let ids = Ids::new("auth");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("auth");
    let reference = format!("{}/shoal-test/busybox:1.1", env.auth_registry);
    // Start from an engine without that image, so the pull is observable.
    let _ = std::process::Command::new("docker")
        .args(["rmi", &reference])
        .output();
    let with = |credentials: Option<RegistryCredentials>| {
        let mut c = planned("job", &reference, shell(SLEEP));
        c.image.credentials = credentials;
        plan(&ids, &prefix, "1.1", vec![c])
    };

    let (result, _) = deploy(&rt, &with(None)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, RuntimeError::RegistryAuth { .. }), "{err:?}");
    assert!(err.to_string().contains(&reference), "{err}");

    let wrong = RegistryCredentials {
        user: env.user.clone(),
        password: "not-the-password".into(),
    };
    let (result, progress) = deploy(&rt, &with(Some(wrong))).await;
    let err = result.unwrap_err();
    assert!(matches!(err, RuntimeError::RegistryAuth { .. }), "{err:?}");
    assert!(!format!("{err} {progress:?}").contains("not-the-password"));
    assert!(rt.containers(&ids.team, None).await.unwrap().is_empty());

    let right = RegistryCredentials {
        user: env.user.clone(),
        password: env.password.clone(),
    };
    let (result, progress) = deploy(&rt, &with(Some(right.clone()))).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.pulled, vec![reference.clone()]);
    assert_eq!(outcome.containers["job"].state, "running");
    assert!(!format!("{progress:?} {:?}", outcome.events).contains(&env.password));

    // The same digest again: nothing to pull.
    let (result, _) = deploy(&rt, &with(Some(right))).await;
    let outcome = result.unwrap();
    assert!(outcome.pulled.is_empty(), "{:?}", outcome.pulled);
    assert!(
        outcome.events.iter().any(|e| e.contains("up to date")),
        "{:?}",
        outcome.events
    );

    rt.remove_prefix(&ids.team, &prefix).await.unwrap();
}

#[tokio::test]
async fn redeploy_replaces_the_previous_containers_of_the_prefix_only() {
    let env = env_or_skip!();
    let ids = Ids::new("redeploy");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("main");
    let other = ids.prefix("other");
    let v10 = format!("{}/shoal-test/busybox:1.0", env.registry);
    let v11 = format!("{}/shoal-test/busybox:1.1", env.registry);

    let (r, _) = deploy(
        &rt,
        &plan(&ids, &other, "1.0", vec![planned("a", &v10, shell(SLEEP))]),
    )
    .await;
    r.unwrap();
    let first = plan(
        &ids,
        &prefix,
        "1.0",
        vec![
            planned("a", &v10, shell(SLEEP)),
            planned("b", &v10, shell(SLEEP)),
        ],
    );
    let (r, _) = deploy(&rt, &first).await;
    r.unwrap();
    let before = rt.containers(&ids.team, Some(&prefix)).await.unwrap();
    assert_eq!(before.len(), 2);

    let mut second = plan(&ids, &prefix, "1.1", vec![planned("a", &v11, shell(SLEEP))]);
    second.try_number = 2;
    let (r, _) = deploy(&rt, &second).await;
    let outcome = r.unwrap();
    assert!(
        outcome
            .events
            .iter()
            .any(|e| e.contains("removed previous containers"))
    );

    let after = rt.containers(&ids.team, Some(&prefix)).await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    let a = &after[0];
    assert_eq!(a.container, "a");
    assert_eq!(a.version, "1.1");
    assert_eq!(a.try_number, 2);
    assert_eq!(a.state.state, "running");
    assert!(a.state.image.contains("busybox:1.1"), "{:?}", a.state);
    let old_a = before.iter().find(|c| c.container == "a").unwrap();
    assert_ne!(a.id, old_a.id);

    // The other prefix of the same team is untouched.
    let others = rt.containers(&ids.team, Some(&other)).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].state.state, "running");

    rt.remove_prefix(&ids.team, &prefix).await.unwrap();
    rt.remove_prefix(&ids.team, &other).await.unwrap();
}

#[tokio::test]
async fn a_bad_image_tag_or_config_fails_with_a_clear_reason_and_touches_nothing() {
    let env = env_or_skip!();
    let ids = Ids::new("badtag");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("bad");
    let reference = format!("{}/shoal-test/busybox:9.9", env.registry);

    let (r, _) = deploy(
        &rt,
        &plan(
            &ids,
            &prefix,
            "1",
            vec![planned("a", &reference, shell(SLEEP))],
        ),
    )
    .await;
    let err = r.unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&reference), "{err}");
    assert!(rt.containers(&ids.team, None).await.unwrap().is_empty());

    let mut cfg = shell(SLEEP);
    cfg.memory = Some("lots".into());
    let good = format!("{}/shoal-test/busybox:1.0", env.registry);
    let (r, _) = deploy(
        &rt,
        &plan(&ids, &prefix, "1", vec![planned("a", &good, cfg)]),
    )
    .await;
    let err = r.unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("lots"), "{err}");
    let network = rt
        .client()
        .inspect_network(&format!("shoal-{prefix}"), None)
        .await;
    assert!(network.is_err(), "nothing should have been created");
}

#[tokio::test]
async fn a_port_already_taken_fails_with_port_in_use() {
    let env = env_or_skip!();
    let ids = Ids::new("port");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let port = free_port();
    let httpd = format!("{}/shoal-test/httpd:1.0", env.registry);
    let web = || {
        planned(
            "web",
            &httpd,
            ContainerConfig {
                ports: vec![Port {
                    internal: 8080,
                    external: Some(port),
                    protocol: Protocol::Tcp,
                }],
                ..Default::default()
            },
        )
    };
    let first = ids.prefix("one");
    let second = ids.prefix("two");
    let (r, _) = deploy(&rt, &plan(&ids, &first, "1", vec![web()])).await;
    r.unwrap();
    let (r, _) = deploy(&rt, &plan(&ids, &second, "1", vec![web()])).await;
    let err = r.unwrap_err();
    match &err {
        RuntimeError::PortInUse { container, detail } => {
            assert_eq!(container, "web");
            assert!(detail.contains(&port.to_string()), "{detail}");
        }
        other => panic!("expected PortInUse, got {other:?}"),
    }
    // The first deployment still serves.
    assert!(http_get(port).await.contains("hello from"));

    rt.remove_prefix(&ids.team, &first).await.unwrap();
    rt.remove_prefix(&ids.team, &second).await.unwrap();
}

#[tokio::test]
async fn expected_state_and_health_are_checked() {
    let env = env_or_skip!();
    let ids = Ids::new("expect");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let exited = |code: Option<i64>| {
        Some(ExpectedState {
            state: ExpectedRunState::Exited,
            exit_code: code,
            timeout_s: Some(20),
        })
    };

    // Expected running, exits at once.
    let p = ids.prefix("early");
    let (r, _) = deploy(
        &rt,
        &plan(
            &ids,
            &p,
            "1",
            vec![planned("app", &busybox, shell("exit 3"))],
        ),
    )
    .await;
    let err = r.unwrap_err();
    match &err {
        RuntimeError::UnexpectedState {
            container, actual, ..
        } => {
            assert_eq!(container, "app");
            assert!(actual.contains("exited with code 3"), "{actual}");
        }
        other => panic!("expected UnexpectedState, got {other:?}"),
    }
    // Left in place for inspection.
    let listed = rt.containers(&ids.team, Some(&p)).await.unwrap();
    assert_eq!(listed[0].state.state, "exited");
    assert_eq!(listed[0].state.exit_code, Some(3));

    // The first of two containers dies a second after it started: the next
    // one has started by then (the short step settle), but the try still
    // fails, since every container must stay up for the full settle time.
    let p = ids.prefix("late");
    let (r, _) = deploy(
        &rt,
        &plan(
            &ids,
            &p,
            "1",
            vec![
                planned("dies", &busybox, shell("sleep 1; exit 5")),
                planned("stays", &busybox, shell("sleep 600")),
            ],
        ),
    )
    .await;
    match r.unwrap_err().root() {
        RuntimeError::UnexpectedState {
            container, actual, ..
        } => {
            assert_eq!(container, "dies");
            assert!(actual.contains("exited with code 5"), "{actual}");
        }
        other => panic!("expected UnexpectedState, got {other:?}"),
    }

    // A job expected to exit 0 does.
    let p = ids.prefix("job");
    let mut cfg = shell("echo done");
    cfg.expected = exited(None);
    let (r, _) = deploy(
        &rt,
        &plan(&ids, &p, "1", vec![planned("job", &busybox, cfg)]),
    )
    .await;
    let outcome = r.unwrap();
    assert_eq!(outcome.containers["job"].state, "exited");
    assert_eq!(outcome.containers["job"].exit_code, Some(0));

    // A job expected to exit 0 exits 4.
    let mut cfg = shell("exit 4");
    cfg.expected = exited(Some(0));
    let (r, _) = deploy(
        &rt,
        &plan(&ids, &p, "1", vec![planned("job", &busybox, cfg)]),
    )
    .await;
    // The previous job (same plan, so the same deployment and try) is
    // brought back, stopped as it was.
    assert!(
        matches!(r.as_ref().map_err(RuntimeError::root), Err(RuntimeError::UnexpectedState { actual, .. }) if actual.contains("code 4")),
        "{r:?}"
    );
    assert!(matches!(&r, Err(RuntimeError::Restored { .. })), "{r:?}");

    // A health check that fails.
    let p = ids.prefix("sick");
    let mut cfg = shell(SLEEP);
    cfg.health = Some(HealthCheck {
        command: vec!["sh".into(), "-c".into(), "echo not ready; exit 1".into()],
        interval_ms: Some(200),
        timeout_ms: Some(2000),
        retries: Some(2),
        start_period_ms: None,
    });
    let (r, _) = deploy(
        &rt,
        &plan(&ids, &p, "1", vec![planned("app", &busybox, cfg)]),
    )
    .await;
    match r {
        Err(RuntimeError::Unhealthy { container, detail }) => {
            assert_eq!(container, "app");
            assert!(detail.contains("not ready"), "{detail}");
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }

    // Restart policy "always" on a crashing container: not running steadily.
    let p = ids.prefix("loop");
    let mut cfg = shell("sleep 0.2; exit 2");
    cfg.restart = Some(RestartPolicy::Always);
    let (r, _) = deploy(
        &rt,
        &plan(&ids, &p, "1", vec![planned("app", &busybox, cfg)]),
    )
    .await;
    assert!(
        matches!(r, Err(RuntimeError::UnexpectedState { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn init_containers_run_to_completion_first() {
    let env = env_or_skip!();
    let ids = Ids::new("init");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let with_init = |script: &str| {
        let mut cfg = shell(&format!("cat /work/marker; {SLEEP}"));
        cfg.volumes = vec![Volume {
            name: "work".into(),
            path: "/work".into(),
            kind: VolumeKind::Rw,
            size: None,
        }];
        cfg.init_containers = vec![InitContainer {
            name: "prepare".into(),
            image: ImageRef {
                registry: "open".into(),
                name: "shoal-test/busybox".into(),
                tag: "1.0".into(),
            },
            command: vec!["sh".into(), "-c".into()],
            args: vec![script.into()],
            env: BTreeMap::from([("V".into(), "{{version}}".into())]),
        }];
        let mut c = planned("app", &busybox, cfg);
        c.init_images = BTreeMap::from([("prepare".into(), ImageSource::public(&busybox))]);
        c
    };

    let p = ids.prefix("ok");
    let (r, progress) = deploy(
        &rt,
        &plan(
            &ids,
            &p,
            "2.0",
            vec![with_init("sleep 1; echo prepared-$V > /work/marker")],
        ),
    )
    .await;
    r.unwrap();
    let lines = collect_logs(&rt, &ids.team, &format!("{p}-app"), None).await;
    assert_eq!(texts(&lines), vec!["prepared-2.0"]);
    // Init ran before the container was created, and is gone once done.
    let steps: Vec<String> = progress.iter().map(|e| e.message.clone()).collect();
    let init_done = steps
        .iter()
        .position(|m| m.contains("init container prepare done"));
    let created = steps.iter().position(|m| m == &format!("created {p}-app"));
    assert!(init_done.is_some() && init_done < created, "{steps:?}");
    let listed = rt.containers(&ids.team, Some(&p)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].init, None);

    // A failing init container fails the try before the container exists.
    let p = ids.prefix("fail");
    let (r, _) = deploy(&rt, &plan(&ids, &p, "2.0", vec![with_init("exit 4")])).await;
    match r {
        Err(RuntimeError::InitFailed {
            container,
            init,
            detail,
        }) => {
            assert_eq!((container.as_str(), init.as_str()), ("app", "prepare"));
            assert!(detail.contains("code 4"), "{detail}");
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }
    let listed = rt.containers(&ids.team, Some(&p)).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "only the failed init container: {listed:?}"
    );
    assert_eq!(listed[0].init.as_deref(), Some("prepare"));
}

#[tokio::test]
async fn container_commands_stop_start_restart_remove() {
    let env = env_or_skip!();
    let ids = Ids::new("cmd");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("cmd");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let (r, _) = deploy(
        &rt,
        &plan(
            &ids,
            &prefix,
            "1",
            vec![planned("app", &busybox, shell(SLEEP))],
        ),
    )
    .await;
    r.unwrap();
    let name = format!("{prefix}-app");
    let state = |rt: DockerRuntime, team: String| async move {
        rt.containers(&team, None).await.unwrap()[0]
            .state
            .state
            .clone()
    };
    let started_at = |rt: DockerRuntime, name: String| async move {
        rt.client()
            .inspect_container(&name, None)
            .await
            .unwrap()
            .state
            .unwrap()
            .started_at
            .unwrap()
    };

    rt.command(&ids.team, &name, ContainerAction::Stop)
        .await
        .unwrap();
    assert_eq!(state(rt.clone(), ids.team.clone()).await, "exited");
    rt.command(&ids.team, &name, ContainerAction::Start)
        .await
        .unwrap();
    assert_eq!(state(rt.clone(), ids.team.clone()).await, "running");
    let before = started_at(rt.clone(), name.clone()).await;
    rt.command(&ids.team, &name, ContainerAction::Restart)
        .await
        .unwrap();
    assert_eq!(state(rt.clone(), ids.team.clone()).await, "running");
    assert_ne!(started_at(rt.clone(), name.clone()).await, before);

    // Another team, or a name that does not exist, sees nothing.
    let err = rt
        .command("someone-else", &name, ContainerAction::Stop)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::ContainerNotFound { .. }),
        "{err:?}"
    );
    assert_eq!(state(rt.clone(), ids.team.clone()).await, "running");
    let err = rt
        .command(&ids.team, "no-such-container", ContainerAction::Start)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::ContainerNotFound { .. }),
        "{err:?}"
    );

    rt.command(&ids.team, &name, ContainerAction::Remove)
        .await
        .unwrap();
    assert!(rt.containers(&ids.team, None).await.unwrap().is_empty());
    rt.remove_prefix(&ids.team, &prefix).await.unwrap();
}

#[tokio::test]
async fn logs_tail_and_follow() {
    let env = env_or_skip!();
    let ids = Ids::new("logs");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("logs");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let p = plan(
        &ids,
        &prefix,
        "1",
        vec![
            planned(
                "batch",
                &busybox,
                shell(&format!(
                    "for i in 1 2 3 4 5; do echo line$i; done; sleep 0.2; echo oops >&2; {SLEEP}"
                )),
            ),
            planned(
                "ticker",
                &busybox,
                shell("i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done"),
            ),
        ],
    );
    let (r, _) = deploy(&rt, &p).await;
    r.unwrap();
    let batch = format!("{prefix}-batch");

    let all = collect_logs(&rt, &ids.team, &batch, None).await;
    assert_eq!(
        texts(&all),
        vec!["line1", "line2", "line3", "line4", "line5", "oops"]
    );
    assert!(all[..5].iter().all(|l| l.source == LogSource::Stdout));
    assert_eq!(all[5].source, LogSource::Stderr);

    let tail = collect_logs(&rt, &ids.team, &batch, Some(2)).await;
    assert_eq!(texts(&tail), vec!["line5", "oops"]);

    // Follow: only new lines (tail 0), as they come.
    let mut stream = rt
        .logs(&ids.team, &format!("{prefix}-ticker"), true, Some(0))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a new line within 10s")
            .expect("the stream goes on")
            .unwrap();
        got.push(line.text);
    }
    let numbers: Vec<u32> = got
        .iter()
        .map(|t| t.strip_prefix("tick").unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert!(numbers[0] > 1, "tail 0 must skip old lines: {got:?}");
    drop(stream);

    let err = rt.logs("someone-else", &batch, false, None).await.err();
    assert!(
        matches!(err, Some(RuntimeError::ContainerNotFound { .. })),
        "{err:?}"
    );
    rt.remove_prefix(&ids.team, &prefix).await.unwrap();
}

#[tokio::test]
async fn inspect_redacts_secret_values() {
    let env = env_or_skip!();
    let ids = Ids::new("inspect");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("insp");
    let secret = format!("pa55-{}", ids.tag);
    let mut cfg = shell(SLEEP);
    cfg.env = BTreeMap::from([("PLAIN".into(), "visible".into())]);
    let mut c = planned(
        "db",
        &format!("{}/shoal-test/busybox:1.0", env.registry),
        cfg,
    );
    c.secrets = SecretValues::from(BTreeMap::from([
        ("DB_PASSWORD".into(), secret.clone()),
        ("OTHER_SECRET".into(), format!("{secret}-2")),
    ]));
    let (r, _) = deploy(&rt, &plan(&ids, &prefix, "1", vec![c])).await;
    r.unwrap();
    let name = format!("{prefix}-db");

    let v = rt.inspect(&ids.team, &name).await.unwrap();
    let text = v.to_string();
    assert!(!text.contains(&secret), "secret leaked: {text}");
    let env_list: BTreeSet<&str> = v["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env_list.contains(format!("DB_PASSWORD={REDACTED}").as_str()),
        "{env_list:?}"
    );
    assert!(env_list.contains(format!("OTHER_SECRET={REDACTED}").as_str()));
    assert!(env_list.contains("PLAIN=visible"));
    assert_eq!(v["Name"], format!("/{name}"));

    // The engine itself does hold the value: the container gets it.
    let raw = rt.client().inspect_container(&name, None).await.unwrap();
    assert!(
        raw.config
            .unwrap()
            .env
            .unwrap()
            .contains(&format!("DB_PASSWORD={secret}"))
    );

    let err = rt.inspect("someone-else", &name).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::ContainerNotFound { .. }),
        "{err:?}"
    );
    rt.remove_prefix(&ids.team, &prefix).await.unwrap();
}

#[tokio::test]
async fn remove_prefix_leaves_nothing_of_the_prefix() {
    let env = env_or_skip!();
    let ids = Ids::new("rmprefix");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("gone");
    let kept = ids.prefix("kept");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let with_volume = || {
        let mut cfg = shell(SLEEP);
        cfg.volumes = vec![Volume {
            name: "data".into(),
            path: "/data".into(),
            kind: VolumeKind::Rw,
            size: None,
        }];
        cfg
    };
    for p in [&prefix, &kept] {
        let (r, _) = deploy(
            &rt,
            &plan(
                &ids,
                p,
                "1",
                vec![
                    planned("a", &busybox, with_volume()),
                    planned("b", &busybox, shell(SLEEP)),
                ],
            ),
        )
        .await;
        r.unwrap();
    }

    let removed = rt.remove_prefix(&ids.team, &prefix).await.unwrap();
    let names: BTreeSet<&str> = removed.containers.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            format!("{prefix}-a").as_str(),
            format!("{prefix}-b").as_str()
        ])
    );
    assert_eq!(removed.networks, vec![format!("shoal-{prefix}")]);
    assert_eq!(removed.volumes, vec![format!("{prefix}-data")]);

    let docker = rt.client();
    let label = |p: &str| {
        std::collections::HashMap::from([(
            "label",
            vec![
                format!("{LABEL_TEAM}={}", ids.team),
                format!("{LABEL_PREFIX}={p}"),
            ],
        )])
    };
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&label(&prefix))
                .build(),
        ))
        .await
        .unwrap();
    assert!(containers.is_empty(), "{containers:?}");
    assert!(
        docker
            .inspect_network(&format!("shoal-{prefix}"), None)
            .await
            .is_err()
    );
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new()
                .filters(&label(&prefix))
                .build(),
        ))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    assert!(volumes.is_empty(), "{volumes:?}");

    // The other prefix is whole.
    assert_eq!(
        rt.containers(&ids.team, Some(&kept)).await.unwrap().len(),
        2
    );
    assert!(
        docker
            .inspect_network(&format!("shoal-{kept}"), None)
            .await
            .is_ok()
    );
    // Nothing left to remove the second time.
    let again = rt.remove_prefix(&ids.team, &prefix).await.unwrap();
    assert!(again.containers.is_empty() && again.networks.is_empty() && again.volumes.is_empty());
    rt.remove_prefix(&ids.team, &kept).await.unwrap();
}

#[tokio::test]
async fn pull_policy_never_uses_only_local_images() {
    let env = env_or_skip!();
    let ids = Ids::new("local");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("local");
    let mut c = planned("a", "shoal-test/absent-image:0", shell(SLEEP));
    c.image.pull = PullPolicy::Never;
    let (r, _) = deploy(&rt, &plan(&ids, &prefix, "1", vec![c])).await;
    assert!(
        matches!(r, Err(RuntimeError::ImageNotFound { .. })),
        "{r:?}"
    );

    // An image that is on the node (another deploy pulled it) runs without a registry.
    let reference = format!("{}/shoal-test/busybox:1.0", env.registry);
    let (r, _) = deploy(
        &rt,
        &plan(
            &ids,
            &prefix,
            "1",
            vec![planned("a", &reference, shell(SLEEP))],
        ),
    )
    .await;
    r.unwrap();
    let mut c = planned("a", &reference, shell(SLEEP));
    c.image.pull = PullPolicy::Never;
    let (r, _) = deploy(&rt, &plan(&ids, &prefix, "1", vec![c])).await;
    assert!(r.unwrap().pulled.is_empty());
    rt.remove_prefix(&ids.team, &prefix).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_engine_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("docker.sock");
    let err = DockerRuntime::connect(Some(&format!("unix://{}", missing.display())))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("docker.sock"), "{err}");

    // A socket that exists but where no engine answers.
    let sock = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(listener);
    let err = DockerRuntime::connect(Some(sock.to_str().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");

    let err = DockerRuntime::connect(Some("tcp://127.0.0.1:2375"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::UnsupportedEndpoint { .. }),
        "{err:?}"
    );
}

// ------------------------------------------------- ownership and replacement

/// A busybox httpd on 8080 (published on `port`) answering `body`.
fn web_serving(reference: &str, name: &str, body: &str, port: u16) -> PlannedContainer {
    let mut cfg = shell(&format!(
        "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    ));
    cfg.ports = vec![Port {
        internal: 8080,
        external: Some(port),
        protocol: Protocol::Tcp,
    }];
    planned(name, reference, cfg)
}

/// A plan of `product`'s deployment `deployment` on `prefix`.
fn product_plan(
    ids: &Ids,
    product: &str,
    deployment: &str,
    prefix: &str,
    try_number: u32,
    containers: Vec<PlannedContainer>,
) -> DeployPlan {
    DeployPlan {
        team: ids.team.clone(),
        deployment: deployment.to_owned(),
        product: product.to_owned(),
        prefix: prefix.to_owned(),
        version: format!("v{try_number}"),
        try_number,
        containers,
    }
}

/// Deploys and notes when each progress event arrived, and when the call
/// returned.
async fn deploy_timed(
    rt: &dyn Runtime,
    plan: &DeployPlan,
) -> (
    Result<DeployOutcome, RuntimeError>,
    Vec<(std::time::Instant, ProgressEvent)>,
    std::time::Instant,
) {
    let (tx, mut rx) = mpsc::channel(PROGRESS_CAPACITY);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push((std::time::Instant::now(), e));
        }
        events
    });
    let result = rt.deploy(plan, &tx).await;
    let end = std::time::Instant::now();
    drop(tx);
    (result, collector.await.unwrap(), end)
}

async fn body_of(port: u16) -> String {
    let reply = http_get(port).await;
    reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// An engine timestamp (`2026-12-05T03:55:12.1234Z`, RFC 3339 in UTC) as
/// (date, seconds in the day), comparable.
fn instant_of(s: &str) -> (String, f64) {
    let (date, time) = s.split_once('T').unwrap();
    let time = time.trim_end_matches('Z');
    let time = time.split(['+', '-']).next().unwrap();
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let sec: f64 = parts.next().unwrap().parse().unwrap();
    (date.to_owned(), h * 3600.0 + m * 60.0 + sec)
}

/// The team's container names on the engine, also the ones set aside.
async fn engine_names(rt: &DockerRuntime, team: &str) -> BTreeSet<String> {
    let filters =
        std::collections::HashMap::from([("label", vec![format!("{LABEL_TEAM}={team}")])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    rt.client()
        .list_containers(Some(options))
        .await
        .unwrap()
        .iter()
        .filter_map(|c| c.names.as_ref()?.first().cloned())
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect()
}

#[tokio::test]
async fn two_products_share_a_prefix_and_each_keeps_serving() {
    let env = env_or_skip!();
    let ids = Ids::new("products");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("shared");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let (db_port, app_port) = (free_port(), free_port());
    let db = |t: u32| {
        product_plan(
            &ids,
            "db-product",
            "dep-db",
            &prefix,
            t,
            vec![web_serving(&busybox, "db", &format!("db-{t}"), db_port)],
        )
    };
    let app = |t: u32| {
        product_plan(
            &ids,
            "app-product",
            "dep-app",
            &prefix,
            t,
            vec![web_serving(&busybox, "app", &format!("app-{t}"), app_port)],
        )
    };

    deploy(&rt, &db(1)).await.0.unwrap();
    deploy(&rt, &app(1)).await.0.unwrap();
    assert_eq!(
        body_of(db_port).await,
        "db-1",
        "the app's deploy must leave the db"
    );
    assert_eq!(body_of(app_port).await, "app-1");
    let db_id = rt
        .containers(&ids.team, Some(&prefix))
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.container == "db")
        .unwrap()
        .id;

    // Redeploying the app again replaces only the app; the db keeps its
    // container and serves all along.
    let serving = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let watcher = tokio::spawn(async move {
            let mut answers = 0;
            while !s.load(Ordering::Relaxed) {
                assert_eq!(body_of(db_port).await, "db-1");
                answers += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        });
        deploy(&rt, &app(2)).await.0.unwrap();
        stop.store(true, Ordering::Relaxed);
        watcher.await.unwrap()
    };
    assert!(serving > 0);
    assert_eq!(body_of(app_port).await, "app-2");
    let now = rt.containers(&ids.team, Some(&prefix)).await.unwrap();
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now.iter().find(|c| c.container == "db").unwrap().id, db_id);

    // And the db's upgrade leaves the app.
    deploy(&rt, &db(2)).await.0.unwrap();
    assert_eq!(body_of(db_port).await, "db-2");
    assert_eq!(body_of(app_port).await, "app-2");
    assert_eq!(
        engine_names(&rt, &ids.team).await,
        BTreeSet::from([format!("{prefix}-app"), format!("{prefix}-db")])
    );
}

#[tokio::test]
async fn a_failed_upgrade_brings_the_previous_version_back() {
    let env = env_or_skip!();
    let ids = Ids::new("restore");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("up");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let port = free_port();
    let good = product_plan(
        &ids,
        "p",
        "dep-1",
        &prefix,
        1,
        vec![
            planned(
                "job",
                &busybox,
                ContainerConfig {
                    expected: Some(ExpectedState {
                        state: ExpectedRunState::Exited,
                        exit_code: Some(0),
                        timeout_s: Some(20),
                    }),
                    ..shell("echo ran >> /tmp/runs")
                },
            ),
            web_serving(&busybox, "web", "v1", port),
        ],
    );
    deploy(&rt, &good).await.0.unwrap();
    assert_eq!(body_of(port).await, "v1");
    let before = rt.containers(&ids.team, Some(&prefix)).await.unwrap();

    // The new web exits at once.
    let mut broken = web_serving(&busybox, "web", "v2", port);
    broken.config.args = Some(vec!["exit 1".into()]);
    let bad = product_plan(&ids, "p", "dep-2", &prefix, 1, vec![broken]);
    let (r, events, end) = deploy_timed(&rt, &bad).await;
    let err = r.unwrap_err();
    assert!(
        err.to_string().ends_with("previous version restored"),
        "{err}"
    );
    assert!(
        matches!(err.root(), RuntimeError::UnexpectedState { .. }),
        "{err:?}"
    );
    let failed_at = events
        .iter()
        .find(|(_, e)| e.message.contains("restoring the previous version"))
        .map(|(t, _)| *t)
        .expect("a restoring event");
    eprintln!(
        "previous version restored {} ms after the failure was seen",
        end.duration_since(failed_at).as_millis()
    );

    assert_eq!(body_of(port).await, "v1");
    let after = rt.containers(&ids.team, Some(&prefix)).await.unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    for c in &after {
        let old = before.iter().find(|b| b.container == c.container).unwrap();
        assert_eq!(c.id, old.id, "{} is the previous container", c.name);
        assert_eq!(c.deployment, "dep-1");
    }
    let web = after.iter().find(|c| c.container == "web").unwrap();
    assert_eq!(web.state.state, "running");
    // The finished job is not run again.
    let job = after.iter().find(|c| c.container == "job").unwrap();
    assert_eq!(job.state.state, "exited");
    assert_eq!(
        engine_names(&rt, &ids.team).await,
        BTreeSet::from([format!("{prefix}-job"), format!("{prefix}-web")])
    );
}

#[tokio::test]
async fn containers_start_in_order_each_once_healthy() {
    let env = env_or_skip!();
    let ids = Ids::new("order");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("ord");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let mut db = shell("sleep 2; touch /tmp/ready; sleep 3600");
    db.health = Some(HealthCheck {
        command: vec!["CMD-SHELL".into(), "test -f /tmp/ready".into()],
        interval_ms: Some(200),
        timeout_ms: Some(2000),
        retries: Some(50),
        start_period_ms: None,
    });
    let p = plan(
        &ids,
        &prefix,
        "1",
        vec![
            planned("db", &busybox, db),
            planned("app", &busybox, shell(SLEEP)),
        ],
    );
    let (r, events) = deploy(&rt, &p).await;
    r.unwrap();
    let waited = events.iter().position(|e| {
        e.step == shoal_node::runtime::Step::Wait
            && e.message.contains(&format!(
                "waiting for {prefix}-db to be running and healthy"
            ))
    });
    let app_created = events.iter().position(|e| {
        e.step == shoal_node::runtime::Step::Create && e.container.as_deref() == Some("app")
    });
    assert!(
        waited.is_some() && app_created.is_some() && waited < app_created,
        "{events:?}"
    );

    let docker = rt.client();
    let db_info = docker
        .inspect_container(&format!("{prefix}-db"), None)
        .await
        .unwrap();
    let app_info = docker
        .inspect_container(&format!("{prefix}-app"), None)
        .await
        .unwrap();
    // The db becomes healthy 2 s after it starts (the ready file); the app
    // starts only then.
    let db_started = db_info.state.as_ref().unwrap().started_at.clone().unwrap();
    let app_started = app_info.state.as_ref().unwrap().started_at.clone().unwrap();
    let (db_day, db_t) = instant_of(&db_started);
    let (app_day, app_t) = instant_of(&app_started);
    assert!(
        db_day != app_day || app_t - db_t >= 2.0,
        "db started at {db_started}, app at {app_started}"
    );
    let health = db_info.state.as_ref().unwrap().health.as_ref().unwrap();
    assert_eq!(
        health.status,
        Some(bollard::models::HealthStatusEnum::HEALTHY)
    );
}

#[tokio::test]
async fn teardown_removes_only_its_deployment() {
    let env = env_or_skip!();
    let ids = Ids::new("teardown");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("td");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let mut with_volume = shell(SLEEP);
    with_volume.volumes = vec![Volume {
        name: "data".into(),
        path: "/data".into(),
        kind: VolumeKind::Rw,
        size: None,
    }];
    deploy(
        &rt,
        &product_plan(
            &ids,
            "a",
            "dep-a",
            &prefix,
            1,
            vec![planned("a", &busybox, shell(SLEEP))],
        ),
    )
    .await
    .0
    .unwrap();
    deploy(
        &rt,
        &product_plan(
            &ids,
            "b",
            "dep-b",
            &prefix,
            1,
            vec![planned("b", &busybox, with_volume)],
        ),
    )
    .await
    .0
    .unwrap();
    // Another team's container of the same deployment id is not touched.
    let other = Ids::new("teardown-other");
    let _cleanup_other = Cleanup {
        team: other.team.clone(),
    };
    let other_prefix = other.prefix("td");
    deploy(
        &rt,
        &product_plan(
            &other,
            "a",
            "dep-a",
            &other_prefix,
            1,
            vec![planned("a", &busybox, shell(SLEEP))],
        ),
    )
    .await
    .0
    .unwrap();

    let removed = rt
        .teardown(&ids.team, "dep-a", &prefix, false)
        .await
        .unwrap();
    assert_eq!(removed.containers, vec![format!("{prefix}-a")]);
    assert!(removed.networks.is_empty(), "b still uses the network");
    let left = rt.containers(&ids.team, Some(&prefix)).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].container, "b");
    assert_eq!(left[0].state.state, "running");
    assert_eq!(rt.containers(&other.team, None).await.unwrap().len(), 1);

    // Nothing left to remove is success.
    assert_eq!(
        rt.teardown(&ids.team, "dep-a", &prefix, false)
            .await
            .unwrap()
            .containers
            .len(),
        0
    );

    let removed = rt
        .teardown(&ids.team, "dep-b", &prefix, true)
        .await
        .unwrap();
    assert_eq!(removed.containers, vec![format!("{prefix}-b")]);
    assert_eq!(removed.networks, vec![format!("shoal-{prefix}")]);
    assert_eq!(removed.volumes, vec![format!("{prefix}-data")]);
    assert!(rt.containers(&ids.team, None).await.unwrap().is_empty());
    assert_eq!(rt.containers(&other.team, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_try_cut_short_then_run_again_ends_with_one_version() {
    let env = env_or_skip!();
    let ids = Ids::new("cut");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("cut");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let port = free_port();
    let v1 = product_plan(
        &ids,
        "p",
        "dep-1",
        &prefix,
        1,
        vec![
            web_serving(&busybox, "web", "v1", port),
            planned("side", &busybox, shell(SLEEP)),
        ],
    );
    deploy(&rt, &v1).await.0.unwrap();
    let v2 = product_plan(
        &ids,
        "p",
        "dep-2",
        &prefix,
        1,
        vec![
            web_serving(&busybox, "web", "v2", port),
            planned("side", &busybox, shell(SLEEP)),
        ],
    );

    // Cut the try short while it waits for its first container, as a
    // killed daemon would.
    for round in 0..2 {
        let (tx, mut rx) = mpsc::channel(PROGRESS_CAPACITY);
        let (rt2, p2) = (rt.clone(), v2.clone());
        let task = tokio::spawn(async move { rt2.deploy(&p2, &tx).await });
        while let Some(e) = rx.recv().await {
            if e.message.starts_with("waiting for") {
                break;
            }
        }
        task.abort();
        let _ = task.await;
        let names = engine_names(&rt, &ids.team).await;
        assert!(
            names.iter().any(|n| n.ends_with(".prev-up")),
            "round {round}: {names:?}"
        );
    }

    // Run again: the replacement is finished.
    deploy(&rt, &v2).await.0.unwrap();
    assert_eq!(body_of(port).await, "v2");
    assert_eq!(
        engine_names(&rt, &ids.team).await,
        BTreeSet::from([format!("{prefix}-side"), format!("{prefix}-web")])
    );
    for c in rt.containers(&ids.team, Some(&prefix)).await.unwrap() {
        assert_eq!(c.deployment, "dep-2");
        assert_eq!(c.state.state, "running");
    }

    // Cut short again, then a run that fails: the version before is back
    // in full.
    let mut broken = web_serving(&busybox, "web", "v3", port);
    broken.config.args = Some(vec!["exit 1".into()]);
    let v3 = product_plan(
        &ids,
        "p",
        "dep-3",
        &prefix,
        1,
        vec![planned("side", &busybox, shell(SLEEP)), broken],
    );
    let (tx, mut rx) = mpsc::channel(PROGRESS_CAPACITY);
    let (rt2, p2) = (rt.clone(), v3.clone());
    let task = tokio::spawn(async move { rt2.deploy(&p2, &tx).await });
    while let Some(e) = rx.recv().await {
        if e.message.starts_with("waiting for") {
            break;
        }
    }
    task.abort();
    let _ = task.await;
    let err = deploy(&rt, &v3).await.0.unwrap_err();
    assert!(
        err.to_string().ends_with("previous version restored"),
        "{err}"
    );
    assert_eq!(body_of(port).await, "v2");
    let now = rt.containers(&ids.team, Some(&prefix)).await.unwrap();
    assert_eq!(now.len(), 2, "{now:?}");
    for c in now {
        assert_eq!(c.deployment, "dep-2");
        assert_eq!(c.state.state, "running");
    }
}

#[tokio::test]
async fn the_live_state_follows_engine_events() {
    let env = env_or_skip!();
    let ids = Ids::new("live");
    let _cleanup = Cleanup {
        team: ids.team.clone(),
    };
    let rt = runtime().await;
    let prefix = ids.prefix("live");
    let busybox = format!("{}/shoal-test/busybox:1.0", env.registry);
    let p = plan(
        &ids,
        &prefix,
        "1",
        vec![planned("app", &busybox, shell(SLEEP))],
    );
    let (r, _) = deploy(&rt, &p).await;
    r.unwrap();
    let name = format!("{prefix}-app");
    let live = rt.live(&ids.team).await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        (
            live[0].name.as_str(),
            live[0].state.as_str(),
            live[0].deployment.as_str()
        ),
        (name.as_str(), "running", p.deployment.as_str())
    );
    assert!(
        rt.live("another-team")
            .await
            .unwrap()
            .iter()
            .all(|c| c.name != name)
    );

    // The engine's events for the team's containers arrive on the stream:
    // a kill behind shoal's back is seen without polling.
    let mut changes = rt.changes(&ids.team).await.unwrap();
    rt.client().kill_container(&name, None).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        futures::StreamExt::next(&mut changes),
    )
    .await
    .expect("an event for the killed container")
    .expect("the stream stays open");
    let live = rt.live(&ids.team).await.unwrap();
    assert_eq!(live[0].state, "exited", "{live:?}");
    assert_eq!(live[0].exit_code, Some(137), "{live:?}");
}
