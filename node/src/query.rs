//! Read-only questions about a node's containers (§4 "Container commands"),
//! asked of the node itself or, over the mesh, of another node of the team.
//!
//! Following (`container logs --follow`, `deploy logs --follow`) streams
//! over the mesh's request-response protocol by long polls: the asking node
//! opens a follow session on the target node, which keeps the runtime's
//! log stream open and buffers its lines; each [`Query::Follow`] returns
//! the lines after the asker's position as soon as there are any (or after
//! [`FOLLOW_WAIT`] with none). No line is lost or repeated while the asker
//! keeps up; when it falls more than [`FOLLOW_BUFFER_LINES`] behind, the
//! answer says how many lines were dropped. Sessions nobody polls for
//! [`FOLLOW_IDLE`] are closed. A deployment's progress (the executor's
//! lines, kept in the node's store) is followed the same way, by
//! [`Query::Progress`] with the position of the last line seen.
//!
//! Listing, logs and inspect change nothing, so they are requests between
//! team nodes (the mesh authenticates both ends), not ops. Everything that
//! changes a container (start, stop, restart, remove) is a signed member op
//! (`container.command`) that the target node's executor carries out, so it
//! is audited like any other change. Inspect output never holds a secret
//! value: the runtime redacts them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use shoal_protocol::TeamId;
use tokio::sync::Notify;

use crate::progress::{parse_progress_key, progress_ns};
use crate::runtime::ContainerInfo;
use crate::runtime::RuntimeFactory;
use crate::store::Store;

/// Most log lines one answer carries.
pub const MAX_LOG_LINES: u64 = 2000;
/// Longest a follow or progress query waits for a new line (well under
/// the mesh's request timeout).
pub const FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// Lines a follow session buffers for its asker.
pub const FOLLOW_BUFFER_LINES: usize = 5000;
/// A follow session nobody polled for this long is closed.
pub const FOLLOW_IDLE: Duration = Duration::from_secs(60);
/// Most follow sessions open at once per team on a node (the least
/// recently polled goes first).
pub const MAX_FOLLOW_SESSIONS: usize = 64;
/// Between two reads of the store while waiting for progress lines.
pub const PROGRESS_POLL: Duration = Duration::from_millis(200);
/// After the first new line, how long an answer waits for more to batch.
const BATCH_WAIT: Duration = Duration::from_millis(50);

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
    /// Follows a container's output: `session` `None` opens a session
    /// (starting with the last `tail` lines); otherwise the lines of that
    /// session from number `after` on.
    Follow {
        container: String,
        tail: Option<u64>,
        session: Option<u64>,
        after: u64,
    },
    /// A deployment's progress lines after position `after` (try, line);
    /// waits for one when `wait` is set and there is none yet.
    Progress {
        deployment: String,
        after: Option<(u32, u32)>,
        wait: bool,
    },
    /// What became of command `id` (a signed op this node carries out).
    CommandResult {
        id: String,
    },
}

/// Lines of a follow session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowChunk {
    pub session: u64,
    /// Number of the first line of `lines` (lines are numbered from 0).
    pub first: u64,
    pub lines: Vec<String>,
    /// Lines between the asker's position and `first` that the buffer no
    /// longer held.
    pub dropped: u64,
    /// The container's output ended (it was removed, or the engine closed
    /// the stream); nothing more will come.
    pub ended: bool,
}

/// One progress line of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressLine {
    pub attempt: u32,
    pub seq: u32,
    pub text: String,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Containers(Vec<ContainerInfo>),
    Logs(Vec<String>),
    /// The inspect document, as JSON text.
    Inspect(String),
    Follow(FollowChunk),
    Progress(Vec<ProgressLine>),
    /// The node could not answer, and why.
    Error(String),
    /// The result line of a command (`done: ...` or `failed: ...`);
    /// `None` while the node has not carried it out.
    CommandResult(Option<String>),
}

/// Answers queries about one team's containers on this node.
pub type QueryHandler =
    Arc<dyn Fn(Query) -> futures::future::BoxFuture<'static, Answer> + Send + Sync>;

