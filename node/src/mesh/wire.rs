//! Messages of the two mesh protocols and their codec.
//!
//! `/shoal/sync/1` carries anti-entropy and live pushes between allowed
//! peers; `/shoal/join/1` is the only protocol an unknown peer may use.
//! A request or a response is one stream, written and then closed. Its bytes
//! are one version byte ([`WIRE_VERSION`]) followed by the postcard encoding of
//! the message, so the length is the stream's length and is bounded per
//! protocol before anything is decoded.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_protocol::replica::VersionVector;

/// Version byte that starts every message. A peer speaking another version
/// negotiates another protocol name, so a mismatch here is a malformed message.
pub const WIRE_VERSION: u8 = 1;

/// Anti-entropy and live push between allowed peers.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/sync/1");
/// Join with an invite ticket; answered even for peers outside the allow list.
pub const JOIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/join/1");

/// Most ops in one batch ([`SyncRequest::Ops`], [`SyncRequest::Push`],
/// [`ToAll::Push`], [`SyncResponse::Ops`]).
pub const MAX_BATCH_OPS: usize = 256;
/// Most op bytes (sum of the encoded ops) in one batch.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest sync message on the wire: a full batch plus room for the framing
/// (length prefixes, version byte) and for large version vectors.
pub const MAX_SYNC_MESSAGE_BYTES: usize = MAX_BATCH_BYTES + 64 * 1024;
/// Largest join request. Strangers may send it, so it stays small.
pub const MAX_JOIN_REQUEST_BYTES: usize = 64 * 1024;
/// Largest join reply.
pub const MAX_JOIN_REPLY_BYTES: usize = 1024 * 1024;

/// A request on the sync protocol. Ops are opaque encoded, signed ops: the
/// mesh never decodes them, the replica does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// "This is what I hold": the peer answers with ops the sender lacks
    /// ([`SyncResponse::Ops`]) or with its own vector.
    VersionVector(VersionVector),
    /// One bounded batch of ops the receiver lacks (anti-entropy).
    Ops(Vec<Vec<u8>>),
    /// Freshly committed ops, pushed live to connected peers.
    Push(Vec<Vec<u8>>),
    /// A node's signed heartbeat, sent or forwarded (never an op).
    Heartbeat(shoal_protocol::heartbeat::SignedHeartbeat),
    /// A read-only question about the receiver's containers.
    Query(crate::query::Query),
    /// A node's signed live state, sent or forwarded like heartbeats but
    /// only to peers whose heartbeat speaks
    /// [`shoal_protocol::heartbeat::LIVE_PROTOCOL_VERSION`]: older nodes
    /// cannot decode it. New variants go last, so the others keep their
    /// encoding.
    Live(shoal_protocol::heartbeat::SignedLive),
    /// A push, heartbeat or live report sent (not relayed) by a node
    /// connected to every other current node of the team, to each: every
    /// node got it straight from the sender, so the receiver relays none of
    /// it (a relay would be a copy the peer already has; in a full mesh,
    /// half of all messages were such copies). Sent only to peers whose
    /// heartbeat speaks [`TO_ALL_PROTOCOL_VERSION`]; others get the plain
    /// message, which they relay.
    ToAll(ToAll),
}

/// What a [`SyncRequest::ToAll`] carries. Its own enum, not a boxed
/// [`SyncRequest`]: a recursive message would let a peer nest one in
/// another until decoding overflows the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToAll {
    /// As [`SyncRequest::Push`].
    Push(Vec<Vec<u8>>),
    /// As [`SyncRequest::Heartbeat`].
    Heartbeat(shoal_protocol::heartbeat::SignedHeartbeat),
    /// As [`SyncRequest::Live`] (boxed: the largest, and rare).
    Live(Box<shoal_protocol::heartbeat::SignedLive>),
}

/// The first protocol version ([`shoal_protocol::PROTOCOL_VERSION`]) whose
/// nodes decode [`SyncRequest::ToAll`].
pub const TO_ALL_PROTOCOL_VERSION: u32 = 3;

/// A response on the sync protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The responder's version vector.
    VersionVector(VersionVector),
    /// One bounded batch of ops; `more` says another request will return more.
    Ops { ops: Vec<Vec<u8>>, more: bool },
    /// Received (for [`SyncRequest::Ops`] and [`SyncRequest::Push`]).
    Ack,
    /// The request was understood but refused, with a reason.
    Refused(String),
    /// The answer to a [`SyncRequest::Query`].
    Answer(crate::query::Answer),
}

/// A join request: proof of holding an invite ticket. The content is defined
/// by the join protocol; the mesh only carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub payload: Vec<u8>,
}

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReply {
    /// Admitted; the payload is defined by the join protocol.
    Accepted(Vec<u8>),
    /// Refused, with a reason.
    Refused(String),
}

