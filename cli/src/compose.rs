//! `shoal product import --compose FILE`: a docker-compose file mapped to
//! the images of one product version.
//!
//! Taken: `services` with `image`, `environment` (list and map forms),
//! `ports` (short and long forms, ranges), `volumes` (named volumes and
//! tmpfs, short and long forms), `command`, `entrypoint`, `restart`,
//! `labels`, `healthcheck`, `depends_on` (start order), `user`,
//! `working_dir`, `tty`, `network_mode`, `cpus`, `mem_limit`. Everything
//! else is reported as a warning naming the service and key; nothing is
//! dropped silently. Services come out in `depends_on` order (dependencies
//! first, file order otherwise).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow, bail};
use serde_norway::{Mapping, Value};
use shoal_protocol::model::{
    ContainerConfig, HealthCheck, NetworkMode, RestartPolicy, Volume, VolumeKind,
};

use crate::parse::{self, PortSpec};

/// One service of the file, ready to become an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The service's name in the file.
    pub service: String,
    /// The container name (a DNS label made from the service name).
    pub name: String,
    /// The image reference as written.
    pub image: String,
    pub config: ContainerConfig,
}

/// What a compose file becomes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// In start order.
    pub services: Vec<Service>,
    /// What was not imported, and why.
    pub warnings: Vec<String>,
}

fn key_str(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => scalar(other).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// A scalar as text (numbers and booleans as YAML writes them).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn duration_ms(v: &Value, what: &str) -> Result<u64> {
    let s = scalar(v).ok_or_else(|| anyhow!("{what} is not a duration"))?;
    let d = humantime::parse_duration(&s)
        .map_err(|_| anyhow!("{what} {s:?} is not a duration such as 30s or 1m30s"))?;
    Ok(d.as_millis() as u64)
}

/// `K=V` list or `K: V` map into pairs; entries without a value warn.
fn pairs(v: &Value, what: &str, warn: &mut Vec<String>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match v {
        Value::Sequence(list) => {
            for item in list {
                let s = scalar(item).ok_or_else(|| anyhow!("{what}: an entry is not text"))?;
                match s.split_once('=') {
                    Some((k, v)) => {
                        out.insert(k.trim().to_string(), v.to_string());
                    }
                    None => warn.push(format!(
                        "{what}: {s} has no value (compose takes it from the shell): set it with `shoal image config --env {s}=VALUE` or per deployment"
                    )),
                }
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = key_str(k);
                match v {
                    Value::Null => warn.push(format!(
                        "{what}: {k} has no value (compose takes it from the shell): set it with `shoal image config --env {k}=VALUE` or per deployment"
                    )),
                    other => {
                        let s = scalar(other)
                            .ok_or_else(|| anyhow!("{what}: the value of {k} is not text"))?;
                        out.insert(k, s);
                    }
                }
            }
        }
        Value::Null => {}
        _ => bail!("{what} is neither a list of KEY=VALUE nor a map"),
    }
    Ok(out)
}

/// Words of a command: a list as is, a string split like a shell.
fn words(v: &Value, what: &str) -> Result<Vec<String>> {
    match v {
        Value::Sequence(list) => list
            .iter()
            .map(|x| scalar(x).ok_or_else(|| anyhow!("{what}: an argument is not text")))
            .collect(),
        Value::String(s) => parse::shell_words(s).map_err(|e| anyhow!("{what}: {e}")),
        Value::Null => Ok(Vec::new()),
        _ => bail!("{what} is neither a string nor a list"),
    }
}

fn add_port(c: &mut ContainerConfig, spec: PortSpec) {
    match spec {
        PortSpec::One(p) => {
            c.ports
                .retain(|x| (x.internal, x.protocol) != (p.internal, p.protocol));
            c.ports.push(p);
        }
        PortSpec::Range(r) => c.port_ranges.push(r),
    }
}

