//! Following output that another node keeps: a container's logs and a
//! deployment's progress, each as a stream of chunks of lines.
//!
//! Each chunk is one long poll of the local daemon, which asks the target
//! node over the mesh; the node answers as soon as it has a new line (see
//! `shoal_node::query`), so lines arrive as they are written, in order,
//! none twice.

use anyhow::{Result, anyhow};
use futures::StreamExt as _;
use futures::stream::{self, LocalBoxStream};
use serde_json::Value;
use shoal_node::query::{FollowChunk, ProgressLine};

use crate::client::Client;

/// A stream of chunks of lines.
pub type Lines = LocalBoxStream<'static, Result<Vec<String>>>;

/// A container's output from its last `tail` lines on, until it ends (the
/// container stops or is removed). `route` is the container's `follow`
/// route; every line is prefixed with `label`, when given.
pub fn container(client: Client, route: String, tail: u64, label: Option<String>) -> Lines {
    struct St {
        client: Client,
        route: String,
        tail: u64,
        label: Option<String>,
        session: Option<u64>,
        after: u64,
        done: bool,
    }
    let st = St {
        client,
        route,
        tail,
        label,
        session: None,
        after: 0,
        done: false,
    };
    stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let q = match st.session {
            None => format!("?tail={}", st.tail),
            Some(s) => format!("?session={s}&after={}", st.after),
        };
        let got = st
            .client
            .get(&format!("{}{q}", st.route))
            .await
            .and_then(|v| {
                serde_json::from_value::<FollowChunk>(v)
                    .map_err(|e| anyhow!("the daemon sent a malformed log chunk: {e}"))
            });
        let chunk = match got {
            Ok(c) => c,
            Err(e) => {
                st.done = true;
                return Some((Err(e), st));
            }
        };
        let mut lines = Vec::new();
        if chunk.dropped > 0 {
            lines.push(format!(
                "({} line(s) skipped: the output came faster than it could be shown)",
                chunk.dropped
            ));
        }
        lines.extend(chunk.lines.iter().cloned());
        if let Some(l) = &st.label {
            for line in &mut lines {
                *line = format!("{l} | {line}");
            }
        }
        st.session = Some(chunk.session);
        st.after = chunk.first + chunk.lines.len() as u64;
        st.done = chunk.ended;
        Some((Ok(lines), st))
    })
    .boxed_local()
}

/// Progress lines of `route` (a deployment's `progress` route), as
/// `try N | text`; with `follow`, forever (each poll waits for new lines),
/// else one chunk.
pub fn progress(client: Client, route: String, follow: bool) -> Lines {
    struct St {
        client: Client,
        route: String,
        follow: bool,
        after: Option<(u32, u32)>,
        done: bool,
    }
    let st = St {
        client,
        route,
        follow,
        after: None,
        done: false,
    };
    stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let mut q = vec![];
        if let Some((a, s)) = st.after {
            q.push(format!("after={a}/{s}"));
        }
        if st.follow {
            q.push("wait=true".to_string());
        } else {
            st.done = true;
        }
        let route = if q.is_empty() {
            st.route.clone()
        } else {
            format!("{}?{}", st.route, q.join("&"))
        };
        let got = st.client.get(&route).await.and_then(|v: Value| {
            serde_json::from_value::<Vec<ProgressLine>>(v["lines"].clone())
                .map_err(|e| anyhow!("the daemon sent malformed progress: {e}"))
        });
        match got {
            Ok(lines) => {
                if let Some(last) = lines.last() {
                    st.after = Some((last.attempt, last.seq));
                }
                let text = lines
                    .into_iter()
                    .map(|l| format!("try {} | {}", l.attempt, l.text))
                    .collect();
                Some((Ok(text), st))
            }
            Err(e) => {
                st.done = true;
                Some((Err(e), st))
            }
        }
    })
    .boxed_local()
}
