//! Acting on a team's containers: start, stop, restart and remove one, or
//! remove everything of a prefix.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::future::try_join_all;
use shoal_protocol::model::ContainerAction;

use super::DockerRuntime;
use super::error::{engine_message, is_port_conflict, status_of};
use super::spec::network_name;
use super::state::summary_name;
use crate::runtime::{LABEL_CONTAINER, LABEL_PREFIX, LABEL_TEAM, Removed, RuntimeError};

impl DockerRuntime {
    /// Stops (gracefully) and removes the matching containers, concurrently.
    pub(super) async fn remove_matching(
        &self,
        team: &str,
        prefix: &str,
        init_only: bool,
    ) -> Result<Vec<String>, RuntimeError> {
        let found = self.list(team, Some(prefix), init_only).await?;
        let names: Vec<String> = found.iter().filter_map(summary_name).collect();
        try_join_all(names.iter().map(|n| self.stop_and_remove(n))).await?;
        Ok(names)
    }

    pub(super) async fn stop_and_remove(&self, name: &str) -> Result<(), RuntimeError> {
        self.stop_quietly(name).await?;
        self.remove_container(name).await
    }

    /// Stops a container gracefully; one already stopped or gone is fine.
    pub(super) async fn stop_quietly(&self, name: &str) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::new()
            .t(secs_i32(self.stop_timeout))
            .build();
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(self.engine(format!("stopping container {name}"), e)),
        }
    }

    pub(super) async fn remove_container(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.engine(format!("removing container {name}"), e)),
        }
    }

    pub(super) async fn run_command(
        &self,
        team: &str,
        name: &str,
        action: ContainerAction,
    ) -> Result<(), RuntimeError> {
        let info = self.resolve(team, name).await?;
        let id = info.id.unwrap_or_else(|| name.to_owned());
        let container = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_CONTAINER).cloned())
            .unwrap_or_else(|| name.to_owned());
        match action {
            ContainerAction::Start => self
                .docker
                .start_container(&id, None)
                .await
                .map_err(|e| self.start_error(&container, name, e)),
            ContainerAction::Stop => {
                let options = StopContainerOptionsBuilder::new()
                    .t(secs_i32(self.stop_timeout))
                    .build();
                self.docker
                    .stop_container(&id, Some(options))
                    .await
                    .map_err(|e| self.engine(format!("stopping container {name}"), e))
            }
            ContainerAction::Restart => {
                let options = RestartContainerOptionsBuilder::new()
                    .t(secs_i32(self.stop_timeout))
                    .build();
                self.docker
                    .restart_container(&id, Some(options))
                    .await
                    .map_err(|e| {
                        let detail = engine_message(&e);
                        if is_port_conflict(&detail) {
                            RuntimeError::PortInUse {
                                container: container.clone(),
                                detail,
                            }
                        } else {
                            self.engine(format!("restarting container {name}"), e)
                        }
                    })
            }
            ContainerAction::Remove => self.remove_container(&id).await,
            ContainerAction::RemoveVolumes | ContainerAction::PruneImages => {
                Err(crate::runtime::not_a_container_command(action))
            }
        }
    }

    pub(super) async fn run_remove_prefix(
        &self,
        team: &str,
        prefix: &str,
    ) -> Result<Removed, RuntimeError> {
        let mut removed = Removed {
            containers: self.remove_matching(team, prefix, false).await?,
            ..Default::default()
        };

        let network = network_name(prefix);
        match self.docker.inspect_network(&network, None).await {
            Ok(n) => {
                let labels = n.labels.unwrap_or_default();
                if labels.get(LABEL_TEAM).map(String::as_str) == Some(team)
                    && labels.get(LABEL_PREFIX).map(String::as_str) == Some(prefix)
                {
                    match self.docker.remove_network(&network).await {
                        Ok(()) => removed.networks.push(network),
                        Err(e) if status_of(&e) == Some(404) => {}
                        Err(e) => {
                            return Err(self.engine(format!("removing network {network}"), e));
                        }
                    }
                }
            }
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.engine(format!("inspecting network {network}"), e)),
        }

        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_TEAM}={team}"),
                format!("{LABEL_PREFIX}={prefix}"),
            ],
        )]);
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.engine("listing volumes", e))?
            .volumes
            .unwrap_or_default();
        for v in volumes {
            let options = RemoveVolumeOptionsBuilder::new().force(false).build();
            match self.docker.remove_volume(&v.name, Some(options)).await {
                Ok(()) => removed.volumes.push(v.name),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.engine(format!("removing volume {}", v.name), e)),
            }
        }
        Ok(removed)
    }
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}