fn ports(v: &Value, c: &mut ContainerConfig, what: &str, warn: &mut Vec<String>) -> Result<()> {
    let Value::Sequence(list) = v else {
        bail!("{what} is not a list");
    };
    for item in list {
        match item {
            Value::Mapping(m) => {
                let get = |k: &str| m.get(Value::String(k.into()));
                let target = get("target")
                    .and_then(scalar)
                    .ok_or_else(|| anyhow!("{what}: a long-form port has no target"))?;
                let protocol = get("protocol").and_then(scalar).unwrap_or("tcp".into());
                let short = match get("published").and_then(scalar) {
                    Some(p) => format!("{p}:{target}/{protocol}"),
                    None => format!("{target}/{protocol}"),
                };
                if get("host_ip").is_some() {
                    warn.push(format!(
                        "{what}: host_ip of port {target} is not supported: shoal publishes on every address of the node"
                    ));
                }
                add_port(c, parse::port(&short).map_err(|e| anyhow!("{what}: {e}"))?);
            }
            other => {
                let s = scalar(other).ok_or_else(|| anyhow!("{what}: an entry is not text"))?;
                let parts: Vec<&str> = s.split(':').collect();
                let s = if parts.len() == 3 {
                    warn.push(format!(
                        "{what}: the host address of {s} is not supported: published on every address of the node"
                    ));
                    format!("{}:{}", parts[1], parts[2])
                } else {
                    s
                };
                add_port(c, parse::port(&s).map_err(|e| anyhow!("{what}: {e}"))?);
            }
        }
    }
    Ok(())
}

fn volumes(v: &Value, c: &mut ContainerConfig, what: &str, warn: &mut Vec<String>) -> Result<()> {
    let Value::Sequence(list) = v else {
        bail!("{what} is not a list");
    };
    for item in list {
        let vol = match item {
            Value::Mapping(m) => {
                let get = |k: &str| m.get(Value::String(k.into())).and_then(scalar);
                let target = get("target")
                    .ok_or_else(|| anyhow!("{what}: a long-form volume has no target"))?;
                match get("type").as_deref().unwrap_or("volume") {
                    "volume" => match get("source") {
                        Some(source) => Some(Volume {
                            name: source,
                            path: target,
                            kind: if get("read_only").as_deref() == Some("true") {
                                VolumeKind::Ro
                            } else {
                                VolumeKind::Rw
                            },
                            size: None,
                        }),
                        None => {
                            warn.push(format!(
                                "{what}: anonymous volume {target} is not supported: give it a name"
                            ));
                            None
                        }
                    },
                    "tmpfs" => Some(Volume {
                        name: "tmpfs".into(),
                        path: target,
                        kind: VolumeKind::Tmpfs,
                        size: m
                            .get(Value::String("tmpfs".into()))
                            .and_then(|t| t.get("size"))
                            .and_then(scalar),
                    }),
                    other => {
                        warn.push(format!(
                            "{what}: a {other} mount of {target} is not supported: shoal mounts named volumes and tmpfs only"
                        ));
                        None
                    }
                }
            }
            other => {
                let s = scalar(other).ok_or_else(|| anyhow!("{what}: an entry is not text"))?;
                let source = s.split(':').next().unwrap_or_default();
                if !s.contains(':') {
                    warn.push(format!(
                        "{what}: anonymous volume {s} is not supported: give it a name (NAME:{s})"
                    ));
                    None
                } else if source.starts_with('.')
                    || source.starts_with('/')
                    || source.starts_with('~')
                {
                    warn.push(format!(
                        "{what}: bind mount {s} is not supported: shoal mounts named volumes, not host paths"
                    ));
                    None
                } else {
                    let s = s
                        .strip_suffix(":z")
                        .or_else(|| s.strip_suffix(":Z"))
                        .unwrap_or(&s);
                    Some(parse::volume(s).map_err(|e| anyhow!("{what}: {e}"))?)
                }
            }
        };
        if let Some(vol) = vol {
            c.volumes.retain(|x| x.path != vol.path);
            c.volumes.push(vol);
        }
    }
    Ok(())
}