/// Errors encoding or decoding a wire message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unsupported wire version {0} (expected {WIRE_VERSION})")]
    Version(u8),
    #[error("cannot decode message: {0}")]
    Decode(String),
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error(
        "batch too large: {ops} ops, {bytes} bytes (at most {MAX_BATCH_OPS} ops and {MAX_BATCH_BYTES} bytes)"
    )]
    BatchTooLarge { ops: usize, bytes: usize },
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

/// A message that may travel on a mesh protocol.
pub trait WireMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Checks limits that the type cannot express (batch sizes).
    fn check(&self) -> Result<(), WireError> {
        Ok(())
    }
}

impl WireMessage for SyncRequest {
    fn check(&self) -> Result<(), WireError> {
        match self {
            SyncRequest::VersionVector(_)
            | SyncRequest::Heartbeat(_)
            | SyncRequest::Query(_)
            | SyncRequest::Live(_) => Ok(()),
            SyncRequest::Ops(ops)
            | SyncRequest::Push(ops)
            | SyncRequest::ToAll(ToAll::Push(ops)) => check_batch(ops),
            SyncRequest::ToAll(ToAll::Heartbeat(_) | ToAll::Live(_)) => Ok(()),
        }
    }
}

impl WireMessage for SyncResponse {
    fn check(&self) -> Result<(), WireError> {
        match self {
            SyncResponse::Ops { ops, .. } => check_batch(ops),
            _ => Ok(()),
        }
    }
}

impl WireMessage for JoinRequest {}
impl WireMessage for JoinReply {}

/// Checks a batch of ops against [`MAX_BATCH_OPS`] and [`MAX_BATCH_BYTES`].
pub fn check_batch(ops: &[Vec<u8>]) -> Result<(), WireError> {
    let bytes: usize = ops.iter().map(Vec::len).sum();
    if ops.len() > MAX_BATCH_OPS || bytes > MAX_BATCH_BYTES {
        return Err(WireError::BatchTooLarge {
            ops: ops.len(),
            bytes,
        });
    }
    Ok(())
}

/// Splits encoded ops, in order, into batches that pass [`check_batch`]. An op
/// larger than [`MAX_BATCH_BYTES`] on its own ends up alone in a batch that is
/// still refused: such an op cannot travel on the mesh.
pub fn split_batches(ops: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0usize;
    for op in ops {
        if !batch.is_empty()
            && (batch.len() == MAX_BATCH_OPS || bytes.saturating_add(op.len()) > MAX_BATCH_BYTES)
        {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes = bytes.saturating_add(op.len());
        batch.push(op);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// Encodes a message: the version byte, then postcard.
pub fn encode<M: WireMessage>(msg: &M) -> Result<Vec<u8>, WireError> {
    msg.check()?;
    postcard::to_extend(msg, vec![WIRE_VERSION]).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a message written by [`encode`], checking the version byte, that
/// nothing trails the message, and the batch limits.
pub fn decode<M: WireMessage>(bytes: &[u8]) -> Result<M, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let (msg, rest): (M, _) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    msg.check()?;
    Ok(msg)
}

/// The request-response codec of one protocol: it moves whole messages as
/// bytes and enforces the protocol's size limits. Decoding happens in the
/// actor, which knows the peer and can log and drop it: a message that fails
/// inside a codec is discarded by libp2p without telling the behaviour.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    max_request: usize,
    max_response: usize,
}

impl Codec {
    pub(crate) fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
        }
    }
}

