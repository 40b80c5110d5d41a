//! Shared helpers for end-to-end tests: run the real `shoal` binary as a
//! process with its own temp config and data dirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod api;

/// The `shoal` binary built by cargo for this workspace, built once if
/// this test run did not build it already.
pub fn shoal_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Integration tests live in their own crate, so the binary sits
            // next to the test executable's directory: target/<profile>/shoal.
            let mut dir = std::env::current_exe().unwrap_or_default();
            dir.pop();
            if dir.ends_with("deps") {
                dir.pop();
            }
            let bin = dir.join("shoal");
            // The directory is named after the profile (`dist` for the
            // shipped binary, see Cargo.toml); `debug` is cargo's `dev`.
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(name) => name.to_string(),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-q", "-p", "shoal", "--bin", "shoal"]);
            cmd.args(["--profile", &profile]);
            // Without the variables cargo sets for this test process: build
            // scripts that track them (ring reads CARGO_MANIFEST_DIR) would
            // otherwise see a change and rebuild half the tree each run.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k == "OUT_DIR"
                    || k.starts_with("CARGO_PKG_")
                    || [
                        "CARGO_MANIFEST_DIR",
                        "CARGO_MANIFEST_PATH",
                        "CARGO_CRATE_NAME",
                        "CARGO_BIN_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                    ]
                    .contains(&k.as_ref())
                {
                    cmd.env_remove(k.as_ref());
                }
            }
            // Cheap when up to date; keeps the binary in step with the sources.
            let _ = cmd.status();
            bin
        })
        .clone()
}

/// A person at one machine: a config dir of their own.
#[derive(Debug)]
pub struct User {
    pub dir: tempfile::TempDir,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl User {
    pub fn new() -> std::io::Result<User> {
        Ok(User {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// This user's default control socket (`SHOAL_SOCKET` for the commands
    /// and daemons run through these helpers), inside the temp dir.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("shoal.sock")
    }

    /// Runs `shoal ARGS` with this user's config dir and socket.
    pub fn shoal(&self, args: &[&str]) -> std::io::Result<Run> {
        self.command(args).output().map(Run::from)
    }

    /// The command `shoal ARGS` with this user's config dir and socket, to
    /// add environment variables or stdin to before running it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(shoal_bin());
        cmd.args(args)
            .env("SHOAL_CONFIG_DIR", self.config_dir())
            .env("SHOAL_SOCKET", self.socket())
            .env_remove("SHOAL_TEAM");
        cmd
    }

    /// Runs `shoal ARGS` with extra environment variables and `stdin`.
    pub fn shoal_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> std::io::Result<Run> {
        use std::io::Write as _;
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.unwrap_or_default().as_bytes())?;
        }
        child.wait_with_output().map(Run::from)
    }
}

