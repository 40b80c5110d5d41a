//! Helpers every runtime uses the same way: progress reporting, registry
//! hosts of pull references, port protocol names, reading and redacting secret env keys in
//! inspect output, error messages with their causes, and the [`Runtime`]
//! impl that boxes a runtime's `run_*` methods.
//!
//! [`Runtime`]: super::Runtime

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::Value;
use shoal_protocol::model::Protocol;
use tokio::sync::mpsc;
use tracing::debug;

use super::{ProgressEvent, REDACTED, Step};

/// Sends progress events to the caller and keeps their summary lines for
/// the outcome.
pub(crate) struct Reporter<'a> {
    tx: &'a mpsc::Sender<ProgressEvent>,
    events: Mutex<Vec<String>>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(tx: &'a mpsc::Sender<ProgressEvent>) -> Self {
        Self {
            tx,
            events: Mutex::new(Vec::new()),
        }
    }

    pub(crate) async fn emit(&self, step: Step, container: Option<&str>, message: String) {
        let line = match container {
            Some(c) => format!("{c}: {message}"),
            None => message.clone(),
        };
        debug!(?step, "{line}");
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
        let event = ProgressEvent {
            step,
            container: container.map(str::to_owned),
            message,
        };
        // A caller that stopped listening does not stop the deployment.
        let _ = self.tx.send(event).await;
    }

    pub(crate) fn into_events(self) -> Vec<String> {
        self.events
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The registry host of a pull reference: its first path component when
/// that names a host (has a `.` or `:`, or is `localhost`), else
/// `docker_hub`, the name the caller's engine uses for Docker Hub.
pub(crate) fn registry_host(reference: &str, docker_hub: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_owned(),
        _ => docker_hub.to_owned(),
    }
}

