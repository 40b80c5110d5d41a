#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The kubernetes runtime against an in-process fake of the Kubernetes API
//! server (real HTTP on 127.0.0.1, the kube client unchanged): the exact
//! objects a plan becomes (golden files; `SHOAL_UPDATE_GOLDEN=1` rewrites
//! them), idempotent re-applies, rollout success and failure reasons, a
//! wait woken by watch events, container commands, removing a prefix, the
//! in-cluster manifests; products sharing a namespace, rollouts in the
//! plan's order, the previous version restored after a failed rollout,
//! tearing one deployment down, and the config fields refused; the live
//! state woken by the watch of every namespace. The fake keeps resource versions and an event
//! history and serves watches (chunked JSON lines, 410 Gone for a version
//! it no longer keeps), as the API server does.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use shoal_node::runtime::kubernetes::KubeConnect;
use shoal_node::runtime::{
    DeployPlan, ImageSource, KubernetesRuntime, PlannedContainer, PullPolicy, RegistryCredentials,
    Runtime, RuntimeError, SecretValues,
};
use shoal_protocol::model::{
    ContainerAction, ContainerConfig, HealthCheck, KubernetesConfig, Port, Probe, Protocol,
    Resources, SecretDecl, Strategy, Volume, VolumeKind,
};
use tokio::sync::{broadcast, mpsc};

#[macro_use]
mod common;

// ------------------------------------------------------------------ fake

/// (resource, namespace or "", name)
type Key = (String, String, String);

#[derive(Default)]
struct FakeState {
    objects: BTreeMap<Key, Value>,
    /// Every server-side apply body received, in order.
    applied: Vec<(Key, Value)>,
    /// Every request served, in order.
    requests: Vec<Request>,
    /// Applies (`apply deployments/web`) and rollouts the test completed
    /// (`complete deployments/web`), in the order they happened.
    timeline: Vec<String>,
    /// Deployments report a complete rollout as soon as they change.
    auto_rollout: bool,
    /// Act as the Deployment controller (see [`FakeState::sync_deployment`]).
    controller: bool,
    /// The status of the pods the controller makes (default: running and
    /// ready).
    new_pod_status: Option<Value>,
    /// Pod logs by (namespace, pod).
    logs: BTreeMap<(String, String), String>,
    next_uid: u64,
    /// The last resource version given; every change takes the next one.
    version: u64,
    /// The objects as watchers last saw them (see [`FakeState::publish`]).
    published: BTreeMap<Key, Value>,
    /// The latest events, oldest first, for watches from a past version.
    history: VecDeque<Event>,
    /// How many events `history` keeps (default [`HISTORY`]).
    history_limit: Option<usize>,
    /// The version of the newest event dropped from `history`: a watch
    /// from an older version gets 410 Gone.
    compacted: u64,
    /// Live events, to the open watches.
    events: Events,
    /// Ends every watch after this long, whatever it asked for.
    watch_cap: Option<Duration>,
    /// Answers this many of the next watches from a version with 410
    /// Gone, as if the version had expired.
    expire_watches: usize,
}

/// Events kept for watches from a past version, by default.
const HISTORY: usize = 1000;
/// How long a watch stays open when the request does not say.
const WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// One change of an object, as a watch reports it.
#[derive(Clone, Debug)]
struct Event {
    version: u64,
    /// ADDED, MODIFIED or DELETED.
    kind: &'static str,
    key: Key,
    object: Value,
}

struct Events(broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

/// One request the fake served.
#[derive(Clone, Debug)]
struct Request {
    method: Method,
    resource: String,
    ns: String,
    name: Option<String>,
    selector: Option<String>,
    /// The Authorization header.
    auth: Option<String>,
    /// A watch (`watch=true` on a list).
    watch: bool,
    /// The `limit` of a list.
    limit: Option<String>,
}

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH: &str = "pod-template-hash";

/// A pod status: running, its container ready.
fn ready_status() -> Value {
    json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{
            "name": "web", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}},
        }],
    })
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn terminating(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

fn revision_of(obj: &Value) -> u64 {
    obj["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The controller's pod-template-hash: a hash of the template (FNV-1a).
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")[..10].to_owned()
}

impl FakeState {
    /// Gives every object changed since the last call the next resource
    /// version and tells the watchers, as the API server does on each
    /// write. Runs whenever the lock is released, so the handler's writes,
    /// the controller's and the test's own are all seen; a write that
    /// changes nothing is no event, as with the API server.
    fn publish(&mut self) {
        let changed: Vec<(&'static str, Key)> = self
            .objects
            .iter()
            .filter(|(k, v)| self.published.get(*k) != Some(*v))
            .map(|(k, _)| {
                let kind = if self.published.contains_key(k) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                (kind, k.clone())
            })
            .collect();
        let deleted: Vec<Key> = self
            .published
            .keys()
            .filter(|k| !self.objects.contains_key(*k))
            .cloned()
            .collect();
        for (kind, k) in changed {
            self.version += 1;
            let obj = self.objects.get_mut(&k).unwrap();
            obj["metadata"]["resourceVersion"] = json!(self.version.to_string());
            let obj = obj.clone();
            self.published.insert(k.clone(), obj.clone());
            self.record(kind, k, obj);
        }
        for k in deleted {
            self.version += 1;
            let mut obj = self.published.remove(&k).unwrap();
            obj["metadata"]["resourceVersion"] = json!(self.version.to_string());
            self.record("DELETED", k, obj);
        }
    }

    fn record(&mut self, kind: &'static str, key: Key, object: Value) {
        let e = Event {
            version: self.version,
            kind,
            key,
            object,
        };
        // No open watch is no error.
        let _ = self.events.0.send(e.clone());
        self.history.push_back(e);
        while self.history.len() > self.history_limit.unwrap_or(HISTORY) {
            self.compacted = self.history.pop_front().unwrap().version;
        }
    }

    fn new_uid(&mut self) -> String {
        self.next_uid += 1;
        format!("uid-{}", self.next_uid)
    }

    /// Keys of the `resource` objects in `ns` that `owner_uid` owns.
    fn owned(&self, resource: &str, ns: &str, owner_uid: &str) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(k, v)| {
                k.0 == resource
                    && k.1 == ns
                    && v["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o["uid"] == owner_uid))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A minimal Deployment controller: the ReplicaSet of the Deployment's
    /// current template (made with the next revision, or an older one
    /// brought back with it), labelled with its pod-template-hash and
    /// owning its pods, scaled to the Deployment's replicas; then the
    /// status.
    fn sync_deployment(&mut self, ns: &str, name: &str) {
        let dkey = key("deployments", ns, name);
        let d = self.objects[&dkey].clone();
        let uid = d["metadata"]["uid"].as_str().unwrap().to_owned();
        let template = d["spec"]["template"].clone();
        let hash = template_hash(&template);
        let newest = self
            .owned("replicasets", ns, &uid)
            .iter()
            .map(|k| revision_of(&self.objects[k]))
            .max()
            .unwrap_or(0);
        let rs_name = format!("{name}-{hash}");
        let rs_key = key("replicasets", ns, &rs_name);
        let revision = match self.objects.get(&rs_key).map(revision_of) {
            Some(r) if r == newest => r,
            Some(_) => {
                let rs = self.objects.get_mut(&rs_key).unwrap();
                rs["metadata"]["annotations"][REVISION] = json!((newest + 1).to_string());
                newest + 1
            }
            None => {
                let mut labels = template["metadata"]["labels"].clone();
                labels[HASH] = json!(hash);
                let rs_uid = self.new_uid();
                let mut rs_template = template.clone();
                rs_template["metadata"]["labels"] = labels.clone();
                self.objects.insert(
                    rs_key,
                    json!({
                        "apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {
                            "name": rs_name, "namespace": ns, "uid": rs_uid,
                            "labels": labels,
                            "annotations": {REVISION: (newest + 1).to_string()},
                            "ownerReferences": [{
                                "apiVersion": "apps/v1", "kind": "Deployment",
                                "name": name, "uid": uid, "controller": true,
                            }],
                        },
                        "spec": {
                            "replicas": 0,
                            "selector": {"matchLabels": labels},
                            "template": rs_template,
                        },
                    }),
                );
                newest + 1
            }
        };
        let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
        self.scale(ns, &rs_name, want);
        let d = self.objects.get_mut(&dkey).unwrap();
        d["metadata"]["annotations"][REVISION] = json!(revision.to_string());
        self.update_status(ns, name);
    }

    /// Makes or ends pods of a ReplicaSet until `want` are active; ended
    /// pods stay, terminating.
    fn scale(&mut self, ns: &str, rs_name: &str, want: i64) {
        let rs_key = key("replicasets", ns, rs_name);
        let rs = self.objects[&rs_key].clone();
        let rs_uid = rs["metadata"]["uid"].as_str().unwrap().to_owned();
        let mut active: Vec<Key> = self
            .owned("pods", ns, &rs_uid)
            .into_iter()
            .filter(|k| !terminating(&self.objects[k]))
            .collect();
        while (active.len() as i64) < want {
            let uid = self.new_uid();
            let pod_name = format!("{rs_name}-{}", uid.trim_start_matches("uid-"));
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": pod_name, "namespace": ns, "uid": uid,
                    "labels": rs["spec"]["template"]["metadata"]["labels"],
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": rs_name, "uid": rs_uid, "controller": true,
                    }],
                },
                "spec": rs["spec"]["template"]["spec"],
                "status": self.new_pod_status.clone().unwrap_or_else(ready_status),
            });
            let k = key("pods", ns, &pod_name);
            self.objects.insert(k.clone(), pod);
            active.push(k);
        }
        while (active.len() as i64) > want {
            let k = active.pop().unwrap();
            self.objects.get_mut(&k).unwrap()["metadata"]["deletionTimestamp"] =
                json!("2026-01-01T00:00:00Z");
        }
        self.objects.get_mut(&rs_key).unwrap()["spec"]["replicas"] = json!(want);
    }

    /// The Deployment's status from its pods; once every pod of the current
    /// revision is ready, the older ReplicaSets are scaled to zero.
    fn update_status(&mut self, ns: &str, name: &str) {
        let dkey = key("deployments", ns, name);
        let d = self.objects[&dkey].clone();
        let uid = d["metadata"]["uid"].as_str().unwrap().to_owned();
        let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let current = revision_of(&d);
        let sets = self.owned("replicasets", ns, &uid);
        let pods_of = |st: &Self, rs: &Key| -> Vec<Value> {
            let rs_uid = st.objects[rs]["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_owned();
            st.owned("pods", ns, &rs_uid)
                .iter()
                .map(|k| st.objects[k].clone())
                .filter(|p| !terminating(p))
                .collect()
        };
        let (new_sets, old_sets): (Vec<Key>, Vec<Key>) = sets
            .into_iter()
            .partition(|k| revision_of(&self.objects[k]) == current);
        let new_ready = new_sets
            .iter()
            .flat_map(|k| pods_of(self, k))
            .filter(is_ready)
            .count() as i64;
        if new_ready == want {
            for k in &old_sets {
                self.scale(ns, &k.2.clone(), 0);
            }
        }
        let updated = new_sets.iter().flat_map(|k| pods_of(self, k)).count();
        let all: Vec<Value> = new_sets
            .iter()
            .chain(&old_sets)
            .flat_map(|k| pods_of(self, k))
            .collect();
        let ready = all.iter().filter(|p| is_ready(p)).count();
        let d = self.objects.get_mut(&dkey).unwrap();
        d["status"] = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": all.len(),
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
        });
    }
}

