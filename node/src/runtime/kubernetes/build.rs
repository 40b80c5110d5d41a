//! Pure builders: a plan's Kubernetes objects ([`build_objects`]), probes,
//! resource quantities and the image pull secret.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, LocalObjectReference, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Probe as KubeProbe, ResourceRequirements, Secret, SecretKeySelector, SecurityContext, Service,
    ServicePort, ServiceSpec, TCPSocketAction, Volume as KubeVolume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use shoal_protocol::model::{
    HealthCheck, NetworkMode, Probe, Protocol, Resources, Strategy, VolumeKind,
};

use super::meta::{is_label_key, is_label_value, team_label};
use super::{ANNOTATION_REPLICAS, DEFAULT_VOLUME_SIZE, REGISTRY_SUFFIX, SECRETS_SUFFIX};
use crate::runtime::common::{proto_name, registry_host};
use crate::runtime::{
    DeployPlan, ImageSource, LABEL_CONTAINER, LABEL_DEPLOYMENT, LABEL_NAMESPACE, LABEL_PREFIX,
    LABEL_PRODUCT, LABEL_SECRET_KEYS, LABEL_TEAM, LABEL_TRY, LABEL_VERSION, LABEL_VOLUME,
    PlannedContainer, PullPolicy, RuntimeError, is_dns_label, parse_cpu, parse_memory,
};

/// Docker Hub's key in a `.dockerconfigjson`.
const DOCKER_HUB_AUTH: &str = "https://index.docker.io/v1/";

/// Every object of one deployment, in the order they are applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub namespace: Namespace,
    /// Secret env values and image pull secrets.
    pub secrets: Vec<Secret>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
}

