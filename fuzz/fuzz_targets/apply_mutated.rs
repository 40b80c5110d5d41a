//! A valid history with one op mutated, applied to a fresh replica from
//! genesis: `Replica::apply` (and `from_genesis`) must never panic, whatever
//! a peer sends. The history (`testkit::history`) is built once.
//!
//! Input: byte 0 picks the op (0 is genesis), byte 1 the mutation and how
//! the ops are delivered, the rest is the mutation's data:
//! - mode 0: replace bytes: triples (offset high, offset low, value);
//! - mode 1: the rest replaces the whole op;
//! - mode 2: insert the rest (after a two-byte offset);
//! - mode 3: truncate to a two-byte length, then replace as in mode 0.
//!
//! Flags in byte 1: `RESIGN` signs the mutated body again with the
//! fixture's key of its author, so the op passes the signature check and
//! reaches the rules and the Automerge change; `FIRST` delivers the mutated
//! op before all others (it waits, then is released); `BOTH` also delivers
//! the original op (a fork or a duplicate of its log position).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shoal_protocol::{Op, Replica, SecretKey, testkit};

const RESIGN: u8 = 0x04;
const FIRST: u8 = 0x08;
const BOTH: u8 = 0x10;

/// Ops after genesis in the fixture history: one full block of every kind
/// of op it makes, small enough to replay on every input.
const HISTORY_OPS: usize = 12;

struct Fixture {
    /// Genesis first, then the history, encoded.
    ops: Vec<Vec<u8>>,
    /// The keys that signed them (owner, node).
    keys: Vec<SecretKey>,
    /// A local clock past every op of the history.
    now_ms: u64,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let (genesis, history) = testkit::history(HISTORY_OPS);
    let now_ms = history
        .iter()
        .map(|op| op.body.hlc.ms)
        .max()
        .unwrap_or(genesis.body.hlc.ms)
        + 60_000;
    let ops = std::iter::once(&genesis)
        .chain(&history)
        .map(Op::encode)
        .collect();
    Fixture {
        ops,
        keys: vec![testkit::key(1), testkit::key(2)],
        now_ms,
    }
});

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let [pick, mode, rest @ ..] = data else {
        return;
    };
    let target = usize::from(*pick) % fx.ops.len();
    let mutated_bytes = mutate(&fx.ops[target], *mode, rest);
    let mutated = Op::decode(&mutated_bytes).ok().map(|op| {
        if mode & RESIGN == 0 {
            return op;
        }
        match fx.keys.iter().find(|k| k.public() == op.body.author) {
            Some(key) => op.body.clone().sign(key).unwrap_or(op),
            None => op,
        }
    });

    // Genesis: the mutated one if genesis was picked (and still decodes).
    let genesis = if target == 0 {
        match &mutated {
            Some(op) => op.clone(),
            None => return,
        }
    } else {
        match Op::decode(&fx.ops[0]) {
            Ok(op) => op,
            Err(e) => panic!("fixture genesis does not decode: {e}"),
        }
    };
    let Ok(mut replica) = Replica::from_genesis(genesis) else {
        return;
    };

    let mut deliver: Vec<Op> = Vec::with_capacity(fx.ops.len() + 1);
    if mode & FIRST != 0 {
        deliver.extend(mutated.clone());
    }
    for (i, bytes) in fx.ops.iter().enumerate().skip(1) {
        if i == target {
            if mode & BOTH != 0 {
                deliver.extend(Op::decode(bytes).ok());
            }
            if mode & FIRST == 0 {
                deliver.extend(mutated.clone());
            }
        } else {
            deliver.extend(Op::decode(bytes).ok());
        }
    }
    for op in deliver {
        let _ = replica.apply(op, fx.now_ms);
    }
    // Ops held for their time, then what every node reads after applying.
    let _ = replica.retry_future(fx.now_ms + 3_600_000);
    let _ = replica.version_vector();
    let _ = replica.recompute_state();
});

/// The op's bytes with the mutation of `mode` and `data` applied.
fn mutate(op: &[u8], mode: u8, data: &[u8]) -> Vec<u8> {
    let mut bytes = op.to_vec();
    let offset = |d: &[u8]| match d {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    };
    match mode & 0x03 {
        0 => replace(&mut bytes, data),
        1 => bytes = data.to_vec(),
        2 => {
            let at = offset(data).min(bytes.len());
            let insert = data.get(2..).unwrap_or_default();
            bytes.splice(at..at, insert.iter().copied());
        }
        _ => {
            bytes.truncate(offset(data));
            replace(&mut bytes, data.get(2..).unwrap_or_default());
        }
    }
    bytes
}

/// Replaces one byte per (offset high, offset low, value) triple.
fn replace(bytes: &mut [u8], triples: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    for t in triples.chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([t[0], t[1]])) % len;
        bytes[at] = t[2];
    }
}