/// The fake API server's state and the test's control handle on it.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut st = self.0.lock().unwrap();
        let out = f(&mut st);
        st.publish();
        out
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

    /// Acts as the Deployment controller; the pods it makes get `status`
    /// (`None`: running and ready).
    fn set_controller(&self, new_pod_status: Option<Value>) {
        self.with(|s| {
            s.controller = true;
            s.new_pod_status = new_pod_status;
        });
    }

    /// The pod-template-hash of a Deployment's ReplicaSet of `revision`.
    fn revision_hash(&self, ns: &str, deployment: &str, revision: u64) -> Option<String> {
        self.with(|s| {
            s.objects
                .iter()
                .find(|(k, v)| {
                    k.0 == "replicasets"
                        && k.1 == ns
                        && v["metadata"]["ownerReferences"][0]["name"] == deployment
                        && revision_of(v) == revision
                })
                .map(|(_, v)| v["metadata"]["labels"][HASH].as_str().unwrap().to_owned())
        })
    }

    /// Sets the status of every active pod of a Deployment's `revision`, as
    /// the kubelet would, and lets the controller update the Deployment.
    fn set_pods(&self, ns: &str, deployment: &str, revision: u64, status: Value) {
        let hash = self.revision_hash(ns, deployment, revision).unwrap();
        self.with(|s| {
            for (k, p) in s.objects.iter_mut() {
                if k.0 == "pods"
                    && k.1 == ns
                    && p["metadata"]["labels"][HASH] == hash.as_str()
                    && !terminating(p)
                {
                    p["status"] = status.clone();
                }
            }
            s.update_status(ns, deployment);
        });
    }

    /// Pods of a Deployment's `revision`: (name, terminating).
    fn pods_of(&self, ns: &str, deployment: &str, revision: u64) -> Vec<(String, bool)> {
        let Some(hash) = self.revision_hash(ns, deployment, revision) else {
            return Vec::new();
        };
        self.with(|s| {
            s.objects
                .iter()
                .filter(|(k, p)| {
                    k.0 == "pods" && k.1 == ns && p["metadata"]["labels"][HASH] == hash.as_str()
                })
                .map(|(k, p)| (k.2.clone(), terminating(p)))
                .collect()
        })
    }

    /// How many requests so far match `f`.
    fn served(&self, f: impl Fn(&Request) -> bool) -> usize {
        self.with(|s| s.requests.iter().filter(|r| f(r)).count())
    }

    /// How many times the Deployment was read by name.
    fn reads_of(&self, ns: &str, deployment: &str) -> usize {
        self.served(|r| {
            r.method == Method::GET
                && r.resource == "deployments"
                && r.ns == ns
                && r.name.as_deref() == Some(deployment)
        })
    }

    /// Polls until `f` holds (60 s at most).
    async fn until(&self, what: &str, f: impl Fn(&Fake) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !f(self) {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn applied(&self) -> Vec<(Key, Value)> {
        self.with(|s| s.applied.clone())
    }

    /// Reports the Deployment's rollout as complete.
    fn finish_rollout(&self, ns: &str, name: &str) {
        self.with(|s| {
            let d = s.objects.get_mut(&key("deployments", ns, name)).unwrap();
            complete(d);
            s.timeline.push(format!("complete deployments/{name}"));
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
        "replicasets" => ("apps/v1", "ReplicaSet"),
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

/// What a list or a watch selects: a kind in a namespace (all when empty),
/// by `labelSelector` and by `fieldSelector` on the name or namespace.
struct Selection {
    resource: String,
    ns: String,
    labels: Option<String>,
    fields: Vec<(String, String)>,
}

impl Selection {
    /// The selection, or why the request is bad.
    fn new(resource: &str, ns: &str, q: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut fields = Vec::new();
        for term in q
            .get("fieldSelector")
            .into_iter()
            .flat_map(|s| s.split(','))
            .filter(|t| !t.is_empty())
        {
            match term.split_once('=') {
                Some((f @ ("metadata.name" | "metadata.namespace"), v)) => {
                    fields.push((f.to_owned(), v.trim_start_matches('=').to_owned()));
                }
                _ => {
                    return Err(format!(
                        "field selector {term:?} is not supported by the fake"
                    ));
                }
            }
        }
        Ok(Self {
            resource: resource.to_owned(),
            ns: ns.to_owned(),
            labels: q.get("labelSelector").cloned(),
            fields,
        })
    }

    fn admits(&self, k: &Key, obj: &Value) -> bool {
        k.0 == self.resource
            && (self.ns.is_empty() || k.1 == self.ns)
            && matches(self.labels.as_ref(), obj)
            && self.fields.iter().all(|(f, v)| match f.as_str() {
                "metadata.name" => k.2 == *v,
                _ => k.1 == *v,
            })
    }
}

/// One line of a watch stream.
fn watch_line(kind: &str, object: &Value) -> String {
    json!({"type": kind, "object": object}).to_string() + "\n"
}

/// A streaming (chunked) watch response of `lines`.
fn watch_response(lines: BoxStream<'static, String>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines.map(Ok::<_, Infallible>)))
        .unwrap()
}

/// A watch, as the API server serves it: from `resourceVersion`, the
/// changes since (410 Gone when they are no longer kept; from none or
/// "0", the current objects as ADDED), then the live ones until
/// `timeoutSeconds` or the client leaves.
fn watch(st: &mut FakeState, sel: Selection, q: &BTreeMap<String, String>) -> Response {
    let since = match q.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid resource version {v:?}"),
                );
            }
        },
    };
    if since.is_some() && st.expire_watches > 0 {
        st.expire_watches -= 1;
        let gone = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version (expired by the test)",
        });
        return watch_response(futures::stream::iter([watch_line("ERROR", &gone)]).boxed());
    }
    let timeout = match q.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
        None => WATCH_TIMEOUT,
        Some(Ok(t)) => Duration::from_secs(t),
        Some(Err(_)) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "invalid timeoutSeconds".into(),
            );
        }
    };
    let first: Vec<String> = match since {
        None => st
            .objects
            .iter()
            .filter(|(k, v)| sel.admits(k, v))
            .map(|(_, v)| watch_line("ADDED", v))
            .collect(),
        Some(v) if v < st.compacted => {
            let gone = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {v} ({})", st.compacted + 1),
            });
            return watch_response(futures::stream::iter([watch_line("ERROR", &gone)]).boxed());
        }
        Some(v) => st
            .history
            .iter()
            .filter(|e| e.version > v && sel.admits(&e.key, &e.object))
            .map(|e| watch_line(e.kind, &e.object))
            .collect(),
    };
    let timeout = st.watch_cap.map_or(timeout, |cap| cap.min(timeout));
    // Subscribed under the lock: every later event comes live, none twice.
    let rx = st.events.0.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    let live = futures::stream::unfold((rx, sel), move |(mut rx, sel)| async move {
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(e)) if sel.admits(&e.key, &e.object) => {
                    return Some((watch_line(e.kind, &e.object), (rx, sel)));
                }
                Ok(Ok(_)) => {}
                // The time is up, or the watcher fell behind (the API
                // server ends such a watch too).
                Err(_) | Ok(Err(_)) => return None,
            }
        }
    });
    watch_response(futures::stream::iter(first).chain(live).boxed())
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
    let is_watch = name.is_none()
        && method == Method::GET
        && matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let mut st = fake.0.lock().unwrap();
    st.requests.push(Request {
        method: method.clone(),
        resource: resource.clone(),
        ns: ns.clone(),
        name: name.clone(),
        selector: q.get("labelSelector").cloned(),
        auth: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        watch: is_watch,
        limit: q.get("limit").cloned(),
    });
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
            let sel = match Selection::new(&resource, &ns, &q) {
                Ok(sel) => sel,
                Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", why),
            };
            if is_watch {
                return watch(&mut st, sel, &q);
            }
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, v)| sel.admits(k, v))
                .map(|(_, v)| v.clone())
                .collect();
            ok_json(&json!({
                "apiVersion": api_version, "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": st.version.to_string()}, "items": items,
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
                st.timeline.push(format!("apply {resource}/{name}"));
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
            st.objects.insert(k, new);
            if resource == "deployments" && st.controller {
                st.sync_deployment(&ns, &name);
            }
            st.publish();
            ok_json(&st.objects[&key(&resource, &ns, &name)])
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
            // The garbage collector: what the object owned goes with it.
            let mut gone: Vec<Value> = vec![old["metadata"]["uid"].clone()];
            while let Some(uid) = gone.pop().filter(|u| !u.is_null()) {
                let owned: Vec<Key> = st
                    .objects
                    .iter()
                    .filter(|(_, v)| {
                        v["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in owned {
                    if let Some(v) = st.objects.remove(&k) {
                        gone.push(v["metadata"]["uid"].clone());
                    }
                }
            }
            st.publish();
            ok_json(&old)
        }
        (m, n) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{m} {resource} {n:?} is not served by the fake"),
        ),
    }
}

