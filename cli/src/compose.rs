//! `shoal product import --compose FILE`: a docker-compose file mapped to
//! the images of one product version.
//!
//! The file is first resolved as the Compose Specification says
//! ([`load`]: variables interpolated, merge keys, `extends`, `include`,
//! `!reset`/`!override`), then mapped here.
//!
//! Taken: `services` with `image`, `environment` (list and map forms),
//! `ports` (short and long forms, ranges), `volumes` (named volumes and
//! tmpfs, short and long forms), `command`, `entrypoint`, `restart`,
//! `labels`, `healthcheck`, `depends_on` (start order), `user`,
//! `working_dir`, `tty`, `network_mode`, `cpus`, `mem_limit`, `logging`,
//! `deploy.resources.limits`, `profiles` (which services are taken).
//! Everything else is reported as a warning naming the service and key and
//! what happens instead; nothing is dropped silently. Services come out in
//! `depends_on` order (dependencies first, file order otherwise).

pub mod interp;
pub mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

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

/// What the import takes besides the file.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Variables for interpolation: the process environment, then `.env`
    /// beside the file or the `--env-file` files.
    pub env: interp::Env,
    /// Services with a profile are taken only when one is named here.
    pub profiles: Vec<String>,
    /// Image references by service: required for a service that is only
    /// built, and replacing the `image:` of one that names one.
    pub images: BTreeMap<String, String>,
}

impl Options {
    /// The process environment, then each env file (or `.env` in `dir` when
    /// none is given; a missing `.env` is fine).
    pub fn with_env(
        env_files: &[std::path::PathBuf],
        dir: &Path,
        warn: &mut Vec<String>,
    ) -> Result<Options> {
        let mut env = interp::Env {
            vars: std::env::vars().collect(),
            unset: BTreeSet::new(),
        };
        if env_files.is_empty() {
            let dotenv = dir.join(".env");
            if let Ok(text) = std::fs::read_to_string(&dotenv) {
                interp::read_env_file(&text, &dotenv.display().to_string(), &mut env, warn)?;
            }
        }
        for f in env_files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow!("cannot read the env file {}: {e}", f.display()))?;
            interp::read_env_file(&text, &f.display().to_string(), &mut env, warn)?;
        }
        Ok(Options {
            env,
            ..Options::default()
        })
    }
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

/// What an entry without a value means.
#[derive(Clone, Copy)]
enum Empty<'a> {
    /// An environment variable: taken from the interpolation variables,
    /// else warned about.
    FromEnv(&'a interp::Env),
    /// A label: the empty string.
    Blank,
}

impl Empty<'_> {
    fn fill(self, k: &str, what: &str, out: &mut BTreeMap<String, String>, warn: &mut Vec<String>) {
        match self {
            Empty::Blank => {
                out.insert(k.to_string(), String::new());
            }
            Empty::FromEnv(env) => match env.get(k) {
                Some(v) => {
                    out.insert(k.to_string(), v.to_string());
                }
                None => warn.push(format!(
                    "{what}: {k} has no value (compose takes it from the shell): set it with `shoal image config --env {k}=VALUE` or per deployment"
                )),
            },
        }
    }
}

