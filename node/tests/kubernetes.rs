#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The kubernetes runtime against an in-process fake of the Kubernetes API
//! server (real HTTP on 127.0.0.1, the kube client unchanged): the exact
//! objects a plan becomes (golden files; `SHOAL_UPDATE_GOLDEN=1` rewrites
//! them), idempotent re-applies, rollout success and failure reasons,
//! container commands, removing a prefix, and the in-cluster manifests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use shoal_node::runtime::{
    DeployPlan, ImageSource, KubernetesRuntime, PlannedContainer, PullPolicy, RegistryCredentials,
    Runtime, RuntimeError, SecretValues,
};
use shoal_protocol::model::{
    ContainerAction, ContainerConfig, HealthCheck, KubernetesConfig, Port, Probe, Protocol,
    Resources, SecretDecl, Strategy, Volume, VolumeKind,
};
use tokio::sync::mpsc;

// ------------------------------------------------------------------ fake

/// (resource, namespace or "", name)
type Key = (String, String, String);

#[derive(Default)]
struct FakeState {
    objects: BTreeMap<Key, Value>,
    /// Every server-side apply body received, in order.
    applied: Vec<(Key, Value)>,
    /// Deployments report a complete rollout as soon as they change.
    auto_rollout: bool,
    /// Pod logs by (namespace, pod).
    logs: BTreeMap<(String, String), String>,
    next_uid: u64,
}

/// The fake API server's state and the test's control handle on it.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.with(|s| s.objects.get(&key(resource, ns, name)).cloned())
    }

    fn put(&self, resource: &str, ns: &str, obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        self.with(|s| s.objects.insert(key(resource, ns, &name), obj));
    }

    fn set_auto_rollout(&self, on: bool) {
        self.with(|s| s.auto_rollout = on);
    }

    fn applied(&self) -> Vec<(Key, Value)> {
        self.with(|s| s.applied.clone())
    }

    /// Reports the Deployment's rollout as complete.
    fn finish_rollout(&self, ns: &str, name: &str) {
        self.with(|s| {
            let d = s.objects.get_mut(&key("deployments", ns, name)).unwrap();
            complete(d);
        });
    }

    fn add_pod(&self, ns: &str, name: &str, labels: Value, status: Value) {
        self.put(
            "pods",
            ns,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"containers": [{"name": "web", "image": "x"}]},
                "status": status,
            }),
        );
    }

    fn set_log(&self, ns: &str, pod: &str, text: &str) {
        self.with(|s| s.logs.insert((ns.into(), pod.into()), text.into()));
    }

    fn count(&self, resource: &str) -> usize {
        self.with(|s| s.objects.keys().filter(|k| k.0 == resource).count())
    }
}

fn key(resource: &str, ns: &str, name: &str) -> Key {
    (resource.into(), ns.into(), name.into())
}

fn complete(d: &mut Value) {
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    d["status"] = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    });
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "namespaces" => ("v1", "Namespace"),
        "deployments" => ("apps/v1", "Deployment"),
        "services" => ("v1", "Service"),
        "secrets" => ("v1", "Secret"),
        "pods" => ("v1", "Pod"),
        "persistentvolumeclaims" => ("v1", "PersistentVolumeClaim"),
        _ => ("v1", "Unknown"),
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}

