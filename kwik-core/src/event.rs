//! What the engine hands out: datagrams to send and events for the application.

use std::net::{IpAddr, SocketAddr};

use quinn_proto::{Dir, EcnCodepoint, VarInt};

use crate::delegation::DelegationOutcome;
use crate::error::{PathError, SessionError};
use crate::ids::{DelegationId, PathId, SessionHandle, StreamId, StripeId};
use crate::stats::SessionStats;
use crate::streams::StreamEvent;
use crate::ticket::TicketError;

/// A datagram to send. The payload is in the buffer passed to [`Endpoint::poll_transmit`](crate::Endpoint::poll_transmit).
#[derive(Debug, Clone, Copy)]
pub struct Transmit {
    /// The session the datagram belongs to, if any (handshake refusals have none).
    pub session: Option<SessionHandle>,
    /// The path it travels on, if it belongs to a session's path.
    pub path: Option<PathId>,
    /// Where to send it.
    pub destination: SocketAddr,
    /// Source address to use, if the socket has several.
    pub src_ip: Option<IpAddr>,
    /// ECN codepoint to set.
    pub ecn: Option<EcnCodepoint>,
    /// Bytes of payload in the buffer.
    pub size: usize,
    /// With several datagrams in one transmit (GSO), the size of each but the last.
    pub segment_size: Option<usize>,
}

/// Something the application may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session this side dialed is established.
    Connected(SessionHandle),
    /// A client established a new session with this server.
    Incoming(SessionHandle),
    /// A session ended; the error is also what every later operation on it reports.
    Closed {
        /// The session.
        session: SessionHandle,
        /// Why.
        error: SessionError,
    },
    /// The peer opened logical streams of `dir`: call `accept`.
    StreamOpened {
        /// The session.
        session: SessionHandle,
        /// Their direction.
        dir: Dir,
    },
    /// A logical stream has data, a fin or a reset to read.
    StreamReadable {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
    },
    /// A logical stream that refused a write has credit again.
    StreamWritable {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
    },
    /// Every byte of a finished stream reached the peer.
    StreamFinished {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
    },
    /// The peer stopped a stream we were writing; it was reset.
    StreamStopped {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
        /// The peer's code.
        code: VarInt,
    },
    /// More logical streams of `dir` may be opened.
    StreamAvailable {
        /// The session.
        session: SessionHandle,
        /// Their direction.
        dir: Dir,
    },
    /// Raw datagrams arrived: call [`Session::read_raw`](crate::Session::read_raw).
    RawDatagram {
        /// The session.
        session: SessionHandle,
    },
    /// A path whose raw datagram buffer was full (a `try_send_raw` got its datagram back)
    /// has room again.
    RawWritable {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path was added to the session (primary: by `add_path`; client: at the primary's
    /// request); it is connecting.
    PathAdded {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path carries the session (joined, or recovered from degraded or failed).
    PathActive {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path's health probes go unanswered; it is not failed yet.
    PathDegraded {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path failed; a stripe's ranges it owed are pulled from the other servers, a plain
    /// delegation's rest goes back to the primary.
    PathFailed {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
        /// Why.
        error: PathError,
    },
    /// Client: the server on a path is draining (being taken out of service). A
    /// secondary's path gets no new pulls, and is closed and removed once the pulls it
    /// owes are in; on the primary path, the session takes no new streams and ends once
    /// the primary's work is done.
    PathDraining {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path is gone for good.
    PathRemoved {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// This server was delegated a range: call [`Session::accept_delegation`](crate::Session::accept_delegation).
    DelegationReceived {
        /// The session.
        session: SessionHandle,
    },
    /// A delegation that refused a write has room again.
    DelegationWritable {
        /// The session.
        session: SessionHandle,
        /// The delegation.
        delegation: DelegationId,
    },
    /// Primary: a delegation made with `delegate` was settled.
    DelegationFinished {
        /// The session.
        session: SessionHandle,
        /// The delegation.
        delegation: DelegationId,
        /// How it ended.
        outcome: DelegationOutcome,
    },
    /// Client: a server refused a pull under the primary's ticket; its range goes to
    /// the other paths (or, for a plain delegation, back to the primary).
    PullRefused {
        /// The session.
        session: SessionHandle,
        /// The path whose server refused.
        path: PathId,
        /// Why.
        error: TicketError,
    },
    /// Primary: every byte of a stripe reached the client.
    StripeFinished {
        /// The session.
        session: SessionHandle,
        /// The stripe, as `stripe` returned it.
        stripe: StripeId,
    },
    /// Server: [`Endpoint::drain`](crate::Endpoint::drain) is complete: the last session
    /// this server served is gone (its work done, or its drain deadline passed).
    Drained,
    /// Periodic metrics (when `metrics_enabled`).
    Metrics {
        /// The session.
        session: SessionHandle,
        /// Its stats at this moment.
        stats: Box<SessionStats>,
    },
}

pub(crate) fn stream_event(session: SessionHandle, e: StreamEvent) -> Event {
    match e {
        StreamEvent::Opened(dir) => Event::StreamOpened { session, dir },
        StreamEvent::Readable(stream) => Event::StreamReadable { session, stream },
        StreamEvent::Writable(stream) => Event::StreamWritable { session, stream },
        StreamEvent::Finished(stream) => Event::StreamFinished { session, stream },
        StreamEvent::Stopped(stream, code) => Event::StreamStopped {
            session,
            stream,
            code,
        },
        StreamEvent::Available(dir) => Event::StreamAvailable { session, dir },
    }
}