/// A daemon process started by a test; killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    pub child: std::process::Child,
    /// Lines the daemon printed before it said `ready`.
    pub banner: Vec<String>,
    /// Later lines.
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `shoal ARGS` for `user` and waits (up to `wait`) for its
    /// `ready` line.
    pub fn start(user: &User, args: &[&str], wait: std::time::Duration) -> std::io::Result<Daemon> {
        Self::spawn(user, Command::new(shoal_bin()).args(args), wait)
    }

    /// Like [`Daemon::start`] with the log level `log` (`SHOAL_LOG`) and
    /// the daemon's stderr (its log lines) written to `stderr`.
    pub fn start_logged(
        user: &User,
        args: &[&str],
        log: &str,
        stderr: &Path,
        wait: std::time::Duration,
    ) -> std::io::Result<Daemon> {
        let file = std::fs::File::create(stderr)?;
        let mut cmd = Command::new(shoal_bin());
        cmd.args(args).env("SHOAL_LOG", log).stderr(file);
        Self::spawn(user, &mut cmd, wait)
    }

    /// Like [`Daemon::start`], but `args` begin with a wrapper command (such
    /// as `ip netns exec NS`) that runs `shoal` with the rest; the word
    /// `shoal` in `args` is replaced by the binary's path.
    pub fn start_wrapped(
        user: &User,
        args: &[&str],
        wait: std::time::Duration,
    ) -> std::io::Result<Daemon> {
        let bin = shoal_bin();
        let (first, rest) = args
            .split_first()
            .ok_or_else(|| std::io::Error::other("no command"))?;
        let mut cmd = Command::new(first);
        for a in rest {
            if *a == "shoal" {
                cmd.arg(&bin);
            } else {
                cmd.arg(a);
            }
        }
        Self::spawn(user, &mut cmd, wait)
    }

    fn spawn(user: &User, cmd: &mut Command, wait: std::time::Duration) -> std::io::Result<Daemon> {
        use std::io::BufRead as _;
        // Quiet daemons unless the run (or the caller) asks for more
        // (SHOAL_LOG=debug); stderr is inherited unless the caller set it.
        if !cmd.get_envs().any(|(k, _)| k == "SHOAL_LOG") {
            let log = std::env::var("SHOAL_LOG").unwrap_or_else(|_| "warn".into());
            cmd.env("SHOAL_LOG", log);
        }
        let mut child = cmd
            .env("SHOAL_CONFIG_DIR", user.config_dir())
            .env("SHOAL_SOCKET", user.socket())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + wait;
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("ready") => {
                    banner.push(line);
                    break;
                }
                Ok(line) => banner.push(line),
                Err(_) => {
                    let _ = child.kill();
                    return Err(std::io::Error::other(format!(
                        "daemon did not get ready; it printed {banner:?}"
                    )));
                }
            }
        }
        Ok(Daemon {
            child,
            banner,
            lines: rx,
        })
    }

    /// Sends SIGTERM, waits for the exit code and returns it with the
    /// lines printed after `ready`.
    pub fn terminate(mut self) -> std::io::Result<(i32, Vec<String>)> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let code = self.child.wait()?.code().unwrap_or(-1);
        let rest = self.lines.try_iter().collect();
        Ok((code, rest))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    /// The last line of stdout (tickets are printed last).
    pub fn last_line(&self) -> String {
        self.stdout.lines().last().unwrap_or_default().to_string()
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The `SHOAL_TEST_*` variables of this process, completed by the env file
/// `scripts/test.sh` writes (`$SHOAL_TEST_STATE_DIR/env`, by default
/// `/tmp/shoal-test-env/env`): the Docker engine, the registries and their
/// credentials. Empty when neither is there.
pub fn test_env_vars() -> std::collections::BTreeMap<String, String> {
    let mut vars: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("SHOAL_TEST_"))
        .collect();
    let dir =
        std::env::var("SHOAL_TEST_STATE_DIR").unwrap_or_else(|_| "/tmp/shoal-test-env".into());
    if let Ok(text) = std::fs::read_to_string(Path::new(&dir).join("env")) {
        for line in text.lines() {
            if let Some((k, v)) = line.trim().trim_start_matches("export ").split_once('=') {
                vars.entry(k.to_string())
                    .or_insert_with(|| v.trim_matches(['"', '\'']).to_string());
            }
        }
    }
    vars
}

/// One machine in a test: a person's config dir, a data dir and a running
/// daemon on loopback (no mDNS).
#[derive(Debug)]
pub struct Peer {
    pub user: User,
    pub data: tempfile::TempDir,
    pub name: String,
    /// Where the mesh listens (`--listen`).
    pub listen: String,
    /// A wrapper the daemon runs under, ending in the word `shoal` (e.g.
    /// `ip netns exec NS shoal`); empty to run it directly.
    pub wrap: Vec<String>,
    /// The daemon's runtime (`none` unless a test sets another).
    pub runtime: String,
    /// More `node run` arguments.
    pub extra: Vec<String>,
    /// When set, the daemon logs at this level (`SHOAL_LOG`) into
    /// [`Peer::log_file`] instead of the test's stderr.
    pub log: Option<String>,
    pub daemon: Option<Daemon>,
}