/// A handler that asks the node's runtime (made by `runtime` per query)
/// and reads progress lines from `store`.
pub fn runtime_handler(team: TeamId, runtime: RuntimeFactory, store: Arc<Store>) -> QueryHandler {
    let follows = Arc::new(Follows::new());
    Arc::new(move |q| {
        let runtime = Arc::clone(&runtime);
        let store = Arc::clone(&store);
        let follows = Arc::clone(&follows);
        Box::pin(async move {
            let team_hex = team.to_hex();
            if let Query::Progress {
                deployment,
                after,
                wait,
            } = q
            {
                return progress(&store, &team, &deployment, after, wait).await;
            }
            if let Query::CommandResult { id } = &q {
                let ns = format!("commands/{team_hex}");
                return match store.get_local(&ns, id) {
                    Ok(line) => Answer::CommandResult(
                        line.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    ),
                    Err(e) => Answer::Error(format!("cannot read the command's result: {e}")),
                };
            }
            let rt = match runtime().await {
                Ok(rt) => rt,
                Err(e) => return Answer::Error(e.to_string()),
            };
            match q {
                Query::Containers { prefix } => {
                    match rt.containers(&team_hex, prefix.as_deref()).await {
                        Ok(list) => Answer::Containers(list),
                        Err(e) => Answer::Error(e.to_string()),
                    }
                }
                Query::Logs { container, tail } => {
                    let tail = Some(tail.unwrap_or(MAX_LOG_LINES).min(MAX_LOG_LINES));
                    match rt.logs(&team_hex, &container, false, tail).await {
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
                Query::Inspect { container } => match rt.inspect(&team_hex, &container).await {
                    Ok(v) => Answer::Inspect(v.to_string()),
                    Err(e) => Answer::Error(e.to_string()),
                },
                Query::Follow {
                    container,
                    tail,
                    session,
                    after,
                } => {
                    let buf = match session {
                        Some(id) => match follows.get(id) {
                            Some(buf) => buf,
                            None => {
                                return Answer::Error(format!(
                                    "follow session {id} is closed (idle for over {}s); follow again",
                                    FOLLOW_IDLE.as_secs()
                                ));
                            }
                        },
                        None => {
                            let tail = Some(tail.unwrap_or(100).min(MAX_LOG_LINES));
                            match rt.logs(&team_hex, &container, true, tail).await {
                                Ok(stream) => follows.open(stream),
                                Err(e) => return Answer::Error(e.to_string()),
                            }
                        }
                    };
                    Answer::Follow(buf.next(after, FOLLOW_WAIT).await)
                }
                Query::Progress { .. } | Query::CommandResult { .. } => {
                    Answer::Error("unreachable".into())
                }
            }
        })
    })
}

/// The progress lines of `deployment` after `after`, waiting up to
/// [`FOLLOW_WAIT`] for one when `wait` is set.
async fn progress(
    store: &Store,
    team: &TeamId,
    deployment: &str,
    after: Option<(u32, u32)>,
    wait: bool,
) -> Answer {
    let ns = progress_ns(team, deployment);
    let deadline = Instant::now() + FOLLOW_WAIT;
    loop {
        let all = match store.list_local(&ns) {
            Ok(all) => all,
            Err(e) => return Answer::Error(format!("cannot read the progress: {e}")),
        };
        let lines: Vec<ProgressLine> = all
            .into_iter()
            .filter_map(|(k, v)| {
                let (attempt, seq) = parse_progress_key(&k)?;
                let newer = after.is_none_or(|a| (attempt, seq) > a);
                newer.then(|| ProgressLine {
                    attempt,
                    seq,
                    text: String::from_utf8_lossy(&v).into_owned(),
                })
            })
            .take(MAX_LOG_LINES as usize)
            .collect();
        if !lines.is_empty() || !wait || Instant::now() >= deadline {
            return Answer::Progress(lines);
        }
        tokio::time::sleep(PROGRESS_POLL).await;
    }
}

/// The follow sessions of one team on this node.
struct Follows {
    sessions: Mutex<BTreeMap<u64, Arc<FollowBuf>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Follows {
    /// Session numbers start at a random point (below 2^52, so they stay
    /// exact in any JSON reader): after a restart, an asker still holding
    /// a number from before must get "closed", not another session's lines.
    fn new() -> Follows {
        let mut b = [0u8; 8];
        let start = match getrandom::fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b) >> 13,
            // Without randomness, the clock still differs between runs.
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64 >> 1),
        };
        Follows {
            sessions: Mutex::new(BTreeMap::new()),
            next: std::sync::atomic::AtomicU64::new(start),
        }
    }

    /// Opens a session reading `stream` into its buffer.
    fn open(&self, stream: crate::runtime::LogStream) -> Arc<FollowBuf> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let buf = Arc::new(FollowBuf {
            id,
            lines: Mutex::new(Lines::default()),
            notify: Notify::new(),
            reader: Mutex::new(None),
        });
        let reader = tokio::spawn(read_into(stream, Arc::downgrade(&buf)));
        if let Ok(mut r) = buf.reader.lock() {
            *r = Some(AbortOnDrop(reader));
        }
        if let Ok(mut map) = self.sessions.lock() {
            map.retain(|_, b| b.idle() < FOLLOW_IDLE);
            while map.len() >= MAX_FOLLOW_SESSIONS {
                let oldest = map.iter().max_by_key(|(_, b)| b.idle()).map(|(k, _)| *k);
                match oldest {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
            map.insert(id, Arc::clone(&buf));
        }
        buf
    }

    fn get(&self, id: u64) -> Option<Arc<FollowBuf>> {
        let mut map = self.sessions.lock().ok()?;
        map.retain(|_, b| b.idle() < FOLLOW_IDLE);
        map.get(&id).cloned()
    }
}

/// Aborts its task when dropped: a follow session owns its reader.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Default)]
struct Lines {
    /// Number of `buf[0]`.
    first: u64,
    buf: VecDeque<String>,
    ended: bool,
    polled: Option<Instant>,
}

struct FollowBuf {
    id: u64,
    lines: Mutex<Lines>,
    notify: Notify,
    reader: Mutex<Option<AbortOnDrop>>,
}

impl FollowBuf {
    fn idle(&self) -> Duration {
        self.lines
            .lock()
            .ok()
            .and_then(|l| l.polled)
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn chunk(&self, after: u64) -> Option<FollowChunk> {
        let mut l = self.lines.lock().ok()?;
        l.polled = Some(Instant::now());
        let end = l.first + l.buf.len() as u64;
        if after >= end && !l.ended {
            return None;
        }
        let from = after.max(l.first);
        let lines: Vec<String> = l
            .buf
            .iter()
            .skip((from - l.first) as usize)
            .take(MAX_LOG_LINES as usize)
            .cloned()
            .collect();
        Some(FollowChunk {
            session: self.id,
            first: from,
            dropped: from - after,
            ended: l.ended && from + lines.len() as u64 >= end,
            lines,
        })
    }

    /// The lines from `after` on, as soon as there is one (then a moment
    /// more to batch), or none after `wait`.
    async fn next(&self, after: u64, wait: Duration) -> FollowChunk {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.chunk(after).is_some() {
                tokio::time::sleep(BATCH_WAIT).await;
                if let Some(c) = self.chunk(after) {
                    return c;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.chunk(after).unwrap_or(FollowChunk {
                    session: self.id,
                    first: after,
                    lines: Vec::new(),
                    dropped: 0,
                    ended: false,
                });
            }
        }
    }
}

/// Reads a log stream into a session's buffer until it ends or the
/// session is gone.
async fn read_into(mut stream: crate::runtime::LogStream, buf: std::sync::Weak<FollowBuf>) {
    loop {
        let item = stream.next().await;
        let Some(b) = buf.upgrade() else { return };
        let end = !matches!(item, Some(Ok(_)));
        if let Ok(mut l) = b.lines.lock() {
            match item {
                Some(Ok(line)) => {
                    l.buf.push_back(line.text);
                    while l.buf.len() > FOLLOW_BUFFER_LINES {
                        l.buf.pop_front();
                        l.first += 1;
                    }
                }
                Some(Err(e)) => {
                    l.buf.push_back(format!("(the log stream failed: {e})"));
                    l.ended = true;
                }
                None => l.ended = true,
            }
        }
        b.notify.notify_waiters();
        if end {
            return;
        }
    }
}

/// The handler of a node without a container runtime.
pub fn no_runtime() -> QueryHandler {
    Arc::new(|_| {
        Box::pin(async {
            Answer::Error("this node has no container runtime (runtime none)".into())
        })
    })
}
