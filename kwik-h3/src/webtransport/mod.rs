//! WebTransport over a KWIK session (draft-ietf-webtrans-http3, as `h3-webtransport` 0.1
//! speaks it).
//!
//! **Server**: build the h3 server with [`server_builder`] and run
//! [`h3_webtransport::server::WebTransportSession`] on it unchanged; accept it with
//! [`accept_session`], which first waits for the client's SETTINGS. It lacks a way to
//! close a session, so [`ServerControl`] (taken from the [`Connection`] before h3 owns it)
//! adds one: it writes the CLOSE_WEBTRANSPORT_SESSION capsule on the CONNECT stream, reads
//! the client's, and sends datagrams that wait for buffer space.
//!
//! **Client**: `h3-webtransport` has none, so [`Client`] is written here on h3's client
//! API. [`Client::connect`] sends the extended CONNECT; streams carry the WebTransport
//! stream type and the session id in front of their bytes; datagrams carry the session's
//! quarter stream id (RFC 9297). h3 0.0.8's client builder can neither announce WebTransport
//! in its SETTINGS nor take the server's WebTransport streams, so the [`Connection`] does
//! both for it: it adds SETTINGS_ENABLE_WEBTRANSPORT and SETTINGS_WEBTRANSPORT_MAX_SESSIONS
//! to the client's SETTINGS frame, reads the type of each stream the server opens, and hands
//! WebTransport streams to the client instead of h3 (unidirectional ones as the [`Driver`]
//! runs, bidirectional ones as [`Client::accept_bi`] is polled).
//!
//! Datagrams travel on the session's primary path unless the application picks another
//! ([`Connection::with_datagram_path`]); they are received from any path.
//!
//! [`Connection`]: crate::Connection
//! [`Connection::with_datagram_path`]: crate::Connection::with_datagram_path

use std::sync::{Arc, Mutex, Weak};

use bytes::{Bytes, BytesMut};
use h3::error::{ConnectionError, StreamError};
use h3::quic::{StreamErrorIncoming, StreamId};
use h3::stream::BufRecvStream;
use kwik_async::{PathId, RawSendError, ReadError, Session, SessionError, VarInt, WriteError};

pub use h3::webtransport::SessionId;
pub use h3_webtransport;

use crate::lock;
use crate::varint::put_varint;

mod client;
mod server;
mod sniff;

pub(crate) use client::ClientShared;
pub use client::{Client, Driver};
pub use server::{ServerControl, ServerSession, accept_session, server_builder};
pub(crate) use sniff::{Sniff, Sniffed, announce_in_settings};

/// The stream type of a WebTransport unidirectional stream.
const WT_UNI: u64 = 0x54;
/// The frame type that opens a WebTransport bidirectional stream.
const WT_BIDI: u64 = 0x41;
/// SETTINGS_ENABLE_WEBTRANSPORT, as h3-webtransport's server checks it.
const SETTINGS_ENABLE_WEBTRANSPORT: u64 = 0x2b60_3742;
/// SETTINGS_WEBTRANSPORT_MAX_SESSIONS.
const SETTINGS_WEBTRANSPORT_MAX_SESSIONS: u64 = 0x2b60_3743;
/// H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED: a stream of a session this side does not have.
const BUFFERED_STREAM_REJECTED: u64 = 0x3994_bd84;
/// H3_STREAM_CREATION_ERROR: a server-initiated bidirectional stream that is not
/// WebTransport's.
const STREAM_CREATION_ERROR: u64 = 0x103;
/// WEBTRANSPORT_SESSION_GONE: the code that resets and stops a session's streams once the
/// session is over.
pub const SESSION_GONE: u64 = 0x170d_7b68;

/// A client's WebTransport bidirectional stream: futures' and tokio's `AsyncRead` and
/// `AsyncWrite`, and h3's stream traits.
pub type ClientBidiStream = BufRecvStream<crate::BidiStream<Bytes>, Bytes>;
/// A client's WebTransport unidirectional send stream.
pub type ClientSendStream = BufRecvStream<crate::SendStream<Bytes>, Bytes>;
/// A client's WebTransport unidirectional receive stream.
pub type ClientRecvStream = BufRecvStream<crate::RecvStream, Bytes>;

