//! `--follow` across a lost connection, without Docker: one daemon
//! (runtime `docker`, its deployments paused, so Docker is never asked)
//! whose deployment's progress is followed while the daemon is stopped
//! and started again; a refusal ends a follower at once,
//! a daemon that stays away makes it give up with advice. Lines written
//! after a restart are checked in `docker.rs`, where a node writes them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use shoal_tests::{Follower, Peer, WAIT};

fn said(notes: &[String], what: &str) -> usize {
    notes.iter().filter(|x| x.contains(what)).count()
}

#[test]
fn a_follower_waits_for_a_restarted_daemon_and_gives_up_on_a_gone_one() {
    let mut a = Peer::new("a").unwrap();
    a.runtime = "docker".into();
    a.extra = vec!["--pause-deployments".into()];
    a.ok(&["profile", "init", "--name", "a-person"]);
    a.start().unwrap();
    a.ok(&["team", "create", "crew"]);
    a.ok(&[
        "registry",
        "add",
        "local",
        "--kind",
        "v2",
        "--url",
        "127.0.0.1:5000",
    ]);
    a.ok(&["product", "create", "shop"]);
    a.ok(&["version", "create", "shop", "1.0.0"]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.0.0",
        "127.0.0.1:5000/shoal-test/busybox:latest",
    ]);
    let d = a
        .ok(&[
            "deploy", "create", "shop", "1.0.0", "--node", "a", "--prefix", "prod",
        ])
        .last_line();

    // A refusal is not retried: the node has no such container (or no
    // Docker engine to ask).
    let mut refused =
        Follower::spawn(&a.user, &["container", "logs", "a", "web", "--follow"], &[]).unwrap();
    assert_eq!(refused.exit(WAIT), Some(1), "{:#?}", refused.notes);
    assert!(
        refused
            .notes
            .iter()
            .any(|x| x.contains("node a could not answer")),
        "{:#?}",
        refused.notes
    );
    assert_eq!(said(&refused.notes, "retrying"), 0, "{:#?}", refused.notes);

    // The progress of a deployment of this node: nothing yet, so each poll
    // waits on the daemon.
    let mut f = Follower::spawn(&a.user, &["deploy", "logs", &d, "--follow"], &[]).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    a.stop().unwrap();
    f.until(WAIT, |_, e| said(e, "retrying") > 0).unwrap();
    a.start().unwrap();
    f.until(WAIT, |_, e| said(e, "reconnected") > 0).unwrap();
    assert_eq!(said(&f.notes, "retrying"), 1, "{:#?}", f.notes);
    assert!(f.child.try_wait().unwrap().is_none(), "still following");

    // It follows on: a second outage is noticed and overcome as well.
    a.stop().unwrap();
    f.until(WAIT, |_, e| said(e, "retrying") > 1).unwrap();
    a.start().unwrap();
    f.until(WAIT, |_, e| said(e, "reconnected") > 1).unwrap();
    assert!(f.child.try_wait().unwrap().is_none(), "still following");
    drop(f);

    // A daemon that does not come back: the follower gives up (here after
    // 2 s instead of a minute) and says what to check.
    let mut f = Follower::spawn(
        &a.user,
        &["deploy", "logs", &d, "--follow"],
        &[("SHOAL_FOLLOW_GIVE_UP_MS", "2000")],
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    a.stop().unwrap();
    assert_eq!(f.exit(WAIT), Some(1), "{:#?}", f.notes);
    let last = f.notes.last().cloned().unwrap_or_default();
    for want in ["gave up following", "shoal node run", "shoal node list"] {
        assert!(last.contains(want), "{want} in {:#?}", f.notes);
    }
    assert!(f.seen.is_empty(), "{:#?}", f.seen);
}