/// Builds every object of a plan. Pure: nothing is touched, and an invalid
/// plan or config is refused before anything is applied.
pub fn build_objects(plan: &DeployPlan) -> Result<Objects, RuntimeError> {
    if !is_dns_label(&plan.prefix) {
        return Err(RuntimeError::InvalidPlan {
            reason: format!("prefix {:?} is not a DNS label", plan.prefix),
        });
    }
    for (what, value) in [("product", &plan.product), ("deployment", &plan.deployment)] {
        if value.is_empty() || !is_label_value(value) {
            return Err(RuntimeError::InvalidPlan {
                reason: format!("{what} id {value:?} is not a Kubernetes label value"),
            });
        }
    }
    if plan.containers.is_empty() {
        return Err(RuntimeError::InvalidPlan {
            reason: "the plan has no containers".into(),
        });
    }
    let mut seen = BTreeSet::new();
    for pc in &plan.containers {
        if !seen.insert(pc.name.as_str()) {
            return Err(RuntimeError::InvalidPlan {
                reason: format!("container {} appears twice", pc.name),
            });
        }
    }
    let mut out = Objects {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(plan.prefix.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_TEAM.to_owned(), team_label(&plan.team)),
                    (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
        ..Objects::default()
    };
    for pc in &plan.containers {
        build_container(plan, pc, &mut out)?;
    }
    Ok(out)
}

fn invalid(pc: &PlannedContainer, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidConfig {
        container: pc.name.clone(),
        reason: reason.into(),
    }
}

fn build_container(
    plan: &DeployPlan,
    pc: &PlannedContainer,
    out: &mut Objects,
) -> Result<(), RuntimeError> {
    let name = pc.name.as_str();
    // `<name>-registry` must stay a valid Secret name, and the Service a DNS label.
    if !is_dns_label(name) || name.len() > 63 - REGISTRY_SUFFIX.len() {
        return Err(invalid(
            pc,
            format!(
                "{name:?} cannot name Kubernetes objects: use lowercase letters, digits and '-', at most {} characters",
                63 - REGISTRY_SUFFIX.len()
            ),
        ));
    }
    let cfg = &pc.config;
    let kube_cfg = cfg.kubernetes.clone().unwrap_or_default();
    // A field a Deployment cannot honour is refused, never ignored (the
    // rules refuse the same fields when the deployment starts).
    if let Some(u) = shoal_protocol::kubernetes::unsupported(cfg)
        .into_iter()
        .next()
    {
        return Err(invalid(
            pc,
            format!("{u} (the Kubernetes runtime cannot honour it)"),
        ));
    }
    let per_kind = |m: &BTreeMap<String, BTreeMap<String, String>>, kinds: &[&str]| {
        let mut out = BTreeMap::new();
        for k in kinds {
            if let Some(x) = m.get(*k) {
                out.extend(x.clone());
            }
        }
        out
    };
    for (kind, labels) in &kube_cfg.labels {
        for (k, v) in labels {
            if !is_label_key(k) || !is_label_value(v) {
                return Err(invalid(
                    pc,
                    format!("kubernetes label {k}={v:?} on {kind} is not a valid Kubernetes label"),
                ));
            }
        }
    }

    let selector = BTreeMap::from([
        (LABEL_TEAM.to_owned(), team_label(&plan.team)),
        (LABEL_PREFIX.to_owned(), plan.prefix.clone()),
        (LABEL_CONTAINER.to_owned(), name.to_owned()),
    ]);
    // Config labels: Kubernetes labels where they are valid ones, annotations otherwise.
    let mut config_labels = BTreeMap::new();
    let mut config_annotations = BTreeMap::new();
    for (k, v) in &cfg.labels {
        if k.starts_with(LABEL_NAMESPACE) {
            continue;
        }
        if is_label_key(k) && is_label_value(v) {
            config_labels.insert(k.clone(), v.clone());
        } else {
            config_annotations.insert(k.clone(), v.clone());
        }
    }
    let object_labels = |kinds: &[&str]| {
        let mut l = per_kind(&kube_cfg.labels, kinds);
        l.extend(selector.clone());
        l
    };
    let object_annotations = |kinds: &[&str]| {
        let mut a = per_kind(&kube_cfg.annotations, kinds);
        a.insert(LABEL_TEAM.to_owned(), plan.team.clone());
        a
    };
    // Which product and deployment own an object (not on pods: the pod
    // template stays the same across deployments of a product).
    let owned_labels = |kinds: &[&str]| {
        let mut l = object_labels(kinds);
        l.insert(LABEL_PRODUCT.to_owned(), plan.product.clone());
        l.insert(LABEL_DEPLOYMENT.to_owned(), plan.deployment.clone());
        l
    };
    let meta = |obj_name: String, kinds: &[&str]| ObjectMeta {
        name: Some(obj_name),
        namespace: Some(plan.prefix.clone()),
        labels: Some(owned_labels(kinds)),
        annotations: Some(object_annotations(kinds)),
        ..ObjectMeta::default()
    };

    // Env: plain values with {{version}} expanded, then secrets by reference.
    let secret_name = format!("{name}{SECRETS_SUFFIX}");
    let mut env: BTreeMap<&str, EnvVar> = BTreeMap::new();
    for (k, v) in &cfg.env {
        env.insert(
            k.as_str(),
            EnvVar {
                name: k.clone(),
                value: Some(v.replace("{{version}}", &plan.version)),
                ..EnvVar::default()
            },
        );
    }
    for k in pc.secrets.keys() {
        env.insert(
            k,
            EnvVar {
                name: k.to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name.clone(),
                        key: k.to_owned(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        );
    }
    let env: Vec<EnvVar> = env.into_values().collect();
    if !pc.secrets.0.is_empty() {
        out.secrets.push(Secret {
            metadata: meta(secret_name, &["secret"]),
            type_: Some("Opaque".into()),
            data: Some(
                pc.secrets
                    .0
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        });
    }

    // Image pull secret: one per container, for every image that needs a login.
    let init_sources = cfg
        .init_containers
        .iter()
        .map(|i| {
            pc.init_images
                .get(&i.name)
                .ok_or_else(|| RuntimeError::InvalidPlan {
                    reason: format!("init container {} of {name} has no resolved image", i.name),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut auths = BTreeMap::new();
    for src in std::iter::once(&pc.image).chain(init_sources.iter().copied()) {
        if let Some(c) = &src.credentials {
            auths.insert(
                registry_host(&src.reference, DOCKER_HUB_AUTH),
                json!({
                    "username": c.user,
                    "password": c.password,
                    "auth": base64(format!("{}:{}", c.user, c.password).as_bytes()),
                }),
            );
        }
    }
    let pull_secrets = if auths.is_empty() {
        None
    } else {
        let pull_name = format!("{name}{REGISTRY_SUFFIX}");
        let body = serde_json::to_vec(&json!({ "auths": auths })).unwrap_or_default();
        out.secrets.push(Secret {
            metadata: meta(pull_name.clone(), &["secret"]),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(body),
            )])),
            ..Secret::default()
        });
        Some(vec![LocalObjectReference { name: pull_name }])
    };

    // Volumes.
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for v in &cfg.volumes {
        if v.name.starts_with('/') {
            return Err(invalid(
                pc,
                format!(
                    "volume {}: host paths cannot be mounted on Kubernetes",
                    v.name
                ),
            ));
        }
        let claim = format!("{name}-{}", v.name);
        if !is_dns_label(&v.name) || claim.len() > 253 {
            return Err(invalid(
                pc,
                format!(
                    "volume name {:?} is not a DNS label (lowercase letters, digits, '-')",
                    v.name
                ),
            ));
        }
        let size = match &v.size {
            Some(s) => Some(
                memory_quantity(s).map_err(|e| invalid(pc, format!("volume {}: {e}", v.name)))?,
            ),
            None => None,
        };
        let source = match v.kind {
            VolumeKind::Tmpfs => KubeVolume {
                name: v.name.clone(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: size,
                    ..EmptyDirVolumeSource::default()
                }),
                ..KubeVolume::default()
            },
            VolumeKind::Rw | VolumeKind::Ro => {
                let mut labels = owned_labels(&["persistentvolumeclaim"]);
                labels.insert(LABEL_VOLUME.to_owned(), v.name.clone());
                out.claims.push(PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        labels: Some(labels),
                        ..meta(claim.clone(), &["persistentvolumeclaim"])
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_owned(),
                                size.unwrap_or_else(|| Quantity(DEFAULT_VOLUME_SIZE.into())),
                            )])),
                            ..VolumeResourceRequirements::default()
                        }),
                        ..PersistentVolumeClaimSpec::default()
                    }),
                    ..PersistentVolumeClaim::default()
                });
                KubeVolume {
                    name: v.name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim,
                        read_only: (v.kind == VolumeKind::Ro).then_some(true),
                    }),
                    ..KubeVolume::default()
                }
            }
        };
        volumes.push(source);
        mounts.push(VolumeMount {
            name: v.name.clone(),
            mount_path: v.path.clone(),
            read_only: (v.kind == VolumeKind::Ro).then_some(true),
            ..VolumeMount::default()
        });
    }

    // Ports: every port and every port of each range.
    let mut ports: Vec<(u16, u16, Protocol)> = cfg
        .ports
        .iter()
        .map(|p| (p.internal, p.external.unwrap_or(p.internal), p.protocol))
        .collect();
    for r in &cfg.port_ranges {
        if r.internal_to < r.internal_from {
            return Err(invalid(
                pc,
                format!("port range {}-{} is empty", r.internal_from, r.internal_to),
            ));
        }
        for (k, internal) in (r.internal_from..=r.internal_to).enumerate() {
            let external = u16::try_from(usize::from(r.external_from) + k).unwrap_or(internal);
            ports.push((internal, external, r.protocol));
        }
    }
    let container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|(internal, _, proto)| ContainerPort {
            container_port: i32::from(*internal),
            protocol: Some(kube_protocol(*proto).into()),
            ..ContainerPort::default()
        })
        .collect();

    // Probes: the configured ones; the Docker health check stands in for a
    // missing readiness probe.
    let probe = |p: &Option<Probe>, what: &str| -> Result<Option<KubeProbe>, RuntimeError> {
        p.as_ref()
            .map(|p| build_probe(p, ports.first().map(|x| x.0)))
            .transpose()
            .map_err(|e| invalid(pc, format!("{what} probe: {e}")))
    };
    let readiness = match probe(&kube_cfg.readiness, "readiness")? {
        Some(p) => Some(p),
        None => cfg.health.as_ref().and_then(health_probe),
    };

    // Resources: requests as configured; limits as configured, else the
    // container-wide cpu/memory.
    let requests = resource_map(kube_cfg.requests.as_ref()).map_err(|e| invalid(pc, e))?;
    let limits_src = kube_cfg.limits.clone().unwrap_or(Resources {
        cpu: cfg.cpu.clone(),
        memory: cfg.memory.clone(),
    });
    let limits = resource_map(Some(&limits_src)).map_err(|e| invalid(pc, e))?;
    let resources = (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..ResourceRequirements::default()
    });

    let security_context = match &cfg.user {
        None => None,
        Some(u) => {
            let (user, group) = match u.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (u.as_str(), None),
            };
            let num = |s: &str| {
                s.parse::<i64>().map_err(|_| {
                    invalid(
                        pc,
                        format!("user {u:?}: Kubernetes needs a numeric uid[:gid]"),
                    )
                })
            };
            Some(SecurityContext {
                run_as_user: Some(num(user)?),
                run_as_group: group.map(num).transpose()?,
                ..SecurityContext::default()
            })
        }
    };

    let pull_policy = |src: &ImageSource| match src.pull {
        PullPolicy::IfChanged => "Always",
        PullPolicy::Never => "Never",
    };
    let init_containers: Vec<Container> = cfg
        .init_containers
        .iter()
        .zip(init_sources.iter().copied())
        .map(|(i, src)| Container {
            name: format!("init-{}", i.name),
            image: Some(src.reference.clone()),
            image_pull_policy: Some(pull_policy(src).into()),
            command: (!i.command.is_empty()).then(|| i.command.clone()),
            args: (!i.args.is_empty()).then(|| i.args.clone()),
            env: (!i.env.is_empty()).then(|| {
                i.env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: Some(v.replace("{{version}}", &plan.version)),
                        ..EnvVar::default()
                    })
                    .collect()
            }),
            volume_mounts: (!mounts.is_empty()).then(|| mounts.clone()),
            ..Container::default()
        })
        .collect();
    let tty = cfg.tty.unwrap_or(false);
    let container = Container {
        name: name.to_owned(),
        image: Some(pc.image.reference.clone()),
        image_pull_policy: Some(pull_policy(&pc.image).into()),
        command: cfg.command.clone(),
        args: cfg.args.clone(),
        working_dir: cfg.working_dir.clone(),
        env: (!env.is_empty()).then_some(env),
        ports: (!container_ports.is_empty()).then_some(container_ports),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        liveness_probe: probe(&kube_cfg.liveness, "liveness")?,
        readiness_probe: readiness,
        startup_probe: probe(&kube_cfg.startup, "startup")?,
        resources,
        security_context,
        tty: tty.then_some(true),
        stdin: tty.then_some(true),
        ..Container::default()
    };

    let replicas = kube_cfg.replicas.unwrap_or(1);
    let strategy = match kube_cfg.strategy.unwrap_or(Strategy::Rolling) {
        Strategy::Rolling => DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String("25%".into())),
                max_unavailable: Some(IntOrString::String("25%".into())),
            }),
        },
        Strategy::Recreate => DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        },
    };
    let mut pod_labels = config_labels.clone();
    pod_labels.extend(object_labels(&["pod"]));
    let mut pod_annotations = config_annotations.clone();
    pod_annotations.extend(per_kind(&kube_cfg.annotations, &["pod"]));

    let mut dep_labels = config_labels;
    dep_labels.extend(object_labels(&["deployment"]));
    dep_labels.insert(LABEL_DEPLOYMENT.to_owned(), plan.deployment.clone());
    dep_labels.insert(LABEL_PRODUCT.to_owned(), plan.product.clone());
    dep_labels.insert(LABEL_TRY.to_owned(), plan.try_number.to_string());
    if is_label_value(&plan.version) {
        dep_labels.insert(LABEL_VERSION.to_owned(), plan.version.clone());
    }
    let mut dep_annotations = config_annotations;
    dep_annotations.extend(object_annotations(&["deployment"]));
    dep_annotations.insert(LABEL_VERSION.to_owned(), plan.version.clone());
    dep_annotations.insert(ANNOTATION_REPLICAS.to_owned(), replicas.to_string());
    let secret_keys: Vec<&str> = pc.secrets.keys().collect();
    if !secret_keys.is_empty() {
        dep_annotations.insert(LABEL_SECRET_KEYS.to_owned(), secret_keys.join(","));
    }
    out.deployments.push(Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(plan.prefix.clone()),
            labels: Some(dep_labels),
            annotations: Some(dep_annotations),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    image_pull_secrets: pull_secrets,
                    host_network: (cfg.network_mode == Some(NetworkMode::Host)).then_some(true),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    });

    if !ports.is_empty() {
        let service_type = kube_cfg
            .service_type
            .clone()
            .unwrap_or_else(|| "ClusterIP".into());
        if !["ClusterIP", "NodePort", "LoadBalancer"].contains(&service_type.as_str()) {
            return Err(invalid(
                pc,
                format!("service type {service_type:?}: use ClusterIP, NodePort or LoadBalancer"),
            ));
        }
        out.services.push(Service {
            metadata: meta(name.to_owned(), &["service"]),
            spec: Some(ServiceSpec {
                type_: Some(service_type),
                selector: Some(selector),
                ports: Some(
                    ports
                        .iter()
                        .map(|(internal, external, proto)| ServicePort {
                            name: Some(format!("{}-{internal}", proto_name(*proto))),
                            port: i32::from(*external),
                            target_port: Some(IntOrString::Int(i32::from(*internal))),
                            protocol: Some(kube_protocol(*proto).into()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        });
    }
    Ok(())
}

fn build_probe(p: &Probe, first_port: Option<u16>) -> Result<KubeProbe, String> {
    let port = p.port.or(first_port);
    let mut out = KubeProbe {
        period_seconds: p.period_s.map(|x| i32::try_from(x).unwrap_or(i32::MAX)),
        initial_delay_seconds: p
            .initial_delay_s
            .map(|x| i32::try_from(x).unwrap_or(i32::MAX)),
        failure_threshold: p
            .failure_threshold
            .map(|x| i32::try_from(x).unwrap_or(i32::MAX)),
        ..KubeProbe::default()
    };
    if !p.command.is_empty() {
        out.exec = Some(ExecAction {
            command: Some(p.command.clone()),
        });
    } else if let Some(path) = &p.http_path {
        let port = port.ok_or("an HTTP probe needs a port (the container has none)")?;
        out.http_get = Some(HTTPGetAction {
            path: Some(path.clone()),
            port: IntOrString::Int(i32::from(port)),
            ..HTTPGetAction::default()
        });
    } else if let Some(port) = p.port {
        out.tcp_socket = Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        });
    } else {
        return Err("give a command, an HTTP path or a port".into());
    }
    Ok(out)
}

/// The Docker health check as an exec probe: `CMD` runs its arguments,
/// `CMD-SHELL` runs them with `/bin/sh -c`, `NONE` has no probe.
fn health_probe(h: &HealthCheck) -> Option<KubeProbe> {
    let command = match h.command.first().map(String::as_str) {
        None | Some("NONE") => return None,
        Some("CMD") => h.command[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), h.command[1..].join(" ")],
        Some(_) => h.command.clone(),
    };
    let secs =
        |ms: Option<u64>| ms.map(|ms| i32::try_from(ms.div_ceil(1000).max(1)).unwrap_or(i32::MAX));
    Some(KubeProbe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: secs(h.interval_ms),
        timeout_seconds: secs(h.timeout_ms),
        failure_threshold: h.retries.map(|r| i32::try_from(r).unwrap_or(i32::MAX)),
        initial_delay_seconds: secs(h.start_period_ms),
        ..KubeProbe::default()
    })
}

fn resource_map(r: Option<&Resources>) -> Result<Option<BTreeMap<String, Quantity>>, String> {
    let Some(r) = r else { return Ok(None) };
    let mut m = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        m.insert("cpu".to_owned(), cpu_quantity(cpu)?);
    }
    if let Some(mem) = &r.memory {
        m.insert("memory".to_owned(), memory_quantity(mem)?);
    }
    Ok((!m.is_empty()).then_some(m))
}