/// How long a test waits for a daemon to be ready or for replicas to agree.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Peer {
    /// A machine whose daemon is not started yet.
    pub fn new(name: &str) -> std::io::Result<Peer> {
        Ok(Peer {
            user: User::new()?,
            data: tempfile::tempdir()?,
            name: name.to_string(),
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            wrap: Vec::new(),
            runtime: "none".into(),
            extra: Vec::new(),
            log: None,
            daemon: None,
        })
    }

    /// Where the daemon's log lines go when [`Peer::log`] is set.
    pub fn log_file(&self) -> PathBuf {
        self.user.dir.path().join("daemon.log")
    }

    /// Starts the daemon (`node run`, runtime [`Peer::runtime`]) and waits until it is ready.
    pub fn start(&mut self) -> std::io::Result<&mut Peer> {
        let data = self.data.path().to_string_lossy().into_owned();
        let mut args: Vec<String> = self.wrap.clone();
        let run = [
            "node",
            "run",
            "--data-dir",
            &data,
            "--listen",
            &self.listen,
            "--no-mdns",
            "--runtime",
            &self.runtime,
            "--name",
            &self.name,
        ];
        args.extend(run.iter().map(|s| s.to_string()));
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.daemon = Some(if let Some(log) = &self.log {
            Daemon::start_logged(&self.user, &args, log, &self.log_file(), WAIT)?
        } else if self.wrap.is_empty() {
            Daemon::start(&self.user, &args, WAIT)?
        } else {
            Daemon::start_wrapped(&self.user, &args, WAIT)?
        });
        Ok(self)
    }

    /// Stops the daemon with SIGTERM; returns its exit code.
    pub fn stop(&mut self) -> std::io::Result<i32> {
        match self.daemon.take() {
            Some(d) => d.terminate().map(|(code, _)| code),
            None => Ok(0),
        }
    }

    /// Kills the daemon with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }

    /// Runs `shoal ARGS` as this machine's person.
    pub fn shoal(&self, args: &[&str]) -> Run {
        self.user.shoal(args).unwrap_or_else(|e| Run {
            code: -1,
            stdout: String::new(),
            stderr: e.to_string(),
        })
    }

    /// Runs `shoal ARGS` with extra environment variables and `stdin`.
    pub fn shoal_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        self.user
            .shoal_with(args, env, stdin)
            .unwrap_or_else(|e| Run {
                code: -1,
                stdout: String::new(),
                stderr: e.to_string(),
            })
    }

    /// Runs `shoal ARGS` and panics with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.shoal(args);
        assert_eq!(r.code, 0, "shoal {args:?} on {} failed: {r:?}", self.name);
        r
    }

    /// `team show -o json` of this machine's daemon.
    pub fn team(&self) -> Option<serde_json::Value> {
        let r = self.shoal(&["team", "show", "-o", "json"]);
        if r.code != 0 {
            return None;
        }
        serde_json::from_str(&r.stdout).ok()
    }

    /// (ops, state hash) of the team, when the daemon answers.
    pub fn fingerprint(&self) -> Option<(u64, String)> {
        let t = self.team()?;
        Some((t["ops"].as_u64()?, t["state_hash"].as_str()?.to_string()))
    }
}

/// Waits until every peer reports the same state hash; returns it.
pub fn converge(peers: &[&Peer], timeout: std::time::Duration) -> Option<(u64, String)> {
    wait_for(timeout, || {
        let first = peers.first()?.fingerprint()?;
        for p in &peers[1..] {
            if p.fingerprint()? != first {
                return None;
            }
        }
        Some(first)
    })
}

