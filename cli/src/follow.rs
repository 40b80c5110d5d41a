//! Following output that another node keeps: a container's logs and a
//! deployment's progress, each as a stream of chunks of lines.
//!
//! Each chunk is one long poll of the local daemon, which asks the target
//! node over the mesh; the node answers as soon as it has a new line (see
//! `shoal_node::query`), so lines arrive as they are written, in order,
//! none twice.
//!
//! A follower outlives a lost connection: when a poll fails for a reason
//! that may pass (the daemon restarting, the target node out of reach for
//! a while; [`ClientError::is_transient`]) it says so once on stderr,
//! retries with a bounded backoff from the same position (the node's
//! follow session and line number, or the last progress line seen) and
//! says when it follows again. It gives up after [`GIVE_UP`] without an
//! answer. Any other error ends the stream at once.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use futures::StreamExt as _;
use futures::stream::{self, LocalBoxStream};
use serde::de::DeserializeOwned;
use shoal_api::containers::{FollowChunk, ProgressLines};

use crate::client::{Client, ClientError};

/// A stream of chunks of lines.
pub type Lines = LocalBoxStream<'static, Result<Vec<String>>>;

/// First wait before asking again after a transient failure.
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The wait doubles after each failure up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// A follower that got no answer for this long stops with an error.
pub const GIVE_UP: Duration = Duration::from_secs(60);
/// Overrides [`GIVE_UP`], in milliseconds (for tests).
pub const GIVE_UP_ENV: &str = "SHOAL_FOLLOW_GIVE_UP_MS";

/// [`GIVE_UP`], or the value of [`GIVE_UP_ENV`] when it is set.
fn give_up() -> Duration {
    std::env::var(GIVE_UP_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GIVE_UP, Duration::from_millis)
}

/// Waits between the attempts of one follower while its polls fail.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    /// When the current run of failures began.
    since: Option<Instant>,
    give_up: Duration,
}

impl Backoff {
    pub fn new(give_up: Duration) -> Backoff {
        Backoff {
            next: RETRY_FIRST,
            since: None,
            give_up,
        }
    }