/// Serves a fake API server on 127.0.0.1; its URL.
async fn serve() -> (Fake, String) {
    let fake = Fake::default();
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, format!("http://{addr}"))
}

fn quick(rt: KubernetesRuntime) -> KubernetesRuntime {
    rt.with_poll_interval(Duration::from_millis(20))
        .with_rollout_timeout(Duration::from_secs(10))
}

async fn start() -> (Fake, KubernetesRuntime) {
    let (fake, url) = serve().await;
    let config = kube::Config::new(url.parse().unwrap());
    (fake, quick(KubernetesRuntime::from_config(config).unwrap()))
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
        product: "product-1".into(),
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
    // The runtime keeps checking the unfinished rollouts, and does not
    // return while they are unfinished.
    fake.until("web's rollout checked three times", |f| {
        f.reads_of("shop", "web") >= 3
    })
    .await;
    assert!(!task.is_finished(), "the deploy must wait for the rollouts");
    fake.finish_rollout("shop", "web");
    let worker_reads = fake.reads_of("shop", "worker");
    fake.until("worker checked twice more", |f| {
        f.reads_of("shop", "worker") >= worker_reads + 2
    })
    .await;
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

/// With no resync before the deploy's own timeout, only a watch event can
/// end the wait in time: a rollout finished while the deploy waits
/// succeeds (a broken watch fails with a timeout error).
#[tokio::test]
async fn a_waiting_deploy_wakes_on_a_watch_event_not_a_timer() {
    let (fake, rt) = start().await;
    let rt = rt
        .with_poll_interval(Duration::from_secs(3600))
        .with_rollout_timeout(Duration::from_secs(60));
    let task = tokio::spawn(async move { deploy(&rt, &plan("shop")).await });
    // Both watches open, and the check their first list brings done. The
    // rollouts come in the plan's order: web's first, then worker's.
    let watched = |f: &Fake, n: usize| {
        let watches =
            |resource: &str| f.served(|r| r.watch && r.resource == resource && r.ns == "shop") >= n;
        watches("deployments") && watches("pods")
    };
    fake.until("web's rollout watched and checked twice", |f| {
        watched(f, 1) && f.reads_of("shop", "web") >= 2
    })
    .await;
    assert!(!task.is_finished(), "the deploy must wait for the rollouts");
    fake.finish_rollout("shop", "web");
    fake.until("worker's rollout watched and checked twice", |f| {
        watched(f, 2) && f.reads_of("shop", "worker") >= 2
    })
    .await;
    assert!(
        !task.is_finished(),
        "the deploy must wait for worker's rollout"
    );
    fake.finish_rollout("shop", "worker");
    let events = task.await.unwrap().unwrap();
    assert!(
        events.iter().any(|e| e.contains("rollout complete")),
        "{events:?}"
    );
}

/// A streaming HTTP response read one JSON line at a time.
struct Lines {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    /// The next line (the whole body of a plain JSON answer), or `None`
    /// when the response ends.
    async fn next(&mut self) -> Option<Value> {
        use http_body_util::BodyExt as _;
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let Some(frame) = self.body.frame().await else {
                let rest = std::mem::take(&mut self.buf);
                return (!rest.is_empty()).then(|| serde_json::from_slice(&rest).unwrap());
            };
            let frame = frame.unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next event's type, object name and resource version.
    async fn event(&mut self) -> (String, String, String) {
        let e = self.next().await.expect("an event");
        let meta = &e["object"]["metadata"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (s(&e["type"]), s(&meta["name"]), s(&meta["resourceVersion"]))
    }
}

/// A raw HTTP/1.1 GET of `path` on the fake at `url`. (Watches here give
/// `timeoutSeconds`, so an event that never comes ends the stream and
/// fails the test instead of hanging it.)
async fn raw_get(url: &str, path: &str) -> (StatusCode, HeaderMap, Lines) {
    let addr = url.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(header::HOST, addr)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        Lines {
            body,
            buf: Vec::new(),
        },
    )
}

fn fake_deployment(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": labels, "generation": 1},
        "spec": {"replicas": 1},
    })
}

