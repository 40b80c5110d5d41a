//! The control socket of `shoal up` and the read-only commands that use it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::time::Duration;

use shoal_tests::{Daemon, User};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn commands_read_the_team_through_the_control_socket() {
    let u = User::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let sock = u.dir.path().join("s.sock");
    let sock_arg = sock.to_str().unwrap();
    let d = Daemon::start(
        &u,
        &[
            "up",
            "--socket",
            sock_arg,
            "--data-dir",
            data.path().to_str().unwrap(),
            "--runtime",
            "none",
            "--name",
            "laptop",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        WAIT,
    )
    .unwrap();
    let team_line = d
        .banner
        .iter()
        .find(|l| l.starts_with("created team"))
        .unwrap();
    let team_id = team_line
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    assert!(
        d.banner
            .iter()
            .any(|l| *l == format!("control socket {sock_arg}")),
        "{:?}",
        d.banner
    );
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let r = u
        .shoal(&["--socket", sock_arg, "team", "show", "-o", "json"])
        .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let show: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(show["id"], team_id.as_str());
    assert_eq!(show["members"], 1);
    assert_eq!(show["nodes"], 1);
    let hash = show["state_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert!(!show["heads"].as_array().unwrap().is_empty());

    // By name too, and the table form.
    let name = show["name"].as_str().unwrap();
    let r = u
        .shoal(&["--socket", sock_arg, "team", "show", name])
        .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&team_id), "{r:?}");
    assert!(r.stdout.contains(hash), "{r:?}");

    let r = u
        .shoal(&["--socket", sock_arg, "team", "list", "-o", "json"])
        .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], team_id.as_str());

    let profile = u.shoal(&["profile", "show", "-o", "json"]).unwrap();
    let profile: serde_json::Value = serde_json::from_str(&profile.stdout).unwrap();
    let me = profile["name"].as_str().unwrap();
    let r = u.shoal(&["--socket", sock_arg, "member", "list"]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.lines().any(|l| l.starts_with(me)), "{r:?}");
    assert!(r.stdout.contains("owner"), "{r:?}");

    let r = u.shoal(&["--socket", sock_arg, "node", "list"]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("laptop"), "{r:?}");

    // An unknown team is an error that says where to look.
    let r = u
        .shoal(&["--socket", sock_arg, "--team", "nope", "member", "list"])
        .unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("shoal team list"), "{r:?}");

    let (code, rest) = d.terminate().unwrap();
    assert_eq!(code, 0, "{rest:?}");
    assert!(!sock.exists(), "the socket outlived the daemon");
}

#[test]
fn a_command_without_a_daemon_says_to_start_one() {
    let u = User::new().unwrap();
    let r = u.shoal(&["team", "list"]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("start one with `shoal up`"), "{r:?}");
    assert!(r.stderr.contains(u.socket().to_str().unwrap()), "{r:?}");
}
