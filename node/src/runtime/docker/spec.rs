//! Pure validation of a plan and the container specs built from it: labels,
//! ports, mounts, health checks, restart policy, resources.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountTmpfsOptions, MountType, NetworkingConfig, PortBinding, PortMap,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use shoal_protocol::model::{
    ExpectedRunState, HealthCheck, NetworkMode, Port, PortRange, RestartPolicy, Volume, VolumeKind,
};

use super::{DEFAULT_EXPECTED_TIMEOUT, NETWORK_PREFIX};
use crate::runtime::common::proto_name;
use crate::runtime::{
    DeployPlan, LABEL_CONTAINER, LABEL_DEPLOYMENT, LABEL_INIT, LABEL_NAMESPACE, LABEL_PREFIX,
    LABEL_PRODUCT, LABEL_SECRET_KEYS, LABEL_TEAM, LABEL_TRY, LABEL_VERSION, PlannedContainer,
    RuntimeError, is_dns_label, parse_cpu, parse_memory,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    Running,
    Exited(i64),
}

impl Expect {
    pub(super) fn describe(self, health: bool) -> String {
        match self {
            Expect::Running if health => "running and healthy".into(),
            Expect::Running => "running".into(),
            Expect::Exited(code) => format!("exited with code {code}"),
        }
    }
}

/// Everything needed to create one container. Holds secret values (in the
/// create body's env): deliberately not `Debug`.
pub(super) struct Spec {
    /// Name in the version.
    pub(super) container: String,
    /// Runtime name, `<prefix>-<container>`.
    pub(super) name: String,
    pub(super) reference: String,
    pub(super) body: ContainerCreateBody,
    pub(super) extra_networks: Vec<String>,
    pub(super) named_volumes: NamedVolumes,
    pub(super) expect: Expect,
    pub(super) timeout: Duration,
    pub(super) has_health: bool,
    pub(super) inits: Vec<InitSpec>,
}

pub(super) struct InitSpec {
    pub(super) init: String,
    pub(super) name: String,
    pub(super) body: ContainerCreateBody,
}

pub(super) fn network_name(prefix: &str) -> String {
    format!("{NETWORK_PREFIX}{prefix}")
}

/// Container, volume and init names: what Docker accepts in a name.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn validate_plan(plan: &DeployPlan) -> Result<(), RuntimeError> {
    let invalid = |reason: String| Err(RuntimeError::InvalidPlan { reason });
    if !is_dns_label(&plan.prefix) {
        return invalid(format!(
            "prefix {:?} is not a DNS label ([a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters)",
            plan.prefix
        ));
    }
    if plan.team.is_empty() || plan.team.contains([',', '=']) {
        return invalid(format!("team id {:?} is not usable in a label", plan.team));
    }
    if plan.containers.is_empty() {
        return invalid("no containers to deploy".into());
    }
    let mut seen = BTreeSet::new();
    for c in &plan.containers {
        if !is_name(&c.name) {
            return invalid(format!(
                "container name {:?} may only hold letters, digits, '_', '.' and '-'",
                c.name
            ));
        }
        if !seen.insert(c.name.as_str()) {
            return invalid(format!("container name {:?} is used twice", c.name));
        }
    }
    Ok(())
}

/// The labels every object of a container carries.
fn base_labels(plan: &DeployPlan, container: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_TEAM.to_owned(), plan.team.clone()),
        (LABEL_DEPLOYMENT.to_owned(), plan.deployment.clone()),
        (LABEL_PRODUCT.to_owned(), plan.product.clone()),
        (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
        (LABEL_VERSION.to_owned(), plan.version.clone()),
        (LABEL_TRY.to_owned(), plan.try_number.to_string()),
        (LABEL_CONTAINER.to_owned(), container.to_owned()),
    ])
}

