//! Watches of a team's Deployments and pods: in one namespace they wake a
//! try waiting for its rollouts; in every namespace they tell the live
//! state (`crate::live`) to look again.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::runtime::common::error_chain;

/// How long the server keeps one watch open (kube's default, under the
/// client's read timeout).
const WATCH_TIMEOUT_S: u32 = 290;
/// Time before a failed watch is tried again; it doubles with each
/// failure in a row, up to [`WATCH_RETRY_MAX`].
const WATCH_RETRY: Duration = Duration::from_secs(2);
/// Longest time between two tries of a watch that keeps failing (one the
/// cluster forbids, say): each try lists, which makes the live state look
/// again, so retrying every few seconds for the node's life would poll.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(60);

/// Says when an object it watches changes: one watch of Deployments and
/// one of pods, re-established when the server ends them; its tasks stop
/// when it is dropped (it is their only owner).
pub(super) struct ChangeWatch {
    changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl ChangeWatch {
    /// Watches the objects matching `selector` in namespace `ns`.
    pub(super) fn start(client: &Client, ns: &str, selector: &str) -> Self {
        Self::spawn(
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            selector,
        )
    }

    /// Watches the objects matching `selector` in every namespace (the
    /// team's containers may be in any prefix).
    pub(super) fn everywhere(client: &Client, selector: &str) -> Self {
        Self::spawn(
            Api::<Deployment>::all(client.clone()),
            Api::<Pod>::all(client.clone()),
            selector,
        )
    }

    fn spawn(deployments: Api<Deployment>, pods: Api<Pod>, selector: &str) -> Self {
        let changed = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(watch_kind(
                deployments,
                selector.to_owned(),
                changed.clone(),
            )),
            tokio::spawn(watch_kind(pods, selector.to_owned(), changed.clone())),
        ];
        Self { changed, tasks }
    }

    /// Returns once something changed since the last call (at once when it
    /// already has: many changes make one wake-up).
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The changes as a stream of wake-ups that owns the watches: dropping
    /// the stream stops them.
    pub(super) fn into_stream(self) -> BoxStream<'static, ()> {
        futures::stream::unfold(self, |w| async move {
            w.changed().await;
            Some(((), w))
        })
        .boxed()
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How a watch of one kind ended.
enum WatchEnd {
    /// The server closed it (its timeout): watch again from the last
    /// version seen.
    Closed,
    /// The version is older than the server keeps (410 Gone): list again.
    Expired,
    /// Any other error: list again after [`WATCH_RETRY`] (more when it
    /// keeps failing).
    Failed,
}

/// Watches the objects of `api` matching `selector` for as long as the
/// task lives, notifying `changed` on every change.
async fn watch_kind<K>(api: Api<K>, selector: String, changed: Arc<Notify>)
where
    K: kube::Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
{
    let mut retry = WATCH_RETRY;
    loop {
        // The version to watch from. Changes made while no watch was open
        // are not seen, so the waiting try checks again.
        let lp = ListParams::default().labels(&selector).limit(1);
        let mut version = match api.list(&lp).await {
            Ok(list) => list.metadata.resource_version.unwrap_or_default(),
            Err(e) => {
                debug!(error = %error_chain(&e), "cannot list for a watch; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(WATCH_RETRY_MAX);
                continue;
            }
        };
        changed.notify_one();
        loop {
            let opened = Instant::now();
            let end = watch_once(&api, &selector, &mut version, &changed).await;
            // A watch that served a while was no failure in a row.
            if !matches!(end, WatchEnd::Failed) || opened.elapsed() >= WATCH_RETRY_MAX {
                retry = WATCH_RETRY;
            }
            match end {
                // A server that ends watches (or expires their version) at
                // once must not make a busy loop.
                WatchEnd::Closed => pause_after(opened).await,
                WatchEnd::Expired => {
                    pause_after(opened).await;
                    break;
                }
                WatchEnd::Failed => {
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(WATCH_RETRY_MAX);
                    break;
                }
            }
        }
    }
}

/// Waits what is left of [`WATCH_RETRY`] since `opened`.
async fn pause_after(opened: Instant) {
    if let Some(rest) = WATCH_RETRY.checked_sub(opened.elapsed()) {
        tokio::time::sleep(rest).await;
    }
}

/// One watch request from `version`, which follows the events.
async fn watch_once<K>(
    api: &Api<K>,
    selector: &str,
    version: &mut String,
    changed: &Notify,
) -> WatchEnd
where
    K: kube::Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
{
    let wp = WatchParams::default()
        .labels(selector)
        .timeout(WATCH_TIMEOUT_S);
    let stream = match api.watch(&wp, version).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 410 => return WatchEnd::Expired,
        Err(e) => {
            debug!(error = %error_chain(&e), "cannot watch; retrying");
            return WatchEnd::Failed;
        }
    };
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => {
                if let Some(v) = o.meta().resource_version.clone() {
                    *version = v;
                }
                changed.notify_one();
            }
            Ok(WatchEvent::Bookmark(b)) => *version = b.metadata.resource_version,
            Ok(WatchEvent::Error(s)) if s.code == 410 => return WatchEnd::Expired,
            Err(kube::Error::Api(s)) if s.code == 410 => return WatchEnd::Expired,
            Ok(WatchEvent::Error(s)) => {
                debug!(code = s.code, message = %s.message, "the watch failed; retrying");
                return WatchEnd::Failed;
            }
            Err(e) => {
                debug!(error = %error_chain(&e), "the watch failed; retrying");
                return WatchEnd::Failed;
            }
        }
    }
    WatchEnd::Closed
}
