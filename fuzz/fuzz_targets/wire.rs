//! The mesh wire codec on hostile bytes: every message a peer (allowed or a
//! stranger on the join protocol) can send or answer. The first byte picks
//! the message type, the rest is the message as it arrives on a stream.
//! Decoding must never panic, and what decodes must re-encode to the same
//! bytes' meaning (decode(encode(m)) == m).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_node::join::{JoinAnswer, JoinMsg};
use shoal_node::mesh::wire::{self, WireMessage};
use shoal_node::mesh::{JoinReply, JoinRequest, SyncRequest, SyncResponse};
use shoal_protocol::Op;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    match pick % 6 {
        0 => {
            if let Some(SyncRequest::Ops(ops) | SyncRequest::Push(ops)) = round_trip(bytes) {
                // The sync engine decodes every op of a batch.
                decode_ops(&ops);
            }
        }
        1 => {
            if let Some(SyncResponse::Ops { ops, .. }) = round_trip(bytes) {
                decode_ops(&ops);
            }
        }
        2 => {
            if let Some(req) = round_trip::<JoinRequest>(bytes) {
                // The admitting node reads the join message inside.
                if let Some(JoinMsg::Submit { op, .. }) = round_trip::<JoinMsg>(&req.payload) {
                    decode_ops(&[op]);
                }
            }
        }
        3 => {
            if let Some(JoinReply::Accepted(payload)) = round_trip(bytes) {
                if let Some(JoinAnswer::Ops { ops, .. }) = round_trip(&payload) {
                    decode_ops(&ops);
                }
            }
        }
        4 => {
            if let Some(JoinMsg::Submit { op, .. }) = round_trip(bytes) {
                decode_ops(&[op]);
            }
        }
        _ => {
            if let Some(JoinAnswer::Ops { ops, .. }) = round_trip(bytes) {
                decode_ops(&ops);
            }
        }
    }
});

/// Decodes `bytes` as `M`; when it decodes, checks that it encodes and
/// decodes back to the same message.
fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let msg = wire::decode::<M>(bytes).ok()?;
    let again = match wire::encode(&msg) {
        Ok(again) => again,
        Err(e) => panic!("a decoded message does not encode: {e}: {msg:?}"),
    };
    match wire::decode::<M>(&again) {
        Ok(back) => assert_eq!(back, msg, "decode(encode(m)) != m"),
        Err(e) => panic!("a re-encoded message does not decode: {e}: {msg:?}"),
    }
    Some(msg)
}

fn decode_ops(ops: &[Vec<u8>]) {
    for bytes in ops {
        if let Ok(op) = Op::decode(bytes) {
            let _ = op.hash();
            let _ = op.verify_signature();
        }
    }
}