/// A CPU amount as a Kubernetes quantity: whole CPUs (`"2"`) or
/// millicores (`"500m"`).
pub fn cpu_quantity(s: &str) -> Result<Quantity, String> {
    let nanos = parse_cpu(s)?;
    let milli = (nanos + 500_000) / 1_000_000;
    if milli < 1 {
        return Err(format!("cpu {s:?}: less than 1m"));
    }
    if milli % 1000 == 0 {
        return Ok(Quantity((milli / 1000).to_string()));
    }
    Ok(Quantity(format!("{milli}m")))
}

/// A memory size as a Kubernetes quantity in the largest binary unit that
/// divides it (`"256Mi"`, `"1Gi"`, else bytes).
pub fn memory_quantity(s: &str) -> Result<Quantity, String> {
    let bytes = parse_memory(s)?;
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes % (1i64 << shift) == 0 {
            return Ok(Quantity(format!("{}{unit}", bytes >> shift)));
        }
    }
    Ok(Quantity(bytes.to_string()))
}

fn kube_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::runtime::kubernetes::TEAM_LABEL_CHARS;

    #[test]
    fn quantities() {
        assert_eq!(memory_quantity("256m").unwrap().0, "256Mi");
        assert_eq!(memory_quantity("1g").unwrap().0, "1Gi");
        assert_eq!(memory_quantity("1.5g").unwrap().0, "1536Mi");
        assert_eq!(memory_quantity("1000").unwrap().0, "1000");
        assert_eq!(cpu_quantity("0.5").unwrap().0, "500m");
        assert_eq!(cpu_quantity("2").unwrap().0, "2");
        assert_eq!(cpu_quantity("250m").unwrap().0, "250m");
        assert!(cpu_quantity("x").is_err());
    }

    #[test]
    fn labels_and_hosts() {
        assert!(is_label_value("1.4.0"));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(is_label_key("tier"));
        assert!(!is_label_key("/x"));
        assert_eq!(team_label(&"ab".repeat(32)).len(), TEAM_LABEL_CHARS);
        assert_eq!(
            registry_host("ghcr.io/acme/web:1", DOCKER_HUB_AUTH),
            "ghcr.io"
        );
        assert_eq!(
            registry_host("127.0.0.1:5000/web:1", DOCKER_HUB_AUTH),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_host("library/nginx:1", DOCKER_HUB_AUTH),
            "https://index.docker.io/v1/"
        );
        assert_eq!(base64(b"bob:pw"), "Ym9iOnB3");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn health_checks_become_exec_probes() {
        let h = |c: &[&str]| HealthCheck {
            command: c.iter().map(|s| s.to_string()).collect(),
            interval_ms: Some(1500),
            timeout_ms: None,
            retries: Some(3),
            start_period_ms: None,
        };
        let p = health_probe(&h(&["CMD-SHELL", "curl -f localhost"])).unwrap();
        assert_eq!(
            p.exec.unwrap().command.unwrap(),
            ["/bin/sh", "-c", "curl -f localhost"]
        );
        assert_eq!(p.period_seconds, Some(2));
        assert!(health_probe(&h(&["NONE"])).is_none());
        let p = health_probe(&h(&["CMD", "true"])).unwrap();
        assert_eq!(p.exec.unwrap().command.unwrap(), ["true"]);
    }
}
