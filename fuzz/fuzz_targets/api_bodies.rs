//! The control API's request bodies and queries (`shoal-api`) as JSON from
//! arbitrary bytes. The socket is 0600, but a body is still input from
//! another process. The first byte picks the type. Parsing must never
//! panic; a value that parses serializes and parses back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_api::{audit, containers, deployments, join, ops, products, registries, teams};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 14 {
        // Bodies (POST).
        0 => round_trip::<join::JoinRequest>(body),
        1 => round_trip::<ops::PrepareRequest>(body),
        2 => round_trip::<ops::OpRequest>(body),
        3 => round_trip::<teams::GenesisRequest>(body),
        4 => round_trip::<teams::IdsRequest>(body),
        // Queries (GET), also plain serde types.
        5 => round_trip::<audit::AuditQuery>(body),
        6 => round_trip::<containers::ContainersQuery>(body),
        7 => round_trip::<containers::LogsQuery>(body),
        8 => round_trip::<containers::FollowQuery>(body),
        9 => round_trip::<containers::ProgressQuery>(body),
        10 => round_trip::<deployments::DeploymentsQuery>(body),
        11 => round_trip::<deployments::DeploymentWait>(body),
        12 => round_trip::<products::RollbackQuery>(body),
        _ => round_trip::<registries::TagsQuery>(body),
    }
});

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(body) else {
        return;
    };
    let text = match serde_json::to_vec(&value) {
        Ok(text) => text,
        Err(e) => panic!("a parsed body does not serialize: {e}: {value:?}"),
    };
    match serde_json::from_slice::<T>(&text) {
        Ok(back) => assert_eq!(back, value, "parse(serialize(v)) != v"),
        Err(e) => panic!("a serialized body does not parse: {e}: {value:?}"),
    }
}
