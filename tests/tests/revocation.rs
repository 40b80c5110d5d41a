//! Revocation wins, over real daemons: ops an admin prepared and signed
//! while an admin, submitted after their demotion or removal (through their
//! own node or any other), are void on every node, and nothing they carry
//! (an admin invite to the author's own key, a registry) takes effect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use shoal_protocol::hlc::Hlc;
use shoal_protocol::model::{InviteKind, RegistryKind, Role};
use shoal_protocol::{Action, SecretKey};
use shoal_tests::api::{fresh_ids, profile_key, signed, submit};
use shoal_tests::{Peer, Run, WAIT, converge, team_of};

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}

fn parse(r: &Run) -> Value {
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap()
}

fn registry_add(p: &Peer, key: &SecretKey, name: &str) -> Action {
    Action::RegistryAdd {
        id: fresh_ids(p, key, 1).remove(0),
        name: name.into(),
        kind: RegistryKind::Unchecked,
        url: None,
        namespace: None,
        user: None,
        password: None,
    }
}

fn registries(p: &Peer) -> Vec<String> {
    parse(&p.ok(&["registry", "list", "-o", "json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn voided(p: &Peer) -> u64 {
    parse(&p.ok(&["node", "show", "-o", "json"]))["ops"]["voided"]
        .as_u64()
        .unwrap()
}

#[test]
fn ops_signed_before_a_demotion_or_removal_are_void_when_they_arrive_after() {
    let peers = team_of(&["a", "b"]).unwrap();
    let [a, b] = &peers[..] else { unreachable!() };
    converge(&[a, b], WAIT).unwrap();
    let bob = profile_key(b);
    let bob_hex = bob.public().to_hex();

    // While b-person is an admin they prepare and sign, and keep:
    // a registry on their own node's log, and an admin invite (its ticket
    // key is theirs) on a's log.
    let held_registry = signed(b, &bob, &registry_add(b, &bob, "backdoor"));
    let invite_key = SecretKey::from_seed([42; 32]);
    let held_invite = signed(
        a,
        &bob,
        &Action::InviteCreate {
            id: fresh_ids(a, &bob, 1).remove(0),
            kind: InviteKind::Member { role: Role::Admin },
            invite_key: invite_key.public(),
            expires: Hlc::new(now_ms() + 86_400_000, 0),
        },
    );

    // Demoted: the registry they signed as an admin is void, through their
    // own node, whose state holds the demotion.
    a.ok(&["member", "role", "b-person", "user"]);
    converge(&[a, b], WAIT).unwrap();
    let (status, v) = submit(b, &held_registry);
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("voided by"), "{v}");
    assert_eq!(voided(b), 1);
    assert!(!registries(b).contains(&"backdoor".to_string()));

    // Removed (with their node): the admin invite they signed before is void through a.
    a.ok(&["member", "remove", "b-person"]);
    let (status, v) = submit(a, &held_invite);
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("voided by"), "{v}");

    // Nothing of either took effect; each node counts what it voided.
    assert!(!registries(a).contains(&"backdoor".to_string()));
    let invites = parse(&a.ok(&["team", "invite", "list", "-o", "json"]));
    assert!(
        !invites
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["creator"] == bob_hex.as_str()
                && i["used_by"].as_array().unwrap().is_empty()
                && i["revoked"] == false),
        "{invites}"
    );
    assert_eq!(voided(a), 1);
    let members = parse(&a.ok(&["member", "list", "-o", "json"]));
    let b_member = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == bob_hex.as_str())
        .cloned();
    assert!(b_member.is_none_or(|m| m["role"] != "admin"), "{members}");
    // a's audit names the void op and stays verifiable.
    let verify = a.shoal(&["audit", "verify", "-o", "json"]);
    let v: Value = serde_json::from_str(&verify.stdout).unwrap();
    assert!(v.to_string().contains("voided by"), "{v}");
}

/// Copies the files of a data dir (store and node key) into `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn products(p: &Peer) -> Vec<String> {
    let mut names: Vec<String> = parse(&p.ok(&["product", "list", "-o", "json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A machine restored from a backup signs its next op after the ops the
/// team already holds from it (it asks a peer first), so nothing forks and
/// every node's audit verifies.
#[test]
fn a_node_restored_from_a_backup_forks_nothing() {
    let mut peers = team_of(&["a", "b"]).unwrap();
    converge(&[&peers[0], &peers[1]], WAIT).unwrap();
    let backup = tempfile::tempdir().unwrap();
    peers[1].stop().unwrap();
    copy_dir(peers[1].data.path(), backup.path());
    peers[1].start().unwrap();
    for name in ["one", "two", "three"] {
        peers[1].ok(&["product", "create", name]);
    }
    converge(&[&peers[0], &peers[1]], WAIT).unwrap();

    peers[1].stop().unwrap();
    std::fs::remove_dir_all(peers[1].data.path()).unwrap();
    copy_dir(backup.path(), peers[1].data.path());
    peers[1].start().unwrap();
    peers[1].ok(&["product", "create", "after-restore"]);
    converge(&[&peers[0], &peers[1]], WAIT).unwrap();
    for p in &peers {
        assert_eq!(products(p), ["after-restore", "one", "three", "two"]);
        let verify = p.ok(&["audit", "verify"]);
        assert!(verify.stdout.starts_with("ok: "), "{verify:?}");
        let shown = parse(&p.ok(&["node", "show", "-o", "json"]));
        assert_eq!(shown["ops"]["forks"], 0, "{shown}");
        assert_eq!(shown["ops"]["quarantined"], 0, "{shown}");
    }
}

/// Adds a v2 registry with a password (sealed to the team secrets key).
fn add_private_registry(p: &Peer, name: &str, password: &str) -> Run {
    p.shoal_with(
        &[
            "registry",
            "add",
            name,
            "--kind",
            "v2",
            "--url",
            "127.0.0.1:9",
            "--user",
            "robot",
            "--password-stdin",
        ],
        &[],
        Some(&format!("{password}\n")),
    )
}

/// Only a holder of the current team secrets key can seal it: an admin's
/// key.seal of a key nobody holds, at the current epoch, is refused (the
/// replicas' side of the rule is in the protocol's rules tests), so new
/// registry passwords stay readable.
#[test]
fn a_team_key_nobody_holds_never_becomes_current() {
    let peers = team_of(&["a", "b"]).unwrap();
    let [a, b] = &peers[..] else { unreachable!() };
    converge(&[a, b], WAIT).unwrap();
    let r = add_private_registry(a, "private", "s3cret");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("made the team secrets key"), "{r:?}");
    converge(&[a, b], WAIT).unwrap();
    let bob = profile_key(b);
    let b_node = parse(&b.ok(&["node", "show", "b", "-o", "json"]))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let bogus = "ff".repeat(32);
    let action = Action::KeySeal {
        keys: vec![shoal_protocol::model::SealedKey {
            recipient: format!("node:{b_node}"),
            epoch: 1,
            sealed: format!(
                "{}1:{bogus}:shoal-seal-v1:00",
                shoal_protocol::model::TEAM_KEY_PREFIX
            ),
        }],
    };
    // Refused when it is made (every replica judges it by the same rule).
    let (status, v) = shoal_tests::api::api(
        b,
        "POST",
        "/v1/teams/crew/prepare",
        Some(&serde_json::json!({ "author": bob.public().to_hex(), "action": action })),
    );
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("holds no copy of this key"), "{v}");
    // Passwords are still sealed to the current key.
    let r = add_private_registry(a, "private-2", "0ther");
    assert_eq!(r.code, 0, "{r:?}");
}