/// A team of an owner's machine and members who joined with tickets, each
/// with a daemon of their own, all on loopback.
pub fn team_of(names: &[&str]) -> std::io::Result<Vec<Peer>> {
    let mut peers = names
        .iter()
        .map(|n| Peer::new(n))
        .collect::<std::io::Result<Vec<_>>>()?;
    form_team(&mut peers)?;
    Ok(peers)
}

/// Starts `peers` (configured, not started): the first creates team `crew`
/// with its person as owner, the others join it as admins with tickets.
pub fn form_team(peers: &mut [Peer]) -> std::io::Result<()> {
    for i in 0..peers.len() {
        let name = peers[i].name.clone();
        peers[i].ok(&["profile", "init", "--name", &format!("{name}-person")]);
        peers[i].start()?;
        if i == 0 {
            peers[i].ok(&["team", "create", "crew"]);
        } else {
            let ticket = peers[0]
                .ok(&["team", "invite", "--role", "admin"])
                .last_line();
            peers[i].ok(&["team", "join", &ticket]);
        }
    }
    Ok(())
}

/// A network namespace with a veth link to the host, made by a test and
/// removed when dropped: the host side is `host_ip`, the namespace side
/// `ns_ip`. Cutting the link partitions the namespace from the host.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub host_ip: String,
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    /// Creates the namespace and link (needs root and iproute2).
    pub fn create(tag: &str) -> std::io::Result<Netns> {
        let id = std::process::id() % 250 + 1;
        let n = Netns {
            name: format!("shoal-{tag}-{}", std::process::id()),
            host_if: format!("sh{tag}{id}h"),
            host_ip: format!("10.201.{id}.1"),
            ns_ip: format!("10.201.{id}.2"),
        };
        let ns_if = format!("sh{tag}{id}n");
        ip(&["netns", "add", &n.name])?;
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &n.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &n.host_if,
        ])?;
        ip(&["link", "set", &n.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &n.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", n.ns_ip), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(n)
    }

    /// The wrapper that runs `shoal` inside the namespace.
    pub fn wrap(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name, "shoal"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Cuts (`false`) or restores (`true`) the link.
    pub fn link(&self, up: bool) -> std::io::Result<()> {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A long-running CLI command (`--follow`) whose stdout and stderr lines
/// are read as they come; killed when dropped.
#[derive(Debug)]
pub struct Follower {
    pub child: std::process::Child,
    out: std::sync::mpsc::Receiver<String>,
    err: std::sync::mpsc::Receiver<String>,
    /// Stdout lines so far.
    pub seen: Vec<String>,
    /// Stderr lines so far.
    pub notes: Vec<String>,
}

/// Sends each line of `pipe` to a channel, from a thread of its own.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(pipe).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

impl Follower {
    /// Starts `shoal ARGS` as `user`, with extra environment variables.
    pub fn spawn(user: &User, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Follower> {
        let mut cmd = user.command(args);
        cmd.envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let err = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        Ok(Follower {
            child,
            out: lines_of(out),
            err: lines_of(err),
            seen: Vec::new(),
            notes: Vec::new(),
        })
    }

    fn drain(&mut self) {
        self.seen.extend(self.out.try_iter());
        self.notes.extend(self.err.try_iter());
    }

    /// Reads lines until `done(stdout lines, stderr lines)` holds, or
    /// `timeout` passes (`Err` with everything printed so far).
    pub fn until(
        &mut self,
        timeout: std::time::Duration,
        done: impl Fn(&[String], &[String]) -> bool,
    ) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.drain();
            if done(&self.seen, &self.notes) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the follower printed {:#?}\nand on stderr {:#?}",
                    self.seen, self.notes
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the command to end; its exit code.
    pub fn exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let code = wait_for(timeout, || {
            self.child
                .try_wait()
                .ok()
                .flatten()
                .map(|s| s.code().unwrap_or(-1))
        });
        if code.is_some() {
            // The pipes closed with the process: read them to their end.
            self.seen.extend(self.out.iter());
            self.notes.extend(self.err.iter());
        }
        code
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