fn ok_json(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `k=v,k2=v2` selectors (equality only, which is all shoal uses).
fn matches(selector: Option<&String>, obj: &Value) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// RFC 7386 merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// (resource, namespace, name, subresource) of an API path.
fn parse_path(path: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => segs.get(2..)?,
        Some(&"apis") => segs.get(3..)?,
        _ => return None,
    };
    let s = |i: usize| rest.get(i).map(|x| (*x).to_owned());
    if rest.first() == Some(&"namespaces") {
        return Some(match rest.len() {
            1 => ("namespaces".into(), String::new(), None, None),
            2 => ("namespaces".into(), String::new(), s(1), None),
            _ => (rest[2].to_owned(), rest[1].to_owned(), s(3), s(4)),
        });
    }
    Some((rest.first()?.to_string(), String::new(), s(1), s(2)))
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((resource, ns, name, sub)) = parse_path(uri.path()) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("no route {uri}"));
    };
    let q = query(&uri);
    let mut st = fake.0.lock().unwrap();
    let (api_version, kind) = kind_of(&resource);
    match (method, name) {
        (Method::GET, Some(name)) if sub.as_deref() == Some("log") => {
            match st.logs.get(&(ns.clone(), name.clone())) {
                Some(text) => (StatusCode::OK, Body::from(text.clone())).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("no logs of {name}"),
                ),
            }
        }
        (Method::GET, Some(name)) => match st.objects.get(&key(&resource, &ns, &name)) {
            Some(v) => ok_json(v),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} \"{name}\" not found"),
            ),
        },
        (Method::GET, None) => {
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.0 == resource
                        && (ns.is_empty() || k.1 == ns)
                        && matches(q.get("labelSelector"), v)
                })
                .map(|(_, v)| v.clone())
                .collect();
            ok_json(&json!({
                "apiVersion": api_version, "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": "1"}, "items": items,
            }))
        }
        (Method::PATCH, Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let patch: Value = serde_json::from_slice(&body).unwrap();
            let k = key(&resource, &ns, &name);
            let old = st.objects.get(&k).cloned();
            let mut new = if ct.starts_with("application/apply-patch") {
                assert_eq!(q.get("fieldManager").map(String::as_str), Some("shoal"));
                assert_eq!(q.get("force").map(String::as_str), Some("true"));
                st.applied.push((k.clone(), patch.clone()));
                let mut base = old.clone().unwrap_or(json!({}));
                merge_patch(&mut base, &patch);
                base
            } else {
                let Some(mut base) = old.clone() else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{name} not found"),
                    );
                };
                merge_patch(&mut base, &patch);
                base
            };
            match &old {
                None => {
                    st.next_uid += 1;
                    new["metadata"]["uid"] = json!(format!("uid-{}", st.next_uid));
                    new["metadata"]["generation"] = json!(1);
                    if !ns.is_empty() {
                        new["metadata"]["namespace"] = json!(ns);
                    }
                }
                Some(old) => {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                    let changed = old.get("spec") != new.get("spec");
                    new["metadata"]["generation"] = json!(if changed { g + 1 } else { g });
                }
            }
            if resource == "deployments" && st.auto_rollout {
                complete(&mut new);
            }
            st.objects.insert(k, new.clone());
            ok_json(&new)
        }
        (Method::DELETE, Some(name)) => {
            let Some(old) = st.objects.remove(&key(&resource, &ns, &name)) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                );
            };
            if resource == "namespaces" {
                st.objects.retain(|k, _| k.1 != name);
            }
            ok_json(&old)
        }
        (m, n) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{m} {resource} {n:?} is not served by the fake"),
        ),
    }
}

async fn start() -> (Fake, KubernetesRuntime) {
    let fake = Fake::default();
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let rt = KubernetesRuntime::from_config(config)
        .unwrap()
        .with_poll_interval(Duration::from_millis(20))
        .with_rollout_timeout(Duration::from_secs(10));
    (fake, rt)
}

// ------------------------------------------------------------------ plans

const TEAM: &str = "5eafa1c0ffee00112233445566778899aabbccddeeff00112233445566778899";

