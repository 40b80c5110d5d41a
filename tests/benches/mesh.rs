//! Mesh benchmark: real `shoal node run` processes on 127.0.0.1, each with
//! temp dirs, driven through their control sockets. It prints figures and
//! asserts nothing about timing. Run it with `scripts/bench-mesh.sh`.
//!
//! Parts (first argument, default `all`):
//! - `latency`: one op written on a random daemon, until every daemon holds
//!   it (p50, p99) for each mesh size of `--sizes`;
//! - `stress`: `--nodes` daemons, each bootstrapped from up to `--fanin`
//!   random earlier ones; `--batches` batches of `--batch-size` ops written
//!   to random daemons, `--parallel` batches at a time; the clock runs from
//!   the last acknowledged write until every daemon holds them all;
//! - `memory`: resident memory of one idle daemon;
//! - `restart`: time from process start until the control API answers with
//!   the full state, for a daemon whose store holds `--restart-ops` ops, and
//!   its resident memory holding them (after writing them, after loading them).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use shoal_protocol::model::ProductKind;
use shoal_protocol::ticket::Ticket;
use shoal_protocol::{Action, Op, OpBody, SecretKey};
use shoal_tests::Peer;

/// How long setup steps (joins, convergence) may take before the run gives up.
const SETUP_WAIT: Duration = Duration::from_secs(180);
/// How long one measurement may take before the run gives up.
const MEASURE_WAIT: Duration = Duration::from_secs(120);
/// The figure of the reference gossip-CRDT system for the stress shape.
const REFERENCE_STRESS_S: f64 = 2.5;
/// Idle memory target of one daemon.
const MEMORY_TARGET_MB: f64 = 20.0;

#[derive(Debug, Clone)]
struct Opts {
    parts: Vec<String>,
    sizes: Vec<usize>,
    samples: usize,
    nodes: usize,
    fanin: usize,
    batches: usize,
    batch_size: usize,
    parallel: usize,
    origins: usize,
    restart_ops: usize,
    settle: Duration,
    poll: Duration,
    stress_poll: Duration,
    seed: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            parts: Vec::new(),
            sizes: vec![3, 10, 30],
            samples: 40,
            nodes: 30,
            fanin: 10,
            batches: 40,
            batch_size: 20,
            parallel: 10,
            origins: 0,
            restart_ops: 10_000,
            settle: Duration::from_secs(10),
            poll: Duration::from_millis(2),
            stress_poll: Duration::from_millis(10),
            seed: 0,
        }
    }
}

const USAGE: &str = "usage: bench-mesh.sh [all|latency|stress|memory|restart]... [options]
  --quick              small sizes for a fast run (sizes 3,10; 20 samples;
                       stress 10 daemons, 10 batches of 20, 5 at a time;
                       restart with 2000 ops)
  --sizes 3,10,30      mesh sizes of the latency part
  --samples N          ops measured per mesh size (40)
  --nodes N            daemons of the stress part (30)
  --fanin N            each daemon joins through up to N random earlier ones (10)
  --batches N          batches written in the stress part (40)
  --batch-size N       ops per batch (20)
  --parallel N         batches written at a time (10)
  --origins N          write to the first N daemons only (default: all);
                       1 is a burst on one node, whose pushes then batch
  --restart-ops N      ops in the store of the restarted daemon (10000)
  --settle-secs N      idle time before memory is read (10)
  --poll-ms N          poll interval of the latency part (2)
  --stress-poll-ms N   poll interval of the stress part (10)
  --seed N             seed of the random choices (default: from the clock)";

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        ..Opts::default()
    };
    let mut args = std::env::args().skip(1);
    let num = |name: &str, v: Option<String>| -> Result<u64> {
        v.ok_or_else(|| anyhow!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} takes a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            // Added by `cargo bench`.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "all" | "latency" | "stress" | "memory" | "restart" => o.parts.push(a),
            "--quick" => {
                o.sizes = vec![3, 10];
                o.samples = 20;
                o.nodes = 10;
                o.batches = 10;
                o.parallel = 5;
                o.restart_ops = 2000;
                o.settle = Duration::from_secs(5);
            }
            "--sizes" => {
                let v = args
                    .next()
                    .ok_or_else(|| anyhow!("--sizes needs a value"))?;
                o.sizes = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--sizes takes numbers such as 3,10,30")?;
            }
            "--samples" => o.samples = num(&a, args.next())? as usize,
            "--nodes" => o.nodes = num(&a, args.next())? as usize,
            "--fanin" => o.fanin = num(&a, args.next())? as usize,
            "--batches" => o.batches = num(&a, args.next())? as usize,
            "--batch-size" => o.batch_size = num(&a, args.next())? as usize,
            "--parallel" => o.parallel = num(&a, args.next())? as usize,
            "--origins" => o.origins = num(&a, args.next())? as usize,
            "--restart-ops" => o.restart_ops = num(&a, args.next())? as usize,
            "--settle-secs" => o.settle = Duration::from_secs(num(&a, args.next())?),
            "--poll-ms" => o.poll = Duration::from_millis(num(&a, args.next())?),
            "--stress-poll-ms" => o.stress_poll = Duration::from_millis(num(&a, args.next())?),
            "--seed" => o.seed = num(&a, args.next())?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.parts.is_empty() || o.parts.iter().any(|p| p == "all") {
        o.parts = ["latency", "stress", "memory", "restart"]
            .map(String::from)
            .to_vec();
    }
    if o.sizes.contains(&0) || o.nodes == 0 || o.parallel == 0 || o.batch_size == 0 {
        bail!("sizes, --nodes, --parallel and --batch-size must be at least 1");
    }
    Ok(o)
}