fn healthcheck(v: &Value, what: &str, warn: &mut Vec<String>) -> Result<Option<HealthCheck>> {
    let Value::Mapping(m) = v else {
        bail!("{what} is not a map");
    };
    let mut h = HealthCheck {
        command: Vec::new(),
        interval_ms: None,
        timeout_ms: None,
        retries: None,
        start_period_ms: None,
    };
    for (k, val) in m {
        let k = key_str(k);
        let w = format!("{what}.{k}");
        match k.as_str() {
            "test" => {
                h.command = match val {
                    Value::String(s) => vec!["CMD-SHELL".into(), s.clone()],
                    other => words(other, &w)?,
                }
            }
            "interval" => h.interval_ms = Some(duration_ms(val, &w)?),
            "timeout" => h.timeout_ms = Some(duration_ms(val, &w)?),
            "start_period" => h.start_period_ms = Some(duration_ms(val, &w)?),
            "retries" => {
                h.retries = Some(
                    scalar(val)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| anyhow!("{w} is not a number"))?,
                )
            }
            "disable" => {
                if val.as_bool() == Some(true) {
                    h.command = vec!["NONE".into()];
                }
            }
            _ => warn.push(format!("{w} is not supported and was not imported")),
        }
    }
    if h.command.is_empty() {
        warn.push(format!("{what} has no test and was not imported"));
        return Ok(None);
    }
    Ok(Some(h))
}

fn depends_on(v: &Value, what: &str, warn: &mut Vec<String>) -> Result<Vec<String>> {
    match v {
        Value::Sequence(list) => list
            .iter()
            .map(|x| scalar(x).ok_or_else(|| anyhow!("{what}: an entry is not a service name")))
            .collect(),
        Value::Mapping(m) => {
            let mut out = Vec::new();
            for (k, cond) in m {
                let k = key_str(k);
                let condition = cond
                    .get("condition")
                    .and_then(scalar)
                    .unwrap_or_else(|| "service_started".into());
                if condition != "service_started" {
                    warn.push(format!(
                        "{what}.{k}: condition {condition} is not supported: {k} only starts first"
                    ));
                }
                out.push(k);
            }
            Ok(out)
        }
        _ => bail!("{what} is neither a list nor a map"),
    }
}

/// Maps one service; `deps` receives its dependencies.
fn service(
    name: &str,
    m: &Mapping,
    warn: &mut Vec<String>,
    deps: &mut Vec<String>,
) -> Result<(String, ContainerConfig)> {
    let mut c = ContainerConfig::default();
    let mut image = None;
    let mut has_build = false;
    for (k, v) in m {
        let k = key_str(k);
        let what = format!("service {name}: {k}");
        match k.as_str() {
            "image" => image = scalar(v),
            "environment" => c.env.extend(pairs(v, &what, warn)?),
            "labels" => c.labels.extend(pairs(v, &what, warn)?),
            "ports" => ports(v, &mut c, &what, warn)?,
            "volumes" => volumes(v, &mut c, &what, warn)?,
            "command" => c.args = Some(words(v, &what)?),
            "entrypoint" => c.command = Some(words(v, &what)?),
            "restart" => {
                let s = scalar(v).unwrap_or_default();
                let (policy, retries) = match s.split_once(':') {
                    Some((p, n)) => (p.to_string(), Some(n.to_string())),
                    None => (s.clone(), None),
                };
                if let Some(n) = retries {
                    warn.push(format!(
                        "{what}: the retry count {n} is not supported: on-failure retries without a limit"
                    ));
                }
                c.restart = Some(
                    RestartPolicy::parse(&policy)
                        .ok_or_else(|| anyhow!("{what}: {s:?} is not a restart policy"))?,
                );
            }
            "healthcheck" => c.health = healthcheck(v, &what, warn)?,
            "depends_on" => deps.extend(depends_on(v, &what, warn)?),
            "user" => c.user = scalar(v),
            "working_dir" => c.working_dir = scalar(v),
            "tty" => c.tty = v.as_bool(),
            "cpus" => c.cpu = scalar(v),
            "mem_limit" => c.memory = scalar(v),
            "network_mode" => {
                let s = scalar(v).unwrap_or_default();
                c.network_mode = match s.as_str() {
                    "bridge" => Some(NetworkMode::Bridge),
                    "host" => Some(NetworkMode::Host),
                    "none" => Some(NetworkMode::None),
                    _ => {
                        warn.push(format!(
                            "{what}: {s} is not supported (bridge, host or none) and was not imported"
                        ));
                        None
                    }
                }
            }
            "build" => has_build = true,
            "container_name" => warn.push(format!(
                "{what} is not imported: shoal names containers <prefix>-{}",
                parse::container_name_for(name)
            )),
            "env_file" => warn.push(format!(
                "{what} is not imported: give values with `shoal image config --env`, or per deployment with `--env` and `--secret-file`"
            )),
            _ => warn.push(format!("{what} is not supported and was not imported")),
        }
    }
    let image = match (image, has_build) {
        (Some(i), build) => {
            if build {
                warn.push(format!(
                    "service {name}: build is not imported: the image {i} is used as it is in its registry"
                ));
            }
            i
        }
        (None, true) => bail!(
            "service {name} is built from source and names no image: build and push it, then set `image:`"
        ),
        (None, false) => bail!("service {name} has no image"),
    };
    Ok((image, c))
}

