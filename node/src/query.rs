//! Read-only questions about a node's containers (§4 "Container commands"),
//! asked of the node itself or, over the mesh, of another node of the team.
//!
//! Listing, logs and inspect change nothing, so they are requests between
//! team nodes (the mesh authenticates both ends), not ops. Everything that
//! changes a container (start, stop, restart, remove) is a signed member op
//! (`container.command`) that the target node's executor carries out, so it
//! is audited like any other change. Inspect output never holds a secret
//! value: the runtime redacts them.

use std::sync::Arc;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use shoal_protocol::TeamId;

use crate::executor::RuntimeFactory;
use crate::runtime::ContainerInfo;

/// Most log lines one answer carries.
pub const MAX_LOG_LINES: u64 = 2000;

/// A question about this node's containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Containers {
        prefix: Option<String>,
    },
    Logs {
        container: String,
        tail: Option<u64>,
    },
    Inspect {
        container: String,
    },
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Containers(Vec<ContainerInfo>),
    Logs(Vec<String>),
    /// The inspect document, as JSON text.
    Inspect(String),
    /// The node could not answer, and why.
    Error(String),
}

/// Answers queries about one team's containers on this node.
pub type QueryHandler =
    Arc<dyn Fn(Query) -> futures::future::BoxFuture<'static, Answer> + Send + Sync>;

/// A handler that asks the node's runtime (made by `runtime` per query).
pub fn runtime_handler(team: TeamId, runtime: RuntimeFactory) -> QueryHandler {
    Arc::new(move |q| {
        let runtime = Arc::clone(&runtime);
        let team = team.to_hex();
        Box::pin(async move {
            let rt = match runtime().await {
                Ok(rt) => rt,
                Err(e) => return Answer::Error(e.to_string()),
            };
            match q {
                Query::Containers { prefix } => match rt.containers(&team, prefix.as_deref()).await
                {
                    Ok(list) => Answer::Containers(list),
                    Err(e) => Answer::Error(e.to_string()),
                },
                Query::Logs { container, tail } => {
                    let tail = Some(tail.unwrap_or(MAX_LOG_LINES).min(MAX_LOG_LINES));
                    match rt.logs(&team, &container, false, tail).await {
                        Ok(stream) => {
                            let lines: Vec<String> = stream
                                .take(MAX_LOG_LINES as usize)
                                .filter_map(|l| async move { l.ok().map(|l| l.text) })
                                .collect()
                                .await;
                            Answer::Logs(lines)
                        }
                        Err(e) => Answer::Error(e.to_string()),
                    }
                }
                Query::Inspect { container } => match rt.inspect(&team, &container).await {
                    Ok(v) => Answer::Inspect(v.to_string()),
                    Err(e) => Answer::Error(e.to_string()),
                },
            }
        })
    })
}

/// The handler of a node without a container runtime.
pub fn no_runtime() -> QueryHandler {
    Arc::new(|_| {
        Box::pin(async {
            Answer::Error("this node has no container runtime (runtime none)".into())
        })
    })
}