fn main() -> Result<()> {
    let o = parse_args()?;
    println!(
        "shoal mesh benchmark: {} core(s), seed {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.seed
    );
    let rng = Rng::new(o.seed);
    for part in &o.parts {
        match part.as_str() {
            "latency" => latency(&o, &rng)?,
            "stress" => stress(&o, &rng)?,
            "memory" => memory(&o)?,
            "restart" => restart(&o)?,
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- helpers

/// xorshift64*: enough for picking daemons; no dependency.
#[derive(Debug)]
struct Rng(Mutex<u64>);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(Mutex::new(seed | 1))
    }

    fn below(&self, n: usize) -> usize {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (v % n.max(1) as u64) as usize
    }

    /// Up to `k` distinct numbers below `n`.
    fn pick(&self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..all.len() {
            let j = i + self.below(all.len() - i);
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

/// One HTTP/1.1 request on the daemon's control socket.
fn http(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("connect {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: shoal\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in the answer to {path}"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in the answer to {path}"))?;
    let mut payload = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload)?;
    }
    let v = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    Ok((status, v))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            return Ok(out);
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

fn ok_json(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, v) = http(sock, method, path, body)?;
    if status != 200 {
        bail!("{method} {path}: {status} {v}");
    }
    Ok(v)
}

/// Runs `shoal ARGS` on `p` and returns its stdout, or the failure.
fn cli(p: &Peer, args: &[&str]) -> Result<String> {
    let r = p.shoal(args);
    if r.code != 0 {
        bail!("shoal {args:?} on {}: {}{}", p.name, r.stdout, r.stderr);
    }
    Ok(r.stdout)
}

/// The signing key of `p`'s profile.
fn profile_key(p: &Peer) -> Result<SecretKey> {
    let text = std::fs::read_to_string(p.user.config_dir().join("profile.json"))?;
    let v: Value = serde_json::from_str(&text)?;
    let seed: [u8; 32] = hex::decode(v["signing_seed"].as_str().unwrap_or_default())?
        .try_into()
        .map_err(|_| anyhow!("the profile's signing seed is not 32 bytes"))?;
    Ok(SecretKey::from_seed(seed))
}

fn pid(p: &Peer) -> Option<u32> {
    p.daemon.as_ref().map(|d| d.child.id())
}

/// CPU time a process used so far (user and system), from /proc/PID/stat,
/// whose clock ticks are USER_HZ (100 per second on Linux).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time all daemons of `team` used so far.
fn team_cpu(team: &Team) -> Duration {
    team.peers.iter().filter_map(pid).filter_map(cpu_time).sum()
}

/// A field of /proc/PID/status given in kB, in MB.
fn status_mb(pid: u32, names: &[&str]) -> Option<Vec<f64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    names.iter().map(|n| field(n)).collect()
}

/// Resident memory of a process, in MB (VmRSS, and VmHWM its peak).
fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    match status_mb(pid, &["VmRSS:", "VmHWM:"])?[..] {
        [rss, peak] => Some((rss, peak)),
        _ => None,
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at quantile `q` (nearest rank) of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn summary(v: &mut [Duration]) -> String {
    v.sort();
    let mean = v.iter().sum::<Duration>() / (v.len().max(1) as u32);
    format!(
        "p50 {:7.1} ms  p99 {:7.1} ms  mean {:7.1} ms  min {:6.1} ms  max {:7.1} ms",
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(mean),
        ms(v.first().copied().unwrap_or_default()),
        ms(v.last().copied().unwrap_or_default()),
    )
}

// ---------------------------------------------------------------- a team

/// Daemons of one team on loopback, driven through their sockets.
#[derive(Debug)]
struct Team {
    peers: Vec<Peer>,
    api: Api,
    /// Signing keys of the members whose profiles are on `peers[..writers]`.
    writers: Vec<SecretKey>,
}

impl std::ops::Deref for Team {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The control sockets of a team's daemons (shared by writer threads).
#[derive(Debug)]
struct Api {
    socks: Vec<std::path::PathBuf>,
    /// Team id (hex).
    id: String,
}

impl Api {
    fn route(&self, tail: &str) -> String {
        format!("/v1/teams/{}{tail}", self.id)
    }

    /// Ops applied by daemon `i`.
    fn count(&self, i: usize) -> Result<u64> {
        let v = ok_json(&self.socks[i], "GET", "/v1/teams", None)?;
        v.as_array()
            .and_then(|l| l.iter().find(|t| t["id"] == self.id.as_str()))
            .and_then(|t| t["ops"].as_u64())
            .ok_or_else(|| anyhow!("n{i} does not hold the team yet"))
    }

    /// (ops, state hash) of daemon `i`.
    fn fingerprint(&self, i: usize) -> Result<(u64, String)> {
        let v = ok_json(&self.socks[i], "GET", &self.route(""), None)?;
        Ok((
            v["ops"].as_u64().unwrap_or_default(),
            v["state_hash"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// Team nodes daemon `i` has a connection to.
    fn connected(&self, i: usize) -> Result<usize> {
        let v = ok_json(&self.socks[i], "GET", &self.route("/peers"), None)?;
        Ok(v["peers"].as_array().map_or(0, Vec::len))
    }

    /// The address of daemon `i` (with `/p2p/<peer id>`), from its bootstrap answer.
    fn address(&self, i: usize) -> Result<String> {
        let sock = &self.socks[i];
        let node = ok_json(sock, "GET", "/v1/node", None)?;
        let key: shoal_protocol::PublicKey = node["key"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow!("node key: {e:?}"))?;
        let me = format!(
            "/p2p/{}",
            shoal_node::mesh::peer_id_from_key(&key).map_err(|e| anyhow!("{e}"))?
        );
        let v = ok_json(sock, "GET", &self.route("/bootstrap"), None)?;
        v["bootstrap"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.ends_with(&me))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("n{i} has no address yet"))
    }

    /// Prepares a `product.create` of `author` on daemon `i` and signs it.
    fn prepare(&self, i: usize, author: &SecretKey, name: &str) -> Result<Op> {
        let sock = &self.socks[i];
        let who = author.public().to_hex();
        let ids = ok_json(
            sock,
            "POST",
            &self.route("/ids"),
            Some(&json!({ "author": who, "count": 1 })),
        )?;
        let action = Action::ProductCreate {
            id: ids["ids"][0].as_str().unwrap_or_default().to_string(),
            name: name.to_string(),
            kind: ProductKind::Complex,
            description: String::new(),
            version: None,
        };
        let v = ok_json(
            sock,
            "POST",
            &self.route("/prepare"),
            Some(&json!({ "author": who, "action": action })),
        )?;
        let bytes = hex::decode(v["body"].as_str().unwrap_or_default())?;
        let body: OpBody = postcard::from_bytes(&bytes)?;
        Ok(body.sign(author)?)
    }

    /// Submits a signed op on daemon `i`; returns once it is acknowledged.
    fn submit(&self, i: usize, op: &Op) -> Result<()> {
        ok_json(
            &self.socks[i],
            "POST",
            &self.route("/ops"),
            Some(&json!({ "op": hex::encode(op.encode()) })),
        )?;
        Ok(())
    }

    /// Polls the daemons every `every` until each holds `target` ops;
    /// returns, per daemon, the time from `t0` at which it was seen to.
    fn wait_all(
        &self,
        target: u64,
        t0: Instant,
        every: Duration,
        limit: Duration,
    ) -> Result<Vec<Duration>> {
        let mut seen = vec![None; self.socks.len()];
        loop {
            let mut left = 0;
            for (i, s) in seen.iter_mut().enumerate() {
                if s.is_some() {
                    continue;
                }
                if self.count(i)? >= target {
                    *s = Some(t0.elapsed());
                } else {
                    left += 1;
                }
            }
            if left == 0 {
                return Ok(seen.into_iter().flatten().collect());
            }
            if t0.elapsed() > limit {
                bail!("{left} daemon(s) still lack ops after {limit:?}");
            }
            std::thread::sleep(every);
        }
    }

    /// Waits until every daemon holds the same state, its connections are
    /// up (or `SETUP_WAIT` passed) and no op arrived for a second.
    fn settle(&self) -> Result<u64> {
        let n = self.socks.len();
        let start = Instant::now();
        let mut last: Option<(u64, String)> = None;
        let mut stable_since = Instant::now();
        loop {
            let prints = (0..n)
                .map(|i| self.fingerprint(i))
                .collect::<Result<Vec<_>>>()?;
            let same = prints.windows(2).all(|w| w[0] == w[1]);
            if !same || last.as_ref() != prints.first() {
                stable_since = Instant::now();
                last = prints.first().cloned();
            }
            let links = (0..n)
                .map(|i| self.connected(i))
                .collect::<Result<Vec<_>>>()?;
            let full = links.iter().all(|&c| c + 1 >= n);
            if same && full && stable_since.elapsed() >= Duration::from_secs(1) {
                return Ok(last.map_or(0, |l| l.0));
            }
            if start.elapsed() > SETUP_WAIT {
                bail!(
                    "the team did not settle in {SETUP_WAIT:?}: ops {:?}, connections {links:?}",
                    prints.iter().map(|p| p.0).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Starts `n` daemons: the first creates team `crew`; the next
/// `writers - 1` join as admins with member tickets (so their profiles can
/// sign ops), the rest as nodes with node tickets. Each newcomer's ticket
/// names up to `fanin` random earlier daemons to join through.
fn form(n: usize, writers: usize, fanin: usize, rng: &Rng) -> Result<Team> {
    let t0 = Instant::now();
    let writers = writers.clamp(1, n);
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        let p = Peer::new(&format!("n{i}"))?;
        if i < writers {
            cli(&p, &["profile", "init", "--name", &format!("w{i}")])?;
        }
        peers.push(p);
    }
    for p in &mut peers {
        p.start()?;
    }
    cli(&peers[0], &["team", "create", "crew"])?;
    let id = ok_json(&peers[0].user.socket(), "GET", "/v1/teams/crew", None)?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Every ticket first, so each daemon a newcomer joins through already
    // holds its invite.
    let mut tickets = Vec::new();
    for (i, p) in peers.iter().enumerate().skip(1) {
        let out = if i < writers {
            cli(&peers[0], &["team", "invite", "--role", "admin"])?
        } else {
            cli(&peers[0], &["node", "add", &p.name, "--runtime", "none"])?
        };
        let line = out.lines().last().unwrap_or_default().to_string();
        tickets.push(Ticket::decode(&line)?);
    }
    let socks = peers.iter().map(|p| p.user.socket()).collect();
    let mut team = Team {
        peers,
        api: Api { socks, id },
        writers: Vec::new(),
    };
    let first = shoal_tests::wait_for(SETUP_WAIT, || team.address(0).ok())
        .ok_or_else(|| anyhow!("n0 has no address"))?;
    let mut addrs = vec![first];
    for (k, mut ticket) in tickets.into_iter().enumerate() {
        let i = k + 1;
        ticket.bootstrap = rng
            .pick(i, fanin)
            .into_iter()
            .map(|j| addrs[j].clone())
            .collect();
        let text = ticket.encode()?;
        let verb = if i < writers { "team" } else { "node" };
        cli(&team.peers[i], &[verb, "join", &text])?;
        let addr = shoal_tests::wait_for(SETUP_WAIT, || team.address(i).ok())
            .ok_or_else(|| anyhow!("n{i} has no address after joining"))?;
        addrs.push(addr);
    }
    team.writers = team.peers[..writers]
        .iter()
        .map(profile_key)
        .collect::<Result<_>>()?;
    let ops = team.settle()?;
    println!(
        "  formed a team of {n} daemons in {:.1} s ({ops} ops, full mesh)",
        t0.elapsed().as_secs_f64()
    );
    Ok(team)
}

// ---------------------------------------------------------------- parts

fn latency(o: &Opts, rng: &Rng) -> Result<()> {
    println!(
        "\n== one op reaching every daemon (poll every {:?})",
        o.poll
    );
    let mut rows = Vec::new();
    for &n in &o.sizes {
        let team = form(n, 1, o.fanin, rng)?;
        let mut count = team.settle()?;
        let mut reach = Vec::new();
        let mut acks = Vec::new();
        for s in 0..o.samples {
            let i = rng.below(n);
            let op = team.prepare(i, &team.writers[0], &format!("lat-{s}"))?;
            let t0 = Instant::now();
            team.submit(i, &op)?;
            acks.push(t0.elapsed());
            count += 1;
            let seen = team.wait_all(count, t0, o.poll, MEASURE_WAIT)?;
            reach.push(seen.into_iter().max().unwrap_or_default());
            // Let the last duplicate pushes of this op drain.
            std::thread::sleep(Duration::from_millis(20));
        }
        let line = format!(
            "{n:3} daemons, {} ops: reach all {}\n             submit ack {}",
            o.samples,
            summary(&mut reach),
            summary(&mut acks)
        );
        println!("  {line}");
        rows.push(line);
    }
    println!("\n-- latency summary");
    for r in rows {
        println!("  {r}");
    }
    Ok(())
}

fn stress(o: &Opts, rng: &Rng) -> Result<()> {
    let total = o.batches * o.batch_size;
    println!(
        "\n== stress: {} daemons (each joins through up to {} earlier ones), {} ops as {} batches of {}, {} at a time, to {}",
        o.nodes,
        o.fanin,
        total,
        o.batches,
        o.batch_size,
        o.parallel,
        match o.origins {
            0 => "random daemons".to_string(),
            n => format!("random daemons of the first {n}"),
        }
    );
    let writers = o.parallel.min(o.nodes);
    let team = form(o.nodes, writers, o.fanin, rng)?;
    let base = team.settle()?;
    let origins = match o.origins {
        0 => team.peers.len(),
        n => n.min(team.peers.len()),
    };
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::<String>::new());
    let cpu0 = team_cpu(&team);
    let t_write = Instant::now();
    std::thread::scope(|s| {
        for w in 0..o.parallel {
            let (api, next, failures) = (&team.api, &next, &failures);
            let key = &team.writers[w % team.writers.len()];
            s.spawn(move || {
                loop {
                    let b = {
                        let mut g = next.lock().unwrap_or_else(|e| e.into_inner());
                        if *g >= o.batches {
                            return;
                        }
                        *g += 1;
                        *g - 1
                    };
                    let i = rng.below(origins);
                    for k in 0..o.batch_size {
                        let r = api
                            .prepare(i, key, &format!("s{b}-{k}"))
                            .and_then(|op| api.submit(i, &op));
                        if let Err(e) = r {
                            failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(e.to_string());
                        }
                    }
                }
            });
        }
    });
    let writing = t_write.elapsed();
    let cpu_writing = team_cpu(&team).saturating_sub(cpu0);
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    if !failures.is_empty() {
        bail!("{} write(s) failed, first: {}", failures.len(), failures[0]);
    }
    let t0 = Instant::now();
    let target = base + total as u64;
    let already = (0..team.peers.len())
        .filter(|&i| team.count(i).is_ok_and(|c| c >= target))
        .count();
    let mut seen = team.wait_all(target, t0, o.stress_poll, MEASURE_WAIT)?;
    let conv = seen.iter().max().copied().unwrap_or_default();
    let rss: Vec<f64> = team
        .peers
        .iter()
        .filter_map(pid)
        .filter_map(rss_mb)
        .map(|r| r.0)
        .collect();
    println!(
        "  writing {} ops took {:.2} s ({:.0} ops/s acknowledged)",
        total,
        writing.as_secs_f64(),
        total as f64 / writing.as_secs_f64()
    );
    println!(
        "  CPU of the daemons while writing: {:.1} s ({:.2} ms per op per daemon)",
        cpu_writing.as_secs_f64(),
        ms(cpu_writing) / (total * team.peers.len()).max(1) as f64
    );
    println!(
        "  {already} of {} daemons held all ops when the last write was acknowledged",
        team.peers.len()
    );
    println!("  per daemon, from the last ack: {}", summary(&mut seen));
    println!(
        "  RSS of the daemons after the run: mean {:.1} MB, max {:.1} MB",
        rss.iter().sum::<f64>() / rss.len().max(1) as f64,
        rss.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "\n-- stress summary\n  converged {:.2} s after the last ack (reference system: {REFERENCE_STRESS_S} s; poll {:?})",
        conv.as_secs_f64(),
        o.stress_poll
    );
    Ok(())
}

/// A single daemon with team `crew` of one member.
fn single() -> Result<Team> {
    let mut p = Peer::new("solo")?;
    cli(&p, &["profile", "init", "--name", "w0"])?;
    p.start()?;
    cli(&p, &["team", "create", "crew"])?;
    let id = ok_json(&p.user.socket(), "GET", "/v1/teams/crew", None)?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = profile_key(&p)?;
    let socks = vec![p.user.socket()];
    Ok(Team {
        peers: vec![p],
        api: Api { socks, id },
        writers: vec![key],
    })
}

fn memory(o: &Opts) -> Result<()> {
    println!(
        "\n== idle memory of one daemon (team of one, after {:?})",
        o.settle
    );
    let team = single()?;
    let pid = pid(&team.peers[0]).ok_or_else(|| anyhow!("no daemon"))?;
    std::thread::sleep(o.settle);
    let mut samples = Vec::new();
    for _ in 0..5 {
        if let Some(r) = rss_mb(pid) {
            samples.push(r);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss = samples.iter().map(|r| r.0).fold(0.0, f64::max);
    let peak = samples.iter().map(|r| r.1).fold(0.0, f64::max);
    println!("  RSS {rss:.1} MB (peak {peak:.1} MB); target < {MEMORY_TARGET_MB} MB");
    // Most of it is the binary's code and read-only data, mapped from the
    // file: clean pages the kernel shares with its page cache and may drop.
    // How much is mapped depends on the binary's size and layout and on
    // the kernel's fault-around and readahead, not on what the daemon holds.
    if let Some([anon, file]) = status_mb(pid, &["RssAnon:", "RssFile:"]).as_deref() {
        println!(
            "  of which anonymous (heap, stacks) {anon:.1} MB, mapped from files {file:.1} MB"
        );
    }
    println!("\n-- memory summary\n  idle RSS {rss:.1} MB (target < {MEMORY_TARGET_MB} MB)");
    Ok(())
}

fn restart(o: &Opts) -> Result<()> {
    println!(
        "\n== restart of a daemon whose store holds {} ops",
        o.restart_ops
    );
    let mut team = single()?;
    let t = Instant::now();
    for k in 0..o.restart_ops {
        let op = team.prepare(0, &team.writers[0], &format!("r{k}"))?;
        team.submit(0, &op)?;
    }
    let wrote = t.elapsed();
    let ops = team.count(0)?;
    println!(
        "  wrote {} ops through the API in {:.1} s ({:.0} ops/s, one writer, each committed)",
        o.restart_ops,
        wrote.as_secs_f64(),
        o.restart_ops as f64 / wrote.as_secs_f64()
    );
    let pid = pid(&team.peers[0]).ok_or_else(|| anyhow!("no daemon"))?;
    if let Some((rss, _)) = rss_mb(pid) {
        println!("  RSS holding {ops} ops: {rss:.1} MB");
    }
    let mut rows = Vec::new();
    // A crash first (the store's last snapshot is at a multiple of 1000
    // ops; the rest is replayed), then a clean stop (snapshot at shutdown).
    for (how, kill) in [("after SIGKILL", true), ("after SIGTERM", false)] {
        let t = Instant::now();
        if kill {
            team.peers[0].kill();
        } else {
            let code = team.peers[0].stop()?;
            if code != 0 {
                bail!("the daemon exited with {code}");
            }
        }
        let stopped = t.elapsed();
        let size = dir_size(team.peers[0].data.path());
        let t0 = Instant::now();
        team.peers[0].start()?;
        let ready = t0.elapsed();
        while !team.count(0).is_ok_and(|c| c >= ops) {
            if t0.elapsed() > MEASURE_WAIT {
                bail!("the restarted daemon did not answer with {ops} ops");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let full = t0.elapsed();
        // What a daemon that loaded the store (rather than wrote it) holds.
        let rss = crate::pid(&team.peers[0])
            .and_then(rss_mb)
            .map_or_else(|| "?".to_string(), |r| format!("{:.1}", r.0));
        let line = format!(
            "{how}: state of {ops} ops served {:.0} ms after process start (ready line at {:.0} ms; stop took {:.0} ms; data dir {:.1} MB; RSS then {rss} MB)",
            ms(full),
            ms(ready),
            ms(stopped),
            size as f64 / 1e6
        );
        println!("  {line}");
        rows.push(line);
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("\n-- restart summary");
    for r in rows {
        println!("  {r}");
    }
    Ok(())
}