fn probe(command: &[&str], http: Option<&str>, port: Option<u16>) -> Probe {
    Probe {
        command: command.iter().map(|s| s.to_string()).collect(),
        http_path: http.map(str::to_owned),
        port,
        period_s: Some(10),
        initial_delay_s: Some(5),
        failure_threshold: Some(3),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A realistic two-container plan: a web front with a login-protected
/// image, secrets, a public port, a claim and a tmpfs, probes, resources
/// and a load balancer; a worker with a read-only claim, a uid and a
/// health check.
fn plan(prefix: &str) -> DeployPlan {
    let web = ContainerConfig {
        env: map(&[("APP_ENV", "production"), ("VERSION", "{{version}}")]),
        secrets: BTreeMap::from([("DB_PASSWORD".to_owned(), SecretDecl { required: true })]),
        args: Some(vec!["--listen".into(), "0.0.0.0:8080".into()]),
        ports: vec![Port {
            internal: 8080,
            external: Some(80),
            protocol: Protocol::Tcp,
        }],
        volumes: vec![
            Volume {
                name: "data".into(),
                path: "/var/lib/web".into(),
                kind: VolumeKind::Rw,
                size: Some("2g".into()),
            },
            Volume {
                name: "cache".into(),
                path: "/cache".into(),
                kind: VolumeKind::Tmpfs,
                size: Some("64m".into()),
            },
        ],
        labels: map(&[("com.example.owner", "shop-team")]),
        kubernetes: Some(KubernetesConfig {
            replicas: Some(3),
            strategy: Some(Strategy::Rolling),
            liveness: Some(probe(&[], Some("/healthz"), Some(8080))),
            readiness: Some(probe(&["cat", "/tmp/ready"], None, None)),
            startup: Some(probe(&[], None, Some(8080))),
            requests: Some(Resources {
                cpu: Some("250m".into()),
                memory: Some("128m".into()),
            }),
            limits: Some(Resources {
                cpu: Some("1".into()),
                memory: Some("512m".into()),
            }),
            service_type: Some("LoadBalancer".into()),
            labels: BTreeMap::from([
                ("deployment".to_owned(), map(&[("tier", "frontend")])),
                ("pod".to_owned(), map(&[("app.kubernetes.io/name", "web")])),
            ]),
            annotations: BTreeMap::from([(
                "service".to_owned(),
                map(&[("service.beta.kubernetes.io/aws-load-balancer-type", "nlb")]),
            )]),
        }),
        ..ContainerConfig::default()
    };
    let worker = ContainerConfig {
        env: map(&[("QUEUE", "jobs")]),
        command: Some(vec!["/usr/local/bin/worker".into()]),
        user: Some("1000:1000".into()),
        volumes: vec![Volume {
            name: "config".into(),
            path: "/etc/worker".into(),
            kind: VolumeKind::Ro,
            size: None,
        }],
        health: Some(HealthCheck {
            command: vec!["CMD-SHELL".into(), "test -f /tmp/alive".into()],
            interval_ms: Some(5000),
            timeout_ms: Some(2000),
            retries: Some(3),
            start_period_ms: None,
        }),
        cpu: Some("0.5".into()),
        memory: Some("256m".into()),
        kubernetes: Some(KubernetesConfig {
            replicas: Some(1),
            strategy: Some(Strategy::Recreate),
            ..KubernetesConfig::default()
        }),
        ..ContainerConfig::default()
    };
    DeployPlan {
        team: TEAM.into(),
        deployment: "0123456789abcdef01234567".into(),
        prefix: prefix.into(),
        version: "1.4.0".into(),
        try_number: 1,
        containers: vec![
            PlannedContainer {
                name: "web".into(),
                config: web,
                image: ImageSource {
                    reference: "ghcr.io/acme/web:1.4.0".into(),
                    credentials: Some(RegistryCredentials {
                        user: "acme-bot".into(),
                        password: "registry-pass-123".into(),
                    }),
                    pull: PullPolicy::IfChanged,
                },
                init_images: BTreeMap::new(),
                secrets: SecretValues::from(map(&[("DB_PASSWORD", "s3cret-db-pass")])),
            },
            PlannedContainer {
                name: "worker".into(),
                config: worker,
                image: ImageSource::public("library/redis:7"),
                init_images: BTreeMap::new(),
                secrets: SecretValues::default(),
            },
        ],
    }
}

async fn deploy(rt: &KubernetesRuntime, plan: &DeployPlan) -> Result<Vec<String>, RuntimeError> {
    let (tx, mut rx) = mpsc::channel::<shoal_node::runtime::ProgressEvent>(256);
    let drain = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(e.message);
        }
        out
    });
    let r = rt.deploy(plan, &tx).await;
    drop(tx);
    let events = drain.await.unwrap();
    r.map(|_| events)
}