/// The fake serves watches as the API server does: every write takes the
/// next resource version; a watch from a past version replays the changes
/// since, in order, then streams the live ones (chunked JSON lines),
/// selected by label and field; one from a version older than the kept
/// history gets 410 Gone; `timeoutSeconds` ends it.
#[tokio::test]
async fn the_fake_replays_missed_changes_to_a_watch_and_refuses_a_too_old_one() {
    let (fake, url) = serve().await;
    fake.with(|s| s.history_limit = Some(3));
    let path = "/apis/apps/v1/namespaces/shop/deployments";
    fake.put(
        "deployments",
        "shop",
        fake_deployment("a", json!({"tier": "x"})),
    );
    fake.put(
        "deployments",
        "shop",
        fake_deployment("b", json!({"tier": "y"})),
    );
    let (code, _, mut list) = raw_get(&url, path).await;
    assert_eq!(code, StatusCode::OK);
    let list = list.next().await.unwrap();
    assert_eq!(list["metadata"]["resourceVersion"], "2", "{list}");
    assert_eq!(list["items"][1]["metadata"]["resourceVersion"], "2");

    // Missed by a client that listed at 2.
    fake.finish_rollout("shop", "a");
    fake.put(
        "deployments",
        "shop",
        fake_deployment("c", json!({"tier": "x"})),
    );
    fake.with(|s| {
        s.objects.remove(&key("deployments", "shop", "a"));
    });

    let (code, headers, mut w) = raw_get(
        &url,
        &format!("{path}?watch=true&resourceVersion=2&timeoutSeconds=60&allowWatchBookmarks=true"),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::TRANSFER_ENCODING], "chunked");
    let ev = |t: &str, n: &str, v: &str| (t.to_owned(), n.to_owned(), v.to_owned());
    assert_eq!(w.event().await, ev("MODIFIED", "a", "3"));
    assert_eq!(w.event().await, ev("ADDED", "c", "4"));
    assert_eq!(w.event().await, ev("DELETED", "a", "5"));
    // Then the live changes.
    fake.finish_rollout("shop", "b");
    assert_eq!(w.event().await, ev("MODIFIED", "b", "6"));

    // Selected by label, or by name: other objects' changes do not come.
    let (_, _, mut by_label) = raw_get(
        &url,
        &format!("{path}?watch=1&resourceVersion=3&labelSelector=tier%3Dx&timeoutSeconds=60"),
    )
    .await;
    assert_eq!(by_label.event().await, ev("ADDED", "c", "4"));
    assert_eq!(by_label.event().await, ev("DELETED", "a", "5"));
    let (_, _, mut by_name) = raw_get(
        &url,
        &format!(
            "{path}?watch=true&resourceVersion=6&fieldSelector=metadata.name%3Dc&timeoutSeconds=60"
        ),
    )
    .await;
    fake.with(|s| {
        let b = s.objects.get_mut(&key("deployments", "shop", "b")).unwrap();
        b["metadata"]["annotations"] = json!({"touched": "yes"});
    });
    fake.finish_rollout("shop", "c");
    assert_eq!(w.event().await, ev("MODIFIED", "b", "7"));
    assert_eq!(w.event().await, ev("MODIFIED", "c", "8"));
    assert_eq!(by_label.event().await, ev("MODIFIED", "c", "8"));
    assert_eq!(by_name.event().await, ev("MODIFIED", "c", "8"));

    // A write that changes nothing is no event; the list's version stays.
    fake.finish_rollout("shop", "c");
    let (_, _, mut list) = raw_get(&url, path).await;
    assert_eq!(
        list.next().await.unwrap()["metadata"]["resourceVersion"],
        "8"
    );

    // Three events kept (6 to 8): from 5 they all are; from 4, not.
    let (_, _, mut from5) = raw_get(
        &url,
        &format!("{path}?watch=true&resourceVersion=5&timeoutSeconds=60"),
    )
    .await;
    assert_eq!(from5.event().await, ev("MODIFIED", "b", "6"));
    let (code, _, mut gone) = raw_get(&url, &format!("{path}?watch=true&resourceVersion=4")).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "the API server answers 410 in the stream"
    );
    let e = gone.next().await.unwrap();
    assert_eq!(e["type"], "ERROR", "{e}");
    assert_eq!(e["object"]["code"], 410, "{e}");
    assert_eq!(e["object"]["reason"], "Expired", "{e}");
    assert!(
        gone.next().await.is_none(),
        "the stream ends after the error"
    );

    // From no version: the current objects, as ADDED; the time given ends
    // the watch.
    let (_, _, mut all) = raw_get(&url, &format!("{path}?watch=true&timeoutSeconds=1")).await;
    assert_eq!(all.event().await, ev("ADDED", "b", "7"));
    assert_eq!(all.event().await, ev("ADDED", "c", "8"));
    assert!(all.next().await.is_none(), "the watch ends at its timeout");
}

/// The kube client's own watch reads the fake's stream, the 410 included.
#[tokio::test]
async fn the_kube_client_watches_the_fake() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, WatchEvent, WatchParams};

    let (fake, rt) = start().await;
    fake.with(|s| s.history_limit = Some(1));
    fake.put(
        "deployments",
        "shop",
        fake_deployment("a", json!({"tier": "x"})),
    );
    let api: Api<Deployment> = Api::namespaced(rt.client().clone(), "shop");
    let wp = WatchParams::default().labels("tier=x");
    let mut w = api.watch(&wp, "1").await.unwrap().boxed();
    fake.finish_rollout("shop", "a");
    match w.next().await.unwrap().unwrap() {
        WatchEvent::Modified(d) => {
            assert_eq!(d.metadata.resource_version.as_deref(), Some("2"));
            assert_eq!(d.status.unwrap().available_replicas, Some(1));
        }
        other => panic!("{other:?}"),
    }
    // Another change: only 3 is kept now.
    fake.put(
        "deployments",
        "shop",
        fake_deployment("b", json!({"tier": "y"})),
    );
    let mut w = api.watch(&wp, "0").await.unwrap().boxed();
    assert!(matches!(w.next().await, Some(Ok(WatchEvent::Added(_)))));
    let mut w = api.watch(&wp, "1").await.unwrap().boxed();
    match w.next().await.unwrap() {
        Ok(WatchEvent::Error(s)) => assert_eq!(s.code, 410),
        other => panic!("{other:?}"),
    }
}