/// What went wrong with a WebTransport session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebTransportError {
    /// The HTTP/3 connection failed.
    #[error("http/3 connection: {0}")]
    Connection(#[from] ConnectionError),
    /// The CONNECT stream failed.
    #[error("http/3 stream: {0}")]
    Stream(#[from] StreamError),
    /// A WebTransport stream failed.
    #[error("stream: {0}")]
    Quic(#[from] StreamErrorIncoming),
    /// The server answered the CONNECT with this status.
    #[error("the server refused the session with status {0}")]
    Refused(http::StatusCode),
    /// The CONNECT request could not be built from this URI.
    #[error("bad CONNECT request: {0}")]
    Request(#[from] http::Error),
    /// The KWIK session ended.
    #[error("session: {0}")]
    Session(#[from] SessionError),
    /// Reading the CONNECT stream failed.
    #[error("reading the CONNECT stream: {0}")]
    Read(#[from] ReadError),
    /// Writing the CONNECT stream failed.
    #[error("writing the CONNECT stream: {0}")]
    Write(#[from] WriteError),
    /// The CONNECT stream was already finished or reset.
    #[error("the CONNECT stream is closed: {0}")]
    ClosedStream(#[from] kwik_async::ClosedStream),
    /// No open CONNECT stream of this id on the connection.
    #[error("no WebTransport session on stream {0}")]
    UnknownSession(u64),
    /// The peer's capsules were malformed.
    #[error(transparent)]
    Capsule(#[from] crate::CapsuleError),
}

/// The KWIK stream id of a WebTransport session's CONNECT stream.
pub fn session_stream(session: SessionId) -> u64 {
    StreamId::from(session).into_inner()
}

/// Sends one WebTransport session's datagrams: each carries the session's quarter stream
/// id in front of the payload (RFC 9297), on the connection's datagram path.
#[derive(Debug, Clone)]
pub struct Datagrams {
    session: Session,
    path: PathId,
    head: Bytes,
}

impl Datagrams {
    fn new(session: Session, path: PathId, stream: u64) -> Self {
        let mut head = BytesMut::with_capacity(8);
        put_varint(&mut head, stream / 4);
        Self {
            session,
            path,
            head: head.freeze(),
        }
    }

    fn encode(&self, payload: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(self.head.len() + payload.len());
        b.extend_from_slice(&self.head);
        b.extend_from_slice(payload);
        b.freeze()
    }

    /// Sends `payload` now; if the path's send buffer is full, the oldest queued datagrams
    /// make room (the path's `raw_displaced` counts it).
    pub fn send(&self, payload: &[u8]) -> Result<(), RawSendError> {
        self.session.send_raw(self.path, self.encode(payload))
    }

    /// Sends `payload`, waiting while the path's send buffer is full.
    pub async fn send_wait(&self, payload: &[u8]) -> Result<(), RawSendError> {
        self.session
            .send_raw_wait(self.path, self.encode(payload))
            .await
    }

    /// The largest payload the path carries now, if it carries datagrams at all.
    pub fn max_payload(&self) -> Option<usize> {
        self.session
            .max_raw_size(self.path)
            .map(|m| m.saturating_sub(self.head.len()))
    }
}

/// A session's streams, held weakly: a stream the application dropped is left out.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    send: Vec<Weak<Mutex<kwik_async::SendStream>>>,
    recv: Vec<Weak<Mutex<crate::RecvHalf>>>,
    /// Dropped streams are pruned when the lists reach this length, so they stay within
    /// twice the live streams.
    prune_at: usize,
    ended: bool,
}

impl Tracked {
    pub(crate) fn add(
        &mut self,
        send: Option<&Arc<Mutex<kwik_async::SendStream>>>,
        recv: Option<&Arc<Mutex<crate::RecvHalf>>>,
    ) {
        if self.ended {
            // The session is over: a stream of it that comes late ends at once.
            let code = VarInt::from_u64(SESSION_GONE).unwrap_or(VarInt::MAX);
            if let Some(send) = send {
                let _ = lock(send).reset(code);
            }
            if let Some(recv) = recv {
                end_recv(recv, code);
            }
            return;
        }
        if self.send.len() + self.recv.len() >= self.prune_at {
            self.send.retain(|w| w.strong_count() > 0);
            self.recv.retain(|w| w.strong_count() > 0);
            self.prune_at = (2 * (self.send.len() + self.recv.len())).max(64);
        }
        self.send.extend(send.map(Arc::downgrade));
        self.recv.extend(recv.map(Arc::downgrade));
    }

    /// Resets every send half and stops every receive half still held (once).
    pub(crate) fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let code = VarInt::from_u64(SESSION_GONE).unwrap_or(VarInt::MAX);
        // Halves that already ended have nothing left to refuse.
        for send in self.send.drain(..).filter_map(|w| w.upgrade()) {
            let _ = lock(&send).reset(code);
        }
        for recv in self.recv.drain(..).filter_map(|w| w.upgrade()) {
            end_recv(&recv, code);
        }
    }
}

/// Stops a receive half of a session that ended, and leaves its reader the session's end
/// to read, [`SESSION_GONE`] as if the peer had reset it: whoever holds the half must not
/// take what it read so far for the whole stream.
fn end_recv(recv: &Mutex<crate::RecvHalf>, code: VarInt) {
    let mut half = lock(recv);
    if half.stream.stop(code).is_ok() {
        half.prefix = None;
        half.end = Some(Err(ReadError::Reset(code)));
    }
}

/// Whether a stream (or first frame) type is a WebTransport stream header's.
pub(crate) fn is_stream_header(ty: u64) -> bool {
    ty == WT_UNI || ty == WT_BIDI
}