fn pod_labels(prefix: &str, container: &str) -> Value {
    json!({
        "io.shoal.team": &TEAM[..32],
        "io.shoal.prefix": prefix,
        "io.shoal.container": container,
    })
}

// ------------------------------------------------------------------ tests

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/k8s")
}

#[tokio::test]
async fn a_two_container_plan_applies_exactly_the_golden_objects() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    deploy(&rt, &plan("shop")).await.unwrap();

    let mut bodies = BTreeMap::new();
    for ((resource, _, name), body) in fake.applied() {
        bodies.insert(format!("{resource}-{name}.json"), body);
    }
    let dir = golden_dir();
    let update = std::env::var("SHOAL_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    if update {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (file, body) in &bodies {
        let text = serde_json::to_string_pretty(body).unwrap() + "\n";
        let path = dir.join(file);
        if update {
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (SHOAL_UPDATE_GOLDEN=1 writes it)", path.display())
        });
        assert_eq!(
            text, want,
            "{file} differs from its golden file (SHOAL_UPDATE_GOLDEN=1 rewrites it)"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, bodies.keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        on_disk,
        [
            "deployments-web.json",
            "deployments-worker.json",
            "namespaces-shop.json",
            "persistentvolumeclaims-web-data.json",
            "persistentvolumeclaims-worker-config.json",
            "secrets-web-registry.json",
            "secrets-web-secrets.json",
            "services-web.json",
        ]
    );

    // The Deployment refers to its secret value; it never holds it.
    let web = serde_json::to_string(&bodies["deployments-web.json"]).unwrap();
    assert!(
        !web.contains("s3cret") && !web.contains("registry-pass"),
        "{web}"
    );
    assert!(web.contains("secretKeyRef"), "{web}");
}

#[tokio::test]
async fn a_second_deploy_of_the_same_plan_changes_nothing() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    let p = plan("shop");
    deploy(&rt, &p).await.unwrap();
    let before: Vec<Value> = ["web", "worker"]
        .iter()
        .map(|n| fake.get("deployments", "shop", n).unwrap())
        .collect();
    let first = fake.applied();
    deploy(&rt, &p).await.unwrap();
    let after: Vec<Value> = ["web", "worker"]
        .iter()
        .map(|n| fake.get("deployments", "shop", n).unwrap())
        .collect();
    assert_eq!(before, after);
    for d in &after {
        assert_eq!(d["metadata"]["generation"], 1, "{d}");
    }
    let all = fake.applied();
    assert_eq!(
        all[first.len()..],
        first[..],
        "the same bodies are applied again"
    );

    // A change of spec makes a new generation.
    let mut changed = p.clone();
    changed.containers[1]
        .config
        .env
        .insert("QUEUE".into(), "urgent".into());
    deploy(&rt, &changed).await.unwrap();
    let w = fake.get("deployments", "shop", "worker").unwrap();
    assert_eq!(w["metadata"]["generation"], 2);
    let web = fake.get("deployments", "shop", "web").unwrap();
    assert_eq!(web["metadata"]["generation"], 1);
}

