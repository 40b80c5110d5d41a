//! Finding a team's containers: listing them, resolving a runtime name,
//! and their redacted description.

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::ListContainersOptionsBuilder;
use serde_json::Value;

use super::DockerRuntime;
use super::error::status_of;
use super::state::container_info;
use crate::runtime::common::{redact_env, secret_keys};
use crate::runtime::{
    ContainerInfo, LABEL_INIT, LABEL_PREFIX, LABEL_SECRET_KEYS, LABEL_TEAM, RuntimeError,
};

impl DockerRuntime {
    /// The team's containers of a prefix (only init containers when `init_only`).
    pub(super) async fn list(
        &self,
        team: &str,
        prefix: Option<&str>,
        init_only: bool,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut labels = vec![format!("{LABEL_TEAM}={team}")];
        if let Some(p) = prefix {
            labels.push(format!("{LABEL_PREFIX}={p}"));
        }
        if init_only {
            labels.push(LABEL_INIT.to_owned());
        }
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.engine("listing containers", e))
    }

    /// The team's container by runtime name; another team's container, or
    /// one shoal did not make, is "not found".
    pub(super) async fn resolve(
        &self,
        team: &str,
        name: &str,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        let not_found = || RuntimeError::ContainerNotFound {
            name: name.to_owned(),
        };
        if name.is_empty() || name.contains('/') {
            return Err(not_found());
        }
        let info = match self.docker.inspect_container(name, None).await {
            Ok(info) => info,
            Err(e) if status_of(&e) == Some(404) => return Err(not_found()),
            Err(e) => return Err(self.engine(format!("inspecting container {name}"), e)),
        };
        let owner = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_TEAM));
        if owner.map(String::as_str) != Some(team) {
            return Err(not_found());
        }
        Ok(info)
    }

    pub(super) async fn run_containers(
        &self,
        team: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut out: Vec<ContainerInfo> = self
            .list(team, prefix, false)
            .await?
            .iter()
            .filter_map(container_info)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(super) async fn run_inspect(&self, team: &str, name: &str) -> Result<Value, RuntimeError> {
        let info = self.resolve(team, name).await?;
        let keys = secret_keys(
            info.config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(LABEL_SECRET_KEYS)),
        );
        let mut value = serde_json::to_value(&info).map_err(|e| RuntimeError::Engine {
            context: format!("inspecting container {name}"),
            detail: e.to_string(),
        })?;
        redact_env(&mut value, &keys);
        Ok(value)
    }
}