/// The error of a deploy whose pods all get `status`.
async fn failing(status: Value) -> RuntimeError {
    let (fake, rt) = start().await;
    fake.set_controller(Some(status));
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

/// The plan with a changed web container: a new pod template, so a new
/// revision.
fn next_revision(p: &DeployPlan) -> DeployPlan {
    let mut p = p.clone();
    p.try_number += 1;
    p.containers[0]
        .config
        .env
        .insert("APP_ENV".into(), "canary".into());
    p
}

fn web_pods_listed(fake: &Fake, hash: &str) -> usize {
    fake.served(|r| {
        r.method == Method::GET
            && r.resource == "pods"
            && r.name.is_none()
            && r.selector.as_deref().is_some_and(|s| {
                s.contains("io.shoal.container=web") && s.contains(&format!("{HASH}={hash}"))
            })
    })
}

#[tokio::test]
async fn pods_of_an_older_revision_crash_looping_do_not_fail_the_new_one() {
    let (fake, rt) = start().await;
    let crash = waiting(
        "CrashLoopBackOff",
        "back-off 40s restarting failed container=web",
    );
    fake.set_controller(Some(crash));
    let p = plan("shop");
    let err = deploy(&rt, &p).await.unwrap_err();
    assert!(err.to_string().contains("CrashLoopBackOff"), "{err}");

    // The worker was never applied: rollouts go in order, and web's
    // failed. Revision 2 of web: its pods start; revision 1's keep
    // crash-looping meanwhile.
    assert!(fake.get("deployments", "shop", "worker").is_none());
    fake.set_controller(Some(waiting("ContainerCreating", "")));
    let next = next_revision(&p);
    let rt2 = rt.clone();
    let task = tokio::spawn(async move { deploy(&rt2, &next).await });
    fake.until("revision 2 made", |f| {
        f.revision_hash("shop", "web", 2).is_some()
    })
    .await;
    let hash = fake.revision_hash("shop", "web", 2).unwrap();
    fake.until("revision 2's pods judged twice", |f| {
        web_pods_listed(f, &hash) >= 2
    })
    .await;
    let old = fake.pods_of("shop", "web", 1);
    assert_eq!(old.len(), 3);
    assert!(old.iter().all(|(_, terminating)| !terminating), "{old:?}");
    assert!(
        !task.is_finished(),
        "the old revision's crash loop must not end the try"
    );
    // The listing judges the current revision too: web is starting.
    let list = rt.containers(TEAM, Some("shop")).await.unwrap();
    assert_eq!(list[0].name, "shop-web");
    assert_eq!(list[0].state.state, "starting");

    // Revision 2 becomes ready: the old pods terminate, the rollout
    // completes; then the worker's pods come up ready.
    fake.set_controller(None);
    fake.set_pods("shop", "web", 2, ready_status());
    let old = fake.pods_of("shop", "web", 1);
    assert!(old.iter().all(|(_, terminating)| *terminating), "{old:?}");
    let events = task.await.unwrap().unwrap();
    assert!(
        events.iter().any(|e| e.contains("rollout complete")),
        "{events:?}"
    );
    let list = rt.containers(TEAM, Some("shop")).await.unwrap();
    assert_eq!(list[0].state.state, "running");
}

#[tokio::test]
async fn a_new_revision_that_crash_loops_fails_with_its_reason() {
    let (fake, rt) = start().await;
    fake.set_controller(None);
    let p = plan("shop");
    deploy(&rt, &p).await.unwrap();
    assert_eq!(fake.pods_of("shop", "web", 1).len(), 3);

    fake.set_controller(Some(waiting(
        "CrashLoopBackOff",
        "back-off 10s restarting failed container=web",
    )));
    let err = deploy(&rt, &next_revision(&p)).await.unwrap_err();
    let hash = fake.revision_hash("shop", "web", 2).unwrap();
    assert!(matches!(err, RuntimeError::Restored { .. }), "{err:?}");
    match err.root() {
        RuntimeError::Rollout {
            container,
            reason,
            detail,
        } => {
            assert_eq!(container, "web");
            assert_eq!(reason, "CrashLoopBackOff");
            assert!(detail.contains(&format!("pod web-{hash}-")), "{detail}");
        }
        other => panic!("{other}"),
    }
    // Revision 1 still serves; its pods are untouched.
    let old = fake.pods_of("shop", "web", 1);
    assert!(old.iter().all(|(_, terminating)| !terminating), "{old:?}");
}

#[tokio::test]
async fn terminating_pods_decide_nothing() {
    let (fake, rt) = start().await;
    fake.set_controller(None);
    let mut p = plan("shop");
    deploy(&rt, &p).await.unwrap();
    let hash = fake.revision_hash("shop", "web", 1).unwrap();
    // Scaled down from 3 to 1: the pod that stays is still starting; the
    // two that go crash-loop on their way out.
    let mut names: Vec<String> = fake
        .pods_of("shop", "web", 1)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    fake.with(|s| {
        for (i, n) in names.iter().enumerate() {
            s.objects.get_mut(&key("pods", "shop", n)).unwrap()["status"] = if i == 0 {
                waiting("ContainerCreating", "")
            } else {
                waiting(
                    "CrashLoopBackOff",
                    "back-off 10s restarting failed container=web",
                )
            };
        }
    });
    p.containers[0].config.kubernetes.as_mut().unwrap().replicas = Some(1);
    let listed = web_pods_listed(&fake, &hash);
    let rt2 = rt.clone();
    let task = tokio::spawn(async move { deploy(&rt2, &p).await });
    fake.until("the pods judged twice while two terminate", |f| {
        web_pods_listed(f, &hash) >= listed + 2
    })
    .await;
    let pods = fake.pods_of("shop", "web", 1);
    assert_eq!(pods.iter().filter(|(_, t)| *t).count(), 2, "{pods:?}");
    assert!(!task.is_finished(), "terminating pods must not end the try");
    fake.with(|s| {
        s.objects.get_mut(&key("pods", "shop", &names[0])).unwrap()["status"] = ready_status();
        s.update_status("shop", "web");
    });
    task.await.unwrap().unwrap();
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

// ------------------------------------------------------------ kubeconfig

/// Where nothing listens (connections are refused).
const NOWHERE: &str = "http://127.0.0.1:1";

/// A kubeconfig: (context, cluster server, user token) triples, and the
/// current context.
fn kubeconfig(contexts: &[(&str, &str, &str)], current: Option<&str>) -> String {
    let mut y = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, server, _) in contexts {
        y += &format!("- name: {name}-cluster\n  cluster:\n    server: {server}\n");
    }
    y += "users:\n";
    for (name, _, token) in contexts {
        y += &format!("- name: {name}-user\n  user:\n    token: {token}\n");
    }
    y += "contexts:\n";
    for (name, _, _) in contexts {
        y += &format!(
            "- name: {name}\n  context:\n    cluster: {name}-cluster\n    user: {name}-user\n"
        );
    }
    if let Some(c) = current {
        y += &format!("current-context: {c}\n");
    }
    y
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn connect_to(files: Vec<PathBuf>, context: Option<&str>) -> KubeConnect {
    KubeConnect {
        kubeconfig: files,
        context: context.map(str::to_owned),
    }
}

/// Deploys through `rt` and checks the fake got it with `token`.
async fn deploys_through(fake: &Fake, rt: KubernetesRuntime, token: &str) {
    fake.set_auto_rollout(true);
    deploy(&quick(rt), &plan("shop")).await.unwrap();
    assert!(fake.get("deployments", "shop", "web").is_some());
    let bearer = format!("Bearer {token}");
    assert!(
        fake.served(|r| r.resource == "deployments" && r.auth.as_deref() == Some(&bearer)) > 0,
        "the kubeconfig's user token is sent"
    );
    assert_eq!(
        fake.served(|r| r.auth.as_deref() != Some(&bearer)),
        0,
        "only the kubeconfig's user token is sent"
    );
}

#[tokio::test]
async fn a_kubeconfig_file_pointing_at_the_fake_is_used() {
    let (fake, url) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "config",
        &kubeconfig(&[("fake", &url, "t0ken")], Some("fake")),
    );
    let rt = KubernetesRuntime::connect(&connect_to(vec![file], None))
        .await
        .unwrap();
    assert_eq!(rt.endpoint(), format!("{url}/"));
    deploys_through(&fake, rt, "t0ken").await;
}

#[tokio::test]
async fn a_context_is_chosen_by_name() {
    let (fake, url) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "config",
        &kubeconfig(
            &[
                ("prod", NOWHERE, "prod-token"),
                ("fake", &url, "fake-token"),
            ],
            Some("prod"),
        ),
    );
    let current = KubernetesRuntime::connect(&connect_to(vec![file.clone()], None))
        .await
        .unwrap();
    assert_eq!(current.endpoint(), format!("{NOWHERE}/"));
    let rt = KubernetesRuntime::connect(&connect_to(vec![file.clone()], Some("fake")))
        .await
        .unwrap();
    assert_eq!(rt.endpoint(), format!("{url}/"));
    deploys_through(&fake, rt, "fake-token").await;

    let err = KubernetesRuntime::connect(&connect_to(vec![file], Some("staging")))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::KubeConfig { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no context \"staging\"") && msg.contains("prod, fake"),
        "{msg}"
    );
}

#[tokio::test]
async fn kubeconfig_files_in_a_list_are_merged_as_kubectl_merges_them() {
    let (fake, url) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    // The first file sets the current context and the cluster; the second
    // has the user, and a cluster of the same name that must lose.
    let first = write(
        dir.path(),
        "a",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             contexts:\n- name: fake\n  context:\n    cluster: c\n    user: u\n\
             clusters:\n- name: c\n  cluster:\n    server: {url}\n"
        ),
    );
    let second = write(
        dir.path(),
        "b",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: other\n\
             clusters:\n- name: c\n  cluster:\n    server: {NOWHERE}\n\
             users:\n- name: u\n  user:\n    token: merged-token\n"
        ),
    );
    let list = format!(
        "{}:{}:{}",
        first.display(),
        dir.path().join("missing").display(),
        second.display()
    );
    let files = KubeConnect::split_list(std::ffi::OsStr::new(&list));
    assert_eq!(files.len(), 3);
    let rt = KubernetesRuntime::connect(&connect_to(files, None))
        .await
        .unwrap();
    assert_eq!(rt.endpoint(), format!("{url}/"));
    deploys_through(&fake, rt, "merged-token").await;
}