pub(super) fn build_spec(
    plan: &DeployPlan,
    pc: &PlannedContainer,
    network: &str,
) -> Result<Spec, RuntimeError> {
    let container = pc.name.as_str();
    let invalid = |reason: String| RuntimeError::InvalidConfig {
        container: container.to_owned(),
        reason,
    };
    let mut cfg = pc.config.clone();
    cfg.expand_version(&plan.version);

    for (key, decl) in &cfg.secrets {
        if decl.required && !pc.secrets.0.contains_key(key) {
            return Err(RuntimeError::InvalidPlan {
                reason: format!("container {container}: required secret {key} has no value"),
            });
        }
    }
    let mut env = cfg.env.clone();
    for (k, v) in &pc.secrets.0 {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(format!("secret key {k:?} is not an env name")));
        }
        env.insert(k.clone(), v.clone());
    }
    if let Some(k) = env.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err(invalid(format!("env key {k:?} is not an env name")));
    }
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();

    let mut labels: HashMap<String, String> = cfg
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(LABEL_NAMESPACE))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(base_labels(plan, container));
    if !pc.secrets.0.is_empty() {
        let keys: Vec<&str> = pc.secrets.keys().collect();
        labels.insert(LABEL_SECRET_KEYS.to_owned(), keys.join(","));
    }

    let mode = cfg.network_mode.unwrap_or(NetworkMode::Bridge);
    if mode != NetworkMode::Bridge
        && !(cfg.ports.is_empty() && cfg.port_ranges.is_empty() && cfg.networks.is_empty())
    {
        return Err(invalid(format!(
            "network mode {} takes no ports and no networks",
            match mode {
                NetworkMode::Host => "host",
                _ => "none",
            }
        )));
    }
    let bindings = port_bindings(&cfg.ports, &cfg.port_ranges).map_err(invalid)?;
    let (mounts, named_volumes) = mounts(&plan.prefix, &cfg.volumes).map_err(invalid)?;
    for n in &cfg.networks {
        if !is_name(n) {
            return Err(invalid(format!("network name {n:?} is not valid")));
        }
    }

    let nano_cpus = cfg
        .cpu
        .as_deref()
        .map(parse_cpu)
        .transpose()
        .map_err(invalid)?;
    let memory = cfg
        .memory
        .as_deref()
        .map(parse_memory)
        .transpose()
        .map_err(invalid)?;
    let healthcheck = cfg
        .health
        .as_ref()
        .map(health_config)
        .transpose()
        .map_err(invalid)?;
    let restart_policy = cfg.restart.map(|r| DockerRestartPolicy {
        name: Some(match r {
            RestartPolicy::No => RestartPolicyNameEnum::NO,
            RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
            RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
            RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        }),
        maximum_retry_count: None,
    });
    let log_config =
        (cfg.log_driver.is_some() || !cfg.log_options.is_empty()).then(|| HostConfigLogConfig {
            typ: cfg.log_driver.clone(),
            config: Some(
                cfg.log_options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        });
    let (network_mode, networking_config) = match mode {
        NetworkMode::Bridge => (
            network.to_owned(),
            Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_owned(),
                    EndpointSettings {
                        aliases: Some(vec![container.to_owned()]),
                        ..Default::default()
                    },
                )])),
            }),
        ),
        NetworkMode::Host => ("host".to_owned(), None),
        NetworkMode::None => ("none".to_owned(), None),
    };

    let (expect, timeout) = match &cfg.expected {
        None => (Expect::Running, DEFAULT_EXPECTED_TIMEOUT),
        Some(e) => (
            match e.state {
                ExpectedRunState::Running => Expect::Running,
                ExpectedRunState::Exited => Expect::Exited(e.exit_code.unwrap_or(0)),
            },
            e.timeout_s
                .map_or(DEFAULT_EXPECTED_TIMEOUT, |s| Duration::from_secs(s.into())),
        ),
    };

    let exposed: Vec<String> = bindings.keys().cloned().collect();
    let port_map: PortMap = bindings
        .into_iter()
        .map(|(key, hosts)| {
            let list = hosts
                .into_iter()
                .map(|h| PortBinding {
                    host_ip: None,
                    host_port: Some(h),
                })
                .collect();
            (key, Some(list))
        })
        .collect();

    let host_config = HostConfig {
        port_bindings: (!port_map.is_empty()).then_some(port_map),
        mounts: (!mounts.is_empty()).then(|| mounts.clone()),
        nano_cpus,
        memory,
        restart_policy,
        log_config,
        network_mode: Some(network_mode.clone()),
        ..Default::default()
    };
    let name = format!("{}-{container}", plan.prefix);
    let body = ContainerCreateBody {
        image: Some(pc.image.reference.clone()),
        user: cfg.user.clone(),
        working_dir: cfg.working_dir.clone(),
        tty: cfg.tty,
        env: Some(env),
        entrypoint: cfg.command.clone(),
        cmd: cfg.args.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        host_config: Some(host_config),
        networking_config: networking_config.clone(),
        ..Default::default()
    };

    let mut inits = Vec::new();
    for init in &cfg.init_containers {
        if !is_name(&init.name) {
            return Err(invalid(format!(
                "init container name {:?} may only hold letters, digits, '_', '.' and '-'",
                init.name
            )));
        }
        let Some(src) = pc.init_images.get(&init.name) else {
            return Err(RuntimeError::InvalidPlan {
                reason: format!(
                    "container {container}: no image resolved for init container {}",
                    init.name
                ),
            });
        };
        let mut labels = base_labels(plan, container);
        labels.insert(LABEL_INIT.to_owned(), init.name.clone());
        let env = init
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace("{{version}}", &plan.version)))
            .collect();
        inits.push(InitSpec {
            init: init.name.clone(),
            name: format!("{name}-init-{}", init.name),
            body: ContainerCreateBody {
                image: Some(src.reference.clone()),
                env: Some(env),
                entrypoint: (!init.command.is_empty()).then(|| init.command.clone()),
                cmd: (!init.args.is_empty()).then(|| init.args.clone()),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    mounts: (!mounts.is_empty()).then(|| mounts.clone()),
                    network_mode: Some(network_mode.clone()),
                    ..Default::default()
                }),
                networking_config: networking_config.clone(),
                ..Default::default()
            },
        });
    }

    Ok(Spec {
        container: container.to_owned(),
        name,
        reference: pc.image.reference.clone(),
        body,
        extra_networks: cfg.networks.clone(),
        named_volumes,
        expect,
        timeout,
        has_health: healthcheck_is_active(cfg.health.as_ref()),
        inits,
    })
}

