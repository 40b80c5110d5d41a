//! Shared helpers for end-to-end tests: run the real `shoal` binary as a
//! process with its own temp config and data dirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
            let release = dir.ends_with("release");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-q", "-p", "shoal", "--bin", "shoal"]);
            if release {
                cmd.arg("--release");
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
        Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_CONFIG_DIR", self.config_dir())
            .env("SHOAL_SOCKET", self.socket())
            .env_remove("SHOAL_TEAM")
            .output()
            .map(Run::from)
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
        use std::io::BufRead as _;
        let mut child = Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_CONFIG_DIR", user.config_dir())
            .env("SHOAL_SOCKET", user.socket())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
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
