//! Live state (§4 "Live state"): what runs on this node now, for the live
//! reports sent with its heartbeats.
//!
//! One [`LiveWatcher`] per team (on a node without a container runtime it
//! reports the host load alone). Its task looks at the team's containers ([`Runtime::live`]) and the host
//! load, and publishes both on a watch channel the team's heartbeats read
//! ([`crate::sync::HeartbeatConfig::live`]). It looks again as soon as the
//! runtime reports a change of one of the team's containers (Docker
//! events), after a short settle so a burst of events costs one look, and
//! every [`LIVE_REFRESH`] in any case (the Kubernetes runtime reports no
//! events: it is looked at on that period). The live state is never an op:
//! it goes out in a live report with the next heartbeat (to peers that
//! decode live reports) and is replaced by the one after.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use shoal_protocol::TeamId;
use shoal_protocol::heartbeat::{HostLoad, Live};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::runtime::{Runtime, RuntimeFactory};

/// Longest time between two looks at the containers and the load.
pub const LIVE_REFRESH: Duration = Duration::from_secs(10);
/// After a change event, how long to wait for more before looking, so a
/// burst (a deployment starting five containers) costs one look.
pub const EVENT_SETTLE: Duration = Duration::from_millis(300);

/// The running watcher of one team: owns its task.
#[derive(Debug)]
pub struct LiveWatcher {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl LiveWatcher {
    /// Spawns the watcher; `disk` is the path whose file system's use is
    /// reported (the node's data directory). It stops when `cancel` fires.
    pub fn spawn(
        team: TeamId,
        runtime: Option<RuntimeFactory>,
        disk: PathBuf,
        cancel: CancellationToken,
    ) -> (LiveWatcher, watch::Receiver<Option<Box<Live>>>) {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(watch_loop(team, runtime, disk, tx, cancel.clone()));
        (LiveWatcher { cancel, task }, rx)
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

async fn watch_loop(
    team: TeamId,
    factory: Option<RuntimeFactory>,
    disk: PathBuf,
    tx: watch::Sender<Option<Box<Live>>>,
    cancel: CancellationToken,
) {
    let team_hex = team.to_hex();
    let mut cpu = CpuSampler::default();
    let mut runtime: Option<std::sync::Arc<dyn Runtime>> = None;
    let mut events: Option<BoxStream<'static, ()>> = None;
    // A stream that ended is asked for again at the next period, not at
    // once: an engine that keeps closing it must not make this a busy loop.
    let mut ended = false;
    let mut tick = tokio::time::interval(LIVE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let (None, Some(f)) = (&runtime, &factory) {
            runtime = f().await.ok();
        }
        if let (Some(rt), None, false) = (&runtime, &events, ended) {
            events = rt.changes(&team_hex).await.ok();
        }
        let load = host_load(&mut cpu, &disk);
        let containers = match &runtime {
            Some(rt) => match rt.live(&team_hex).await {
                Ok(c) => Some(c),
                Err(e) => {
                    debug!(team = %team.short(), "cannot read the live state: {e}");
                    // Connect again at the next look (the engine may have restarted).
                    runtime = None;
                    events = None;
                    None
                }
            },
            None => None,
        };
        let live = containers.map(|containers| {
            Live {
                runtime: true,
                containers,
                truncated: false,
                load,
            }
            .bounded()
        });
        let live = live.or_else(|| {
            load.map(|load| Live {
                runtime: false,
                containers: Vec::new(),
                truncated: false,
                load: Some(load),
            })
        });
        tx.send_replace(live.map(Box::new));
        // Wait for a change event or the next period.
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => ended = false,
            next = next_event(&mut events) => {
                if next.is_none() {
                    // The engine closed the stream: ask for a new one at
                    // the next period.
                    events = None;
                    ended = true;
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(EVENT_SETTLE) => {}
                }
                drain(&mut events);
            }
        }
    }
    debug!(team = %team.short(), "live watcher stopped");
}

async fn next_event(events: &mut Option<BoxStream<'static, ()>>) -> Option<()> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Takes the events that arrived while settling, without waiting.
fn drain(events: &mut Option<BoxStream<'static, ()>>) {
    let Some(s) = events else { return };
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        match s.poll_next_unpin(&mut cx) {
            std::task::Poll::Ready(Some(())) => continue,
            // Ended while settling: the loop asks for a new one once; if
            // that one ends at once too, it waits for the next period.
            std::task::Poll::Ready(None) => {
                *events = None;
                return;
            }
            std::task::Poll::Pending => return,
        }
    }
}

/// The CPU counters of the previous look, to measure the share busy since.
#[derive(Debug, Default)]
struct CpuSampler {
    last: Option<(u64, u64)>,
}

/// The host's load: CPU busy since the previous look, memory from
/// `/proc/meminfo`, disk of `disk`'s file system. `None` when `/proc` or
/// the file system cannot be read (not Linux).
fn host_load(cpu: &mut CpuSampler, disk: &std::path::Path) -> Option<HostLoad> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let (busy, total, cpus) = parse_cpu(&stat)?;
    let cpu_permille = match cpu.last.replace((busy, total)) {
        Some((b0, t0)) if total > t0 => {
            let share = busy.saturating_sub(b0).saturating_mul(1000) / (total - t0);
            u16::try_from(share.min(1000)).unwrap_or(1000)
        }
        _ => 0,
    };
    let (memory_total_bytes, memory_available) = parse_meminfo(&meminfo)?;
    let (disk_total_bytes, disk_used_bytes) = match rustix::fs::statvfs(disk) {
        Ok(v) => {
            let total = v.f_blocks.saturating_mul(v.f_frsize);
            let free = v.f_bfree.saturating_mul(v.f_frsize);
            (total, total.saturating_sub(free))
        }
        Err(_) => (0, 0),
    };
    Some(HostLoad {
        cpu_permille,
        cpus,
        memory_used_bytes: memory_total_bytes.saturating_sub(memory_available),
        memory_total_bytes,
        disk_used_bytes,
        disk_total_bytes,
    })
}

/// From `/proc/stat`: busy and total jiffies of all CPUs, and the number
/// of CPUs.
fn parse_cpu(stat: &str) -> Option<(u64, u64, u16)> {
    let mut lines = stat.lines();
    let all = lines.next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = all
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let cpus = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((
        total.saturating_sub(idle),
        total,
        u16::try_from(cpus).unwrap_or(u16::MAX),
    ))
}

/// From `/proc/meminfo`: total and available memory, in bytes.
fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb.saturating_mul(1024))
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 50 2 25 400 20 0 0 0 0 0\ncpu1 50 3 25 400 25 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_cpu(stat), Some((155, 1000, 2)));
        let mem = "MemTotal:        4000 kB\nMemFree:  100 kB\nMemAvailable:    1000 kB\n";
        assert_eq!(parse_meminfo(mem), Some((4000 * 1024, 1000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn this_host_has_a_load() {
        let mut cpu = CpuSampler::default();
        let first = host_load(&mut cpu, std::path::Path::new("/")).unwrap();
        assert!(first.memory_total_bytes > 0 && first.memory_used_bytes > 0);
        assert!(first.memory_used_bytes <= first.memory_total_bytes);
        assert!(first.disk_total_bytes > 0 && first.cpus > 0);
        let second = host_load(&mut cpu, std::path::Path::new("/")).unwrap();
        assert!(second.cpu_permille <= 1000);
    }
}
