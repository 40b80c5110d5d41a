#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The executor against a real Docker engine and the local registry that
//! `scripts/test.sh` sets up: a deployment started in the team runs on this
//! node and ends `successful` or `failed` with the reason; an increase then
//! a rollback bring back exactly what ran; a restart mid-try ends in a
//! definite state; a deleted deployment's containers are torn down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_node::daemon::{Node, now_ms};
use shoal_node::executor::{Executor, RuntimeFactory, Unsealer};
use shoal_node::mesh::{Mesh, MeshConfig};
use shoal_node::query::{Answer, Query};
use shoal_node::runtime::{DockerRuntime, Runtime};
use shoal_node::store::TeamRecord;
use shoal_node::sync::{SyncConfig, SyncEngine, SyncHandle};
use shoal_protocol::model::{
    ContainerAction, ContainerConfig, Deployment, DeploymentStatus, Image, ImageRef, ProductKind,
    RegistryKind, VersionKind,
};
use shoal_protocol::{Action, SecretKey, TeamId, testkit};
use tokio_util::sync::CancellationToken;

#[macro_use]
mod common;
use common::test_env;

const WAIT: Duration = Duration::from_secs(120);

/// A node with the docker runtime running one team, with its executor.
struct Rig {
    _dir: tempfile::TempDir,
    team: TeamId,
    owner: SecretKey,
    node: SecretKey,
    sync: SyncHandle,
    engine: Option<SyncEngine>,
    mesh: Option<Mesh>,
    executor: Option<Executor>,
    cancel: CancellationToken,
    store: Arc<shoal_node::store::Store>,
}

fn factory() -> RuntimeFactory {
    Arc::new(|| {
        Box::pin(async {
            let d = DockerRuntime::connect(None).await?;
            Ok(Arc::new(d) as Arc<dyn Runtime>)
        })
    })
}

fn no_secrets() -> Unsealer {
    Arc::new(|_, _| Err("no sealed values in this test".into()))
}

impl Rig {
    async fn start(dir: tempfile::TempDir) -> Rig {
        let owner = testkit::key(1);
        let mut node = Node::open(dir.path()).unwrap();
        let node_key = SecretKey::from_seed(node.key_seed());
        let team = match node.teams().keys().next() {
            Some(t) => *t,
            None => {
                let g = testkit::genesis(&owner, &node_key, now_ms());
                node.install_team(TeamRecord::new("team", [7; 32], now_ms()), vec![g])
                    .unwrap()
            }
        };
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
        let executor = Executor::spawn(
            team,
            sync.clone(),
            node_key.clone(),
            node.store(),
            factory(),
            no_secrets(),
            cancel.child_token(),
        );
        Rig {
            _dir: dir,
            team,
            owner,
            node: node_key,
            sync,
            engine: Some(engine),
            mesh: Some(mesh),
            executor: Some(executor),
            cancel,
            store: node.store(),
        }
    }

    /// Stops everything as a crash would leave it: no report is written.
    async fn stop(mut self) -> tempfile::TempDir {
        self.cancel.cancel();
        if let Some(x) = self.executor.take() {
            x.shutdown().await;
        }
        if let Some(e) = self.engine.take() {
            e.join().await.unwrap();
        }
        if let Some(m) = self.mesh.take() {
            m.join().await.unwrap();
        }
        self._dir
    }

    /// Prepares, signs (as the owner) and submits `make(ids)`.
    async fn act(&self, make: impl FnOnce(&[String]) -> Action) {
        let ctx = self.sync.next_context(self.owner.public()).await.unwrap();
        let ids: Vec<String> = (0..4).map(|k| ctx.new_id(k)).collect();
        let body = self
            .sync
            .prepare(self.owner.public(), make(&ids))
            .await
            .unwrap();
        self.sync
            .submit(body.sign(&self.owner).unwrap())
            .await
            .unwrap();
    }