#[tokio::test]
async fn a_deploy_waits_for_the_rollout_then_succeeds() {
    let (fake, rt) = start().await;
    let p = plan("shop");
    let rt2 = rt.clone();
    let task = tokio::spawn(async move { deploy(&rt2, &p).await });
    for _ in 0..200 {
        if fake.get("deployments", "shop", "worker").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "the deploy must wait for the rollouts");
    fake.finish_rollout("shop", "web");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "worker is still rolling out");
    fake.finish_rollout("shop", "worker");
    let events = task.await.unwrap().unwrap();
    assert!(
        events.iter().any(|e| e.contains("rollout complete")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_rollout_that_never_completes_times_out() {
    let (_fake, rt) = start().await;
    let rt = rt.with_rollout_timeout(Duration::from_millis(300));
    let err = deploy(&rt, &plan("shop")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("rollout"), "{err}");
}

async fn failing(status: Value) -> RuntimeError {
    let (fake, rt) = start().await;
    fake.add_pod("shop", "web-5d8f-abcde", pod_labels("shop", "web"), status);
    deploy(&rt, &plan("shop")).await.unwrap_err()
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({
        "phase": "Pending",
        "containerStatuses": [{
            "name": "web", "image": "ghcr.io/acme/web:1.4.0", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }],
    })
}

#[tokio::test]
async fn an_image_pull_back_off_fails_the_try_with_its_reason() {
    let err = failing(waiting(
        "ImagePullBackOff",
        "Back-off pulling image \"ghcr.io/acme/web:1.4.0\"",
    ))
    .await;
    assert!(matches!(err, RuntimeError::Pull { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("ImagePullBackOff") && msg.contains("ghcr.io/acme/web:1.4.0"),
        "{msg}"
    );
    let err = failing(waiting("ErrImagePull", "manifest unknown")).await;
    assert!(
        err.to_string().contains("ErrImagePull: manifest unknown"),
        "{err}"
    );
}

#[tokio::test]
async fn a_crash_loop_fails_the_try_with_its_reason() {
    let err = failing(waiting(
        "CrashLoopBackOff",
        "back-off 40s restarting failed container=web",
    ))
    .await;
    match &err {
        RuntimeError::Rollout {
            container, reason, ..
        } => {
            assert_eq!(container, "web");
            assert_eq!(reason, "CrashLoopBackOff");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("CrashLoopBackOff"), "{err}");
}

#[tokio::test]
async fn an_unschedulable_pod_fails_the_try_with_its_reason() {
    let err = failing(json!({
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
        }],
    }))
    .await;
    match &err {
        RuntimeError::Rollout { reason, .. } => assert_eq!(reason, "Unschedulable"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("Insufficient cpu"), "{err}");
}

#[tokio::test]
async fn a_namespace_of_another_team_is_not_taken_over() {
    let (fake, rt) = start().await;
    fake.put(
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "shop", "labels": {"io.shoal.team": "someoneelse"}}}),
    );
    let err = deploy(&rt, &plan("shop")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NameInUse { .. }), "{err}");
    assert_eq!(fake.count("deployments"), 0);
}