async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut buf = Vec::new();
    // One byte over the limit tells "too large" apart from "exactly at it".
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    io.take(limit).read_to_end(&mut buf).await?;
    if buf.len() > max {
        let e = WireError::TooLarge {
            len: buf.len(),
            max,
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    if buf.is_empty() {
        // Every message has its version byte: an empty stream is a peer
        // that closed without answering.
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

async fn write_frame<T>(io: &mut T, bytes: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if bytes.len() > max {
        let e = WireError::TooLarge {
            len: bytes.len(),
            max,
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
    }
    io.write_all(bytes).await
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use shoal_protocol::{LogId, SecretKey};

    fn vv() -> VersionVector {
        let a = SecretKey::from_seed([1; 32]).public();
        let b = SecretKey::from_seed([2; 32]).public();
        let mut v = VersionVector::new();
        v.insert(
            LogId {
                author: a,
                origin: b,
            },
            7,
        );
        v
    }

    /// `SyncRequest::Heartbeat` as the first release encodes it: the wire
    /// version, the variant (3), then the signed heartbeat made by that
    /// release's code (the fixture of `shoal_protocol::heartbeat`'s tests).
    const FIRST_RELEASE_HEARTBEAT_REQUEST: &str = "0103010909090909090909090909090909090909090909090909090909090909090909ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22cfbd095ffbc3105302e312e300101162f6970342f31302e302e302e372f7463702f3430303140a7c3caf00dd3a478cbbe2813f6ffcfb606f94b1df95150fba9729770cb884f21c80655995b4964bfe18add673dc25935cf40c3df60e3371519cac9c450ceef0b";

    #[test]
    fn heartbeats_keep_the_encoding_older_releases_decode() {
        let bytes: Vec<u8> = (0..FIRST_RELEASE_HEARTBEAT_REQUEST.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&FIRST_RELEASE_HEARTBEAT_REQUEST[i..i + 2], 16).unwrap())
            .collect();
        let req = decode::<SyncRequest>(&bytes).unwrap();
        let SyncRequest::Heartbeat(hb) = &req else {
            panic!("not a heartbeat: {req:?}");
        };
        assert_eq!(hb.verify(), Ok(()));
        assert_eq!(encode(&req).unwrap(), bytes);
        // Live reports are a variant older releases do not know (they drop
        // the peer of one): it comes after every variant they know.
        let k = SecretKey::from_seed([7; 32]);
        let report = shoal_protocol::heartbeat::LiveReport {
            version: shoal_protocol::heartbeat::LIVE_REPORT_VERSION,
            team: hb.beat.team,
            node: k.public(),
            made_ms: 1,
            live: shoal_protocol::heartbeat::Live::default(),
        };
        let live = shoal_protocol::heartbeat::SignedLive::sign(report, &k).unwrap();
        let live_copy = live.clone();
        let req = SyncRequest::Live(live);
        let bytes = encode(&req).unwrap();
        assert_eq!(bytes[1], 5);
        assert_eq!(decode::<SyncRequest>(&bytes).unwrap(), req);
        // So are messages to all, after it.
        let req = SyncRequest::ToAll(ToAll::Push(vec![vec![3; 4]]));
        let bytes = encode(&req).unwrap();
        assert_eq!(bytes[..5], [WIRE_VERSION, 6, 0, 1, 4]);
        assert_eq!(decode::<SyncRequest>(&bytes).unwrap(), req);
        let req = SyncRequest::ToAll(ToAll::Live(Box::new(live_copy)));
        let bytes = encode(&req).unwrap();
        assert_eq!(bytes[..3], [WIRE_VERSION, 6, 2]);
        assert_eq!(decode::<SyncRequest>(&bytes).unwrap(), req);
    }

    #[test]
    fn roundtrip_every_message() {
        let reqs = [
            SyncRequest::VersionVector(vv()),
            SyncRequest::Ops(vec![vec![1, 2, 3], vec![]]),
            SyncRequest::Push(vec![vec![9; 300]]),
            SyncRequest::ToAll(ToAll::Push(vec![vec![8; 3], vec![]])),
        ];
        for r in reqs {
            let bytes = encode(&r).unwrap();
            assert_eq!(bytes[0], WIRE_VERSION);
            assert_eq!(decode::<SyncRequest>(&bytes).unwrap(), r);
        }
        let resps = [
            SyncResponse::VersionVector(vv()),
            SyncResponse::Ops {
                ops: vec![vec![4; 10]],
                more: true,
            },
            SyncResponse::Ack,
            SyncResponse::Refused("no".into()),
        ];
        for r in resps {
            assert_eq!(decode::<SyncResponse>(&encode(&r).unwrap()).unwrap(), r);
        }
        let j = JoinRequest {
            payload: vec![5; 64],
        };
        assert_eq!(decode::<JoinRequest>(&encode(&j).unwrap()).unwrap(), j);
        let j = JoinReply::Accepted(vec![6]);
        assert_eq!(decode::<JoinReply>(&encode(&j).unwrap()).unwrap(), j);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(decode::<SyncRequest>(&[]), Err(WireError::Empty));
        assert_eq!(decode::<SyncRequest>(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(
            decode::<SyncRequest>(&[WIRE_VERSION, 0xff, 0xff, 0xff]),
            Err(WireError::Decode(_))
        ));
        let mut bytes = encode(&SyncResponse::Ack).unwrap();
        bytes.push(0);
        assert_eq!(decode::<SyncResponse>(&bytes), Err(WireError::Trailing(1)));
    }

    #[test]
    fn batch_limits() {
        let too_many = vec![vec![0u8]; MAX_BATCH_OPS + 1];
        assert!(matches!(
            encode(&SyncRequest::Push(too_many.clone())),
            Err(WireError::BatchTooLarge { .. })
        ));
        // Hand-built oversized batches are refused on decode as well.
        for req in [
            SyncRequest::Push(too_many.clone()),
            SyncRequest::ToAll(ToAll::Push(too_many)),
        ] {
            let raw = postcard::to_extend(&req, vec![WIRE_VERSION]).unwrap();
            assert!(matches!(
                decode::<SyncRequest>(&raw),
                Err(WireError::BatchTooLarge { .. })
            ));
        }

        let ops: Vec<Vec<u8>> = (0..600).map(|i| vec![0u8; 10 + i % 3]).collect();
        let batches = split_batches(ops.clone());
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| check_batch(b).is_ok()));
        assert_eq!(batches.concat(), ops);

        let big = vec![vec![0u8; MAX_BATCH_BYTES / 2 + 1]; 3];
        let batches = split_batches(big);
        assert_eq!(batches.len(), 3);
        assert!(split_batches(Vec::new()).is_empty());
    }
}