    /// A poll failed at `now`: how long to wait before the next one, or
    /// `None` when failures have lasted [`GIVE_UP`] already.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        let since = *self.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= self.give_up {
            return None;
        }
        let wait = self.next.min(self.give_up - elapsed);
        self.next = (self.next * 2).min(RETRY_MAX);
        Some(wait)
    }

    /// A poll succeeded: the next failure starts from the first wait.
    pub fn succeeded(&mut self) {
        self.next = RETRY_FIRST;
        self.since = None;
    }

    /// How long failures have lasted.
    fn failing_for(&self, now: Instant) -> Duration {
        self.since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// Whether the followers of one command are cut off, shared by them so
/// an outage is announced once, not once per stream.
#[derive(Debug, Clone, Default)]
pub struct Link(Rc<LinkState>);

#[derive(Debug, Default)]
struct LinkState {
    lost: Cell<bool>,
    /// Counts outages: only a poll begun during the current one proves
    /// it over (one begun before may still be answered by a stopping
    /// daemon).
    outage: Cell<u64>,
}

impl Link {
    /// The outage a poll begins in, if any.
    fn during(&self) -> Option<u64> {
        self.0.lost.get().then(|| self.0.outage.get())
    }

    fn lost(&self, why: &ClientError) {
        if !self.0.lost.replace(true) {
            self.0.outage.set(self.0.outage.get() + 1);
            let what = match why {
                ClientError::NoDaemon { .. } | ClientError::Broken { .. } => {
                    "connection to the daemon lost"
                }
                _ => "the daemon cannot reach the node",
            };
            eprintln!("({what}: {why}; retrying…)");
        }
    }

    /// A poll begun during outage `began` was answered.
    fn up(&self, began: Option<u64>) {
        if began.is_some() && began == self.during() {
            self.0.lost.set(false);
            eprintln!("(reconnected; following again)");
        }
    }

    /// Whether an outage is going on.
    pub fn is_lost(&self) -> bool {
        self.0.lost.get()
    }
}

/// One poll of `route`, retried while it fails transiently; `Err` when it
/// failed otherwise or for too long.
async fn poll<T: DeserializeOwned>(
    client: &Client,
    route: &str,
    backoff: &mut Backoff,
    link: &Link,
) -> Result<T, ClientError> {
    loop {
        let began = link.during();
        match client.try_get(route).await {
            Ok(v) => {
                backoff.succeeded();
                link.up(began);
                return Ok(v);
            }
            Err(e) if e.is_transient() => match backoff.failed(Instant::now()) {
                Some(wait) => {
                    link.lost(&e);
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// The error of a follower that gave up or was refused.
fn failure(e: ClientError, backoff: &Backoff) -> anyhow::Error {
    if e.is_transient() {
        anyhow!(
            "gave up following after {}s without an answer: {e}; check that the daemon runs \
             (`shoal node run` or `shoal up`) and that the node is online (`shoal node list`)",
            backoff.failing_for(Instant::now()).as_secs()
        )
    } else {
        e.into()
    }
}

/// A container's output from its last `tail` lines on, until it ends (the
/// container stops or is removed). `route` is the container's `follow`
/// route; every line is prefixed with `label`, when given.
pub fn container(
    client: Client,
    route: String,
    tail: u64,
    label: Option<String>,
    link: Link,
) -> Lines {
    struct St {
        client: Client,
        route: String,
        tail: u64,
        label: Option<String>,
        session: Option<u64>,
        after: u64,
        done: bool,
        backoff: Backoff,
        link: Link,
    }
    let st = St {
        client,
        route,
        tail,
        label,
        session: None,
        after: 0,
        done: false,
        backoff: Backoff::new(give_up()),
        link,
    };
    stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let got = loop {
            let q = match st.session {
                None => format!("?tail={}", st.tail),
                Some(s) => format!("?session={s}&after={}", st.after),
            };
            let route = format!("{}{q}", st.route);
            match poll(&st.client, &route, &mut st.backoff, &st.link).await {
                // The node no longer holds the session (it restarted, or
                // nobody polled it for a while): a new one from the end,
                // so nothing already shown comes again. If the node
                // refuses that too, the container is gone.
                Err(e) if e.is_node_refusal() && st.session.is_some() => {
                    eprintln!("(the node closed the follow session: {e}; following again from now, lines written meanwhile may be missing)");
                    st.session = None;
                    st.tail = 0;
                }
                Err(e) => break Err(failure(e, &st.backoff)),
                Ok(chunk) => break Ok::<FollowChunk, anyhow::Error>(chunk),
            }
        };
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
pub fn progress(client: Client, route: String, follow: bool, link: Link) -> Lines {
    struct St {
        client: Client,
        route: String,
        follow: bool,
        after: Option<(u32, u32)>,
        done: bool,
        backoff: Backoff,
        link: Link,
    }
    let st = St {
        client,
        route,
        follow,
        after: None,
        done: false,
        // Without `follow`, one answer is asked for: fail at once.
        backoff: Backoff::new(if follow { give_up() } else { Duration::ZERO }),
        link,
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
        let got = match poll(&st.client, &route, &mut st.backoff, &st.link).await {
            Ok(ProgressLines { lines }) => Ok::<_, anyhow::Error>(lines),
            Err(e) if !st.follow => Err(e.into()),
            Err(e) => Err(failure(e, &st.backoff)),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_its_bound_and_gives_up_after_a_while() {
        let t0 = Instant::now();
        let mut b = Backoff::new(GIVE_UP);
        let waits: Vec<u64> = (0..8)
            .map(|_| b.failed(t0).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        // The last wait ends at the deadline, not past it.
        assert_eq!(
            b.failed(t0 + GIVE_UP - Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(b.failed(t0 + GIVE_UP), None);
        // An answer starts a new run of failures, from the first wait.
        b.succeeded();
        let t1 = t0 + GIVE_UP * 2;
        assert_eq!(b.failed(t1), Some(RETRY_FIRST));
        assert_eq!(b.failed(t1 + GIVE_UP / 2), Some(RETRY_FIRST * 2));
    }

    #[test]
    fn only_a_poll_begun_during_an_outage_ends_it() {
        let link = Link::default();
        let lost = ClientError::Request("x".into());
        let before = link.during();
        assert_eq!(before, None);
        link.lost(&lost);
        let during = link.during();
        // Answered, but asked before the outage: proves nothing.
        link.up(before);
        assert!(link.is_lost());
        link.up(during);
        assert!(!link.is_lost());
        // A second outage is not ended by a poll of the first.
        link.lost(&lost);
        link.up(during);
        assert!(link.is_lost());
        link.up(link.during());
        assert!(!link.is_lost());
    }

    #[test]
    fn without_time_to_wait_the_first_failure_is_the_last() {
        let mut b = Backoff::new(Duration::ZERO);
        assert_eq!(b.failed(Instant::now()), None);
    }

    fn status(code: u16) -> ClientError {
        ClientError::Status {
            status: hyper::StatusCode::from_u16(code).unwrap(),
            message: "m".into(),
        }
    }

    #[test]
    fn a_lost_daemon_or_an_unreachable_node_is_worth_retrying_a_refusal_is_not() {
        let gone = ClientError::NoDaemon {
            path: "/run/shoal/shoal.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(gone.is_transient());
        assert!(gone.to_string().contains("shoal up"));
        // Stopping (503), the node did not answer (504), internal (500).
        for code in [500, 503, 504] {
            assert!(status(code).is_transient(), "{code}");
            assert!(!status(code).is_node_refusal(), "{code}");
        }
        // The node's own answer (no such container, session closed).
        assert!(!status(502).is_transient());
        assert!(status(502).is_node_refusal());
        // Mistakes in the request: unknown team, node, deployment.
        for code in [400, 404, 409, 422] {
            assert!(!status(code).is_transient(), "{code}");
            assert!(!status(code).is_node_refusal(), "{code}");
        }
        let bad = ClientError::NotJson {
            status: hyper::StatusCode::OK,
            source: serde_json::from_str::<serde_json::Value>("<html>").unwrap_err(),
        };
        assert!(!bad.is_transient());
    }
}
