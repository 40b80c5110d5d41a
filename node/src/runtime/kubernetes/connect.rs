//! Where the cluster is: kubeconfig files (merged as kubectl merges them),
//! the in-cluster service account, or `~/.kube/config`.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::debug;

use crate::runtime::RuntimeError;
use crate::runtime::common::error_chain;

/// Where the kubernetes runtime finds its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeConnect {
    /// Kubeconfig files, merged in order as kubectl merges `KUBECONFIG`
    /// (the first file to set a value or name wins). Empty: the in-cluster
    /// service account, else `~/.kube/config`.
    pub kubeconfig: Vec<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    pub context: Option<String>,
}

impl KubeConnect {
    /// The files of a `KUBECONFIG`-style list (separated by ':'; empty
    /// entries are ignored).
    pub fn split_list(list: &OsStr) -> Vec<PathBuf> {
        std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    }
}

/// Where a connection is loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeSource {
    /// The kubeconfig files given, merged.
    Files(Vec<PathBuf>),
    /// The pod's service account.
    InCluster,
    /// `~/.kube/config`.
    DefaultFile(PathBuf),
}

impl fmt::Display for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Files(files) => {
                let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                write!(f, "the kubeconfig {}", names.join(":"))
            }
            Self::InCluster => f.write_str("the in-cluster service account"),
            Self::DefaultFile(p) => write!(f, "the default kubeconfig {}", p.display()),
        }
    }
}

/// Chooses where to connect from: the files given, else the in-cluster
/// service account when the node runs in a pod (`in_cluster`) and no
/// context is named (a service account has no contexts), else the default
/// kubeconfig. Pure; [`load_config`] looks at the machine.
pub fn choose_source(
    connect: &KubeConnect,
    in_cluster: bool,
    default_file: Option<PathBuf>,
) -> Result<KubeSource, RuntimeError> {
    if !connect.kubeconfig.is_empty() {
        return Ok(KubeSource::Files(connect.kubeconfig.clone()));
    }
    if in_cluster && connect.context.is_none() {
        return Ok(KubeSource::InCluster);
    }
    match default_file {
        Some(p) => Ok(KubeSource::DefaultFile(p)),
        None => Err(RuntimeError::KubeConfig {
            origin: "this machine".into(),
            detail: if connect.context.is_some() {
                "a context is named, but no kubeconfig is given and ~/.kube/config does not exist"
                    .into()
            } else {
                "no kubeconfig is given, ~/.kube/config does not exist, and the node does not run in a cluster".into()
            },
        }),
    }
}

/// True when the node runs in a pod with a service account (as client-go
/// decides: the service host and port are set and the token is mounted).
fn in_cluster_possible() -> bool {
    const TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"]
        .iter()
        .all(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        && Path::new(TOKEN).is_file()
}

fn default_kubeconfig() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let p = PathBuf::from(home).join(".kube").join("config");
    p.is_file().then_some(p)
}

/// Loads the client configuration `connect` describes (see
/// [`choose_source`]). Every failure is a [`RuntimeError::KubeConfig`]
/// that names the source.
pub async fn load_config(connect: &KubeConnect) -> Result<Config, RuntimeError> {
    let source = choose_source(connect, in_cluster_possible(), default_kubeconfig())?;
    let fail = |detail: String| RuntimeError::KubeConfig {
        origin: source.to_string(),
        detail,
    };
    let files = match &source {
        KubeSource::InCluster => {
            return Config::incluster().map_err(|e| fail(error_chain(&e)));
        }
        KubeSource::Files(files) => files.clone(),
        KubeSource::DefaultFile(p) => vec![p.clone()],
    };
    let merged = merge_kubeconfigs(&files).map_err(fail)?;
    if let Some(name) = &connect.context
        && !merged.contexts.iter().any(|c| &c.name == name)
    {
        let known: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(fail(format!(
            "it has no context {name:?} (its contexts: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    if connect.context.is_none() && merged.current_context.is_none() {
        return Err(fail(
            "it sets no current-context: name one with --kube-context".into(),
        ));
    }
    let options = KubeConfigOptions {
        context: connect.context.clone(),
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(merged, &options)
        .await
        .map_err(|e| fail(error_chain(&e)))
}

/// Reads and merges kubeconfig files as kubectl merges `KUBECONFIG`: in
/// order, the first to set a value wins; in a list of several, a file that
/// does not exist is skipped, but one of them must.
fn merge_kubeconfigs(files: &[PathBuf]) -> Result<Kubeconfig, String> {
    let mut merged: Option<Kubeconfig> = None;
    let which = |path: &Path, e: &dyn std::error::Error| {
        if files.len() > 1 {
            format!("{}: {}", path.display(), error_chain(e))
        } else {
            error_chain(e)
        }
    };
    for path in files {
        if files.len() > 1 && !path.exists() {
            debug!(path = %path.display(), "kubeconfig in the list does not exist; skipped");
            continue;
        }
        let file = Kubeconfig::read_from(path).map_err(|e| which(path, &e))?;
        merged = Some(match merged {
            None => file,
            Some(m) => m.merge(file).map_err(|e| which(path, &e))?,
        });
    }
    merged.ok_or_else(|| "none of these files exists".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_connection_source_follows_the_documented_order() {
        let home = Some(PathBuf::from("/home/me/.kube/config"));
        let given = KubeConnect {
            kubeconfig: vec!["/etc/a".into(), "/etc/b".into()],
            context: None,
        };
        // The files given win over the service account and ~/.kube/config.
        assert_eq!(
            choose_source(&given, true, home.clone()).unwrap(),
            KubeSource::Files(vec!["/etc/a".into(), "/etc/b".into()])
        );
        // Then the in-cluster service account, then ~/.kube/config.
        let none = KubeConnect::default();
        assert_eq!(
            choose_source(&none, true, home.clone()).unwrap(),
            KubeSource::InCluster
        );
        assert_eq!(
            choose_source(&none, false, home.clone()).unwrap(),
            KubeSource::DefaultFile("/home/me/.kube/config".into())
        );
        // A named context lives in a kubeconfig, never in a service account.
        let named = KubeConnect {
            kubeconfig: Vec::new(),
            context: Some("prod".into()),
        };
        assert_eq!(
            choose_source(&named, true, home).unwrap(),
            KubeSource::DefaultFile("/home/me/.kube/config".into())
        );
        // Nothing at all: the error says what to do.
        let err = choose_source(&none, false, None).unwrap_err();
        assert!(matches!(err, RuntimeError::KubeConfig { .. }), "{err}");
        assert!(err.to_string().contains("--kubeconfig"), "{err}");
        assert!(choose_source(&named, true, None).is_err());
    }

    #[test]
    fn a_kubeconfig_list_splits_on_colons() {
        assert_eq!(
            KubeConnect::split_list(OsStr::new("/a/config::/b/config:")),
            [PathBuf::from("/a/config"), PathBuf::from("/b/config")]
        );
        assert!(KubeConnect::split_list(OsStr::new("")).is_empty());
    }
}
