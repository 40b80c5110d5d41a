//! What the Kubernetes runtime can honour of a container config (§1.1).
//!
//! A node whose runtime is Kubernetes runs each container as a Deployment,
//! so some config fields have no meaning there: Docker networks, network
//! modes other than `host`, restart policies other than `always` (a
//! Deployment always restarts its pods), log drivers, and an expected state
//! other than running. Such a field is refused, never silently ignored: by
//! the rules when a deployment to a Kubernetes node starts or an image
//! config of a deployed version changes, and by the runtime itself. Both
//! use [`unsupported`], so they refuse exactly the same fields.

use crate::model::{ContainerConfig, ExpectedRunState, NetworkMode, RestartPolicy};

/// A config field the Kubernetes runtime cannot honour, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// The field's name in a container config (`network_mode`,
    /// `expected.state`, ...).
    pub field: &'static str,
    /// Why it cannot be honoured, and what to do instead.
    pub why: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

/// Every field of `cfg` (a merged config) that the Kubernetes runtime
/// cannot honour, in field order; empty when it can run it as written.
pub fn unsupported(cfg: &ContainerConfig) -> Vec<Unsupported> {
    let mut out = Vec::new();
    let mut push = |field: &'static str, why: String| out.push(Unsupported { field, why });
    if !cfg.networks.is_empty() {
        push(
            "networks",
            format!(
                "Kubernetes pods share one cluster network; remove the networks ({})",
                cfg.networks.join(", ")
            ),
        );
    }
    match cfg.network_mode {
        None | Some(NetworkMode::Host) => {}
        Some(mode) => push(
            "network_mode",
            format!(
                "{} has no Kubernetes equivalent; remove it (pods use the cluster network) or use host",
                network_mode_name(mode)
            ),
        ),
    }
    match cfg.restart {
        None | Some(RestartPolicy::Always) => {}
        Some(policy) => push(
            "restart",
            format!(
                "{} cannot apply: a Kubernetes Deployment always restarts its pods; remove it or use always",
                restart_name(policy)
            ),
        ),
    }
    if let Some(driver) = &cfg.log_driver {
        push(
            "log_driver",
            format!("{driver:?}: the cluster decides how pod logs are kept; remove it"),
        );
    }
    if !cfg.log_options.is_empty() {
        push(
            "log_options",
            "the cluster decides how pod logs are kept; remove them".into(),
        );
    }
    if let Some(e) = &cfg.expected {
        if e.state == ExpectedRunState::Exited {
            push(
                "expected.state",
                "a container expected to exit cannot run as a Kubernetes Deployment; expect running"
                    .into(),
            );
        } else if let Some(code) = e.exit_code {
            push(
                "expected.exit_code",
                format!("exit code {code} cannot be awaited from a running Deployment; remove it"),
            );
        }
    }
    out
}

fn network_mode_name(m: NetworkMode) -> &'static str {
    match m {
        NetworkMode::Bridge => "network mode bridge",
        NetworkMode::Host => "network mode host",
        NetworkMode::None => "network mode none",
    }
}

fn restart_name(p: RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::No => "restart policy no",
        RestartPolicy::Always => "restart policy always",
        RestartPolicy::UnlessStopped => "restart policy unless-stopped",
        RestartPolicy::OnFailure => "restart policy on-failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExpectedState;

    fn fields(cfg: &ContainerConfig) -> Vec<&'static str> {
        unsupported(cfg).iter().map(|u| u.field).collect()
    }

    #[test]
    fn a_plain_config_is_fully_supported() {
        let cfg = ContainerConfig {
            network_mode: Some(NetworkMode::Host),
            restart: Some(RestartPolicy::Always),
            expected: Some(ExpectedState {
                state: ExpectedRunState::Running,
                exit_code: None,
                timeout_s: Some(60),
            }),
            ..ContainerConfig::default()
        };
        assert!(unsupported(&cfg).is_empty());
        assert!(unsupported(&ContainerConfig::default()).is_empty());
    }

    #[test]
    fn each_unsupported_field_is_named() {
        let with = |f: fn(&mut ContainerConfig)| {
            let mut c = ContainerConfig::default();
            f(&mut c);
            fields(&c)
        };
        assert_eq!(with(|c| c.networks = vec!["back".into()]), ["networks"]);
        assert_eq!(
            with(|c| c.network_mode = Some(NetworkMode::Bridge)),
            ["network_mode"]
        );
        assert_eq!(
            with(|c| c.network_mode = Some(NetworkMode::None)),
            ["network_mode"]
        );
        for p in [
            RestartPolicy::No,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure,
        ] {
            let mut c = ContainerConfig {
                restart: Some(p),
                ..ContainerConfig::default()
            };
            assert_eq!(fields(&c), ["restart"]);
            c.restart = Some(RestartPolicy::Always);
            assert!(fields(&c).is_empty());
        }
        assert_eq!(
            with(|c| c.log_driver = Some("syslog".into())),
            ["log_driver"]
        );
        assert_eq!(
            with(|c| {
                c.log_options.insert("max-size".into(), "1m".into());
            }),
            ["log_options"]
        );
        assert_eq!(
            with(|c| c.expected = Some(ExpectedState {
                state: ExpectedRunState::Exited,
                exit_code: Some(0),
                timeout_s: None,
            })),
            ["expected.state"]
        );
        assert_eq!(
            with(|c| c.expected = Some(ExpectedState {
                state: ExpectedRunState::Running,
                exit_code: Some(0),
                timeout_s: None,
            })),
            ["expected.exit_code"]
        );
    }

    #[test]
    fn the_reason_says_what_to_do() {
        let c = ContainerConfig {
            restart: Some(RestartPolicy::OnFailure),
            log_driver: Some("syslog".into()),
            ..ContainerConfig::default()
        };
        let all = unsupported(&c);
        assert_eq!(all.len(), 2);
        assert!(
            all[0]
                .to_string()
                .starts_with("restart: restart policy on-failure")
        );
        assert!(all[0].why.contains("use always"), "{}", all[0]);
        assert!(all[1].to_string().contains("syslog"), "{}", all[1]);
    }
}
