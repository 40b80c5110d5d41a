//! The team lifecycle across real daemons on loopback: joining with
//! tickets, convergence, durability, partitions, removal and ticket misuse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use shoal_protocol::ticket::Ticket;
use shoal_tests::{Peer, WAIT, converge, team_of, wait_for};

fn ops(p: &Peer) -> u64 {
    p.fingerprint().map(|(n, _)| n).unwrap_or(0)
}

#[test]
fn three_daemons_join_and_converge_on_changes_made_anywhere() {
    let mut peers = team_of(&["a", "b"]).unwrap();
    // C joins as a node only, with a node ticket made on B.
    let mut c = Peer::new("c").unwrap();
    c.start().unwrap();
    let add = peers[1].ok(&["node", "add", "c", "--runtime", "none"]);
    assert!(add.stdout.contains("install.sh"), "{}", add.stdout);
    let joined = c.ok(&["node", "join", &add.last_line()]);
    assert!(
        joined.stdout.contains("joined team crew"),
        "{}",
        joined.stdout
    );
    peers.push(c);
    let [a, b, c] = &peers[..] else {
        unreachable!()
    };

    let before = converge(&[a, b, c], WAIT).expect("the three replicas agree");
    let t = a.team().unwrap();
    assert_eq!(
        (t["members"].as_u64(), t["nodes"].as_u64()),
        (Some(2), Some(3))
    );

    // A change made on each node reaches the others.
    b.ok(&["node", "add", "spare", "--runtime", "docker"]);
    converge(&[a, b, c], WAIT).unwrap();
    a.ok(&["member", "role", "b-person", "user"]);
    let after = converge(&[a, b, c], WAIT).expect("the replicas agree again");
    assert!(after.0 >= before.0 + 2, "{before:?} -> {after:?}");
    let members = c.ok(&["member", "list", "-o", "json"]).stdout;
    let members: serde_json::Value = serde_json::from_str(&members).unwrap();
    let b_role = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "b-person")
        .unwrap()["role"]
        .clone();
    assert_eq!(b_role, "user");
    // B is a user now: admin work is refused with the reason.
    let r = b.shoal(&["team", "invite"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("needs the admin role"), "{}", r.stderr);

    // Every node knows the others' addresses and, from their signed
    // heartbeats, sees them connected.
    wait_for(WAIT, || {
        let v: serde_json::Value =
            serde_json::from_str(&c.ok(&["node", "list", "-o", "json"]).stdout).ok()?;
        let all = v.as_array()?;
        (all.len() == 3 && all.iter().all(|n| n["status"] == "connected")).then_some(())
    })
    .expect("all three nodes connected, as seen from C");
    let shown = c.ok(&["node", "show", "a"]).stdout;
    assert!(shown.contains("connected (heard"), "{shown}");
    assert!(shown.contains("/ip4/127.0.0.1/tcp/"), "{shown}");

    // A stopped node turns unreachable once its heartbeats stop.
    let mut peers = peers;
    peers[0].stop().unwrap();
    let [_, b, c] = &peers[..] else {
        unreachable!()
    };
    wait_for(WAIT, || {
        let shown = c.ok(&["node", "show", "a"]).stdout;
        shown.contains("unreachable").then_some(())
    })
    .expect("A unreachable, as seen from C");
    assert!(b.ok(&["node", "show", "c"]).stdout.contains("connected"));
}

