//! What the engine says about a container: its state while waiting, and
//! the [`ContainerInfo`] of a listed one.

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, HealthStatusEnum,
    PortSummaryTypeEnum,
};
use shoal_protocol::model::{ContainerState, Protocol};

use crate::runtime::{
    ContainerInfo, LABEL_CONTAINER, LABEL_DEPLOYMENT, LABEL_INIT, LABEL_PREFIX, LABEL_TRY,
    LABEL_VERSION, PublishedPort,
};

/// Longest health check output quoted in an error.
const HEALTH_OUTPUT_MAX: usize = 200;

/// What one inspect showed of a container's state.
pub(super) struct Seen {
    pub(super) status: Option<ContainerStateStatusEnum>,
    pub(super) exit_code: Option<i64>,
    pub(super) restarts: i64,
    pub(super) health: Option<HealthStatusEnum>,
    pub(super) health_output: Option<String>,
}

impl Seen {
    pub(super) fn of(info: &ContainerInspectResponse) -> Self {
        let state = info.state.as_ref();
        let health = state.and_then(|s| s.health.as_ref());
        let health_output = health
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.last())
            .map(|r| {
                let out = r.output.as_deref().unwrap_or("").trim();
                let out: String = out.chars().take(HEALTH_OUTPUT_MAX).collect();
                format!(
                    "the health check exited with code {}{}",
                    r.exit_code.unwrap_or(-1),
                    if out.is_empty() {
                        String::new()
                    } else {
                        format!(": {out}")
                    }
                )
            });
        Self {
            status: state.and_then(|s| s.status),
            exit_code: state.and_then(|s| s.exit_code),
            restarts: info.restart_count.unwrap_or(0),
            health: health.and_then(|h| h.status),
            health_output,
        }
    }

    pub(super) fn describe(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        match self.health {
            Some(
                h @ (HealthStatusEnum::STARTING
                | HealthStatusEnum::HEALTHY
                | HealthStatusEnum::UNHEALTHY),
            ) => format!("{status} ({h})"),
            _ => status,
        }
    }
}

pub(super) fn summary_name(s: &ContainerSummary) -> Option<String> {
    s.names
        .as_ref()?
        .first()
        .map(|n| n.trim_start_matches('/').to_owned())
}

pub(super) fn container_info(s: &ContainerSummary) -> Option<ContainerInfo> {
    let name = summary_name(s)?;
    let labels = s.labels.clone().unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let status = s.status.clone().unwrap_or_default();
    let state = s.state.map_or_else(String::new, |st| st.to_string());
    let exit_code = (state == "exited").then(|| exit_code_of(&status)).flatten();
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PublishedPort {
                internal: p.private_port,
                protocol: match p.typ {
                    Some(PortSummaryTypeEnum::UDP) => Protocol::Udp,
                    _ => Protocol::Tcp,
                },
                host_ip: p.ip.clone().unwrap_or_default(),
                host_port: p.public_port?,
            })
        })
        .collect();
    Some(ContainerInfo {
        name,
        id: s.id.clone().unwrap_or_default(),
        prefix: label(LABEL_PREFIX),
        container: label(LABEL_CONTAINER),
        deployment: label(LABEL_DEPLOYMENT),
        version: label(LABEL_VERSION),
        try_number: label(LABEL_TRY).parse().unwrap_or(0),
        init: labels.get(LABEL_INIT).cloned(),
        state: ContainerState {
            state,
            exit_code,
            image: s.image.clone().unwrap_or_default(),
        },
        status,
        ports,
    })
}

/// The exit code in an engine status like `"Exited (3) 5 seconds ago"`.
fn exit_code_of(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn engine_status_exit_codes() {
        assert_eq!(exit_code_of("Exited (3) 5 seconds ago"), Some(3));
        assert_eq!(exit_code_of("Exited (137) About a minute ago"), Some(137));
        assert_eq!(exit_code_of("Up 3 minutes"), None);
    }
}