    async fn deployment(&self, id: &str) -> Deployment {
        let id = id.to_string();
        self.sync
            .read(move |r| r.state().deployments.get(&id).cloned())
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until deployment `id` has finished try `attempt`.
    async fn finished(&self, id: &str, attempt: u32) -> Deployment {
        let deadline = Instant::now() + WAIT;
        loop {
            let d = self.deployment(id).await;
            if d.finished_try >= attempt && d.status != DeploymentStatus::InProgress {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "try {attempt} of {id} never ended: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn id_of_version(&self, name: &str) -> String {
        let name = name.to_string();
        self.sync
            .read(move |r| {
                r.state()
                    .versions
                    .values()
                    .find(|v| v.name == name)
                    .map(|v| v.id.clone())
            })
            .await
            .unwrap()
            .unwrap()
    }
}

fn env_config(pairs: &[(&str, &str)]) -> ContainerConfig {
    ContainerConfig {
        env: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ContainerConfig::default()
    }
}

/// The env of `<prefix>-<name>` as the engine runs it.
async fn running_env(
    docker: &DockerRuntime,
    team: &TeamId,
    prefix: &str,
    name: &str,
) -> Vec<String> {
    let v = docker
        .inspect(&team.to_hex(), &format!("{prefix}-{name}"))
        .await
        .unwrap();
    assert_eq!(v["State"]["Running"], true, "{v}");
    v["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_increase_rollback_and_a_bad_tag_on_a_real_engine() {
    let env = env_or_skip!();
    let rig = Rig::start(tempfile::tempdir().unwrap()).await;
    let docker = DockerRuntime::connect(None).await.unwrap();
    let team = rig.team;
    let node = rig.node.public();
    let prefix = format!("ex{}", std::process::id() % 100_000);
    let bad_prefix = format!("{prefix}-bad");
    let cleanup = || async {
        let _ = docker.remove_prefix(&team.to_hex(), &prefix).await;
        let _ = docker.remove_prefix(&team.to_hex(), &bad_prefix).await;
    };

    // Registry, product, incremental version 1.0.0 with one image.
    let registry = std::sync::Mutex::new(String::new());
    rig.act(|ids| {
        *registry.lock().unwrap() = ids[0].clone();
        Action::RegistryAdd {
            id: ids[0].clone(),
            name: "local".into(),
            kind: RegistryKind::V2,
            url: Some(format!("http://{}", env.registry)),
            namespace: None,
            user: None,
            password: None,
        }
    })
    .await;
    let registry = registry.lock().unwrap().clone();
    rig.act(|ids| Action::ProductCreate {
        id: ids[0].clone(),
        name: "web".into(),
        kind: ProductKind::Complex,
        description: String::new(),
        version: None,
    })
    .await;
    let product = rig
        .sync
        .read(|r| r.state().products.keys().next().cloned())
        .await
        .unwrap()
        .unwrap();
    rig.act(|ids| Action::VersionCreate {
        id: ids[0].clone(),
        product: product.clone(),
        name: "1.0.0".into(),
        kind: VersionKind::Incremental,
        changelog: String::new(),
        auto_copy: false,
    })
    .await;
    let v1 = rig.id_of_version("1.0.0").await;
    let image = ImageRef {
        registry: registry.clone(),
        name: "shoal-test/httpd".into(),
        tag: "1.0".into(),
    };
    rig.act(|_| Action::ImageAdd {
        version: v1.clone(),
        image: Box::new(Image {
            name: "web".into(),
            image: image.clone(),
            config: env_config(&[("GREETING", "one"), ("RELEASE", "{{version}}")]),
        }),
    })
    .await;

    // Deploy 1.0.0: the node runs it and reports success.
    let d1 = rig
        .sync
        .next_context(rig.owner.public())
        .await
        .unwrap()
        .new_id(0);
    rig.act(|ids| Action::DeploymentCreate {
        id: ids[0].clone(),
        version: v1.clone(),
        node,
        prefix: prefix.clone(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        protected: false,
        note: String::new(),
        force: false,
    })
    .await;
    rig.act(|_| Action::DeploymentStart {
        id: d1.clone(),
        force: false,
    })
    .await;
    let done = rig.finished(&d1, 1).await;
    assert_eq!(done.status, DeploymentStatus::Successful, "{done:?}");
    assert_eq!(done.containers["web"].state, "running", "{done:?}");
    assert_eq!(done.frozen.as_ref().unwrap().version_name, "1.0.0");
    assert!(!done.events.is_empty());
    let e = running_env(&docker, &team, &prefix, "web").await;
    assert!(e.contains(&"GREETING=one".to_string()), "{e:?}");
    assert!(e.contains(&"RELEASE=1.0.0".to_string()), "{e:?}");

    // Increase to 1.1.0 with a changed env; deploy it on the same prefix.
    rig.act(|ids| Action::VersionIncrease {
        from: v1.clone(),
        id: ids[0].clone(),
        name: "1.1.0".into(),
        changelog: String::new(),
        copies: Vec::new(),
    })
    .await;
    let v2 = rig.id_of_version("1.1.0").await;
    rig.act(|_| Action::ImageConfig {
        version: v2.clone(),
        name: "web".into(),
        image: image.clone(),
        config: Box::new(env_config(&[
            ("GREETING", "two"),
            ("RELEASE", "{{version}}"),
        ])),
    })
    .await;
    let d2 = rig
        .sync
        .next_context(rig.owner.public())
        .await
        .unwrap()
        .new_id(0);
    rig.act(|ids| Action::DeploymentCreate {
        id: ids[0].clone(),
        version: v2.clone(),
        node,
        prefix: prefix.clone(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        protected: false,
        note: String::new(),
        force: false,
    })
    .await;
    rig.act(|_| Action::DeploymentStart {
        id: d2.clone(),
        force: false,
    })
    .await;
    assert_eq!(
        rig.finished(&d2, 1).await.status,
        DeploymentStatus::Successful
    );
    assert_eq!(rig.deployment(&d1).await.status, DeploymentStatus::Obsolete);
    let e = running_env(&docker, &team, &prefix, "web").await;
    assert!(e.contains(&"GREETING=two".to_string()), "{e:?}");
    assert!(e.contains(&"RELEASE=1.1.0".to_string()), "{e:?}");

    // Roll back: 1.0.0's frozen config runs again, 1.1.0's is downgraded.
    rig.act(|_| Action::DeploymentRollback {
        id: d1.clone(),
        force: false,
    })
    .await;
    let back = rig.finished(&d1, 2).await;
    assert_eq!(back.status, DeploymentStatus::Successful, "{back:?}");
    assert_eq!(
        rig.deployment(&d2).await.status,
        DeploymentStatus::Downgraded
    );
    let e = running_env(&docker, &team, &prefix, "web").await;
    assert!(e.contains(&"GREETING=one".to_string()), "{e:?}");
    assert!(e.contains(&"RELEASE=1.0.0".to_string()), "{e:?}");

    // Each try's duration is in the metrics.
    let text = shoal_node::metrics::render(&Default::default())
        .await
        .unwrap();
    assert!(
        text.contains("shoal_executor_try_seconds_count{outcome=\"successful\"} 3"),
        "{text}"
    );

    // Container commands are ops the node carries out; queries answer from
    // the engine.
    let ask = shoal_node::query::runtime_handler(team, factory(), Arc::clone(&rig.store));
    let listed = ask(Query::Containers {
        prefix: Some(prefix.clone()),
    })
    .await;
    let Answer::Containers(list) = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].name, format!("{prefix}-web"));
    let cmd = rig
        .sync
        .next_context(rig.owner.public())
        .await
        .unwrap()
        .new_id(0);
    rig.act(|ids| Action::ContainerCommand {
        id: ids[0].clone(),
        node,
        container: format!("{prefix}-web"),
        action: ContainerAction::Stop,
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let v = docker
            .inspect(&team.to_hex(), &format!("{prefix}-web"))
            .await
            .unwrap();
        if v["State"]["Running"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "command {cmd} never carried out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.act(|ids| Action::ContainerCommand {
        id: ids[0].clone(),
        node,
        container: format!("{prefix}-web"),
        action: ContainerAction::Start,
    })
    .await;
    let deadline = Instant::now() + WAIT;
    while docker
        .inspect(&team.to_hex(), &format!("{prefix}-web"))
        .await
        .unwrap()["State"]["Running"]
        != true
    {
        assert!(Instant::now() < deadline, "start never carried out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Answer::Inspect(doc) = ask(Query::Inspect {
        container: format!("{prefix}-web"),
    })
    .await
    else {
        panic!("no inspect")
    };
    assert!(doc.contains("GREETING=one"), "{doc}");
    let Answer::Error(why) = ask(Query::Inspect {
        container: "nope".into(),
    })
    .await
    else {
        panic!("inspect of a missing container answered")
    };
    assert!(why.contains("nope"), "{why}");

    // A tag that does not exist ends the try failed, with the reason.
    rig.act(|ids| Action::VersionCreate {
        id: ids[0].clone(),
        product: product.clone(),
        name: "broken".into(),
        kind: VersionKind::Rolling,
        changelog: String::new(),
        auto_copy: false,
    })
    .await;
    let v3 = rig.id_of_version("broken").await;
    rig.act(|_| Action::ImageAdd {
        version: v3.clone(),
        image: Box::new(Image {
            name: "web".into(),
            image: ImageRef {
                tag: "no-such-tag".into(),
                ..image.clone()
            },
            config: ContainerConfig::default(),
        }),
    })
    .await;
    let d3 = rig
        .sync
        .next_context(rig.owner.public())
        .await
        .unwrap()
        .new_id(0);
    rig.act(|ids| Action::DeploymentCreate {
        id: ids[0].clone(),
        version: v3.clone(),
        node,
        prefix: bad_prefix.clone(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        instances: BTreeMap::new(),
        protected: false,
        note: String::new(),
        force: false,
    })
    .await;
    rig.act(|_| Action::DeploymentStart {
        id: d3.clone(),
        force: false,
    })
    .await;
    let failed = rig.finished(&d3, 1).await;
    assert_eq!(failed.status, DeploymentStatus::Failed, "{failed:?}");
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(reason.contains("no-such-tag"), "{reason}");
    assert!(failed.frozen.is_none());

    // A try cut short by a stop (as a crash would) ends in a definite
    // state once the node is back.
    rig.act(|_| Action::DeploymentStart {
        id: d3.clone(),
        force: false,
    })
    .await;
    // The query handler shares the node's store: it goes with the node.
    drop(ask);
    let dir = rig.stop().await;
    let rig = Rig::start(dir).await;
    let again = rig.finished(&d3, 2).await;
    assert_eq!(again.status, DeploymentStatus::Failed, "{again:?}");
    assert!(again.reason.unwrap_or_default().contains("no-such-tag"));
    // The good deployment still runs untouched.
    assert_eq!(
        rig.deployment(&d1).await.status,
        DeploymentStatus::Successful
    );
    running_env(&docker, &team, &prefix, "web").await;

    // Deleting a deployment tears its containers down on its node; the
    // other deployments' (none run here but d1's) are left.
    rig.act(|_| Action::DeploymentDelete { id: d1.clone() })
        .await;
    let deadline = Instant::now() + WAIT;
    while !docker
        .containers(&team.to_hex(), Some(&prefix))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "d1's containers never torn down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rig.deployment(&d2).await.status,
        DeploymentStatus::Downgraded
    );
    cleanup().await;
    rig.stop().await;
}