/// `K=V` list or `K: V` map into pairs.
fn pairs(
    v: &Value,
    what: &str,
    empty: Empty,
    warn: &mut Vec<String>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match v {
        Value::Sequence(list) => {
            for item in list {
                let s = scalar(item).ok_or_else(|| anyhow!("{what}: an entry is not text"))?;
                match s.split_once('=') {
                    Some((k, v)) => {
                        out.insert(k.trim().to_string(), v.to_string());
                    }
                    None => empty.fill(s.trim(), what, &mut out, warn),
                }
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = key_str(k);
                match v {
                    Value::Null => empty.fill(&k, what, &mut out, warn),
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

fn add_port(c: &mut ContainerConfig, spec: PortSpec, what: &str, warn: &mut Vec<String>) {
    match spec {
        PortSpec::One(p) => {
            if let Some(old) = c
                .ports
                .iter()
                .find(|x| (x.internal, x.protocol) == (p.internal, p.protocol))
                && old.external != p.external
            {
                warn.push(format!(
                    "{what}: container port {} is published on several host ports: shoal publishes one, {} (not {})",
                    p.internal,
                    p.external.map_or("a free one".to_string(), |e| e.to_string()),
                    old.external.map_or("a free one".to_string(), |e| e.to_string()),
                ));
            }
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
                for k in m.keys().map(key_str) {
                    match k.as_str() {
                        "target" | "published" | "protocol" | "host_ip" => {}
                        "mode" | "name" | "app_protocol" => warn.push(format!(
                            "{what}: {k} of port {target} is not supported: the port is published on the node as a plain {protocol} port"
                        )),
                        other => warn.push(format!(
                            "{what}: {other} of port {target} is not supported and was not imported"
                        )),
                    }
                }
                add_port(
                    c,
                    parse::port(&short).map_err(|e| anyhow!("{what}: {short}: {e}"))?,
                    what,
                    warn,
                );
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
                add_port(
                    c,
                    parse::port(&s).map_err(|e| anyhow!("{what}: {s:?}: {e}"))?,
                    what,
                    warn,
                );
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
                for k in m.keys().map(key_str) {
                    match k.as_str() {
                        "type" | "source" | "target" | "read_only" => {}
                        "volume" | "tmpfs" => {
                            for (sub, _) in m.get(k.as_str()).and_then(Value::as_mapping).into_iter().flatten() {
                                let sub = key_str(sub);
                                if sub != "size" {
                                    warn.push(format!(
                                        "{what}: {k}.{sub} of {target} is not supported: the volume is mounted whole, with default options"
                                    ));
                                }
                            }
                        }
                        other => warn.push(format!(
                            "{what}: {other} of {target} is not supported: the volume is mounted without it"
                        )),
                    }
                }
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
                        let from = get("source")
                            .map(|s| format!(" from {s}"))
                            .unwrap_or_default();
                        warn.push(format!(
                            "{what}: a {other} mount of {target}{from} is not supported: shoal mounts named volumes and tmpfs only"
                        ));
                        None
                    }
                }
            }
            other => {
                let s = scalar(other).ok_or_else(|| anyhow!("{what}: an entry is not text"))?;
                let source = s.split(':').next().unwrap_or_default();
                if !s.contains(':') || source.is_empty() {
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
                if cond.get("required").and_then(Value::as_bool) == Some(false) {
                    warn.push(format!(
                        "{what}.{k}: required: false is not supported: {k} is a dependency like the others"
                    ));
                }
                if cond.get("restart").and_then(Value::as_bool) == Some(true) {
                    warn.push(format!(
                        "{what}.{k}: restart: true is not supported: this service is not restarted when {k} is"
                    ));
                }
                out.push(k);
            }
            Ok(out)
        }
        _ => bail!("{what} is neither a list nor a map"),
    }
}

/// What happens instead of keys shoal does not map, by key.
fn instead(k: &str) -> &'static str {
    match k {
        "expose" => {
            "the containers of a deployment share one network and reach every port of each other"
        }
        "hostname" | "domainname" | "links" | "external_links" => {
            "containers reach each other by container name on the deployment's network"
        }
        "networks" => "the containers of a deployment share one network (shoal-<prefix>)",
        "secrets" | "configs" => {
            "give them per deployment with `--secret-file`, or as image secrets with `shoal image config --secret`"
        }
        "stop_grace_period" | "stop_signal" => {
            "containers are stopped with the runtime's default signal and timeout"
        }
        "pull_policy" => "images are pulled when a node does not have them",
        "platform" => "each node pulls the image for its own platform",
        "scale" => "one container per service and node",
        _ => "the container runs without it",
    }
}

fn logging(v: &Value, c: &mut ContainerConfig, what: &str, warn: &mut Vec<String>) -> Result<()> {
    let Value::Mapping(m) = v else {
        bail!("{what} is not a map");
    };
    for (k, val) in m {
        let k = key_str(k);
        match k.as_str() {
            "driver" => c.log_driver = scalar(val),
            "options" => {
                c.log_options
                    .extend(pairs(val, &format!("{what}.options"), Empty::Blank, warn)?)
            }
            other => warn.push(format!(
                "{what}.{other} is not supported and was not imported"
            )),
        }
    }
    Ok(())
}

fn deploy(v: &Value, c: &mut ContainerConfig, what: &str, warn: &mut Vec<String>) -> Result<()> {
    let Value::Mapping(m) = v else {
        bail!("{what} is not a map");
    };
    for (k, val) in m {
        let k = key_str(k);
        match k.as_str() {
            "resources" => {
                for (rk, rv) in val.as_mapping().into_iter().flatten() {
                    let rk = key_str(rk);
                    if rk != "limits" {
                        warn.push(format!(
                            "{what}.resources.{rk} is not supported: only limits are imported"
                        ));
                        continue;
                    }
                    for (lk, lv) in rv.as_mapping().into_iter().flatten() {
                        let lk = key_str(lk);
                        match lk.as_str() {
                            "cpus" => c.cpu = scalar(lv),
                            "memory" => c.memory = scalar(lv),
                            other => warn.push(format!(
                                "{what}.resources.limits.{other} is not supported: the container runs without that limit"
                            )),
                        }
                    }
                }
            }
            "restart_policy" => {
                if let Some(p) = val.get("condition").and_then(scalar) {
                    let p = if p == "any" { "always".to_string() } else { p };
                    c.restart = Some(RestartPolicy::parse(&p).ok_or_else(|| {
                        anyhow!("{what}.restart_policy.condition: {p:?} is not a restart policy")
                    })?);
                }
                for (rk, _) in val.as_mapping().into_iter().flatten() {
                    let rk = key_str(rk);
                    if rk != "condition" {
                        warn.push(format!(
                            "{what}.restart_policy.{rk} is not supported: restarts follow the runtime's defaults"
                        ));
                    }
                }
            }
            "replicas" => warn.push(format!(
                "{what}.replicas is not supported: one container per service and node (choose the nodes per deployment)"
            )),
            other => warn.push(format!(
                "{what}.{other} is not supported: {}",
                "swarm placement and update settings do not apply to shoal deployments"
            )),
        }
    }
    Ok(())
}

/// Maps one service; `deps` receives its dependencies. `None`: the service
/// is skipped (the warning says why).
fn service(
    name: &str,
    m: &Mapping,
    opts: &Options,
    warn: &mut Vec<String>,
    deps: &mut Vec<String>,
) -> Result<Option<(String, ContainerConfig)>> {
    if let Some(p) = m.get(Value::String("profiles".into())) {
        let profiles: Vec<String> = match p {
            Value::Sequence(l) => l.iter().filter_map(scalar).collect(),
            other => scalar(other).into_iter().collect(),
        };
        if !profiles.is_empty() && !profiles.iter().any(|p| opts.profiles.contains(p)) {
            warn.push(format!(
                "service {name} is in profile {} and was not imported: name a profile with --profile to import it",
                profiles.join(", ")
            ));
            return Ok(None);
        }
    }
    let mut c = ContainerConfig::default();
    let mut image = None;
    let mut has_build = false;
    let mut context: Option<String> = None;
    for (k, v) in m {
        let k = key_str(k);
        let what = format!("service {name}: {k}");
        match k.as_str() {
            "image" => image = scalar(v),
            "environment" => c.env.extend(pairs(v, &what, Empty::FromEnv(&opts.env), warn)?),
            "labels" => c.labels.extend(pairs(v, &what, Empty::Blank, warn)?),
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
            "logging" => logging(v, &mut c, &what, warn)?,
            "deploy" => deploy(v, &mut c, &what, warn)?,
            "profiles" => {}
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
            "build" => {
                has_build = true;
                context = match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Mapping(b) => b.get("context").and_then(scalar),
                    _ => None,
                };
            }
            "container_name" => warn.push(format!(
                "{what} is not imported: shoal names containers <prefix>-{}",
                parse::container_name_for(name)
            )),
            "env_file" => warn.push(format!(
                "{what} {} is not imported: give values with `shoal image config --env`, or per deployment with `--env` and `--secret-file`",
                env_file_paths(v).join(", ")
            )),
            x if x.starts_with("x-") => {}
            other => warn.push(format!(
                "{what} is not supported and was not imported: {}",
                instead(other)
            )),
        }
    }
    let image = match (opts.images.get(name), image, has_build) {
        (Some(given), _, _) => given.clone(),
        (None, Some(i), build) => {
            if build {
                warn.push(format!(
                    "service {name}: build is not imported: the image {i} is used as it is in its registry{}",
                    context_note(&context)
                ));
            }
            i
        }
        (None, None, true) => {
            warn.push(format!(
                "service {name} is built from source and names no image: it was not imported (build and push it, then give it with --image {name}=REF){}",
                context_note(&context)
            ));
            return Ok(None);
        }
        (None, None, false) => bail!("service {name} has no image"),
    };
    Ok(Some((image, c)))
}

/// The files an `env_file` entry names (short or long syntax).
fn env_file_paths(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(l) => l
            .iter()
            .filter_map(|e| match e {
                Value::Mapping(m) => m.get("path").and_then(scalar),
                other => scalar(other),
            })
            .collect(),
        _ => vec![],
    }
}

