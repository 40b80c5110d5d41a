//! Hostile ops through the control API of real daemons (DESIGN §3.1): a
//! change whose op counters are moved next to the limit, clocks at the
//! counter limit minutes ahead, a change that writes a key its action does
//! not name, and an authentic but invalid op at a log's next seq. Each is
//! refused or harmless: honest writes go on on every node, also after a
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use shoal_protocol::Action;
use shoal_protocol::hlc::{Hlc, MAX_COUNTER};
use shoal_protocol::testkit::{edit_change, move_start};
use shoal_tests::api::{prepared, profile_key, submit};
use shoal_tests::{WAIT, converge, team_of};

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}

fn update(description: &str) -> Action {
    Action::TeamUpdate {
        name: "crew".into(),
        description: description.into(),
    }
}

#[test]
fn forged_counters_and_saturated_clocks_do_not_stop_a_team() {
    let mut peers = team_of(&["a", "b"]).unwrap();
    converge(&[&peers[0], &peers[1]], WAIT).unwrap();
    let (a, b) = (&peers[0], &peers[1]);
    let key = profile_key(a);

    // Op counters moved to just below u32::MAX: the next change anywhere
    // would overflow automerge's counter.
    let honest = prepared(a, &key, &update("counters")).sign(&key).unwrap();
    let near_limit = edit_change(&honest, &key, |e| {
        let n = e.operations.len() as u64;
        move_start(e, u64::from(u32::MAX) - n - 1);
    })
    .unwrap();
    let (status, v) = submit(a, &near_limit);
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("start_op"), "{v}");

    // A clock counter past the bound is refused outright.
    let mut body = prepared(a, &key, &update("counter past the bound"));
    body.hlc = Hlc::new(body.hlc.ms, u32::MAX);
    let (status, v) = submit(a, &body.sign(&key).unwrap());
    assert_eq!(status, 422, "{v}");

    // A clock at the counter bound nine minutes ahead is valid: it is
    // applied, and honest writers simply take the next millisecond.
    let ahead = now_ms() + 9 * 60 * 1000;
    let mut body = prepared(a, &key, &update("saturated clock"));
    body.hlc = Hlc::new(ahead, MAX_COUNTER);
    let op = edit_change(&body.sign(&key).unwrap(), &key, |e| {
        e.time = i64::try_from(ahead).unwrap();
    })
    .unwrap();
    let (status, v) = submit(a, &op);
    assert_eq!(status, 200, "{v}");
    converge(&[a, b], WAIT).unwrap();
    for (p, name) in [(a, "after-a"), (b, "after-b")] {
        p.ok(&["product", "create", name]);
    }
    converge(&[a, b], WAIT).unwrap();

    // And after a restart, still.
    peers[0].stop().unwrap();
    peers[0].start().unwrap();
    peers[0].ok(&["product", "create", "after-restart"]);
    converge(&[&peers[0], &peers[1]], WAIT).unwrap();
    let verify = |p: &shoal_tests::Peer| -> serde_json::Value {
        serde_json::from_str(&p.shoal(&["audit", "verify", "-o", "json"]).stdout).unwrap()
    };
    // b never took the refused ops; a keeps both, and they are its only
    // problems.
    let on_b = verify(&peers[1]);
    assert_eq!(on_b["ok"], true, "{on_b}");
    let on_a = verify(&peers[0]);
    assert_eq!(on_a["counts"]["refused"], 2, "{on_a}");
    assert_eq!(on_a["problems"].as_array().unwrap().len(), 2, "{on_a}");
}

/// A change carrying a key its action does not name is refused, and the
/// key is nowhere; an authentic but invalid op at a log's next seq poisons
/// nothing but itself: the honest op at that seq is applied everywhere.
#[test]
fn smuggled_keys_are_refused_and_a_refused_op_poisons_only_itself() {
    use automerge::{ScalarValue, legacy};
    let peers = team_of(&["a", "b"]).unwrap();
    let [a, b] = &peers[..] else { unreachable!() };
    converge(&[a, b], WAIT).unwrap();
    let key = profile_key(a);

    let honest = prepared(a, &key, &update("smuggling")).sign(&key).unwrap();
    let forged = edit_change(&honest, &key, |e| {
        e.operations.push(legacy::Op {
            action: legacy::OpType::Put(ScalarValue::Str("x".into())),
            obj: legacy::ObjectId::Root,
            key: legacy::Key::Map("smuggled".into()),
            pred: Vec::new().into(),
            insert: false,
        });
    })
    .unwrap();
    let (status, v) = submit(a, &forged);
    assert_eq!(status, 422, "{v}");

    // Authentic, but it names no previous op of its log.
    let mut body = prepared(a, &key, &update("no prev"));
    body.prev = None;
    let (status, v) = submit(a, &body.sign(&key).unwrap());
    assert_eq!(status, 422, "{v}");
    // The same seq, honestly, then more: applied here and on b.
    for name in ["first", "second"] {
        a.ok(&["product", "create", name]);
    }
    converge(&[a, b], WAIT).unwrap();
    let products = b.ok(&["product", "list", "-o", "json"]).stdout;
    assert!(
        products.contains("first") && products.contains("second"),
        "{products}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&a.ok(&["node", "show", "-o", "json"]).stdout).unwrap();
    assert_eq!(shown["ops"]["quarantined"], 2, "{shown}");
}
