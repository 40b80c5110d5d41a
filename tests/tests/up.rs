//! `shoal up` on a fresh machine, and restarting the node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use shoal_tests::{Daemon, User};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn up_creates_profile_and_team_then_restarts_into_them() {
    let u = User::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap();
    let d = Daemon::start(
        &u,
        &[
            "up",
            "--data-dir",
            data_arg,
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
    let banner = d.banner.join("\n");
    assert!(banner.contains("created profile"), "{banner}");
    let team_line = d
        .banner
        .iter()
        .find(|l| l.starts_with("created team"))
        .unwrap()
        .clone();
    let team_id = team_line
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    assert_eq!(team_id.len(), 64, "{team_line}");
    // The mesh listens where it says.
    let listen = d
        .banner
        .iter()
        .find(|l| l.starts_with("listening on /ip4/127.0.0.1/tcp/"))
        .unwrap();
    let port: u16 = listen.split('/').nth(4).unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "{listen}"
    );
    let (code, rest) = d.terminate().unwrap();
    assert_eq!(code, 0);
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");

    // The profile exists now; a second `up` creates nothing and reloads the team.
    let r = u.shoal(&["profile", "show", "-o", "json"]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let d = Daemon::start(
        &u,
        &[
            "node",
            "run",
            "--data-dir",
            data_arg,
            "--runtime",
            "none",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        WAIT,
    )
    .unwrap();
    let banner = d.banner.join("\n");
    assert!(!banner.contains("created"), "{banner}");
    // The genesis op and the address update the node published at its first start.
    assert!(banner.contains(&format!("({team_id}): 2 ops")), "{banner}");
    assert_eq!(d.terminate().unwrap().0, 0);
}

#[test]
fn node_run_without_a_team_says_what_to_do() {
    let u = User::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    // It serves its socket (to be joined to a team) and says how to get one.
    let d = Daemon::start(
        &u,
        &[
            "node",
            "run",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--runtime",
            "none",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        WAIT,
    )
    .unwrap();
    let banner = d.banner.join("\n");
    assert!(banner.contains("in no team yet"), "{banner}");
    assert!(banner.contains("shoal team join"), "{banner}");
    let r = u.shoal(&["team", "show"]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("holds no team"), "{r:?}");
    assert_eq!(d.terminate().unwrap().0, 0);
}

#[test]
fn a_broken_store_gives_a_clear_error() {
    let u = User::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("shoal.redb"), b"this is not a database").unwrap();
    let r = u
        .shoal(&[
            "up",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--runtime",
            "none",
        ])
        .unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot open the node"), "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");
}
