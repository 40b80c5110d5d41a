//! Live state (§4 "Live state"): what runs on this node now, for the live
//! reports sent with its heartbeats.
//!
//! One [`LiveWatcher`] per team (on a node without a container runtime it
//! reports the host load alone). Its task looks at the team's containers
//! ([`Runtime::live`]) and the host load, and publishes both on a watch
//! channel the team's sync actor reads ([`crate::sync::HeartbeatConfig::live`]).
//! It looks again as soon as the runtime reports a change of one of the
//! team's containers ([`Runtime::changes`]: Docker events, Kubernetes
//! watches of the team's Deployments and pods), after [`EVENT_SETTLE`] so a
//! burst of events costs one look, and every refresh period
//! ([`LIVE_REFRESH`] by default) in any case: the resync when a change
//! stream is down, and the host load's update. The live state is never an
//! op: the sync actor sends it in a signed live report with each heartbeat
//! and, when the containers changed, at once (see `crate::sync`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use libp2p::PeerId;
use shoal_protocol::TeamId;
use shoal_protocol::heartbeat::{HostLoad, Live};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::runtime::{Runtime, RuntimeFactory};

/// Longest time between two looks at the containers and the load, by
/// default (the resync: changes come sooner, through the runtime's events).
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
    /// reported (the node's data directory), `refresh` the longest time
    /// between two looks. It stops when `cancel` fires.
    pub fn spawn(
        team: TeamId,
        runtime: Option<RuntimeFactory>,
        disk: PathBuf,
        refresh: Duration,
        cancel: CancellationToken,
    ) -> (LiveWatcher, watch::Receiver<Option<Box<Live>>>) {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(watch_loop(team, runtime, disk, refresh, tx, cancel.clone()));
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
    refresh: Duration,
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
    // Never zero (an interval of zero panics), never shorter than a settle.
    let mut tick = tokio::time::interval(refresh.max(EVENT_SETTLE));
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

/// After the live state's containers change, how long the sync actor
/// waits for more changes before pushing a live report, so a burst (a
/// deployment starting five containers, after the watcher's own
/// [`EVENT_SETTLE`]) costs one report.
pub const LIVE_PUSH_DEBOUNCE: Duration = Duration::from_millis(250);
/// Shortest time between two live reports pushed to one peer on change: a
/// flapping container costs each peer at most one pushed report per
/// this period (the heartbeats carry one each besides); the latest state
/// goes at the end of the period.
pub const LIVE_PUSH_MIN_GAP: Duration = Duration::from_secs(1);

/// When to push this node's live report to which peer, between
/// heartbeats: the sync actor's bookkeeping, without I/O (the caller gives
/// the time).
///
/// Each change of the containers (not of the host load, nor of the
/// engine's human status such as "Up 3 minutes", which change at every
/// look) makes a new generation; a push is due [`LIVE_PUSH_DEBOUNCE`]
/// after the first change of a burst, and goes to each live-capable peer
/// that does not hold the newest generation yet and was not pushed one in
/// the last [`LIVE_PUSH_MIN_GAP`]; those waiting on that gap make the next
/// push due when it ends. A peer that becomes live-capable (its heartbeat
/// said so) is due one at once.
#[derive(Debug, Default)]
pub struct LivePushes {
    /// Generation of the containers' state: 0 before any was seen.
    generation: u64,
    /// The state last seen, as compared (see [`comparable`]).
    seen: Option<Live>,
    /// Per peer: when an on-change push last went to it, and the
    /// generation it holds. Only connected peers are kept.
    peers: BTreeMap<PeerId, (Option<Instant>, u64)>,
    /// When the next push is due.
    due: Option<Instant>,
}

impl LivePushes {
    /// The live state is now `live`. Returns whether its containers
    /// changed (a push is then due).
    pub fn observe(&mut self, live: Option<&Live>, now: Instant) -> bool {
        let Some(live) = live else { return false };
        let cmp = comparable(live);
        if self.seen.as_ref() == Some(&cmp) {
            return false;
        }
        self.seen = Some(cmp);
        self.generation += 1;
        if self.due.is_none() {
            self.due = Some(now + LIVE_PUSH_DEBOUNCE);
        }
        true
    }

    /// A report holding the newest state seen reached `peer` (with a
    /// heartbeat).
    pub fn delivered(&mut self, peer: PeerId) {
        let generation = self.generation;
        self.peers.entry(peer).or_insert((None, 0)).1 = generation;
    }

    /// `peer` connected or left: it holds nothing of this node's yet.
    pub fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// `peer` became able to decode live reports: it is due one now.
    pub fn ready(&mut self, peer: PeerId, now: Instant) {
        self.peers.entry(peer).or_insert((None, 0)).1 = 0;
        if self.generation > 0 {
            self.due = Some(self.due.map_or(now, |d| d.min(now)));
        }
    }

    /// When the next push is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The push that is due at `now`: the peers of `able` to send the
    /// newest state to (counted as sent). Makes the next push due when
    /// some of them wait on [`LIVE_PUSH_MIN_GAP`].
    pub fn take(&mut self, able: &BTreeSet<PeerId>, now: Instant) -> Vec<PeerId> {
        if self.due.is_none_or(|d| d > now) {
            return Vec::new();
        }
        self.due = None;
        let mut out = Vec::new();
        for peer in able {
            let (last, held) = self.peers.get(peer).copied().unwrap_or((None, 0));
            if held >= self.generation {
                continue;
            }
            match last.map(|l| l + LIVE_PUSH_MIN_GAP) {
                Some(free) if free > now => {
                    self.due = Some(self.due.map_or(free, |d| d.min(free)));
                }
                _ => {
                    self.peers.insert(*peer, (Some(now), self.generation));
                    out.push(*peer);
                }
            }
        }
        out
    }
}

/// What of a live state a push is for: the containers, without the human
/// status (its "Up 3 minutes" changes at every look; the state, health,
/// exit code and restarts say what matters) and without the host load.
fn comparable(live: &Live) -> Live {
    let mut c = live.clone();
    c.load = None;
    for container in &mut c.containers {
        container.status.clear();
    }
    c
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

    fn live(state: &str, status: &str, cpu: u16) -> Live {
        Live {
            runtime: true,
            containers: vec![shoal_protocol::heartbeat::LiveContainer {
                name: "shop-web".into(),
                id: "c0ffee".into(),
                prefix: "shop".into(),
                container: "web".into(),
                deployment: "d1".into(),
                version: "1".into(),
                try_number: 1,
                init: None,
                state: state.into(),
                exit_code: None,
                image: "web:1".into(),
                status: status.into(),
                health: None,
                restarts: 0,
                ports: Vec::new(),
            }],
            truncated: false,
            load: Some(HostLoad {
                cpu_permille: cpu,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_change_of_containers_is_pushed_after_the_debounce_and_the_load_alone_is_not() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let able = BTreeSet::from([a, b]);
        let mut p = LivePushes::default();
        assert!(p.observe(Some(&live("running", "Up 1 second", 10)), t0));
        // The heartbeat carried it to both.
        p.delivered(a);
        p.delivered(b);
        assert!(p.take(&able, t0 + LIVE_PUSH_DEBOUNCE).is_empty());
        // New load figures and a new human status are no change.
        assert!(!p.observe(Some(&live("running", "Up 2 minutes", 900)), t0));
        assert!(!p.observe(None, t0));
        assert_eq!(p.due(), None);
        // The container died: due after the debounce, to both.
        let t1 = t0 + Duration::from_secs(5);
        assert!(p.observe(Some(&live("exited", "Exited (137)", 10)), t1));
        assert_eq!(p.due(), Some(t1 + LIVE_PUSH_DEBOUNCE));
        assert!(p.take(&able, t1).is_empty(), "not before the debounce");
        // A second change within the debounce joins the same push.
        assert!(p.observe(
            Some(&live("restarting", "", 10)),
            t1 + LIVE_PUSH_DEBOUNCE / 2
        ));
        assert_eq!(p.due(), Some(t1 + LIVE_PUSH_DEBOUNCE));
        let sent = p.take(&able, t1 + LIVE_PUSH_DEBOUNCE);
        assert_eq!(sent.len(), 2);
        assert_eq!(p.due(), None);
        // Nothing new: nothing more.
        assert!(p.take(&able, t1 + LIVE_PUSH_MIN_GAP * 3).is_empty());
    }

    #[test]
    fn a_flapping_container_costs_each_peer_one_push_per_gap() {
        let t0 = Instant::now();
        let a = PeerId::random();
        let able = BTreeSet::from([a]);
        let mut p = LivePushes::default();
        let mut pushed = Vec::new();
        let mut now = t0;
        let mut last_change = t0;
        // A change every 50 ms for 10 s; the actor pushes whenever due.
        for i in 0..200u32 {
            let state = if i % 2 == 0 { "running" } else { "exited" };
            p.observe(Some(&live(state, "", 0)), now);
            last_change = now;
            let end = now + Duration::from_millis(50);
            while let Some(due) = p.due().filter(|d| *d <= end) {
                if !p.take(&able, due).is_empty() {
                    pushed.push(due);
                }
            }
            now = end;
        }
        // The last state still goes out, when the gap allows.
        while let Some(due) = p.due() {
            if !p.take(&able, due).is_empty() {
                pushed.push(due);
            }
        }
        assert!(pushed.len() >= 9, "it keeps the peer informed: {pushed:?}");
        assert!(
            pushed.windows(2).all(|w| w[1] - w[0] >= LIVE_PUSH_MIN_GAP),
            "{pushed:?}"
        );
        assert!(*pushed.last().unwrap() > last_change);
    }

    #[test]
    fn a_peer_that_becomes_able_gets_the_state_at_once_and_a_new_one_nothing_before() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut p = LivePushes::default();
        // No state yet: nothing to give.
        p.ready(a, t0);
        assert_eq!(p.due(), None);
        p.observe(Some(&live("running", "", 0)), t0);
        let at = t0 + LIVE_PUSH_DEBOUNCE;
        assert_eq!(p.take(&BTreeSet::from([a]), at), vec![a]);
        // b's heartbeat says it decodes live reports: due now, to b only.
        let t1 = at + Duration::from_millis(10);
        p.ready(b, t1);
        assert_eq!(p.due(), Some(t1));
        assert_eq!(p.take(&BTreeSet::from([a, b]), t1), vec![b]);
        // a reconnected: it is told again (the gap since its last push
        // still holds).
        p.forget(&a);
        p.ready(a, t1);
        assert_eq!(p.take(&BTreeSet::from([a, b]), t1), vec![a]);
    }

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
