//! `Op::decode` on arbitrary bytes: ops arrive from peers, joiners and the
//! control API. Decoding must never panic; an op that decodes is canonical,
//! so it re-encodes to exactly the input and decodes back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::Op;

fuzz_target!(|data: &[u8]| {
    let Ok(op) = Op::decode(data) else {
        return;
    };
    let bytes = op.encode();
    assert_eq!(bytes, data, "a decoded op re-encodes to other bytes");
    match Op::decode(&bytes) {
        Ok(back) => assert_eq!(back, op, "decode(encode(op)) != op"),
        Err(e) => panic!("a re-encoded op does not decode: {e}"),
    }
    // What every receiver computes next, before any rule runs.
    let _ = op.hash();
    let _ = op.log();
    let _ = op.verify_signature();
});