/// Where a build would run, for the warning that it is not imported.
fn context_note(context: &Option<String>) -> String {
    context
        .as_ref()
        .map(|c| format!(" (build context {c})"))
        .unwrap_or_default()
}

/// Parses a compose file's text (relative paths from the current
/// directory, no variables) into services in start order, with warnings.
#[cfg(test)]
pub fn parse(text: &str, origin: &str) -> Result<Plan> {
    parse_in(
        text,
        origin,
        Path::new("."),
        &mut Options::default(),
        Vec::new(),
    )
}

/// Reads a compose file with the `.env` beside it or the given env files.
pub fn load(
    file: &Path,
    env_files: &[std::path::PathBuf],
    profiles: Vec<String>,
    images: BTreeMap<String, String>,
) -> Result<Plan> {
    let size = std::fs::metadata(file)
        .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?
        .len();
    if size > load::MAX_FILE_BYTES as u64 {
        bail!(
            "{} is {size} bytes: compose files of more than {} bytes are refused",
            file.display(),
            load::MAX_FILE_BYTES
        );
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut warnings = Vec::new();
    let mut opts = Options::with_env(env_files, &dir, &mut warnings)?;
    opts.profiles = profiles;
    opts.images = images;
    parse_in(
        &text,
        &file.display().to_string(),
        &dir,
        &mut opts,
        warnings,
    )
}

fn parse_in(
    text: &str,
    origin: &str,
    dir: &Path,
    opts: &mut Options,
    mut warnings: Vec<String>,
) -> Result<Plan> {
    let top = {
        let mut env = std::mem::take(&mut opts.env);
        let r = load::Loader::new(&mut env, &mut warnings).load_text(text, origin, dir);
        opts.env = env;
        r?
    };
    for (k, v) in &top {
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
            other => warnings.push(format!(
                "top-level {other} is not supported and was not imported: {}",
                instead(other)
            )),
        }
    }
    let services = top
        .get(Value::String("services".into()))
        .and_then(Value::as_mapping)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| anyhow!("{origin} has no services"))?;
    for svc in opts.images.keys() {
        if !services.contains_key(Value::String(svc.clone())) {
            bail!("--image {svc}=...: the file has no service {svc}");
        }
    }
    let mut mapped = Vec::new();
    let mut names = BTreeSet::new();
    let mut skipped = BTreeSet::new();
    for (k, v) in services {
        let svc = key_str(k);
        let m = v
            .as_mapping()
            .ok_or_else(|| anyhow!("service {svc} is not a map"))?;
        let mut deps = Vec::new();
        let Some((image, config)) = service(&svc, m, opts, &mut warnings, &mut deps)? else {
            skipped.insert(svc);
            continue;
        };
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
    if mapped.is_empty() {
        bail!(
            "{origin}: no service is left to import:\n{}",
            warnings.join("\n")
        );
    }
    // Dependencies on skipped services are dropped, with a warning.
    for (s, deps) in &mut mapped {
        deps.retain(|d| {
            if skipped.contains(d) {
                warnings.push(format!(
                    "service {}: depends_on {d}, which was not imported: the dependency is dropped",
                    s.service
                ));
                false
            } else {
                true
            }
        });
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

    #[test]
    fn silent_drops_are_warned_about() {
        let plan = parse(
            "services:\n  a:\n    image: x\n    ports: [\"8080:80\", \"8081:80\"]\n    stop_grace_period: 5s\n    deploy:\n      replicas: 3\n      resources:\n        limits: {cpus: '1', memory: 1G, pids: 5}\n        reservations: {memory: 1M}\n    depends_on:\n      b: {condition: service_started, required: false}\n  b:\n    image: y\n    profiles: [tools]\n",
            "c.yml",
        )
        .unwrap();
        let w = plan.warnings.join("\n");
        for expected in [
            "container port 80 is published on several host ports: shoal publishes one, 8081 (not 8080)",
            "service a: stop_grace_period is not supported and was not imported: containers are stopped",
            "service a: deploy.replicas is not supported",
            "service a: deploy.resources.limits.pids is not supported",
            "service a: deploy.resources.reservations is not supported",
            "service a: depends_on.b: required: false is not supported",
            "service b is in profile tools and was not imported",
            "service a: depends_on b, which was not imported",
        ] {
            assert!(w.contains(expected), "{expected} missing in:\n{w}");
        }
        let a = &plan.services[0].config;
        assert_eq!(
            (a.cpu.as_deref(), a.memory.as_deref()),
            (Some("1"), Some("1G"))
        );
        assert_eq!(plan.services.len(), 1);
    }
}