#[tokio::test]
async fn container_commands_scale_restart_inspect_log_and_remove() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    deploy(&rt, &plan("shop")).await.unwrap();

    let list = rt.containers(TEAM, Some("shop")).await.unwrap();
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["shop-web", "shop-worker"]);
    assert_eq!(list[0].state.state, "running");
    assert_eq!(list[0].version, "1.4.0");
    assert_eq!(list[0].status, "3/3 available");
    assert_eq!(rt.containers(TEAM, None).await.unwrap().len(), 2);
    assert!(rt.containers("other", None).await.unwrap().is_empty());

    let replicas = || fake.get("deployments", "shop", "web").unwrap()["spec"]["replicas"].clone();
    rt.command(TEAM, "shop-web", ContainerAction::Stop)
        .await
        .unwrap();
    assert_eq!(replicas(), 0);
    let list = rt.containers(TEAM, Some("shop")).await.unwrap();
    assert_eq!(list[0].state.state, "stopped");
    rt.command(TEAM, "shop-web", ContainerAction::Start)
        .await
        .unwrap();
    assert_eq!(replicas(), 3);
    rt.command(TEAM, "shop-web", ContainerAction::Restart)
        .await
        .unwrap();
    let web = fake.get("deployments", "shop", "web").unwrap();
    let at =
        &web["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
    assert!(at.as_str().is_some_and(|s| s.ends_with('Z')), "{web}");

    // Inspect: the Deployment, without managed fields or secret values.
    let v = rt.inspect(TEAM, "shop-web").await.unwrap();
    assert_eq!(v["kind"], "Deployment");
    let text = v.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("registry-pass"),
        "{text}"
    );

    // Logs of the newest running pod.
    fake.add_pod(
        "shop",
        "web-abc",
        pod_labels("shop", "web"),
        json!({"phase": "Running"}),
    );
    fake.set_log("shop", "web-abc", "hello\nworld\n");
    let lines: Vec<String> = rt
        .logs(TEAM, "shop-web", false, Some(10))
        .await
        .unwrap()
        .map(|l| l.unwrap().text)
        .collect()
        .await;
    assert_eq!(lines, ["hello", "world"]);

    let err = rt
        .command(TEAM, "shop-nope", ContainerAction::Stop)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::ContainerNotFound { .. }),
        "{err}"
    );

    rt.command(TEAM, "shop-web", ContainerAction::Remove)
        .await
        .unwrap();
    assert!(fake.get("deployments", "shop", "web").is_none());
    assert!(fake.get("services", "shop", "web").is_none());
    assert!(fake.get("secrets", "shop", "web-secrets").is_none());
    assert!(fake.get("secrets", "shop", "web-registry").is_none());
    assert!(fake.get("deployments", "shop", "worker").is_some());
}

#[tokio::test]
async fn a_plan_without_a_container_removes_its_objects() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    let mut p = plan("shop");
    deploy(&rt, &p).await.unwrap();
    p.containers.truncate(1);
    deploy(&rt, &p).await.unwrap();
    assert!(fake.get("deployments", "shop", "worker").is_none());
    assert!(fake.get("deployments", "shop", "web").is_some());
}

#[tokio::test]
async fn remove_prefix_deletes_the_namespace_shoal_created() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    deploy(&rt, &plan("shop")).await.unwrap();
    let ns = fake.get("namespaces", "", "shop").unwrap();
    assert_eq!(ns["metadata"]["annotations"]["io.shoal.created"], "true");
    let removed = rt.remove_prefix(TEAM, "shop").await.unwrap();
    assert_eq!(removed.containers, ["shop-web", "shop-worker"]);
    assert_eq!(removed.volumes, ["web-data", "worker-config"]);
    assert_eq!(removed.networks, ["shop"]);
    assert!(fake.get("namespaces", "", "shop").is_none());
    assert_eq!(fake.count("deployments"), 0);
    assert_eq!(
        rt.remove_prefix(TEAM, "shop").await.unwrap(),
        Default::default()
    );
}

#[tokio::test]
async fn remove_prefix_keeps_a_namespace_it_did_not_create() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    fake.put(
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shared"}}),
    );
    // Something of somebody else in the same namespace.
    fake.put(
        "services",
        "shared",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "theirs", "namespace": "shared"}}),
    );
    deploy(&rt, &plan("shared")).await.unwrap();
    let ns = fake.get("namespaces", "", "shared").unwrap();
    assert!(
        ns["metadata"]["annotations"]["io.shoal.created"].is_null(),
        "{ns}"
    );
    let removed = rt.remove_prefix(TEAM, "shared").await.unwrap();
    assert_eq!(removed.containers, ["shared-web", "shared-worker"]);
    assert!(removed.networks.is_empty());
    assert!(fake.get("namespaces", "", "shared").is_some());
    assert!(fake.get("services", "shared", "theirs").is_some());
    assert_eq!(fake.count("deployments"), 0);
    assert_eq!(fake.count("secrets"), 0);
    assert_eq!(fake.count("persistentvolumeclaims"), 0);
    assert_eq!(fake.count("services"), 1);
}

