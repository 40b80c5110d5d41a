//! Looking at a team's containers: listing them, their logs and their
//! redacted description.

use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use serde_json::Value;
use shoal_protocol::model::{ContainerState, Protocol};

use super::meta::{container_selector, label_of, name_of, pod_phase, runtime_name, team_selector};
use super::rollout::{Rollout, current_revision_hash, pod_failure, rollout_state};
use super::{KubernetesRuntime, LABEL_POD_TEMPLATE_HASH};
use crate::runtime::common::{redact_env, secret_keys};
use crate::runtime::{
    ContainerInfo, LABEL_CONTAINER, LABEL_DEPLOYMENT, LABEL_PREFIX, LABEL_SECRET_KEYS, LABEL_TRY,
    LABEL_VERSION, LogLine, LogSource, LogStream, PublishedPort, RuntimeError,
};

impl KubernetesRuntime {
    /// Finds a team's Deployment by runtime name `<prefix>-<container>`.
    pub(super) async fn resolve(&self, team: &str, name: &str) -> Result<Deployment, RuntimeError> {
        let all: Api<Deployment> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(&team_selector(team)))
            .await
            .map_err(|e| self.err("listing the team's deployments", e))?;
        list.items
            .into_iter()
            .find(|d| runtime_name(d).as_deref() == Some(name))
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                name: name.to_owned(),
            })
    }

    pub(super) async fn run_containers(
        &self,
        team: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let lp = ListParams::default().labels(&team_selector(team));
        let (deployments, sets, pods) = match prefix {
            Some(ns) => (
                self.api::<Deployment>(ns).list(&lp).await,
                self.api::<ReplicaSet>(ns).list(&lp).await,
                self.api::<Pod>(ns).list(&lp).await,
            ),
            None => (
                Api::<Deployment>::all(self.client.clone()).list(&lp).await,
                Api::<ReplicaSet>::all(self.client.clone()).list(&lp).await,
                Api::<Pod>::all(self.client.clone()).list(&lp).await,
            ),
        };
        let deployments = deployments.map_err(|e| self.err("listing the team's deployments", e))?;
        let sets = sets.map_err(|e| self.err("listing the team's replica sets", e))?;
        let pods = pods.map_err(|e| self.err("listing the team's pods", e))?;
        let mut out: Vec<ContainerInfo> = deployments
            .items
            .iter()
            .filter_map(|d| container_info(d, &sets.items, &pods.items))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(super) async fn run_logs(
        &self,
        team: &str,
        name: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<LogStream, RuntimeError> {
        let d = self.resolve(team, name).await?;
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let container = label_of(&d.metadata, LABEL_CONTAINER).unwrap_or_default();
        let prefix = label_of(&d.metadata, LABEL_PREFIX).unwrap_or_default();
        let pods = self
            .api::<Pod>(&ns)
            .list(&ListParams::default().labels(&container_selector(team, &prefix, &container)))
            .await
            .map_err(|e| self.err(format!("listing pods of {name}"), e))?;
        // The newest running pod, else the newest one.
        let mut items = pods.items;
        items.sort_by(|a, b| {
            let key = |p: &Pod| {
                (
                    pod_phase(p) == "Running",
                    p.metadata.creation_timestamp.clone(),
                    p.metadata.name.clone(),
                )
            };
            key(b).cmp(&key(a))
        });
        let pod = items
            .into_iter()
            .next()
            .ok_or_else(|| RuntimeError::Kubernetes {
                context: format!("reading the logs of {name}"),
                detail: "it has no pod (is it stopped?)".into(),
            })?;
        let lp = LogParams {
            container: Some(container),
            follow,
            tail_lines: tail.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            ..LogParams::default()
        };
        let pod_name = name_of(&pod.metadata).to_owned();
        let reader = self
            .api::<Pod>(&ns)
            .log_stream(&pod_name, &lp)
            .await
            .map_err(|e| self.err(format!("reading the logs of pod {ns}/{pod_name}"), e))?;
        let context = format!("reading the logs of pod {ns}/{pod_name}");
        Ok(reader
            .lines()
            .map(move |line| match line {
                Ok(text) => Ok(LogLine {
                    source: LogSource::Console,
                    text,
                }),
                Err(e) => Err(RuntimeError::Kubernetes {
                    context: context.clone(),
                    detail: e.to_string(),
                }),
            })
            .boxed())
    }

    pub(super) async fn run_inspect(&self, team: &str, name: &str) -> Result<Value, RuntimeError> {
        let d = self.resolve(team, name).await?;
        let secret_keys = secret_keys(
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LABEL_SECRET_KEYS)),
        );
        let mut v = serde_json::to_value(&d).map_err(|e| RuntimeError::Kubernetes {
            context: format!("describing {name}"),
            detail: e.to_string(),
        })?;
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        redact_env(&mut v, &secret_keys);
        Ok(v)
    }
}

fn container_info(d: &Deployment, sets: &[ReplicaSet], pods: &[Pod]) -> Option<ContainerInfo> {
    let prefix = label_of(&d.metadata, LABEL_PREFIX)?;
    let container = label_of(&d.metadata, LABEL_CONTAINER)?;
    let want = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let available = st.available_replicas.unwrap_or(0);
    // The pods of the current revision (none while it is being made).
    let hash = current_revision_hash(d, sets);
    let own: Vec<Pod> = pods
        .iter()
        .filter(|p| {
            label_of(&p.metadata, LABEL_PREFIX).as_deref() == Some(prefix.as_str())
                && label_of(&p.metadata, LABEL_CONTAINER).as_deref() == Some(container.as_str())
                && hash.is_some()
                && label_of(&p.metadata, LABEL_POD_TEMPLATE_HASH) == hash
        })
        .cloned()
        .collect();
    let failure = pod_failure(&own);
    let state = match (&failure, rollout_state(d)) {
        (_, _) if want == 0 => "stopped".to_owned(),
        (Some(f), _) => f.reason.clone(),
        (None, Rollout::Complete) => "running".to_owned(),
        (None, Rollout::Failed { reason, .. }) => reason,
        (None, Rollout::Progressing(_)) => "starting".to_owned(),
    };
    let spec_container = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first());
    let image = spec_container
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let ports = spec_container
        .and_then(|c| c.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PublishedPort {
                internal: u16::try_from(p.container_port).ok()?,
                protocol: if p.protocol.as_deref() == Some("UDP") {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                host_ip: String::new(),
                host_port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    Some(ContainerInfo {
        name: format!("{prefix}-{container}"),
        id: d.metadata.uid.clone().unwrap_or_default(),
        prefix,
        container,
        deployment: label_of(&d.metadata, LABEL_DEPLOYMENT).unwrap_or_default(),
        version: d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LABEL_VERSION))
            .cloned()
            .unwrap_or_default(),
        try_number: label_of(&d.metadata, LABEL_TRY)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        init: None,
        state: ContainerState {
            state,
            exit_code: None,
            image,
        },
        status: format!("{available}/{want} available"),
        ports,
    })
}