#[test]
fn ticket_misuse_gets_clear_errors() {
    let peers = team_of(&["a"]).unwrap();
    let a = &peers[0];
    let mut b = Peer::new("b").unwrap();
    b.ok(&["profile", "init", "--name", "bea"]);
    b.start().unwrap();

    // Not a ticket at all, and a damaged one.
    let r = b.shoal(&["team", "join", "hello"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a shoal ticket"), "{}", r.stderr);
    let ticket = a.ok(&["team", "invite"]).last_line();
    let mut damaged = ticket.clone();
    let i = damaged.len() / 2;
    let swap = if &damaged[i..=i] == "A" { "B" } else { "A" };
    damaged.replace_range(i..=i, swap);
    let r = b.shoal(&["team", "join", &damaged]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);

    // A forged one (well-formed, wrong invite key) is refused by the team.
    let mut forged = Ticket::decode(&ticket).unwrap();
    forged.invite_seed[0] ^= 1;
    let r = b.shoal(&["team", "join", &forged.encode().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("does not verify"), "{}", r.stderr);

    // A member ticket is not a node ticket, and the other way round.
    let r = b.shoal(&["node", "join", &ticket]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("member ticket"), "{}", r.stderr);
    let node_ticket = a
        .ok(&["node", "add", "edge", "--runtime", "none"])
        .last_line();
    let r = b.shoal(&["team", "join", &node_ticket]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("node ticket"), "{}", r.stderr);
    // A node ticket is bound to its name: this daemon is called "b".
    let r = b.shoal(&["node", "join", &node_ticket]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bound to node edge"), "{}", r.stderr);

    // Used once: works. Twice (from another machine): refused.
    b.ok(&["team", "join", &ticket]);
    let mut c = Peer::new("c").unwrap();
    c.ok(&["profile", "init", "--name", "cid"]);
    c.start().unwrap();
    let r = c.shoal(&["team", "join", &ticket]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already used"), "{}", r.stderr);

    // Expired.
    let short = a.ok(&["team", "invite", "--expires", "1s"]).last_line();
    std::thread::sleep(Duration::from_millis(1500));
    let r = c.shoal(&["team", "join", &short]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("expired"), "{}", r.stderr);

    // Usage errors exit 2.
    assert_eq!(a.shoal(&["team", "invite", "--role", "owner"]).code, 2);
    assert_eq!(a.shoal(&["team", "invite", "--role", "boss"]).code, 2);
    // An absurd lifetime is refused before anything is written.
    let before = ops(a);
    let r = a.shoal(&["team", "invite", "--expires", "300000y"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("at most 10 years"), "{}", r.stderr);
    assert_eq!(ops(a), before);
    // Nothing of the refused joins reached the team.
    let t = a.team().unwrap();
    assert_eq!(
        (t["members"].as_u64(), t["nodes"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(c.shoal(&["team", "show"]).stderr.contains("holds no team"));
}

#[test]
fn a_removed_node_is_cut_off_and_a_removed_member_is_refused() {
    let peers = team_of(&["a", "b", "c"]).unwrap();
    let [a, b, c] = &peers[..] else {
        unreachable!()
    };
    converge(&[a, b, c], WAIT).unwrap();

    // Remove node C: A and B disconnect it at once and refuse it after.
    let c_key = node_key(a, "c");
    assert!(peers_of(a).contains(&c_key));
    a.ok(&["node", "remove", "c"]);
    converge(&[a, b], WAIT).unwrap();
    wait_for(WAIT, || {
        (!peers_of(a).contains(&c_key) && !peers_of(b).contains(&c_key)).then_some(())
    })
    .expect("A and B no longer connected to C");
    // C keeps running and redialing, but stays cut off.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!peers_of(a).contains(&c_key));
    assert!(!peers_of(b).contains(&c_key));

    // Remove member b-person: the node B they joined with goes too. A cuts
    // B off, and nothing b-person signs after reaches the team.
    let b_key = node_key(a, "b");
    let r = a.ok(&["member", "remove", "b-person"]);
    assert!(r.stdout.contains("removed node b of b-person"), "{r:?}");
    let held = a.ok(&["team", "invite", "list", "-o", "json"]).stdout;
    let r = b.shoal(&["team", "invite"]);
    assert!(r.code != 0 || !r.stdout.is_empty(), "{r:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.ok(&["team", "invite", "list", "-o", "json"]).stdout, held);
    wait_for(WAIT, || (!peers_of(a).contains(&b_key)).then_some(()))
        .expect("A no longer connected to B");
}

/// The key of node `name`, as `node list -o json` on `p` shows it.
fn node_key(p: &Peer, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&p.ok(&["node", "list", "-o", "json"]).stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Keys of the nodes `p`'s daemon is connected to.
fn peers_of(p: &Peer) -> Vec<String> {
    let r = p.ok(&["node", "peers", "-o", "json"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    v.iter()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn killed_daemon_keeps_every_acknowledged_op_and_catches_up() {
    let mut peers = team_of(&["a", "b"]).unwrap();
    converge(&[&peers[0], &peers[1]], WAIT).unwrap();
    let base = ops(&peers[1]);

    // Writes stream into B; B is killed with SIGKILL in the middle.
    let user_dir = peers[1].user.config_dir().to_path_buf();
    let sock = peers[1].user.socket();
    let writer = std::thread::spawn(move || {
        let mut acked = 0u64;
        for _ in 0..40 {
            let r = std::process::Command::new(shoal_tests::shoal_bin())
                .args(["team", "invite"])
                .env("SHOAL_CONFIG_DIR", &user_dir)
                .env("SHOAL_SOCKET", &sock)
                .output()
                .unwrap();
            if r.status.success() {
                acked += 1;
            } else {
                break;
            }
        }
        acked
    });
    wait_for(WAIT, || (ops(&peers[1]) >= base + 8).then_some(())).unwrap();
    peers[1].kill();
    let acked = writer.join().unwrap();
    assert!(acked >= 8, "{acked}");

    // Meanwhile A writes; then B comes back.
    peers[0].ok(&["team", "invite"]);
    peers[1].start().unwrap();
    let after_restart = ops(&peers[1]);
    assert!(
        after_restart >= base + acked,
        "B acknowledged {acked} ops after {base}, holds {after_restart} after a kill -9"
    );
    let (n, _) = converge(&[&peers[0], &peers[1]], WAIT).expect("B catches up");
    assert!(n > base + acked, "A's op while B was down is there too");
}

/// Whether every daemon of `peers` is connected to all the others, whose
/// node keys are `keys` (in the same order).
fn full_mesh(peers: &[Peer], keys: &[String]) -> bool {
    peers.iter().enumerate().all(|(i, p)| {
        let mut got = peers_of(p);
        got.sort();
        let mut want: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, k)| k.clone())
            .collect();
        want.sort();
        got == want
    })
}

#[test]
fn every_pair_of_daemons_connects_also_after_two_restart_on_new_ports() {
    let peers = team_of(&["a", "b", "c", "d"]).unwrap();
    let keys: Vec<String> = peers.iter().map(|p| node_key(&peers[0], &p.name)).collect();
    let mut peers = peers;
    wait_for(WAIT, || full_mesh(&peers, &keys).then_some(()))
        .expect("every pair of the four daemons connects");

    // C and D stop; each comes back on a new port, C first. D's store
    // holds C's old address, and C's holds D's old one: each learns the
    // other's new address only from the team's state, through A or B, and
    // neither is a newly allowed peer, so only that address leads them to
    // each other.
    let old_c = addresses_of(&peers[0], "c");
    peers[2].stop().unwrap();
    peers[3].stop().unwrap();
    peers[2].start().unwrap();
    wait_for(WAIT, || {
        let seen = peers_of(&peers[2]);
        (seen.contains(&keys[0]) && seen.contains(&keys[1])).then_some(())
    })
    .expect("C reconnects to A and B");
    wait_for(WAIT, || {
        (addresses_of(&peers[0], "c") != old_c).then_some(())
    })
    .expect("C publishes its new address");
    peers[3].start().unwrap();
    wait_for(WAIT, || full_mesh(&peers, &keys).then_some(()))
        .expect("C and D find each other at their new addresses");
}

/// The addresses node `name` published, as `node list -o json` on `p` shows them.
fn addresses_of(p: &Peer, name: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&p.ok(&["node", "list", "-o", "json"]).stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["addresses"].clone())
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default()
}

#[test]
fn a_partition_heals_with_writes_on_both_sides() {
    let ns = match shoal_tests::Netns::create("p") {
        Ok(ns) => ns,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: cannot make a network namespace here ({e})");
            return;
        }
        Err(e) => panic!("cannot make a network namespace: {e}"),
    };
    // A and C on the host side of the link, B inside the namespace.
    let mut peers: Vec<Peer> = ["a", "b", "c"]
        .iter()
        .map(|n| Peer::new(n).unwrap())
        .collect();
    peers[0].listen = format!("/ip4/{}/tcp/0", ns.host_ip);
    peers[2].listen = format!("/ip4/{}/tcp/0", ns.host_ip);
    peers[1].listen = format!("/ip4/{}/tcp/0", ns.ns_ip);
    peers[1].wrap = ns.wrap();
    shoal_tests::form_team(&mut peers).unwrap();
    let [a, b, c] = &peers[..] else {
        unreachable!()
    };
    let (base, _) = converge(&[a, b, c], WAIT).expect("the team forms across the link");

    ns.link(false).unwrap();
    // Both sides write while cut off from each other.
    a.ok(&["team", "invite"]);
    c.ok(&["node", "add", "edge-1", "--runtime", "none"]);
    b.ok(&["team", "invite", "--role", "admin"]);
    b.ok(&["team", "invite"]);
    let ab = converge(&[a, c], WAIT).expect("A and C agree");
    assert_eq!(ab.0, base + 2);
    std::thread::sleep(Duration::from_secs(2));
    let alone = b.fingerprint().unwrap();
    assert_eq!(alone.0, base + 2, "B saw nothing of the other side");
    assert_ne!(alone, ab);

    ns.link(true).unwrap();
    let healed = converge(&[a, b, c], WAIT).expect("all agree after the heal");
    assert_eq!(healed.0, base + 4, "every write of both sides is kept");
}

/// Forty `product create` of one member run at once through one daemon:
/// every one succeeds (the daemon's write lease makes them take turns on
/// the member's log), nothing is quarantined and the audit log verifies.
#[test]
fn parallel_commands_of_one_member_never_fork_its_log() {
    let peers = team_of(&["a"]).unwrap();
    let a = &peers[0];
    let user = &a.user;
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|i| {
                s.spawn(move || {
                    user.shoal(&["product", "create", &format!("p{i}")])
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.code, 0, "product create p{i} failed: {}", r.stderr);
    }
    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["product", "list", "-o", "json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 40, "{list}");
    let verify = a.ok(&["audit", "verify"]);
    assert!(verify.stdout.starts_with("ok: "), "{}", verify.stdout);
}

/// The invites of `p`'s team as `team invite list -o json` shows them.
fn invites(p: &Peer) -> Vec<serde_json::Value> {
    serde_json::from_str(&p.ok(&["team", "invite", "list", "-o", "json"]).stdout).unwrap()
}

/// Removing a member revokes their unused invites and removes the node
/// they joined with; `team invite list` shows it all and `team invite
/// revoke` revokes one.
#[test]
fn removing_a_member_revokes_their_invites_and_removes_their_node() {
    let peers = team_of(&["a", "b"]).unwrap();
    let [a, b] = &peers[..] else { unreachable!() };
    converge(&[a, b], WAIT).unwrap();
    b.ok(&["team", "invite"]);
    b.ok(&["node", "add", "edge", "--runtime", "none"]);
    a.ok(&["team", "invite", "--role", "admin"]);
    let spare = a.ok(&["team", "invite"]);
    let _ = spare;
    converge(&[a, b], WAIT).unwrap();

    let listed = invites(a);
    // b's own join ticket (used), b-person's two, a-person's two.
    assert_eq!(listed.len(), 5, "{listed:?}");
    let table = a.ok(&["team", "invite", "list"]).stdout;
    assert!(
        table.contains("STATE") && table.contains("used") && table.contains("open"),
        "{table}"
    );

    // Revoke one of a-person's by id.
    let a_key = listed
        .iter()
        .find(|i| i["used_by"].as_array().unwrap().len() == 1)
        .unwrap()["creator"]
        .clone();
    let own: Vec<&serde_json::Value> = listed
        .iter()
        .filter(|i| i["creator"] == a_key && i["used_by"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(own.len(), 2, "{listed:?}");
    let id = own[0]["id"].as_str().unwrap();
    a.ok(&["team", "invite", "revoke", id]);
    assert_eq!(
        a.shoal(&["team", "invite", "revoke", "nosuchinvite"]).code,
        2
    );

    let r = a.ok(&["member", "remove", "b-person"]);
    assert_eq!(r.stdout.matches("revoked invite").count(), 2, "{r:?}");
    assert!(r.stdout.contains("removed node b of b-person"), "{r:?}");
    let after = invites(a);
    for i in &after {
        let mine = i["creator"] == a_key;
        let expect_revoked = !mine || i["id"] == id;
        if i["used_by"].as_array().unwrap().is_empty() {
            assert_eq!(i["revoked"], expect_revoked, "{i}");
        }
    }
    let nodes: serde_json::Value =
        serde_json::from_str(&a.ok(&["node", "list", "-o", "json"]).stdout).unwrap();
    let b_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "b")
        .cloned();
    assert!(
        b_node.is_none_or(|n| n["status"] == "removed" || !n["removed"].is_null()),
        "{nodes}"
    );
}
