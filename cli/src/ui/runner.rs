//! Where the dashboard runs the CLI's commands: their futures are not
//! `Send` (the followers of `deploy logs` share an `Rc`), so they run on
//! one thread of their own, in a `LocalSet`, each as a local task, while
//! the server's handlers wait for their answers. The thread ends when the
//! dashboard stops (its cancellation token), dropping the tasks it still
//! holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Ui;

/// Commands waiting to be started on the runner's thread; a handler waits
/// for room beyond this.
const QUEUED_COMMANDS: usize = 16;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The handle the handlers send commands through.
#[derive(Debug, Clone)]
pub struct Runner {
    tx: mpsc::Sender<Job>,
}

/// Starts the runner's thread; it stops when `stop` is cancelled.
pub fn start(stop: CancellationToken) -> Result<(Runner, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUED_COMMANDS);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the dashboard's command runtime: {e}"))?;
    let thread = std::thread::Builder::new()
        .name("shoal-ui-commands".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        job = rx.recv() => match job {
                            Some(job) => {
                                tokio::task::spawn_local(job());
                            }
                            None => break,
                        },
                    }
                }
            });
        })
        .map_err(|e| anyhow!("cannot start the dashboard's command thread: {e}"))?;
    Ok((Runner { tx }, thread))
}

impl Runner {
    /// Runs `f(ui)` on the runner's thread; its result.
    pub async fn run<F, Fut>(&self, ui: &Arc<Ui>, f: F) -> Result<String>
    where
        F: FnOnce(Arc<Ui>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<String>> + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let ui = ui.clone();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = reply.send(f(ui).await);
            })
        });
        let stopping = || anyhow!("the dashboard is stopping");
        self.tx.send(job).await.map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }

    /// Starts `f(ui)` on the runner's thread without waiting for its end:
    /// for a task that feeds a page until the page goes away (it watches
    /// its own channel for that) or the dashboard stops.
    pub async fn detach<F, Fut>(&self, ui: &Arc<Ui>, f: F) -> Result<()>
    where
        F: FnOnce(Arc<Ui>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let ui = ui.clone();
        let job: Job = Box::new(move || Box::pin(f(ui)));
        self.tx
            .send(job)
            .await
            .map_err(|_| anyhow!("the dashboard is stopping"))
    }
}