#[tokio::test]
async fn a_broken_kubeconfig_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(dir.path(), "broken", "clusters: [this is: not {yaml");
    let err = KubernetesRuntime::connect(&connect_to(vec![broken.clone()], None))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::KubeConfig { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&broken.display().to_string()) && msg.contains("--kubeconfig"),
        "{msg}"
    );

    let missing = dir.path().join("missing");
    let err = KubernetesRuntime::connect(&connect_to(vec![missing.clone()], None))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::KubeConfig { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let err = KubernetesRuntime::connect(&connect_to(
        vec![missing.clone(), dir.path().join("also-missing")],
        None,
    ))
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("none of these files exists"),
        "{err}"
    );

    // A kubeconfig without a current context, and none named.
    let file = write(
        dir.path(),
        "nocurrent",
        &kubeconfig(&[("a", NOWHERE, "t")], None),
    );
    let err = KubernetesRuntime::connect(&connect_to(vec![file], None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--kube-context"), "{err}");
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
    // A try waiting for its rollouts watches Deployments and pods.
    let write_watch = ["create", "delete", "get", "list", "patch", "watch"];
    let read_watch = ["get", "list", "watch"];
    let want: BTreeMap<String, Vec<String>> = [
        ("namespaces", &write[..]),
        ("apps/deployments", &write_watch[..]),
        ("services", &write[..]),
        ("secrets", &write[..]),
        ("persistentvolumeclaims", &write[..]),
        ("apps/replicasets", &read[..]),
        ("pods", &read_watch[..]),
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
    let unsealer: Unsealer = Arc::new(|_, _| Err("no sealed values in this test".into()));
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
        image: Box::new(Image {
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
        }),
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
    // It keeps checking the rollout and reports nothing before it is done.
    fake.until("the rollout checked three times", |f| {
        f.reads_of("front", "web") >= 3
    })
    .await;
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

/// The signed ops of a team whose owner made a product, a version with an
/// nginx image, and a started deployment of it on `node` with prefix
/// `front`; and the deployment's id.
fn team_with_a_started_deployment(
    owner: &shoal_protocol::SecretKey,
    node: &shoal_protocol::SecretKey,
) -> (Vec<shoal_protocol::Op>, String) {
    use shoal_node::daemon::now_ms;
    use shoal_protocol::model::{HUB_REGISTRY_ID, Image, ImageRef, ProductKind, VersionKind};
    use shoal_protocol::{Action, Replica, testkit};

    let origin = node.public();
    let mut clock = testkit::Clock(now_ms());
    let genesis = testkit::genesis(owner, node, clock.tick());
    let mut r = Replica::from_genesis(genesis.clone()).unwrap();
    let mut ops = vec![genesis];
    let mut act = |make: &dyn Fn(&[String]) -> Action| -> String {
        let now = clock.tick();
        let ctx = testkit::ctx(&r, owner, origin, now);
        let ids: Vec<String> = (0..4).map(|k| ctx.new_id(k)).collect();
        let (op, _) = testkit::act(&mut r, owner, origin, now, make(&ids)).unwrap();
        ops.push(op);
        ids[0].clone()
    };
    let product = act(&|ids| Action::ProductCreate {
        id: ids[0].clone(),
        name: "web".into(),
        kind: ProductKind::Complex,
        description: String::new(),
        version: None,
    });
    let version = act(&|ids| Action::VersionCreate {
        id: ids[0].clone(),
        product: product.clone(),
        name: "1.0.0".into(),
        kind: VersionKind::Incremental,
        changelog: String::new(),
        auto_copy: false,
    });
    act(&|_| Action::ImageAdd {
        version: version.clone(),
        image: Box::new(Image {
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
        }),
    });
    let deployment = act(&|ids| Action::DeploymentCreate {
        id: ids[0].clone(),
        version: version.clone(),
        node: origin,
        prefix: "front".into(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        protected: false,
        note: String::new(),
        force: false,
    });
    act(&|_| Action::DeploymentStart {
        id: deployment.clone(),
        force: false,
    });
    assert_eq!(r.state().deployments.len(), 1, "every op applies");
    (ops, deployment)
}

fn daemon_config(dir: &Path, kube: KubeConnect) -> shoal_node::service::ServiceConfig {
    shoal_node::service::ServiceConfig {
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        mdns: false,
        socket: dir.join("api.sock"),
        name: "cluster".into(),
        runtime: shoal_protocol::model::Runtime::Kubernetes,
        sync: shoal_node::sync::SyncConfig::default(),
        metrics: None,
        pause_deployments: false,
        kube,
        heartbeat_interval: shoal_node::sync::HEARTBEAT_INTERVAL,
        live_refresh: shoal_node::live::LIVE_REFRESH,
    }
}

/// A whole daemon (`service::run`) on the kubernetes runtime connects with
/// the kubeconfig and context of its config, and reports the deployment
/// that targets it `successful` once the rollout is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_deploys_through_the_kubeconfig_and_context_it_is_given() {
    use shoal_node::daemon::{Node, now_ms};
    use shoal_node::store::TeamRecord;
    use shoal_protocol::{SecretKey, testkit};
    use tokio_util::sync::CancellationToken;

    let (fake, url) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "kubeconfig",
        &kubeconfig(
            &[
                ("prod", NOWHERE, "prod-token"),
                ("fake", &url, "daemon-token"),
            ],
            Some("prod"),
        ),
    );
    let mut node = Node::open(&dir.path().join("node")).unwrap();
    let node_key = SecretKey::from_seed(node.key_seed());
    let (ops, deployment) = team_with_a_started_deployment(&testkit::key(1), &node_key);
    let team = node
        .install_team(TeamRecord::new("team", [7; 32], now_ms()), ops)
        .unwrap();
    let config = daemon_config(dir.path(), connect_to(vec![file], Some("fake")));
    let sock = config.socket.clone();
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(shoal_node::service::run(
        node,
        config,
        Arc::new(|_| {}),
        stop.clone().cancelled_owned(),
    ));

    fake.until("the deployment applied", |f| {
        f.get("deployments", "front", "web").is_some()
    })
    .await;
    fake.until("the rollout checked twice", |f| {
        f.reads_of("front", "web") >= 2
    })
    .await;
    let bearer = "Bearer daemon-token";
    assert_eq!(
        fake.served(|r| r.auth.as_deref() != Some(bearer)),
        0,
        "every request carries the chosen context's token"
    );
    fake.finish_rollout("front", "web");

    let route = format!("/v1/teams/{team}/deployments/{deployment}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (code, v) = common::call(&sock, Method::GET, &route, None).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        if v["status"] != "in-progress" && v["status"] != "preparing" {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never finished: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "successful", "{done}");

    stop.cancel();
    daemon.await.unwrap().unwrap();
}

/// A daemon on the kubernetes runtime with a kubeconfig it cannot load
/// stops at once with the clear error, before it serves anything.
#[tokio::test]
async fn a_daemon_with_a_broken_kubeconfig_stops_with_a_clear_error() {
    use shoal_node::daemon::Node;
    use shoal_node::service::ServiceError;

    let dir = tempfile::tempdir().unwrap();
    let broken = write(dir.path(), "kubeconfig", "apiVersion: [v1");
    let node = Node::open(&dir.path().join("node")).unwrap();
    let config = daemon_config(dir.path(), connect_to(vec![broken.clone()], None));
    let sock = config.socket.clone();
    let err = shoal_node::service::run(node, config, Arc::new(|_| {}), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Runtime(RuntimeError::KubeConfig { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&broken.display().to_string()) && msg.contains("--kubeconfig"),
        "{msg}"
    );
    assert!(!sock.exists(), "nothing was served");
}

// ------------------------------------------------- products, order, undo

/// `plan(prefix)` as another product's deployment, its containers renamed
/// `api` and `cache`.
fn other_product(prefix: &str) -> DeployPlan {
    let mut p = plan(prefix);
    p.product = "product-2".into();
    p.deployment = "fedcba9876543210fedcba98".into();
    p.containers[0].name = "api".into();
    p.containers[1].name = "cache".into();
    p
}

/// Names of the objects of `resource` in `ns`.
fn names(fake: &Fake, resource: &str, ns: &str) -> Vec<String> {
    fake.with(|s| {
        s.objects
            .keys()
            .filter(|k| k.0 == resource && k.1 == ns)
            .map(|k| k.2.clone())
            .collect()
    })
}

#[tokio::test]
async fn two_products_share_a_namespace_and_each_keeps_its_objects() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    let a = plan("shop");
    let b = other_product("shop");
    deploy(&rt, &a).await.unwrap();
    deploy(&rt, &b).await.unwrap();
    let all_deployments = ["api", "cache", "web", "worker"];
    assert_eq!(names(&fake, "deployments", "shop"), all_deployments);
    assert_eq!(names(&fake, "services", "shop"), ["api", "web"]);
    assert_eq!(
        names(&fake, "secrets", "shop"),
        ["api-registry", "api-secrets", "web-registry", "web-secrets"]
    );
    assert_eq!(
        names(&fake, "persistentvolumeclaims", "shop"),
        ["api-data", "cache-config", "web-data", "worker-config"]
    );
    let web = fake.get("deployments", "shop", "web").unwrap();
    assert_eq!(web["metadata"]["labels"]["io.shoal.product"], "product-1");
    let api = fake.get("deployments", "shop", "api").unwrap();
    assert_eq!(api["metadata"]["labels"]["io.shoal.product"], "product-2");
    assert_eq!(
        api["metadata"]["labels"]["io.shoal.deployment"],
        "fedcba9876543210fedcba98"
    );

    // Deploying either again keeps the other's objects.
    deploy(&rt, &a).await.unwrap();
    assert_eq!(names(&fake, "deployments", "shop"), all_deployments);
    // A product's stale objects go; the other product's stay.
    let mut smaller = b.clone();
    smaller.containers.truncate(1);
    deploy(&rt, &smaller).await.unwrap();
    assert_eq!(
        names(&fake, "deployments", "shop"),
        ["api", "web", "worker"]
    );
    assert_eq!(
        names(&fake, "secrets", "shop"),
        ["api-registry", "api-secrets", "web-registry", "web-secrets"]
    );

    // A name another product's object holds is not taken over.
    let mut clash = b.clone();
    clash.containers[0].name = "web".into();
    let applied = fake.applied().len();
    let err = deploy(&rt, &clash).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NameInUse { .. }), "{err}");
    assert!(err.to_string().contains("another product"), "{err}");
    assert_eq!(fake.applied().len(), applied, "nothing is applied");
    let web = fake.get("deployments", "shop", "web").unwrap();
    assert_eq!(web["metadata"]["labels"]["io.shoal.product"], "product-1");
}

#[tokio::test]
async fn deployments_roll_out_in_the_plan_order_one_after_the_other() {
    let (fake, rt) = start().await;
    let p = plan("shop");
    let rt2 = rt.clone();
    let task = tokio::spawn(async move { deploy(&rt2, &p).await });
    fake.until("web's rollout checked twice", |f| {
        f.reads_of("shop", "web") >= 2
    })
    .await;
    // Worker is not applied while web rolls out.
    assert!(fake.get("deployments", "shop", "worker").is_none());
    assert!(fake.get("deployments", "shop", "web").is_some());
    let applied_before = fake.applied().len();
    fake.finish_rollout("shop", "web");
    fake.until("worker applied after web's rollout completed", |f| {
        f.get("deployments", "shop", "worker").is_some()
    })
    .await;
    // The apply order: web's objects, then (after its rollout) worker's.
    let order: Vec<String> = fake
        .applied()
        .iter()
        .map(|((resource, _, name), _)| format!("{resource}/{name}"))
        .collect();
    let at = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert!(at("deployments/web") < applied_before, "{order:?}");
    assert!(at("deployments/worker") >= applied_before, "{order:?}");
    assert!(
        at("secrets/web-secrets") < at("deployments/web"),
        "{order:?}"
    );
    fake.until("worker's rollout checked", |f| {
        f.reads_of("shop", "worker") >= 1
    })
    .await;
    assert!(!task.is_finished(), "worker is still rolling out");
    fake.finish_rollout("shop", "worker");
    let events = task.await.unwrap().unwrap();
    let timeline = fake.with(|s| s.timeline.clone());
    let when = |e: &str| {
        timeline
            .iter()
            .position(|t| t == e)
            .unwrap_or_else(|| panic!("no {e:?} in {timeline:?}"))
    };
    assert!(when("apply deployments/web") < when("complete deployments/web"));
    assert!(
        when("complete deployments/web") < when("apply deployments/worker"),
        "{timeline:?}"
    );
    assert!(when("apply deployments/worker") < when("complete deployments/worker"));
    let line = |text: &str| {
        events
            .iter()
            .position(|e| e == text)
            .unwrap_or_else(|| panic!("no {text:?} in {events:?}"))
    };
    assert!(line("waiting for the rollout of shop/web") < line("deployment shop/worker applied"));
    assert!(
        line("deployment shop/worker applied") < line("waiting for the rollout of shop/worker")
    );
}

#[tokio::test]
async fn a_failed_rollout_brings_the_previous_version_back() {
    let (fake, rt) = start().await;
    fake.set_controller(None);
    let p = plan("shop");
    deploy(&rt, &p).await.unwrap();
    let good = fake.get("deployments", "shop", "web").unwrap();
    let good_hash = fake.revision_hash("shop", "web", 1).unwrap();

    // The next version's web crash-loops.
    fake.set_controller(Some(waiting(
        "CrashLoopBackOff",
        "back-off 10s restarting failed container=web",
    )));
    let mut next = next_revision(&p);
    next.containers[0]
        .secrets
        .0
        .insert("DB_PASSWORD".into(), "wrong".into());
    let err = deploy(&rt, &next).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("CrashLoopBackOff"), "{msg}");
    assert!(msg.ends_with("previous version restored"), "{msg}");
    // Reported as the Docker runtime does: the rollout's failure, restored.
    assert!(matches!(err, RuntimeError::Restored { .. }), "{err:?}");
    assert!(
        matches!(err.root(), RuntimeError::Rollout { reason, .. } if reason == "CrashLoopBackOff"),
        "{err:?}"
    );

    // web's template is the good one again: its ReplicaSet is current.
    let web = fake.get("deployments", "shop", "web").unwrap();
    assert_eq!(web["spec"]["template"], good["spec"]["template"]);
    assert_eq!(web["metadata"]["labels"]["io.shoal.try"], "1");
    let current = revision_of(&web);
    assert_eq!(
        fake.revision_hash("shop", "web", current).as_deref(),
        Some(good_hash.as_str())
    );
    let serving = fake.pods_of("shop", "web", current);
    assert_eq!(serving.len(), 3);
    assert!(serving.iter().all(|(_, t)| !t), "{serving:?}");
    // The secret values are the previous ones too.
    let secret = fake.get("secrets", "shop", "web-secrets").unwrap();
    let want = serde_json::to_value(k8s_openapi::ByteString(b"s3cret-db-pass".to_vec())).unwrap();
    assert_eq!(secret["data"]["DB_PASSWORD"], want);
    // worker was never touched by the failed try.
    let worker = fake.get("deployments", "shop", "worker").unwrap();
    assert_eq!(worker["metadata"]["generation"], 1);

    // A first deploy that fails has nothing to go back to: its objects
    // stay for inspection, and the reason says nothing was restored.
    let (fake, rt) = start().await;
    fake.set_controller(Some(waiting("CrashLoopBackOff", "")));
    let err = deploy(&rt, &plan("shop")).await.unwrap_err();
    assert!(!err.to_string().contains("restored"), "{err}");
    assert!(fake.get("deployments", "shop", "web").is_some());
}