#[test]
fn the_node_manifests_parse_and_grant_exactly_what_the_runtime_uses() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use serde::Deserialize as _;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/k8s/shoal-node.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut kinds = Vec::new();
    let mut role = None;
    let mut deployment = None;
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "Namespace" => drop(serde_json::from_value::<Namespace>(v).unwrap()),
            "ServiceAccount" => drop(serde_json::from_value::<ServiceAccount>(v).unwrap()),
            "ClusterRole" => role = Some(serde_json::from_value::<ClusterRole>(v).unwrap()),
            "ClusterRoleBinding" => {
                let b = serde_json::from_value::<ClusterRoleBinding>(v).unwrap();
                assert_eq!(b.role_ref.name, "shoal-node");
                let s = &b.subjects.unwrap()[0];
                assert_eq!(
                    (s.name.as_str(), s.namespace.as_deref()),
                    ("shoal-node", Some("shoal"))
                );
            }
            "PersistentVolumeClaim" => {
                drop(serde_json::from_value::<PersistentVolumeClaim>(v).unwrap())
            }
            "Deployment" => deployment = Some(serde_json::from_value::<Deployment>(v).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "PersistentVolumeClaim",
            "Deployment"
        ]
    );

    // RBAC: exactly the resources the runtime touches, with the verbs it uses.
    let mut granted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in role.unwrap().rules.unwrap() {
        for group in rule.api_groups.unwrap() {
            for r in rule.resources.clone().unwrap() {
                let name = if group.is_empty() {
                    r
                } else {
                    format!("{group}/{r}")
                };
                let mut verbs = rule.verbs.clone();
                verbs.sort();
                assert!(granted.insert(name, verbs).is_none());
            }
        }
    }
    let write = ["create", "delete", "get", "list", "patch"];
    let read = ["get", "list"];
    let want: BTreeMap<String, Vec<String>> = [
        ("namespaces", &write[..]),
        ("apps/deployments", &write[..]),
        ("services", &write[..]),
        ("secrets", &write[..]),
        ("persistentvolumeclaims", &write[..]),
        ("pods", &read[..]),
        ("pods/log", &["get"][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(granted, want);

    let d = deployment.unwrap();
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("shoal-node"));
    let args = pod.containers[0].args.clone().unwrap().join(" ");
    assert!(
        args.starts_with("node run --runtime kubernetes --data-dir /var/lib/shoal"),
        "{args}"
    );
    let claim = pod.volumes.unwrap()[0]
        .persistent_volume_claim
        .clone()
        .unwrap()
        .claim_name;
    assert_eq!(claim, "shoal-store");
}

/// A node with the kubernetes runtime (connected to the fake) runs a
/// deployment that targets it and reports it `successful` once the rollout
/// is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_node_reports_a_deployment_successful_after_its_rollout() {
    use shoal_node::daemon::{Node, now_ms};
    use shoal_node::executor::{Executor, RuntimeFactory, Unsealer};
    use shoal_node::mesh::{Mesh, MeshConfig};
    use shoal_node::store::TeamRecord;
    use shoal_node::sync::{SyncConfig, SyncEngine};
    use shoal_protocol::model::{
        DeploymentStatus, HUB_REGISTRY_ID, Image, ImageRef, ProductKind, VersionKind,
    };
    use shoal_protocol::{Action, SecretKey, testkit};
    use tokio_util::sync::CancellationToken;

    let (fake, rt) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let owner = testkit::key(1);
    let mut node = Node::open(dir.path()).unwrap();
    let node_key = SecretKey::from_seed(node.key_seed());
    let g = testkit::genesis(&owner, &node_key, now_ms());
    let team = node
        .install_team(TeamRecord::new("team", [7; 32], now_ms()), vec![g])
        .unwrap();
    let record = node.record(team).unwrap().unwrap();
    let replica = node.take_replica(team).unwrap();
    let cancel = CancellationToken::new();
    let (mesh, events) = Mesh::spawn(
        MeshConfig {
            identity_seed: node.key_seed(),
            psk: record.psk,
            mdns: false,
            agent_version: "shoal-test".into(),
        },
        cancel.child_token(),
    )
    .unwrap();
    let engine = SyncEngine::spawn(
        replica,
        node.store(),
        node.key(),
        mesh.handle(),
        events,
        SyncConfig::default(),
        cancel.child_token(),
    )
    .unwrap();
    let sync = engine.handle();
    let factory: RuntimeFactory = {
        let rt = rt.clone();
        Arc::new(move || {
            let rt = rt.clone();
            Box::pin(async move { Ok(Arc::new(rt) as Arc<dyn Runtime>) })
        })
    };
    let unsealer: Unsealer = Arc::new(|_| Err("no sealed values in this test".into()));
    let executor = Executor::spawn(
        team,
        sync.clone(),
        node_key.clone(),
        node.store(),
        factory,
        unsealer,
        cancel.child_token(),
    );

    type Make = Box<dyn FnOnce(&[String]) -> Action + Send>;
    let act = |make: Make| {
        let sync = sync.clone();
        let owner = owner.clone();
        async move {
            let ctx = sync.next_context(owner.public()).await.unwrap();
            let ids: Vec<String> = (0..4).map(|k| ctx.new_id(k)).collect();
            let body = sync.prepare(owner.public(), make(&ids)).await.unwrap();
            sync.submit(body.sign(&owner).unwrap()).await.unwrap();
            ids[0].clone()
        }
    };
    let product = act(Box::new(|ids| Action::ProductCreate {
        id: ids[0].clone(),
        name: "web".into(),
        kind: ProductKind::Complex,
        description: String::new(),
        version: None,
    }))
    .await;
    let version = act(Box::new(move |ids| Action::VersionCreate {
        id: ids[0].clone(),
        product,
        name: "1.0.0".into(),
        kind: VersionKind::Incremental,
        changelog: String::new(),
        auto_copy: false,
    }))
    .await;
    let v = version.clone();
    act(Box::new(move |_| Action::ImageAdd {
        version: v,
        image: Image {
            name: "web".into(),
            image: ImageRef {
                registry: HUB_REGISTRY_ID.into(),
                name: "library/nginx".into(),
                tag: "1.27".into(),
            },
            config: ContainerConfig {
                ports: vec![Port {
                    internal: 80,
                    external: None,
                    protocol: Protocol::Tcp,
                }],
                ..ContainerConfig::default()
            },
        },
    }))
    .await;
    let node_pub = node_key.public();
    let deployment = act(Box::new(move |ids| Action::DeploymentCreate {
        id: ids[0].clone(),
        version,
        node: node_pub,
        prefix: "front".into(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        protected: false,
        note: String::new(),
        force: false,
    }))
    .await;
    let d = deployment.clone();
    act(Box::new(move |_| Action::DeploymentStart {
        id: d,
        force: false,
    }))
    .await;

    let read = |id: String| {
        let sync = sync.clone();
        async move {
            sync.read(move |r| r.state().deployments.get(&id).cloned())
                .await
                .unwrap()
                .unwrap()
        }
    };
    // The node applies the Deployment and waits for its rollout.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fake.get("deployments", "front", "web").is_none() {
        assert!(std::time::Instant::now() < deadline, "never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read(deployment.clone()).await.status,
        DeploymentStatus::InProgress
    );
    fake.finish_rollout("front", "web");
    let done = loop {
        let d = read(deployment.clone()).await;
        if d.status != DeploymentStatus::InProgress {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never finished: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, DeploymentStatus::Successful, "{done:?}");
    assert_eq!(done.containers["web"].state, "running");
    assert_eq!(done.containers["web"].image, "library/nginx:1.27");
    let web = fake.get("deployments", "front", "web").unwrap();
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "library/nginx:1.27"
    );
    assert!(fake.get("services", "front", "web").is_some());

    cancel.cancel();
    executor.shutdown().await;
    engine.join().await.unwrap();
    mesh.join().await.unwrap();
}
