//! Figures for the closing note, not assertions: ops verified and applied
//! per second on one core for a 10,000-op history, and the time to restore
//! a saved document of 10,000 ops.
//!
//! Run with `cargo bench -p shoal-protocol`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use shoal_protocol::Replica;
use shoal_protocol::testkit;

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
}
