//! The push stream: one long-lived stream per peer that carries live pushes
//! and, from its second version, the node's other one-way messages.
//!
//! A push over request-response opens a stream, negotiates the protocol,
//! sends, answers and closes: several frames and a round trip before the
//! first byte of the push. The push stream is negotiated once per
//! connection, then each push is one frame out and one frame back. Frames
//! are a 4-byte big-endian length and an encoded [`SyncRequest`] or
//! [`SyncResponse`], whose first byte is the wire version.
//!
//! Two versions, told apart by the protocol name:
//! - [`PUSH_PROTOCOL`] carries pushes only (`Push`, `ToAll::Push`);
//! - [`PUSH_PROTOCOL_V2`] carries heartbeats and live reports too (plain
//!   and `ToAll`). Every node sends both to every peer every few seconds:
//!   as request-response exchanges, each opened, negotiated and closed a
//!   stream of its own.
//!
//! A node opens the second version and, when the peer does not speak it
//! (an older release), the first; messages then go by request-response.
//!
//! Two tasks run the streams, both spawned and owned by the mesh actor:
//! - [`push_link`] opens our stream to one peer and sends the batches the
//!   actor hands it, one at a time, reporting each answer. When the stream
//!   cannot be opened or fails, it reports so and ends; the actor then
//!   sends over request-response (which every release speaks) and reopens
//!   later.
//! - [`serve_pushes`] reads the pushes of one inbound stream, hands each to
//!   the actor (which checks the allow list again and passes it to the
//!   daemon) and writes the daemon's answer back. It ends on the first
//!   malformed frame, an unanswered push or a closed stream.

use std::io;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::swarm::{HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT};
use super::wire::{self, MAX_SYNC_MESSAGE_BYTES, SyncRequest, SyncResponse, ToAll, WireError};

/// The push stream's first protocol: pushes only. Its frames carry
/// versioned wire messages.
pub const PUSH_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/push/1");
/// The push stream's second protocol: pushes, heartbeats and live reports
/// ([`carries`]).
pub const PUSH_PROTOCOL_V2: StreamProtocol = StreamProtocol::new("/shoal/push/2");

/// Whether a push stream carries `request`: pushes always, heartbeats and
/// live reports on the second version (`messages`), nothing else.
pub(crate) fn carries(request: &SyncRequest, messages: bool) -> bool {
    match request {
        SyncRequest::Push(_) | SyncRequest::ToAll(ToAll::Push(_)) => true,
        SyncRequest::Heartbeat(_)
        | SyncRequest::Live(_)
        | SyncRequest::ToAll(ToAll::Heartbeat(_) | ToAll::Live(_)) => messages,
        SyncRequest::VersionVector(_) | SyncRequest::Ops(_) | SyncRequest::Query(_) => false,
    }
}
/// After a push stream fails, pushes go over request-response for this long
/// before the stream is opened again.
pub const STREAM_RETRY: Duration = Duration::from_secs(2);
/// Reports from the stream tasks waiting for the actor.
pub const STREAM_EVENT_CAPACITY: usize = 256;
/// Inbound push streams one peer may hold open at once: one per connection
/// of a simultaneous dial, and one being replaced.
pub const MAX_INBOUND_STREAMS_PER_PEER: usize = 3;

/// What the stream tasks report to the mesh actor.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// Our stream to `peer` (link `link_id`) is open; `messages`: it is the
    /// second version, which carries messages too.
    Opened {
        peer: PeerId,
        link_id: u64,
        messages: bool,
    },
    /// The push `id` on our stream to `peer` was answered.
    Answered { peer: PeerId, id: u64 },
    /// Our stream to `peer` is closed or could not be opened; `in_flight`
    /// is the push it was carrying (its id and encoded request), which the
    /// peer may not have received.
    Down {
        peer: PeerId,
        link_id: u64,
        unsupported: bool,
        in_flight: Option<(u64, Vec<u8>)>,
    },
    /// A push read from `peer`'s stream, for the daemon to answer.
    Request {
        peer: PeerId,
        request: Box<SyncRequest>,
        reply: oneshot::Sender<SyncResponse>,
    },
    /// `peer` sent something no honest peer sends.
    Malformed { peer: PeerId, error: String },
}