/// A port protocol's lowercase name, as in `80/tcp` and port names.
pub(crate) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The secret env keys of a comma-separated `LABEL_SECRET_KEYS` value.
pub(crate) fn secret_keys(label: Option<&String>) -> BTreeSet<String> {
    label
        .map(|s| {
            s.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces the value of every env entry named in `secret_keys` by
/// [`REDACTED`], anywhere in an engine's description of a container (inspect
/// output never holds a secret value). Env entries come in two shapes:
/// `"KEY=value"` strings in an `Env` array (Docker's `Config.Env`) and
/// `{"name": KEY, "value": ...}` objects (Kubernetes env vars).
pub(crate) fn redact_env(value: &mut Value, secret_keys: &BTreeSet<String>) {
    match value {
        Value::Object(m) => {
            if let (Some(Value::String(name)), Some(v)) =
                (m.get("name").cloned(), m.get_mut("value"))
                && secret_keys.contains(&name)
            {
                *v = Value::String(REDACTED.into());
            }
            for (key, x) in m.iter_mut() {
                match x {
                    Value::Array(entries) if key == "Env" => {
                        redact_env_strings(entries, secret_keys);
                    }
                    _ => redact_env(x, secret_keys),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_env(x, secret_keys)),
        _ => {}
    }
}

/// Redacts the `KEY=value` strings of an env list.
fn redact_env_strings(entries: &mut [Value], secret_keys: &BTreeSet<String>) {
    for entry in entries {
        let Some(s) = entry.as_str() else { continue };
        let key = s.split_once('=').map_or(s, |(k, _)| k);
        if secret_keys.contains(key) {
            *entry = Value::String(format!("{key}={REDACTED}"));
        }
    }
}

/// An error's message followed by those of its sources, each once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Implements [`Runtime`](super::Runtime) for a type by boxing the futures of
/// its inherent `run_deploy`, `run_containers`, `run_command`, `run_logs`,
/// `run_inspect` and `run_remove_prefix` methods (same arguments as the
/// trait's methods); with `, teardown` also its `run_teardown`.
macro_rules! runtime_from_run_methods {
    ($ty:ty) => {
        $crate::runtime::common::runtime_from_run_methods!($ty, {});
    };
    ($ty:ty, teardown) => {
        $crate::runtime::common::runtime_from_run_methods!($ty, {
            fn teardown<'a>(
                &'a self,
                team: &'a str,
                deployment: &'a str,
                prefix: &'a str,
                volumes: bool,
            ) -> ::futures::future::BoxFuture<
                'a,
                Result<$crate::runtime::Removed, $crate::runtime::RuntimeError>,
            > {
                ::futures::FutureExt::boxed(self.run_teardown(team, deployment, prefix, volumes))
            }
        });
    };
    ($ty:ty, { $($extra:tt)* }) => {
        impl $crate::runtime::Runtime for $ty {
            $($extra)*

            fn deploy<'a>(
                &'a self,
                plan: &'a $crate::runtime::DeployPlan,
                progress: &'a ::tokio::sync::mpsc::Sender<$crate::runtime::ProgressEvent>,
            ) -> ::futures::future::BoxFuture<
                'a,
                Result<$crate::runtime::DeployOutcome, $crate::runtime::RuntimeError>,
            > {
                ::futures::FutureExt::boxed(self.run_deploy(plan, progress))
            }

            fn containers<'a>(
                &'a self,
                team: &'a str,
                prefix: Option<&'a str>,
            ) -> ::futures::future::BoxFuture<
                'a,
                Result<Vec<$crate::runtime::ContainerInfo>, $crate::runtime::RuntimeError>,
            > {
                ::futures::FutureExt::boxed(self.run_containers(team, prefix))
            }

            fn command<'a>(
                &'a self,
                team: &'a str,
                container: &'a str,
                action: ::shoal_protocol::model::ContainerAction,
            ) -> ::futures::future::BoxFuture<'a, Result<(), $crate::runtime::RuntimeError>> {
                ::futures::FutureExt::boxed(self.run_command(team, container, action))
            }

            fn logs<'a>(
                &'a self,
                team: &'a str,
                container: &'a str,
                follow: bool,
                tail: Option<u64>,
            ) -> ::futures::future::BoxFuture<
                'a,
                Result<$crate::runtime::LogStream, $crate::runtime::RuntimeError>,
            > {
                ::futures::FutureExt::boxed(self.run_logs(team, container, follow, tail))
            }

            fn inspect<'a>(
                &'a self,
                team: &'a str,
                container: &'a str,
            ) -> ::futures::future::BoxFuture<
                'a,
                Result<::serde_json::Value, $crate::runtime::RuntimeError>,
            > {
                ::futures::FutureExt::boxed(self.run_inspect(team, container))
            }

            fn remove_prefix<'a>(
                &'a self,
                team: &'a str,
                prefix: &'a str,
            ) -> ::futures::future::BoxFuture<
                'a,
                Result<$crate::runtime::Removed, $crate::runtime::RuntimeError>,
            > {
                ::futures::FutureExt::boxed(self.run_remove_prefix(team, prefix))
            }
        }
    };
}
pub(crate) use runtime_from_run_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_name_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }

    #[test]
    fn secret_key_labels_parse() {
        let label = "TOKEN,,DB_PASS".to_owned();
        let keys = secret_keys(Some(&label));
        assert_eq!(keys.len(), 2);
        assert!(keys.contains("TOKEN") && keys.contains("DB_PASS"));
        assert!(secret_keys(None).is_empty());
    }

    #[test]
    fn inspect_output_redacts_secret_env_values() {
        let mut v = serde_json::json!({
            "Config": {"Env": ["PLAIN=1", "TOKEN=hunter2", "DB_PASS=x=y", "EMPTY"]}
        });
        let keys = BTreeSet::from(["TOKEN".to_owned(), "DB_PASS".to_owned()]);
        redact_env(&mut v, &keys);
        let env = &v["Config"]["Env"];
        assert_eq!(env[0], "PLAIN=1");
        assert_eq!(env[1], format!("TOKEN={REDACTED}"));
        assert_eq!(env[2], format!("DB_PASS={REDACTED}"));
        assert_eq!(env[3], "EMPTY");
        assert!(!v.to_string().contains("hunter2"));
    }

    #[test]
    fn kubernetes_env_vars_are_redacted() {
        let mut v = serde_json::json!({
            "spec": {"containers": [{"env": [
                {"name": "PLAIN", "value": "1"},
                {"name": "TOKEN", "value": "hunter2"},
            ]}]}
        });
        let keys = BTreeSet::from(["TOKEN".to_owned()]);
        redact_env(&mut v, &keys);
        let env = &v["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], "1");
        assert_eq!(env[1]["value"], REDACTED);
        assert!(!v.to_string().contains("hunter2"));
    }
}