fn healthcheck_is_active(h: Option<&HealthCheck>) -> bool {
    h.is_some_and(|h| h.command.first().map(String::as_str) != Some("NONE"))
}

/// Container port key (`"8080/tcp"`) → host ports (`""` lets the engine
/// pick one; `"9000-9010"` lets it pick in a range).
fn port_bindings(
    ports: &[Port],
    ranges: &[PortRange],
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in ports {
        if p.internal == 0 || p.external == Some(0) {
            return Err(format!("port {}: 0 is not a port", p.internal));
        }
        out.entry(format!("{}/{}", p.internal, proto_name(p.protocol)))
            .or_default()
            .push(p.external.map(|e| e.to_string()).unwrap_or_default());
    }
    for r in ranges {
        let shown = format!(
            "port range {}-{}:{}-{}",
            r.external_from, r.external_to, r.internal_from, r.internal_to
        );
        if r.internal_from == 0
            || r.external_from == 0
            || r.internal_from > r.internal_to
            || r.external_from > r.external_to
        {
            return Err(format!(
                "{shown}: each range must go from a port up to a port"
            ));
        }
        let internal_len = r.internal_to - r.internal_from;
        let external_len = r.external_to - r.external_from;
        if internal_len == external_len {
            for i in 0..=internal_len {
                out.entry(format!(
                    "{}/{}",
                    r.internal_from + i,
                    proto_name(r.protocol)
                ))
                .or_default()
                .push((r.external_from + i).to_string());
            }
        } else if internal_len == 0 {
            out.entry(format!("{}/{}", r.internal_from, proto_name(r.protocol)))
                .or_default()
                .push(format!("{}-{}", r.external_from, r.external_to));
        } else {
            return Err(format!(
                "{shown}: the ranges must have the same length, or the internal one be a single port"
            ));
        }
    }
    Ok(out)
}

