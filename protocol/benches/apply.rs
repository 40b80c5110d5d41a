//! Figures, not assertions: ops verified and applied per second on one core
//! for a 10,000-op history, the time to restore a saved document of 10,000
//! ops, and the cost of applying concurrent ops (each checked against its
//! own causal past) on top of that history.
//!
//! Run with `cargo bench -p shoal-protocol`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use shoal_protocol::action::Action;
use shoal_protocol::model::{ProductKind, Role, Runtime};
use shoal_protocol::testkit::{self, Clock, act, ctx, invite_and_join, key};
use shoal_protocol::{Op, Replica};

fn main() {
    let n: usize = std::env::var("SHOAL_BENCH_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let t = Instant::now();
    let (genesis, ops) = testkit::history(n);
    println!("generated {n} ops in {:.2?}", t.elapsed());
    let bytes: Vec<Vec<u8>> = ops.iter().map(|o| o.encode()).collect();
    let now = 1_800_000_000_000;

    let mut best = f64::MAX;
    let mut replica = None;
    for _ in 0..3 {
        let t = Instant::now();
        let mut r = Replica::from_genesis(genesis.clone()).unwrap();
        for b in &bytes {
            let op = shoal_protocol::Op::decode(b).unwrap();
            let rep = r.apply(op, now);
            assert_eq!(rep.applied.len(), 1);
        }
        best = best.min(t.elapsed().as_secs_f64());
        replica = Some(r);
    }
    println!(
        "decode+verify+apply: {n} ops in {:.3} s = {:.0} ops/s (best of 3)",
        best,
        n as f64 / best
    );

    let r = replica.unwrap();
    let saved = r.save_doc();
    let all: Vec<_> = r.ops().iter().map(|a| a.op.clone()).collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let restored = Replica::restore(&saved, all.clone()).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(restored.state(), r.state());
    }
    println!(
        "restore: {} ops, document {} KiB, in {:.3} s (best of 3)",
        all.len(),
        saved.len() / 1024,
        best
    );

    // SHOAL_BENCH_CONCURRENT=0 leaves the concurrent part out (to profile
    // the rest alone).
    if std::env::var("SHOAL_BENCH_CONCURRENT").as_deref() != Ok("0") {
        concurrent(&r, &all, now);
    }
}

/// `WRITERS` replicas, each a copy of the history, write `PER_WRITER` ops
/// without seeing each other's; then one replica applies them all. Every op
/// after the first of each writer is concurrent with the ops of the others,
/// so it is checked against its own causal past.
fn concurrent(base: &Replica, history: &[Op], now: u64) {
    const WRITERS: u8 = 20;
    const PER_WRITER: usize = 40;
    let saved = base.save_doc();
    let mut main = Replica::restore(&saved, history.to_vec()).unwrap();
    let owner = key(1);
    let origin = key(2).public();
    let mut clock = Clock(now - 3_600_000);
    // Enroll the writers (a member with a node each) on the main replica.
    let mut setup = Vec::new();
    for w in 0..WRITERS {
        let (m, n) = (key(100 + w), key(150 + w));
        let ops = invite_and_join(
            &mut main,
            &owner,
            origin,
            &m,
            &format!("bench-writer-{w}"),
            Role::Admin,
            Some((&n, &format!("bench-node-{w}"), Runtime::Docker)),
            clock.tick(),
        )
        .unwrap();
        clock.tick();
        setup.extend(ops);
    }
    let all: Vec<Op> = main.ops().iter().map(|a| a.op.clone()).collect();
    let saved = main.save_doc();
    let mut written = Vec::new();
    for w in 0..WRITERS {
        let mut r = Replica::restore(&saved, all.clone()).unwrap();
        let (m, n) = (key(100 + w), key(150 + w));
        let mut c = Clock(clock.0 + u64::from(w));
        for i in 0..PER_WRITER {
            let t = c.tick();
            let id = ctx(&r, &m, n.public(), t).new_id(0);
            let (op, rep) = act(
                &mut r,
                &m,
                n.public(),
                t,
                Action::ProductCreate {
                    id,
                    name: format!("w{w}-p{i}"),
                    kind: ProductKind::Complex,
                    description: String::new(),
                    version: None,
                },
            )
            .unwrap();
            assert_eq!(rep.applied.len(), 1, "{rep:?}");
            written.push(op);
        }
    }
    // Round-robin over the writers: as they would arrive from the mesh.
    let mut order = Vec::with_capacity(written.len());
    for i in 0..PER_WRITER {
        for w in 0..usize::from(WRITERS) {
            order.push(written[w * PER_WRITER + i].clone());
        }
    }
    let t = Instant::now();
    let mut applied = 0;
    for op in order {
        applied += main.apply(op, now).applied.len();
    }
    let took = t.elapsed().as_secs_f64();
    assert_eq!(applied, written.len());
    println!(
        "concurrent: {} ops from {WRITERS} writers on a {}-op history in {:.3} s = {:.2} ms/op",
        written.len(),
        history.len(),
        took,
        took * 1000.0 / written.len() as f64
    );
}