#[tokio::test]
async fn a_failed_rollout_of_a_later_container_restores_the_earlier_ones_too() {
    let (fake, rt) = start().await;
    fake.set_controller(None);
    let p = plan("shop");
    deploy(&rt, &p).await.unwrap();
    let good_web = fake.get("deployments", "shop", "web").unwrap();
    let good_worker = fake.get("deployments", "shop", "worker").unwrap();

    // Both change; web rolls out fine, worker's pods cannot be scheduled.
    let mut next = next_revision(&p);
    next.containers[1]
        .config
        .env
        .insert("QUEUE".into(), "urgent".into());
    fake.set_controller(Some(waiting("ContainerCreating", "")));
    let rt2 = rt.clone();
    let task = tokio::spawn(async move { deploy(&rt2, &next).await });
    fake.until("web's revision 2 made", |f| {
        f.revision_hash("shop", "web", 2).is_some()
    })
    .await;
    fake.set_pods("shop", "web", 2, ready_status());
    fake.until("worker's revision 2 applied", |f| {
        f.get("deployments", "shop", "worker")
            .is_some_and(|w| w["metadata"]["generation"] == 2)
    })
    .await;
    fake.until("worker's revision 2 made", |f| {
        f.revision_hash("shop", "worker", 2).is_some()
    })
    .await;
    fake.set_pods(
        "shop",
        "worker",
        2,
        json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory.",
            }],
        }),
    );
    let err = task.await.unwrap().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Unschedulable"), "{msg}");
    assert!(msg.ends_with("previous version restored"), "{msg}");
    assert!(matches!(err, RuntimeError::Restored { .. }), "{err:?}");
    let web = fake.get("deployments", "shop", "web").unwrap();
    assert_eq!(web["spec"]["template"], good_web["spec"]["template"]);
    let worker = fake.get("deployments", "shop", "worker").unwrap();
    assert_eq!(worker["spec"]["template"], good_worker["spec"]["template"]);
}

#[tokio::test]
async fn teardown_removes_exactly_one_deployments_objects() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    let a = plan("shop");
    let b = other_product("shop");
    deploy(&rt, &a).await.unwrap();
    deploy(&rt, &b).await.unwrap();

    let removed = rt
        .teardown(TEAM, &a.deployment, "shop", false)
        .await
        .unwrap();
    assert_eq!(removed.containers, ["shop-web", "shop-worker"]);
    assert!(removed.volumes.is_empty() && removed.networks.is_empty());
    assert_eq!(names(&fake, "deployments", "shop"), ["api", "cache"]);
    assert_eq!(names(&fake, "services", "shop"), ["api"]);
    assert_eq!(
        names(&fake, "secrets", "shop"),
        ["api-registry", "api-secrets"]
    );
    // Without `volumes` the claims stay.
    assert_eq!(
        names(&fake, "persistentvolumeclaims", "shop"),
        ["api-data", "cache-config", "web-data", "worker-config"]
    );
    // Again: nothing left to remove is success.
    assert_eq!(
        rt.teardown(TEAM, &a.deployment, "shop", false)
            .await
            .unwrap(),
        Default::default()
    );

    // The other product with its volumes: a's claims keep the namespace.
    let removed = rt
        .teardown(TEAM, &b.deployment, "shop", true)
        .await
        .unwrap();
    assert_eq!(removed.containers, ["shop-api", "shop-cache"]);
    assert_eq!(removed.volumes, ["api-data", "cache-config"]);
    assert!(removed.networks.is_empty());
    assert!(fake.get("namespaces", "", "shop").is_some());
    assert_eq!(
        names(&fake, "persistentvolumeclaims", "shop"),
        ["web-data", "worker-config"]
    );

    // The last shoal objects go: so does the namespace shoal created.
    let removed = rt
        .teardown(TEAM, &a.deployment, "shop", true)
        .await
        .unwrap();
    assert_eq!(removed.volumes, ["web-data", "worker-config"]);
    assert_eq!(removed.networks, ["shop"]);
    assert!(fake.get("namespaces", "", "shop").is_none());
    assert_eq!(
        rt.teardown(TEAM, &a.deployment, "shop", true)
            .await
            .unwrap(),
        Default::default()
    );
}

#[tokio::test]
async fn teardown_keeps_a_namespace_shoal_did_not_create() {
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    fake.put(
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shared"}}),
    );
    let a = plan("shared");
    deploy(&rt, &a).await.unwrap();
    let removed = rt
        .teardown(TEAM, &a.deployment, "shared", true)
        .await
        .unwrap();
    assert_eq!(removed.containers, ["shared-web", "shared-worker"]);
    assert!(removed.networks.is_empty());
    assert!(fake.get("namespaces", "", "shared").is_some());
    assert_eq!(fake.count("deployments"), 0);
    assert_eq!(fake.count("secrets"), 0);
    assert_eq!(fake.count("persistentvolumeclaims"), 0);
}