/// Named volumes of a container: (runtime name, config name).
type NamedVolumes = Vec<(String, String)>;
/// Mounts of a container, and its named volumes.
fn mounts(prefix: &str, volumes: &[Volume]) -> Result<(Vec<Mount>, NamedVolumes), String> {
    let mut mounts = Vec::new();
    let mut named = Vec::new();
    for v in volumes {
        if !v.path.starts_with('/') {
            return Err(format!("volume path {:?} must be absolute", v.path));
        }
        let read_only = v.kind == VolumeKind::Ro;
        let mount = match v.kind {
            VolumeKind::Tmpfs => Mount {
                target: Some(v.path.clone()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: match &v.size {
                    Some(size) => Some(MountTmpfsOptions {
                        size_bytes: Some(parse_memory(size)?),
                        mode: None,
                        options: None,
                    }),
                    None => None,
                },
                ..Default::default()
            },
            VolumeKind::Rw | VolumeKind::Ro if v.name.starts_with('/') => Mount {
                target: Some(v.path.clone()),
                source: Some(v.name.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(read_only),
                ..Default::default()
            },
            VolumeKind::Rw | VolumeKind::Ro if v.name.is_empty() => Mount {
                target: Some(v.path.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(read_only),
                ..Default::default()
            },
            VolumeKind::Rw | VolumeKind::Ro => {
                if !is_name(&v.name) {
                    return Err(format!(
                        "volume name {:?} may only hold letters, digits, '_', '.' and '-' (or be an absolute host path)",
                        v.name
                    ));
                }
                let runtime_name = format!("{prefix}-{}", v.name);
                named.push((runtime_name.clone(), v.name.clone()));
                Mount {
                    target: Some(v.path.clone()),
                    source: Some(runtime_name),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(read_only),
                    ..Default::default()
                }
            }
        };
        mounts.push(mount);
    }
    Ok((mounts, named))
}

/// A health check: `CMD`, `CMD-SHELL` or `NONE` first are kept as given;
/// any other command is run as `CMD` (no shell).
fn health_config(h: &HealthCheck) -> Result<HealthConfig, String> {
    let test = match h.command.first().map(String::as_str) {
        None => return Err("the health check has no command".into()),
        Some("CMD" | "CMD-SHELL" | "NONE") => h.command.clone(),
        Some(_) => std::iter::once("CMD".to_owned())
            .chain(h.command.iter().cloned())
            .collect(),
    };
    if test.len() < 2 && test.first().map(String::as_str) != Some("NONE") {
        return Err("the health check has no command".into());
    }
    let nanos = |ms: Option<u64>| {
        ms.map(|ms| {
            i64::try_from(ms)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000)
        })
    };
    Ok(HealthConfig {
        test: Some(test),
        interval: nanos(h.interval_ms),
        timeout: nanos(h.timeout_ms),
        retries: h.retries.map(i64::from),
        start_period: nanos(h.start_period_ms),
        start_interval: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shoal_protocol::model::Protocol;

    fn port(internal: u16, external: Option<u16>, protocol: Protocol) -> Port {
        Port {
            internal,
            external,
            protocol,
        }
    }

    fn range(i: (u16, u16), e: (u16, u16), protocol: Protocol) -> PortRange {
        PortRange {
            internal_from: i.0,
            internal_to: i.1,
            external_from: e.0,
            external_to: e.1,
            protocol,
        }
    }

    #[test]
    fn ports_map_to_keys_with_protocol_and_host_ports() {
        let m = port_bindings(
            &[
                port(8080, Some(80), Protocol::Tcp),
                port(53, Some(5353), Protocol::Udp),
                port(9000, None, Protocol::Tcp),
                port(8080, Some(8080), Protocol::Tcp),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(m["8080/tcp"], vec!["80", "8080"]);
        assert_eq!(m["53/udp"], vec!["5353"]);
        assert_eq!(m["9000/tcp"], vec![""]);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn port_ranges_map_one_to_one_or_onto_a_host_range() {
        let m = port_bindings(
            &[],
            &[
                range((7000, 7002), (17000, 17002), Protocol::Udp),
                range((80, 80), (8000, 8010), Protocol::Tcp),
            ],
        )
        .unwrap();
        assert_eq!(m["7000/udp"], vec!["17000"]);
        assert_eq!(m["7001/udp"], vec!["17001"]);
        assert_eq!(m["7002/udp"], vec!["17002"]);
        assert_eq!(m["80/tcp"], vec!["8000-8010"]);
        assert_eq!(m.len(), 4);

        for bad in [
            range((7000, 7003), (17000, 17001), Protocol::Tcp),
            range((7003, 7000), (17000, 17003), Protocol::Tcp),
            range((0, 0), (1, 1), Protocol::Tcp),
        ] {
            assert!(
                port_bindings(&[], std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
        assert!(port_bindings(&[port(0, None, Protocol::Tcp)], &[]).is_err());
    }

    #[test]
    fn volumes_map_to_prefixed_named_volumes_binds_and_tmpfs() {
        let vol = |name: &str, path: &str, kind, size: Option<&str>| Volume {
            name: name.into(),
            path: path.into(),
            kind,
            size: size.map(Into::into),
        };
        let (m, named) = mounts(
            "shop",
            &[
                vol("data", "/data", VolumeKind::Rw, None),
                vol("conf", "/etc/app", VolumeKind::Ro, None),
                vol("", "/scratch", VolumeKind::Tmpfs, Some("64m")),
                vol("/srv/host", "/host", VolumeKind::Ro, None),
            ],
        )
        .unwrap();
        assert_eq!(m[0].source.as_deref(), Some("shop-data"));
        assert_eq!(m[0].typ, Some(MountType::VOLUME));
        assert_eq!(m[0].read_only, Some(false));
        assert_eq!(m[1].source.as_deref(), Some("shop-conf"));
        assert_eq!(m[1].read_only, Some(true));
        assert_eq!(m[2].typ, Some(MountType::TMPFS));
        assert_eq!(
            m[2].tmpfs_options.as_ref().and_then(|t| t.size_bytes),
            Some(64 << 20)
        );
        assert_eq!(m[3].typ, Some(MountType::BIND));
        assert_eq!(m[3].source.as_deref(), Some("/srv/host"));
        assert_eq!(
            named,
            vec![
                ("shop-data".to_owned(), "data".to_owned()),
                ("shop-conf".to_owned(), "conf".to_owned())
            ]
        );
        assert!(mounts("p", &[vol("x", "relative", VolumeKind::Rw, None)]).is_err());
        assert!(mounts("p", &[vol("a b", "/x", VolumeKind::Rw, None)]).is_err());
        assert!(mounts("p", &[vol("", "/x", VolumeKind::Tmpfs, Some("lots"))]).is_err());
    }

    #[test]
    fn health_checks_run_as_cmd_unless_told_otherwise() {
        let h = |cmd: &[&str]| HealthCheck {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            interval_ms: Some(500),
            timeout_ms: None,
            retries: Some(3),
            start_period_ms: Some(1000),
        };
        let c = health_config(&h(&["wget", "-q", "localhost"])).unwrap();
        assert_eq!(c.test.unwrap(), vec!["CMD", "wget", "-q", "localhost"]);
        assert_eq!(c.interval, Some(500_000_000));
        assert_eq!(c.start_period, Some(1_000_000_000));
        assert_eq!(c.retries, Some(3));
        assert_eq!(c.timeout, None);
        let c = health_config(&h(&["CMD-SHELL", "test -f /ok"])).unwrap();
        assert_eq!(c.test.unwrap(), vec!["CMD-SHELL", "test -f /ok"]);
        assert!(health_config(&h(&[])).is_err());
        assert!(health_config(&h(&["CMD"])).is_err());
    }
}