/// Opens the push stream to `peer` (the second version, else the first)
/// and carries the batches the actor sends on `batches` (an id and an
/// encoded request each), one at a time. Reports
/// go to `events`; the task ends when the stream fails, `batches` is closed
/// (the actor dropped the link) or `cancel` fires.
pub(crate) async fn push_link(
    mut control: Control,
    peer: PeerId,
    link_id: u64,
    mut batches: mpsc::Receiver<(u64, Vec<u8>)>,
    events: mpsc::Sender<StreamEvent>,
    cancel: CancellationToken,
) {
    let down = |unsupported, in_flight| StreamEvent::Down {
        peer,
        link_id,
        unsupported,
        in_flight,
    };
    let open = async {
        match control.open_stream(peer, PUSH_PROTOCOL_V2).await {
            Ok(stream) => Ok((stream, true)),
            Err(OpenStreamError::UnsupportedProtocol(_)) => control
                .open_stream(peer, PUSH_PROTOCOL)
                .await
                .map(|stream| (stream, false)),
            Err(e) => Err(e),
        }
    };
    let opened = tokio::select! {
        () = cancel.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, open) => r,
    };
    let (mut stream, messages) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => {
            debug!(%peer, "peer has no push stream; pushes use request-response");
            let _ = events.send(down(true, None)).await;
            return;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "cannot open the push stream");
            let _ = events.send(down(false, None)).await;
            return;
        }
        Err(_) => {
            debug!(%peer, "opening the push stream timed out");
            let _ = events.send(down(false, None)).await;
            return;
        }
    };
    if events
        .send(StreamEvent::Opened {
            peer,
            link_id,
            messages,
        })
        .await
        .is_err()
    {
        return;
    }
    loop {
        let (id, request) = tokio::select! {
            () = cancel.cancelled() => return,
            batch = batches.recv() => match batch {
                Some(batch) => batch,
                None => return,
            },
        };
        let exchanged = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut stream, &request)) => r,
        };
        // A failure, and whether the peer sent something malformed.
        let outcome = match exchanged {
            Ok(Ok(response)) => wire::decode::<SyncResponse>(&response)
                .map(drop)
                .map_err(|e| (true, e.to_string())),
            Ok(Err(e)) => Err((e.kind() == io::ErrorKind::InvalidData, e.to_string())),
            Err(_) => Err((false, "no answer in time".to_owned())),
        };
        let event = match outcome {
            Ok(()) => StreamEvent::Answered { peer, id },
            Err((true, error)) => {
                let _ = events.send(StreamEvent::Malformed { peer, error }).await;
                down(false, Some((id, request)))
            }
            Err((false, error)) => {
                debug!(%peer, %error, "push stream failed");
                down(false, Some((id, request)))
            }
        };
        let ended = matches!(event, StreamEvent::Down { .. });
        if events.send(event).await.is_err() || ended {
            return;
        }
    }
}

/// Writes one request and reads its answer.
async fn exchange(stream: &mut Stream, request: &[u8]) -> io::Result<Vec<u8>> {
    write_frame(stream, request).await?;
    read_frame(stream)
        .await?
        .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

/// Serves the pushes `peer` sends on one inbound stream (and its messages,
/// on the second version: `messages`); see the module docs.
pub(crate) async fn serve_pushes(
    peer: PeerId,
    mut stream: Stream,
    messages: bool,
    events: mpsc::Sender<StreamEvent>,
    cancel: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => return,
            f = read_frame(&mut stream) => f,
        };
        let bytes = match frame {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let error = e.to_string();
                let _ = events.send(StreamEvent::Malformed { peer, error }).await;
                return;
            }
            Err(e) => {
                debug!(%peer, error = %e, "inbound push stream closed");
                return;
            }
        };
        let request = match wire::decode::<SyncRequest>(&bytes) {
            Ok(request) if carries(&request, messages) => request,
            Ok(_) => {
                let error = "a request this push stream does not carry".to_owned();
                let _ = events.send(StreamEvent::Malformed { peer, error }).await;
                return;
            }
            Err(e) => {
                let error = e.to_string();
                let _ = events.send(StreamEvent::Malformed { peer, error }).await;
                return;
            }
        };
        let (reply, answer) = oneshot::channel();
        let event = StreamEvent::Request {
            peer,
            request: Box::new(request),
            reply,
        };
        if events.send(event).await.is_err() {
            return;
        }
        let answer = tokio::select! {
            () = cancel.cancelled() => return,
            a = tokio::time::timeout(REQUEST_TIMEOUT, answer) => a,
        };
        // Unanswered (the peer was removed, or the daemon dropped it): the
        // stream closes and the peer's push fails, as over request-response.
        let Ok(Ok(response)) = answer else {
            return;
        };
        let Ok(response) = wire::encode(&response) else {
            return;
        };
        if let Err(e) = write_frame(&mut stream, &response).await {
            debug!(%peer, error = %e, "cannot answer on the push stream");
            return;
        }
    }
}

/// One frame: the length, then the bytes, written at once so they leave in
/// one muxer frame.
async fn write_frame(stream: &mut Stream, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_SYNC_MESSAGE_BYTES {
        let e = WireError::TooLarge {
            len: bytes.len(),
            max: MAX_SYNC_MESSAGE_BYTES,
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
    }
    let len = u32::try_from(bytes.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// Reads one frame; `None` when the stream ends cleanly between frames. A
/// length over the wire's limit is `InvalidData`, before anything is
/// allocated for it.
async fn read_frame(stream: &mut Stream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        let n = stream.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, WireError::Empty));
    }
    if len > MAX_SYNC_MESSAGE_BYTES {
        let e = WireError::TooLarge {
            len,
            max: MAX_SYNC_MESSAGE_BYTES,
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes).await?;
    Ok(Some(bytes))
}
