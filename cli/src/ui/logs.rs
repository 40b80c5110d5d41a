//! The deployment page's log feed: what `deploy logs --follow` streams
//! (the deployment's progress and each of its containers' output, each a
//! follow session of the daemon, `crate::follow`), sent to the page as
//! server-sent events instead of printed.
//!
//! One follower per open page runs on the runner's thread (the followers
//! share an `Rc`). It ends when the page goes away (the event stream is
//! dropped, which closes its channel), when the progress stream fails
//! (the deployment is gone, or the node stayed out of reach) or when the
//! dashboard stops (the runner's thread ends, dropping it).
//!
//! Unlike the CLI, which follows a container once, a container whose
//! output ended (it stopped or was restarted) is followed again from its
//! last lines when it runs again; that chunk says `reset`, so the page
//! replaces the container's lines instead of showing them twice.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Result;
use axum::response::sse::Event;
use futures::stream::{LocalBoxStream, SelectAll};
use futures::{Stream, StreamExt as _};
use serde::Serialize;
use tokio::sync::mpsc;

use super::Ui;
use crate::cmd::deploy::{CONTAINER_SCAN, live_containers_of};
use crate::ctx::segment;
use crate::follow;

/// Lines of each container's log a page starts with.
pub const LOG_TAIL: u64 = 200;
/// Chunks waiting for the page to take them; the follower waits beyond
/// this (the daemon keeps the lines meanwhile).
const LOG_CHUNKS: usize = 64;

/// One event of the feed.
#[derive(Debug)]
enum Msg {
    Lines(Chunk),
    /// The feed ends: why.
    Failed(String),
}

/// New lines of one source, as the page gets them (`lines` event).
#[derive(Debug, Serialize)]
struct Chunk {
    /// `progress`, or the container's runtime name.
    source: String,
    /// The lines replace what the page holds of this source.
    reset: bool,
    lines: Vec<String>,
}

/// What a container's follower yields.
enum Followed {
    Lines {
        name: String,
        reset: bool,
        lines: Vec<String>,
    },
    /// Its output ended (stopped, restarted or removed) or its follower
    /// failed.
    Ended { id: String },
}

/// Starts following `deployment` for one page; the page's event stream:
/// `lines` (data: a [`Chunk`] as JSON) and, last, `failed` (data: why).
pub async fn open(
    ui: &Arc<Ui>,
    deployment: String,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let (tx, rx) = mpsc::channel(LOG_CHUNKS);
    ui.runner
        .detach(ui, move |ui| async move {
            let gone = tx.clone();
            tokio::select! {
                () = gone.closed() => {}
                r = feed(&ui, &deployment, &tx) => {
                    if let Err(e) = r {
                        let _ = tx.send(Msg::Failed(format!("{e:#}"))).await;
                    }
                }
            }
        })
        .await?;
    let stop = ui.stop.clone();
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await? {
            Msg::Lines(c) => Event::default()
                .event("lines")
                .data(serde_json::to_string(&c).unwrap_or_default()),
            Msg::Failed(why) => Event::default().event("failed").data(why),
        };
        Some((Ok(event), rx))
    });
    Ok(events.take_until(stop.cancelled_owned()))
}

/// Follows the deployment's progress and containers into `tx` until the
/// progress stream fails or the page goes away (a send fails).
async fn feed(ui: &Ui, deployment: &str, tx: &mpsc::Sender<Msg>) -> Result<()> {
    let ctx = &ui.ctx;
    let detail = ctx.deployment(deployment).await?;
    let d = &detail.deployment;
    let node_route = format!("{}/nodes/{}", ui.base, segment(&d.node_key));
    let progress_route = format!("{node_route}/deployments/{}/progress", segment(&d.id));
    let link = follow::Link::default();
    let mut progress = follow::progress(ctx.client.clone(), progress_route, true, link.clone());
    let mut containers: SelectAll<LocalBoxStream<'static, Followed>> = SelectAll::new();
    // Container id → whether its output is being followed now.
    let mut following: BTreeMap<String, bool> = BTreeMap::new();
    let mut scan = tokio::time::interval(CONTAINER_SCAN);
    let send = |c: Chunk| async move { tx.send(Msg::Lines(c)).await.is_ok() };
    loop {
        tokio::select! {
            _ = scan.tick() => {
                // A failed look is retried at the next scan; an outage is
                // for the followers to notice.
                let Ok(list) = live_containers_of(ctx, &node_route, d).await else { continue };
                for c in list {
                    let again = following.get(&c.id) == Some(&false) && c.state.state == "running";
                    if following.contains_key(&c.id) && !again {
                        continue;
                    }
                    following.insert(c.id.clone(), true);
                    let route = format!("{node_route}/containers/{}/follow", segment(&c.name));
                    let lines = follow::container(ctx.client.clone(), route, LOG_TAIL, None, link.clone());
                    let (id, name) = (c.id, c.name);
                    let mut first = true;
                    let chunks = lines.filter_map(move |chunk| {
                        let reset = std::mem::take(&mut first);
                        // A follower that failed (the container was
                        // removed) ends like one whose output ended.
                        let out = chunk.ok().map(|lines| Followed::Lines { name: name.clone(), reset, lines });
                        async move { out }
                    });
                    let end = futures::stream::once(async move { Followed::Ended { id } });
                    containers.push(chunks.chain(end).boxed_local());
                }
            }
            chunk = progress.next() => match chunk {
                Some(Ok(lines)) if lines.is_empty() => {}
                Some(Ok(lines)) => {
                    if !send(Chunk { source: "progress".into(), reset: false, lines }).await {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            Some(f) = containers.next() => match f {
                Followed::Lines { reset: false, lines, .. } if lines.is_empty() => {}
                Followed::Lines { name, reset, lines } => {
                    if !send(Chunk { source: name, reset, lines }).await {
                        return Ok(());
                    }
                }
                Followed::Ended { id } => {
                    following.insert(id, false);
                }
            },
        }
    }
}
