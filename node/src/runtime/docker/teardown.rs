//! Tearing one deployment down: its containers (also init containers and
//! previous containers set aside), the prefix's network once nothing uses
//! it, and, when asked, the named volumes its containers mounted that no
//! other container uses.

use std::collections::{BTreeSet, HashMap};

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveVolumeOptionsBuilder};

use super::DockerRuntime;
use super::error::status_of;
use super::spec::network_name;
use super::state::summary_name;
use crate::runtime::{LABEL_DEPLOYMENT, LABEL_PREFIX, LABEL_TEAM, Removed, RuntimeError};

impl DockerRuntime {
    pub(super) async fn run_teardown(
        &self,
        team: &str,
        deployment: &str,
        prefix: &str,
        volumes: bool,
    ) -> Result<Removed, RuntimeError> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_TEAM}={team}"),
                format!("{LABEL_DEPLOYMENT}={deployment}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.engine("listing containers", e))?;
        let mut removed = Removed::default();
        let mut mounted = BTreeSet::new();
        for s in &found {
            let Some(name) = summary_name(s) else {
                continue;
            };
            for m in s.mounts.iter().flatten() {
                if m.typ.as_deref() == Some("volume")
                    && let Some(v) = &m.name
                {
                    mounted.insert(v.clone());
                }
            }
            self.stop_and_remove(&name).await?;
            removed.containers.push(name);
        }

        // The prefix's network, once no container of the prefix is left.
        let rest = self.list(team, Some(prefix), false).await?;
        if rest.is_empty() {
            let network = network_name(prefix);
            match self.docker.inspect_network(&network, None).await {
                Ok(n) => {
                    let labels = n.labels.unwrap_or_default();
                    let ours = labels.get(LABEL_TEAM).map(String::as_str) == Some(team)
                        && labels.get(LABEL_PREFIX).map(String::as_str) == Some(prefix);
                    let idle = n.containers.is_none_or(|c| c.is_empty());
                    if ours && idle {
                        match self.docker.remove_network(&network).await {
                            Ok(()) => removed.networks.push(network),
                            // Gone, or joined meanwhile: both fine.
                            Err(e) if matches!(status_of(&e), Some(403 | 404 | 409)) => {}
                            Err(e) => {
                                return Err(self.engine(format!("removing network {network}"), e));
                            }
                        }
                    }
                }
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.engine(format!("inspecting network {network}"), e)),
            }
        }

        if volumes {
            for v in mounted {
                let labels = match self.docker.inspect_volume(&v).await {
                    Ok(info) => info.labels,
                    Err(e) if status_of(&e) == Some(404) => continue,
                    Err(e) => return Err(self.engine(format!("inspecting volume {v}"), e)),
                };
                if labels.get(LABEL_TEAM).map(String::as_str) != Some(team)
                    || labels.get(LABEL_PREFIX).map(String::as_str) != Some(prefix)
                {
                    continue;
                }
                let options = RemoveVolumeOptionsBuilder::new().force(false).build();
                match self.docker.remove_volume(&v, Some(options)).await {
                    Ok(()) => removed.volumes.push(v),
                    // Still used by another container: kept.
                    Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
                    Err(e) => return Err(self.engine(format!("removing volume {v}"), e)),
                }
            }
        }
        Ok(removed)
    }
}
