//! Invite tickets from text: a ticket is pasted by a user and may be damaged
//! or forged. The first byte picks the mode:
//! - even: the rest is the ticket text as typed;
//! - odd: the rest is the binary payload (version byte and postcard), wrapped
//!   with a valid checksum and prefix, so the fuzzer reaches the contents
//!   instead of stopping at the checksum.
//!
//! Reading must never panic; a ticket that reads encodes and reads back to
//! itself, and its keys and proof can be derived.

#![no_main]

use data_encoding::BASE64URL_NOPAD;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use shoal_protocol::ticket::{TICKET_PREFIX, Ticket};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        }
    } else {
        let mut bytes = rest.to_vec();
        let sum = Sha256::digest(rest);
        bytes.extend_from_slice(&sum[..4]);
        format!("{TICKET_PREFIX}{}", BASE64URL_NOPAD.encode(&bytes))
    };
    let Ok(ticket) = Ticket::decode(&text) else {
        return;
    };
    let again = match ticket.encode() {
        Ok(again) => again,
        Err(e) => panic!("a decoded ticket does not encode: {e}"),
    };
    match Ticket::decode(&again) {
        Ok(back) => assert_eq!(back, ticket, "decode(encode(ticket)) != ticket"),
        Err(e) => panic!("a re-encoded ticket does not decode: {e}"),
    }
    let _ = ticket.check_fresh(0);
    let _ = ticket.check_fresh(u64::MAX);
    let key = ticket.invite_key();
    let _ = ticket.proof_for(&key.public());
    let _ = shoal_node::join::bootstrap_peers(&ticket.bootstrap);
});