#[tokio::test]
async fn config_fields_kubernetes_cannot_honour_are_refused_before_anything_is_applied() {
    use shoal_protocol::model::{ExpectedRunState, ExpectedState, NetworkMode, RestartPolicy};
    type Set = fn(&mut ContainerConfig);
    let cases: Vec<(&str, Set)> = vec![
        ("networks", |c| c.networks = vec!["back".into()]),
        ("network_mode", |c| {
            c.network_mode = Some(NetworkMode::Bridge)
        }),
        ("network_mode", |c| c.network_mode = Some(NetworkMode::None)),
        ("restart", |c| c.restart = Some(RestartPolicy::No)),
        ("restart", |c| c.restart = Some(RestartPolicy::OnFailure)),
        ("restart", |c| {
            c.restart = Some(RestartPolicy::UnlessStopped)
        }),
        ("log_driver", |c| c.log_driver = Some("syslog".into())),
        ("log_options", |c| {
            c.log_options.insert("max-size".into(), "1m".into());
        }),
        ("expected.state", |c| {
            c.expected = Some(ExpectedState {
                state: ExpectedRunState::Exited,
                exit_code: Some(0),
                timeout_s: None,
            })
        }),
        ("expected.exit_code", |c| {
            c.expected = Some(ExpectedState {
                state: ExpectedRunState::Running,
                exit_code: Some(3),
                timeout_s: None,
            })
        }),
    ];
    let (fake, rt) = start().await;
    fake.set_auto_rollout(true);
    for (field, set) in cases {
        let mut p = plan("shop");
        set(&mut p.containers[1].config);
        let err = deploy(&rt, &p).await.unwrap_err();
        match &err {
            RuntimeError::InvalidConfig { container, reason } => {
                assert_eq!(container, "worker", "{field}");
                assert!(
                    reason.starts_with(&format!("{field}: ")),
                    "{field}: {reason}"
                );
            }
            other => panic!("{field}: {other}"),
        }
        assert!(fake.applied().is_empty(), "{field}: nothing is applied");
    }
    // What it honours deploys.
    let mut p = plan("shop");
    p.containers[1].config.restart = Some(RestartPolicy::Always);
    p.containers[1].config.network_mode = Some(NetworkMode::Host);
    deploy(&rt, &p).await.unwrap();
    let worker = fake.get("deployments", "shop", "worker").unwrap();
    assert_eq!(worker["spec"]["template"]["spec"]["hostNetwork"], true);
}

#[tokio::test]
async fn the_live_state_lists_the_teams_deployments_as_containers() {
    let (fake, rt) = start().await;
    fake.set_controller(None);
    let p = plan("shop");
    deploy(&rt, &p).await.unwrap();
    // What the node's heartbeats carry: every container of the team, with
    // its deployment, from the same listing as `container list`.
    let live = rt.live(TEAM).await.unwrap();
    let names: Vec<&str> = live.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["shop-web", "shop-worker"], "{live:?}");
    assert!(live.iter().all(|c| c.state == "running"), "{live:?}");
    assert!(
        live.iter().all(|c| c.deployment == p.deployment),
        "{live:?}"
    );
    // Another team sees none of them.
    assert!(rt.live("another-team").await.unwrap().is_empty());
    // Stopped (scaled to 0): the live state says so.
    rt.command(TEAM, "shop-web", ContainerAction::Stop)
        .await
        .unwrap();
    let live = rt.live(TEAM).await.unwrap();
    let web = live.iter().find(|c| c.name == "shop-web").unwrap();
    assert_eq!(web.state, "stopped", "{live:?}");
}

/// A LiveWatcher of TEAM on `rt`, looking at it on its own once an hour.
fn hourly_live_watcher(
    rt: KubernetesRuntime,
) -> (
    shoal_node::live::LiveWatcher,
    tokio::sync::watch::Receiver<Option<Box<shoal_protocol::heartbeat::Live>>>,
    tempfile::TempDir,
) {
    use shoal_node::runtime::RuntimeFactory;
    let rt: Arc<dyn Runtime> = Arc::new(rt);
    let factory: RuntimeFactory = Arc::new(move || {
        let rt = Arc::clone(&rt);
        Box::pin(async move { Ok(rt) })
    });
    let team = shoal_protocol::TeamId(hex::decode(TEAM).unwrap().try_into().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (watcher, live) = shoal_node::live::LiveWatcher::spawn(
        team,
        Some(factory),
        dir.path().to_path_buf(),
        Duration::from_secs(3600),
        tokio_util::sync::CancellationToken::new(),
    );
    (watcher, live, dir)
}

/// The state of container `name` in a live state.
fn live_state(
    live: &tokio::sync::watch::Receiver<Option<Box<shoal_protocol::heartbeat::Live>>>,
    name: &str,
) -> Option<String> {
    let l = live.borrow();
    let c = l.as_ref()?.containers.iter().find(|c| c.name == name)?;
    Some(c.state.clone())
}

/// Waits (60 s at most) until container `name` is in state `want`.
async fn live_until(
    live: &mut tokio::sync::watch::Receiver<Option<Box<shoal_protocol::heartbeat::Live>>>,
    name: &str,
    want: &str,
) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while live_state(live, name).as_deref() != Some(want) {
            live.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never became {want}: {:?}", live_state(live, name)));
}

/// The live state follows a pod's change through the watch of the team's
/// Deployments and pods in every namespace: its periodic look is an hour
/// away, so only a watch event can bring the change (with the watch
/// broken, it never comes and the test fails).
#[tokio::test]
async fn the_live_state_follows_a_pods_change_through_the_watch() {
    let (fake, rt) = start().await;
    fake.set_controller(None);
    deploy(&rt, &plan("shop")).await.unwrap();
    let (watcher, mut live, _dir) = hourly_live_watcher(rt);
    // The watches of every namespace are open, and the looks at start (the
    // first, the period's first tick, the one the watches' lists bring)
    // are done: a look lists the replica sets of every namespace.
    fake.until(
        "the team's pods and Deployments watched and looked at",
        |f| {
            watches_everywhere(f, "pods") >= 1
                && watches_everywhere(f, "deployments") >= 1
                && looks(f) >= 3
        },
    )
    .await;
    assert_eq!(live_state(&live, "shop-web").as_deref(), Some("running"));

    // The kubelet reports web's pod crash looping.
    let changed = std::time::Instant::now();
    fake.set_pods(
        "shop",
        "web",
        1,
        waiting(
            "CrashLoopBackOff",
            "back-off 10s restarting failed container=web",
        ),
    );
    live_until(&mut live, "shop-web", "CrashLoopBackOff").await;
    // A figure, not an assertion.
    println!(
        "a pod's change reached the live state {:.2}s after it was made",
        changed.elapsed().as_secs_f64()
    );
    watcher.shutdown().await;
}

/// Watches of `resource` in every namespace served so far.
fn watches_everywhere(f: &Fake, resource: &str) -> usize {
    f.served(|r| r.watch && r.resource == resource && r.ns.is_empty())
}

/// Looks at the live state so far: each lists the replica sets of every
/// namespace.
fn looks(f: &Fake) -> usize {
    f.served(|r| r.method == Method::GET && r.resource == "replicasets" && r.ns.is_empty())
}

/// The live state's watch outlives the server: a watch the server ends is
/// opened again, one whose version expired (410 Gone) lists again, and a
/// later change still arrives without the hourly look.
#[tokio::test]
async fn the_live_state_watch_reopens_when_ended_and_lists_again_when_expired() {
    let (fake, rt) = start().await;
    fake.set_controller(None);
    deploy(&rt, &plan("shop")).await.unwrap();
    fake.with(|s| {
        s.watch_cap = Some(Duration::from_millis(200));
        s.expire_watches = 2;
    });
    let (watcher, mut live, _dir) = hourly_live_watcher(rt);
    // Each kind: a list, a watch expired or ended, again; the lists for a
    // watch ask for one item.
    let lists = |f: &Fake, resource: &str| {
        f.served(|r| {
            !r.watch && r.resource == resource && r.ns.is_empty() && r.limit.as_deref() == Some("1")
        })
    };
    fake.until(
        "both expired watches listed again, and the ended ones reopened",
        |f| {
            f.with(|s| s.expire_watches) == 0
                && lists(f, "pods") + lists(f, "deployments") >= 4
                && watches_everywhere(f, "pods") >= 3
                && watches_everywhere(f, "deployments") >= 3
        },
    )
    .await;
    live_until(&mut live, "shop-web", "running").await;
    let before = looks(&fake);
    fake.set_pods(
        "shop",
        "web",
        1,
        waiting("ImagePullBackOff", "Back-off pulling image"),
    );
    live_until(&mut live, "shop-web", "ImagePullBackOff").await;
    assert!(looks(&fake) > before);
    watcher.shutdown().await;
}
