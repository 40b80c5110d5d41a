//! Writes a small seed corpus for every fuzz target into `fuzz/corpus/`:
//! valid inputs made from the protocol's fixtures (encoded ops, a ticket,
//! mesh messages, API bodies), so each run starts from the accepted formats
//! instead of rediscovering them. Run it again after a format changes.
//!
//! Mesh messages are written by hand from their documented layout (version
//! byte, postcard of the enum's variant index and fields), so this program
//! does not need the daemon crate and its dependencies.

use std::path::{Path, PathBuf};

use serde::Serialize;
use shoal_api::{join, ops, teams};
use shoal_protocol::model::{InviteKind, Role};
use shoal_protocol::replica::VersionVector;
use shoal_protocol::ticket::{TICKET_VERSION, Ticket};
use shoal_protocol::{Op, Replica, testkit};

/// The mesh's `WIRE_VERSION` (`node/src/mesh/wire.rs`).
const WIRE_VERSION: u8 = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let (genesis, history) = testkit::history(12);
    let replica = Replica::from_genesis(genesis.clone())?;
    let team = replica.team();
    let ops: Vec<Vec<u8>> = std::iter::once(&genesis)
        .chain(&history)
        .map(Op::encode)
        .collect();

    // op_decode: every op of the fixture history.
    let mut seeds = Seeds::new(&root, "op_decode")?;
    for op in &ops {
        seeds.add(op)?;
    }

    // apply_mutated: [op index, mode and flags, data] (see the target).
    let mut seeds = Seeds::new(&root, "apply_mutated")?;
    for input in [
        &[0u8, 0][..],
        &[3, 0],
        &[5, 0x04, 0, 20, 0xff],
        &[6, 0x08],
        &[7, 0x10 | 0x04, 0, 30, 0x00, 0, 31, 0x01],
        &[8, 0x03, 0, 40],
        &[9, 0x02, 0, 12, 0x00, 0x01],
    ] {
        seeds.add(input)?;
    }
    let mut replace = vec![2, 0x01];
    replace.extend(&ops[4]);
    seeds.add(&replace)?;

    // ticket: the text form (mode 0) and the payload (mode 1).
    let owner = testkit::key(1);
    let ticket = Ticket {
        team,
        team_name: "team".into(),
        psk: [7; 32],
        bootstrap: vec![
            "/ip4/192.0.2.10/tcp/4100/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                .into(),
        ],
        invite: "inv-1".into(),
        invite_seed: [9; 32],
        kind: InviteKind::Member { role: Role::Admin },
        expires_ms: 1_800_000_000_000,
    };
    let text = ticket.encode()?;
    let mut seeds = Seeds::new(&root, "ticket")?;
    seeds.add(&[&[0u8][..], text.as_bytes()].concat())?;
    let mut payload = vec![1u8, TICKET_VERSION];
    payload.extend(postcard::to_stdvec(&ticket)?);
    seeds.add(&payload)?;
    let node_ticket = Ticket {
        kind: InviteKind::Node {
            name: "node-1".into(),
            runtime: shoal_protocol::model::Runtime::Docker,
        },
        ..ticket.clone()
    };
    seeds.add(&[&[0u8][..], node_ticket.encode()?.as_bytes()].concat())?;

    // wire: [message type, message bytes]; the types are, in order,
    // SyncRequest, SyncResponse, JoinRequest, JoinReply, JoinMsg, JoinAnswer.
    let vv: VersionVector = replica.version_vector();
    let batch = ops[..4].to_vec();
    let newcomer = testkit::key(3).public();
    let fetch = wire(
        0,
        (
            team,
            "inv-1",
            newcomer,
            ticket.proof_for(&newcomer),
            VersionVector::new(),
        ),
    )?;
    let submit = wire(1, (team, &ops[1]))?;
    let answer = wire(0, (&batch, true))?;
    let mut seeds = Seeds::new(&root, "wire")?;
    for (pick, msg) in [
        (0u8, wire(0, &vv)?),
        (0, wire(1, &batch)?),
        (0, wire(2, &ops[5..6])?),
        (1, wire(0, &vv)?),
        (1, answer.clone()),
        (1, wire(2, ())?),
        (1, wire(3, "refused")?),
        (2, postcard_wire(&fetch)?),
        (2, postcard_wire(&submit)?),
        (3, wire(0, &answer)?),
        (3, wire(1, "refused")?),
        (4, fetch),
        (4, submit),
        (5, answer),
        (5, wire(1, ())?),
    ] {
        seeds.add(&[&[pick][..], &msg].concat())?;
    }

    // api_bodies: [type, JSON body]; the order of the target's match.
    let member = testkit::new_member(&testkit::key(4), "ana");
    let author = hex_key(&owner);
    let mut seeds = Seeds::new(&root, "api_bodies")?;
    seeds.json(
        0,
        &join::JoinRequest {
            ticket: text,
            member: Some(member.clone()),
        },
    )?;
    for op in history.iter().take(6) {
        seeds.json(
            1,
            &ops::PrepareRequest {
                author: author.clone(),
                action: op.body.action.clone(),
                lease: Some("lease-1".into()),
            },
        )?;
    }
    seeds.json(2, &ops::OpRequest { op: hex(&ops[1]) })?;
    seeds.json(
        3,
        &teams::GenesisRequest {
            name: "team".into(),
            owner: member,
        },
    )?;
    seeds.json(
        4,
        &teams::IdsRequest {
            author,
            count: 2,
            lease: true,
        },
    )?;
    for (pick, body) in [
        (
            5u8,
            r#"{"since_ms":1,"until_ms":2,"author":"a","action":"deployment.start","target":"t"}"#,
        ),
        (6, r#"{"prefix":"web"}"#),
        (7, r#"{"tail":10}"#),
        (8, r#"{"tail":10,"session":3,"after":7}"#),
        (9, r#"{"after":"2/14","wait":true}"#),
        (
            10,
            r#"{"node":"n","status":"running","product":"p","version":"v"}"#,
        ),
        (11, r#"{"unless":"abc","wait_ms":5000}"#),
        (12, r#"{"node":"node-0","prefix":"web"}"#),
        (13, r#"{"image":"library/busybox"}"#),
    ] {
        seeds.add(&[&[pick][..], body.as_bytes()].concat())?;
    }
    Ok(())
}

/// One target's corpus directory; seeds are numbered in the order added.
struct Seeds {
    dir: PathBuf,
    n: usize,
}

impl Seeds {
    fn new(root: &Path, target: &str) -> std::io::Result<Seeds> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        Ok(Seeds { dir, n: 0 })
    }

    fn add(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.n += 1;
        std::fs::write(self.dir.join(format!("seed-{:02}", self.n)), bytes)
    }

    fn json<T: Serialize>(
        &mut self,
        pick: u8,
        value: &T,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut bytes = vec![pick];
        bytes.extend(serde_json::to_vec(value)?);
        Ok(self.add(&bytes)?)
    }
}

/// A mesh message: the version byte, the enum variant index, the fields.
fn wire<T: Serialize>(variant: u8, fields: T) -> postcard::Result<Vec<u8>> {
    postcard::to_extend(&fields, vec![WIRE_VERSION, variant])
}

/// A `JoinRequest { payload }` message (a struct: no variant index).
fn postcard_wire(payload: &[u8]) -> postcard::Result<Vec<u8>> {
    postcard::to_extend(&payload, vec![WIRE_VERSION])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_key(key: &shoal_protocol::SecretKey) -> String {
    key.public().to_string()
}
