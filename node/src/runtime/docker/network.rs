//! The prefix's network, the networks a config names, and named volumes.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};

use super::DockerRuntime;
use super::error::status_of;
use super::spec::{Spec, network_name};
use crate::runtime::common::Reporter;
use crate::runtime::{DeployPlan, LABEL_PREFIX, LABEL_TEAM, LABEL_VOLUME, RuntimeError, Step};

impl DockerRuntime {
    pub(super) async fn ensure_network(
        &self,
        team: &str,
        prefix: &str,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let name = network_name(prefix);
        match self.docker.inspect_network(&name, None).await {
            Ok(n) => {
                let labels = n.labels.unwrap_or_default();
                if labels.get(LABEL_TEAM).map(String::as_str) != Some(team)
                    || labels.get(LABEL_PREFIX).map(String::as_str) != Some(prefix)
                {
                    return Err(RuntimeError::NameInUse {
                        kind: "network",
                        name,
                    });
                }
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => {
                let labels = HashMap::from([
                    (LABEL_TEAM.to_owned(), team.to_owned()),
                    (LABEL_PREFIX.to_owned(), prefix.to_owned()),
                ]);
                self.create_network(&name, labels, report).await
            }
            Err(e) => Err(self.engine(format!("inspecting network {name}"), e)),
        }
    }

    /// A network named in a config: used as is, created when missing.
    pub(super) async fn ensure_shared_network(
        &self,
        team: &str,
        name: &str,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => {
                let labels = HashMap::from([(LABEL_TEAM.to_owned(), team.to_owned())]);
                self.create_network(name, labels, report).await
            }
            Err(e) => Err(self.engine(format!("inspecting network {name}"), e)),
        }
    }

    /// Creates a bridge network with `labels`.
    async fn create_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(|e| self.engine(format!("creating network {name}"), e))?;
        report
            .emit(Step::Network, None, format!("created network {name}"))
            .await;
        Ok(())
    }

    pub(super) async fn ensure_volumes(
        &self,
        plan: &DeployPlan,
        specs: &[Spec],
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let mut named: BTreeMap<&str, &str> = BTreeMap::new();
        for spec in specs {
            for (docker_name, config_name) in &spec.named_volumes {
                named.insert(docker_name, config_name);
            }
        }
        for (docker_name, config_name) in named {
            let request = VolumeCreateRequest {
                name: Some(docker_name.to_owned()),
                labels: Some(HashMap::from([
                    (LABEL_TEAM.to_owned(), plan.team.clone()),
                    (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
                    (LABEL_VOLUME.to_owned(), config_name.to_owned()),
                ])),
                ..Default::default()
            };
            // Creating an existing volume returns it unchanged.
            let volume = self
                .docker
                .create_volume(request)
                .await
                .map_err(|e| self.engine(format!("creating volume {docker_name}"), e))?;
            if volume.labels.get(LABEL_TEAM) != Some(&plan.team)
                || volume.labels.get(LABEL_PREFIX) != Some(&plan.prefix)
            {
                return Err(RuntimeError::NameInUse {
                    kind: "volume",
                    name: docker_name.to_owned(),
                });
            }
            report
                .emit(Step::Volume, None, format!("volume {docker_name} ready"))
                .await;
        }
        Ok(())
    }
}