/// Parses a compose file into services in start order, with warnings.
pub fn parse(text: &str, origin: &str) -> Result<Plan> {
    let mut doc: Value =
        serde_norway::from_str(text).map_err(|e| anyhow!("{origin} is not YAML: {e}"))?;
    doc.apply_merge()
        .map_err(|e| anyhow!("{origin}: cannot apply YAML merge keys: {e}"))?;
    let Value::Mapping(top) = &doc else {
        bail!("{origin} is not a compose file: it is not a map");
    };
    let mut warnings = Vec::new();
    for (k, v) in top {
        let k = key_str(k);
        match k.as_str() {
            "services" | "version" | "name" => {}
            x if x.starts_with("x-") => {}
            "volumes" => {
                if let Value::Mapping(m) = v {
                    for (name, def) in m {
                        if !matches!(def, Value::Null)
                            && def.as_mapping().is_some_and(|d| !d.is_empty())
                        {
                            warnings.push(format!(
                                "volumes: the options of volume {} are not supported: it is created as a plain local volume",
                                key_str(name)
                            ));
                        }
                    }
                }
            }
            "networks" => warnings.push(
                "networks are not imported: the containers of a deployment share one network (shoal-<prefix>) and reach each other by container name".into(),
            ),
            other => warnings.push(format!("top-level {other} is not supported and was not imported")),
        }
    }
    let services = top
        .get(Value::String("services".into()))
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow!("{origin} has no services"))?;
    let mut mapped = Vec::new();
    let mut names = BTreeSet::new();
    for (k, v) in services {
        let svc = key_str(k);
        let m = v
            .as_mapping()
            .ok_or_else(|| anyhow!("service {svc} is not a map"))?;
        let mut deps = Vec::new();
        let (image, config) = service(&svc, m, &mut warnings, &mut deps)?;
        let name = parse::container_name_for(&svc);
        if !names.insert(name.clone()) {
            bail!(
                "two services become the container name {name}: rename one (names are lowercased, other characters become '-')"
            );
        }
        mapped.push((
            Service {
                service: svc,
                name,
                image,
                config,
            },
            deps,
        ));
    }
    // Dependencies first; among the ready ones, file order.
    let all: BTreeSet<String> = mapped.iter().map(|(s, _)| s.service.clone()).collect();
    for (s, deps) in &mapped {
        if let Some(d) = deps.iter().find(|d| !all.contains(*d)) {
            bail!(
                "service {} depends on {d}, which the file does not define",
                s.service
            );
        }
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < mapped.len() {
        let next = mapped.iter().position(|(s, deps)| {
            !done.contains(&s.service) && deps.iter().all(|d| done.contains(d))
        });
        let Some(i) = next else {
            let left: Vec<String> = mapped
                .iter()
                .filter(|(s, _)| !done.contains(&s.service))
                .map(|(s, _)| s.service.clone())
                .collect();
            bail!("depends_on has a cycle among {}: break it", left.join(", "));
        };
        done.insert(mapped[i].0.service.clone());
        order.push(mapped[i].0.clone());
    }
    Ok(Plan {
        services: order,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::model::{Port, Protocol};

    const FILE: &str = r#"
version: "3.9"
x-common: &common
  restart: unless-stopped
services:
  web:
    <<: *common
    image: nginx:1.27
    ports:
      - "8080:80"
      - target: 443
        published: 8443
    depends_on:
      api:
        condition: service_healthy
    labels:
      tier: front
  api:
    image: 127.0.0.1:5000/acme/api:2.1
    command: ["serve", "--port", "9000"]
    environment:
      - DATABASE_URL=postgres://db/app
      - FROM_SHELL
    depends_on: [db]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://localhost:9000/health"]
      interval: 30s
      timeout: 5s
      retries: 3
      start_period: 1m30s
    volumes:
      - ./src:/src
  db:
    image: postgres:16
    environment:
      POSTGRES_DB: app
      POSTGRES_PORT: 5432
      EMPTY:
    volumes:
      - pgdata:/var/lib/postgresql/data
      - type: tmpfs
        target: /tmp
    container_name: my-db
    logging:
      driver: json-file
volumes:
  pgdata:
networks:
  back: {}
"#;

    #[test]
    fn a_compose_file_maps_to_images_in_dependency_order() {
        let plan = parse(FILE, "compose.yml").unwrap();
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "api", "web"]);
        let web = &plan.services[2];
        assert_eq!(web.image, "nginx:1.27");
        assert_eq!(web.config.restart, Some(RestartPolicy::UnlessStopped));
        assert_eq!(
            web.config.ports,
            vec![
                Port {
                    internal: 80,
                    external: Some(8080),
                    protocol: Protocol::Tcp
                },
                Port {
                    internal: 443,
                    external: Some(8443),
                    protocol: Protocol::Tcp
                }
            ]
        );
        assert_eq!(web.config.labels["tier"], "front");
        let api = &plan.services[1];
        assert_eq!(
            api.config.args.as_deref(),
            Some(&["serve".to_string(), "--port".into(), "9000".into()][..])
        );
        assert_eq!(api.config.env["DATABASE_URL"], "postgres://db/app");
        let h = api.config.health.as_ref().unwrap();
        assert_eq!(h.command[0], "CMD");
        assert_eq!(
            (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
            (Some(30_000), Some(5_000), Some(3), Some(90_000))
        );
        assert!(api.config.volumes.is_empty());
        let db = &plan.services[0];
        assert_eq!(db.config.env["POSTGRES_PORT"], "5432");
        assert_eq!(db.config.volumes.len(), 2);
        assert_eq!(db.config.volumes[0].name, "pgdata");
        assert_eq!(db.config.volumes[1].kind, VolumeKind::Tmpfs);
        // Everything not imported is named.
        let w = plan.warnings.join("\n");
        for expected in [
            "FROM_SHELL",
            "EMPTY",
            "bind mount ./src:/src",
            "container_name",
            "service db: logging",
            "networks",
            "condition service_healthy",
        ] {
            assert!(w.contains(expected), "{expected} missing in:\n{w}");
        }
    }

    #[test]
    fn compose_errors_say_what_to_fix() {
        let e = parse("services:\n  a:\n    build: .\n", "c.yml").unwrap_err();
        assert!(e.to_string().contains("build and push"), "{e}");
        let e = parse(
            "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: y, depends_on: [a]}\n",
            "c.yml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        let e = parse("services:\n  a: {image: x, depends_on: [zz]}\n", "c.yml").unwrap_err();
        assert!(e.to_string().contains("zz"), "{e}");
        assert!(parse("- a\n", "c.yml").is_err());
        let command = parse(
            "services:\n  a: {image: x, command: sh -c 'echo hi'}\n",
            "c",
        )
        .unwrap();
        assert_eq!(
            command.services[0].config.args.as_deref(),
            Some(&["sh".to_string(), "-c".into(), "echo hi".into()][..])
        );
    }
}
