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

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use h3::client::{RequestStream, SendRequest};
use h3::error::{ConnectionError, StreamError};
use h3::quic::{SendStreamUnframed, StreamErrorIncoming, StreamId, WriteBuf};
use h3::stream::{BidiStreamHeader, BufRecvStream, UniStreamHeader};
use h3_datagram::datagram_handler::{DatagramReader, DatagramSender, HandleDatagramsExt};
use kwik_async::{PathId, RawSendError, ReadError, Session, SessionError, VarInt, WriteError};

pub use h3::webtransport::SessionId;
pub use h3_webtransport;

use crate::capsule::{CapsuleReader, FrameReader, close_capsule, data_frame};
use crate::varint::{get_varint, put_varint};
use crate::{Closed, Connection, Registry, lock};

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

/// An h3 server builder with what WebTransport needs: WebTransport, extended CONNECT and
/// HTTP datagrams on, one WebTransport session per connection.
pub fn server_builder() -> h3::server::Builder {
    let mut b = h3::server::builder();
    b.enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1);
    b
}

/// Accepts a WebTransport session on `conn` for the CONNECT `request` on `stream`:
/// `h3-webtransport`'s `WebTransportSession::accept`, once the client's SETTINGS have
/// arrived. h3 hands out requests without waiting for the peer's SETTINGS, and KWIK
/// delivers logical streams independently, so the CONNECT can come first; `accept` would
/// then find WebTransport off and close the connection. Request streams opened meanwhile
/// (before the session exists, none belongs to it) are refused with H3_REQUEST_REJECTED.
pub async fn accept_session(
    request: http::Request<()>,
    stream: h3::server::RequestStream<crate::BidiStream<Bytes>, Bytes>,
    mut conn: h3::server::Connection<Connection, Bytes>,
) -> Result<ServerSession, WebTransportError> {
    use h3::ConnectionState;
    use h3::quic::{RecvStream as _, SendStream as _};
    poll_fn(|cx| {
        // `settings()` borrows the peer's SETTINGS once they arrived, and makes up
        // defaults before.
        while matches!(conn.settings(), std::borrow::Cow::Owned(_)) {
            match ready!(conn.poll_accept_request_stream(cx)) {
                Ok(Some(mut early)) => {
                    let code = h3::error::Code::H3_REQUEST_REJECTED.value();
                    early.stop_sending(code);
                    early.reset(code);
                }
                Ok(None) => {
                    return Poll::Ready(Err(WebTransportError::Session(
                        SessionError::LocallyClosed,
                    )));
                }
                Err(e) => return Poll::Ready(Err(WebTransportError::Connection(e))),
            }
        }
        Poll::Ready(Ok(()))
    })
    .await?;
    Ok(h3_webtransport::server::WebTransportSession::accept(request, stream, conn).await?)
}

/// The server's WebTransport session over a KWIK session.
pub type ServerSession = h3_webtransport::server::WebTransportSession<Connection, Bytes>;

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

/// A server connection's WebTransport controls that `h3-webtransport` lacks: closing a
/// session with a code and reason, learning how the client closed it, and datagrams that
/// wait for buffer space. Take it with [`Connection::webtransport_server`] before handing
/// the connection to h3.
#[derive(Debug, Clone)]
pub struct ServerControl {
    registry: Arc<Registry>,
    session: Session,
    datagram_path: PathId,
    /// What `closed` has read of each CONNECT stream, kept across calls so that a call
    /// dropped halfway loses nothing.
    watches: Arc<Mutex<HashMap<u64, CloseWatch>>>,
}

#[derive(Debug, Default)]
struct CloseWatch {
    frames: FrameReader,
    closed: Option<Closed>,
}

impl Connection {
    /// The WebTransport controls of this (server) connection; see [`ServerControl`]. Its
    /// datagrams go on the path chosen with [`Connection::with_datagram_path`] before this
    /// call.
    pub fn webtransport_server(&self) -> ServerControl {
        ServerControl {
            registry: self.registry.clone(),
            session: self.session.clone(),
            datagram_path: self.datagram_path,
            watches: Arc::default(),
        }
    }
}

impl ServerControl {
    /// Closes `session`: sends CLOSE_WEBTRANSPORT_SESSION with `code` and `reason` (cut to
    /// [`crate::MAX_CLOSE_REASON`] bytes) on its CONNECT stream and finishes the stream.
    pub async fn close(
        &self,
        session: SessionId,
        code: u32,
        reason: &str,
    ) -> Result<(), WebTransportError> {
        let id = session_stream(session);
        let send = self
            .registry
            .send_half(id)
            .ok_or(WebTransportError::UnknownSession(id))?;
        let frame = data_frame(&close_capsule(code, reason));
        let mut written = 0;
        while written < frame.len() {
            written += poll_fn(|cx| lock(&send).poll_send(cx, &frame[written..])).await?;
        }
        lock(&send).finish()?;
        Ok(())
    }

    /// Waits until the client ends `session`: its close capsule, or the end of its CONNECT
    /// stream without one (code 0, no reason). It reads the CONNECT stream, which
    /// h3-webtransport leaves alone once the session is accepted: one call at a time per
    /// session. A call dropped halfway loses nothing; a later call returns the same close.
    pub async fn closed(&self, session: SessionId) -> Result<Closed, WebTransportError> {
        let id = session_stream(session);
        if let Some(closed) = lock(&self.watches).get(&id).and_then(|w| w.closed.clone()) {
            return Ok(closed);
        }
        let recv = self
            .registry
            .recv_half(id)
            .ok_or(WebTransportError::UnknownSession(id))?;
        poll_fn(|cx| {
            loop {
                let chunk = ready!(lock(&recv).poll_chunk(cx, 64 * 1024))?;
                // Each chunk is parsed in the poll that took it off the stream.
                let mut watches = lock(&self.watches);
                let watch = watches.entry(id).or_default();
                let closed = match chunk {
                    Some(chunk) => watch.frames.push(&chunk)?,
                    None => {
                        watch.frames.finish()?;
                        Some(Closed {
                            code: 0,
                            reason: String::new(),
                        })
                    }
                };
                if let Some(closed) = closed {
                    watch.closed = Some(closed.clone());
                    return Poll::Ready(Ok(closed));
                }
            }
        })
        .await
    }

    /// Sends datagrams of `session`.
    pub fn datagrams(&self, session: SessionId) -> Datagrams {
        Datagrams::new(
            self.session.clone(),
            self.datagram_path,
            session_stream(session),
        )
    }
}

/// What the connection sorted out for a WebTransport client: the server's unidirectional
/// WebTransport streams, and how the connection ended.
#[derive(Debug, Default)]
pub(crate) struct ClientShared {
    inner: Mutex<SharedInner>,
}

#[derive(Debug, Default)]
struct SharedInner {
    uni: VecDeque<(u64, crate::RecvStream)>,
    waiters: Vec<Waker>,
    error: Option<SessionError>,
}

impl ClientShared {
    pub(crate) fn push_uni(&self, session: u64, stream: crate::RecvStream) {
        let mut inner = lock(&self.inner);
        inner.uni.push_back((session, stream));
        for w in inner.waiters.drain(..) {
            w.wake();
        }
    }

    pub(crate) fn fail(&self, e: SessionError) {
        let mut inner = lock(&self.inner);
        inner.error.get_or_insert(e);
        for w in inner.waiters.drain(..) {
            w.wake();
        }
    }
}

/// Reads the type (and, for WebTransport, the session id) at the start of a stream the
/// server opened.
#[derive(Debug)]
pub(crate) struct Sniff {
    stream: Option<kwik_async::RecvStream>,
    head: BytesMut,
    webtransport: u64,
}

/// A stream whose type is known.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// A WebTransport stream of the session on this CONNECT stream id, its header consumed.
    WebTransport(u64, crate::RecvStream),
    /// Anything else, with the bytes read so far in front.
    Other(crate::RecvStream),
}

impl Sniff {
    pub(crate) fn uni(stream: kwik_async::RecvStream) -> Self {
        Self::new(stream, WT_UNI)
    }

    fn bidi(stream: kwik_async::RecvStream) -> Self {
        Self::new(stream, WT_BIDI)
    }

    fn new(stream: kwik_async::RecvStream, webtransport: u64) -> Self {
        Self {
            stream: Some(stream),
            head: BytesMut::with_capacity(16),
            webtransport,
        }
    }

    /// Ready once the type is known; poll no more after that.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Sniffed> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Pending;
            };
            if let Some((ty, n)) = get_varint(&self.head) {
                if ty != self.webtransport {
                    return Poll::Ready(Sniffed::Other(self.other(None)));
                }
                if let Some((session, m)) = get_varint(&self.head[n..]) {
                    let rest = self.head.split_off(n + m).freeze();
                    let Some(stream) = self.stream.take() else {
                        return Poll::Pending;
                    };
                    return Poll::Ready(Sniffed::WebTransport(
                        session,
                        crate::RecvStream::with_prefix(stream, Some(rest), None),
                    ));
                }
            }
            // Two varints take at most 16 bytes: read no further than that.
            match stream.poll_read_chunk(cx, 16 - self.head.len()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(b))) => self.head.extend_from_slice(&b),
                Poll::Ready(Ok(None)) => {
                    return Poll::Ready(Sniffed::Other(self.other(Some(Ok(())))));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Sniffed::Other(self.other(Some(Err(e)))));
                }
            }
        }
    }

    fn other(&mut self, end: Option<Result<(), ReadError>>) -> crate::RecvStream {
        let head = std::mem::take(&mut self.head).freeze();
        match self.stream.take() {
            Some(stream) => crate::RecvStream::with_prefix(stream, Some(head), end),
            None => unreachable!("a sniffed stream is polled no more"),
        }
    }
}

/// Adds the WebTransport settings to the SETTINGS frame of a control stream's first bytes
/// (stream type 0, then the frame); any other bytes pass unchanged.
pub(crate) fn announce_in_settings(bytes: Bytes) -> Bytes {
    let parse = || {
        let (ty, a) = get_varint(&bytes)?;
        let (frame, b) = get_varint(&bytes[a..])?;
        let (len, c) = get_varint(&bytes[a + b..])?;
        let start = a + b + c;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        (ty == 0 && frame == 0x4 && end <= bytes.len()).then_some((start, end))
    };
    let Some((start, end)) = parse() else {
        return bytes;
    };
    // The pairs as they are, WebTransport's set to 1 (h3 sends them as 0).
    let mut pairs = Vec::new();
    let mut rest = &bytes[start..end];
    while !rest.is_empty() {
        let pair = get_varint(rest)
            .and_then(|(id, a)| get_varint(&rest[a..]).map(|(value, b)| ((id, value), a + b)));
        let Some(((id, value), n)) = pair else {
            return bytes;
        };
        pairs.push((id, value));
        rest = &rest[n..];
    }
    for id in [
        SETTINGS_ENABLE_WEBTRANSPORT,
        SETTINGS_WEBTRANSPORT_MAX_SESSIONS,
    ] {
        match pairs.iter_mut().find(|(i, _)| *i == id) {
            Some(pair) => pair.1 = 1,
            None => pairs.push((id, 1)),
        }
    }
    let mut settings = BytesMut::new();
    for (id, value) in pairs {
        put_varint(&mut settings, id);
        put_varint(&mut settings, value);
    }
    let mut out = BytesMut::with_capacity(bytes.len() + 16);
    put_varint(&mut out, 0);
    put_varint(&mut out, 0x4);
    put_varint(&mut out, settings.len() as u64);
    out.extend_from_slice(&settings);
    out.extend_from_slice(&bytes[end..]);
    out.freeze()
}

type H3Client = h3::client::Connection<Connection, Bytes>;

/// Keeps a WebTransport client's HTTP/3 connection going (its control stream, QPACK
/// streams, and the sorting of the server's streams). Spawn it, as h3's own driver; it ends
/// with the connection.
#[must_use = "the session stalls unless its driver runs"]
pub struct Driver {
    h3: Arc<Mutex<H3Client>>,
    shared: Arc<ClientShared>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Future for Driver {
    type Output = ConnectionError;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = lock(&self.h3).poll_close(cx);
        if r.is_ready() {
            self.shared.fail(SessionError::LocallyClosed);
        }
        r
    }
}

/// A session's streams, held weakly: a stream the application dropped is left out.
#[derive(Default)]
struct Tracked {
    send: Vec<Weak<Mutex<kwik_async::SendStream>>>,
    recv: Vec<Weak<Mutex<crate::RecvHalf>>>,
    /// Dropped streams are pruned when the lists reach this length, so they stay within
    /// twice the live streams.
    prune_at: usize,
    ended: bool,
}

impl Tracked {
    fn add(
        &mut self,
        send: Option<&Arc<Mutex<kwik_async::SendStream>>>,
        recv: Option<&Arc<Mutex<crate::RecvHalf>>>,
    ) {
        if self.send.len() + self.recv.len() >= self.prune_at {
            self.send.retain(|w| w.strong_count() > 0);
            self.recv.retain(|w| w.strong_count() > 0);
            self.prune_at = (2 * (self.send.len() + self.recv.len())).max(64);
        }
        self.send.extend(send.map(Arc::downgrade));
        self.recv.extend(recv.map(Arc::downgrade));
    }

    /// Resets every send half and stops every receive half still held (once).
    fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let code = VarInt::from_u64(SESSION_GONE).unwrap_or(VarInt::MAX);
        // Halves that already ended have nothing left to refuse.
        for send in self.send.drain(..).filter_map(|w| w.upgrade()) {
            let _ = lock(&send).reset(code);
        }
        for recv in self.recv.drain(..).filter_map(|w| w.upgrade()) {
            let _ = lock(&recv).stream.stop(code);
        }
    }
}

/// The receive side of the client's CONNECT stream, with what `closed` has read of it.
struct ConnectRecv {
    stream: RequestStream<crate::RecvStream, Bytes>,
    capsules: CapsuleReader,
    closed: Option<Closed>,
}

/// The client of one WebTransport session over a KWIK session.
pub struct Client {
    id: SessionId,
    stream: u64,
    session: Session,
    h3: Arc<Mutex<H3Client>>,
    /// Dropping the last request sender closes the HTTP/3 connection.
    _requests: SendRequest<crate::OpenStreams, Bytes>,
    connect_send: futures::lock::Mutex<RequestStream<crate::SendStream<Bytes>, Bytes>>,
    connect_recv: futures::lock::Mutex<ConnectRecv>,
    shared: Arc<ClientShared>,
    /// The server's bidirectional streams whose header has not arrived yet.
    pending_bi: Mutex<Vec<(kwik_async::SendStream, Sniff)>>,
    /// The session's streams, reset and stopped when it ends.
    streams: Mutex<Tracked>,
    datagram_path: PathId,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a WebTransport session to `uri` (an `https` URI: its authority and path go
    /// into the extended CONNECT) over `conn`. Spawn the returned [`Driver`].
    pub async fn connect(
        mut conn: Connection,
        uri: http::Uri,
    ) -> Result<(Self, Driver), WebTransportError> {
        let session = conn.session.clone();
        let datagram_path = conn.datagram_path;
        let shared = Arc::new(ClientShared::default());
        conn.webtransport = Some(shared.clone());
        let (h3, mut requests) = h3::client::builder()
            .enable_extended_connect(true)
            .enable_datagram(true)
            .build::<_, _, Bytes>(conn)
            .await?;
        let h3 = Arc::new(Mutex::new(h3));
        let request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(uri)
            .extension(h3::ext::Protocol::WEB_TRANSPORT)
            .body(())?;
        let (stream, response) = {
            let sender = &mut requests;
            let exchange = async move {
                let mut stream = sender.send_request(request).await?;
                let response = stream.recv_response().await?;
                Ok::<_, WebTransportError>((stream, response))
            };
            let mut exchange = std::pin::pin!(exchange);
            // The connection's control stream must be read while the request waits.
            poll_fn(|cx| {
                if let Poll::Ready(e) = lock(&h3).poll_close(cx) {
                    return Poll::Ready(Err(WebTransportError::Connection(e)));
                }
                exchange.as_mut().poll(cx)
            })
            .await?
        };
        if !response.status().is_success() {
            return Err(WebTransportError::Refused(response.status()));
        }
        let id = SessionId::from(stream.id());
        let (send, recv) = stream.split();
        let client = Self {
            id,
            stream: session_stream(id),
            session,
            h3: h3.clone(),
            _requests: requests,
            connect_send: futures::lock::Mutex::new(send),
            connect_recv: futures::lock::Mutex::new(ConnectRecv {
                stream: recv,
                capsules: CapsuleReader::default(),
                closed: None,
            }),
            shared: shared.clone(),
            pending_bi: Mutex::new(Vec::new()),
            streams: Mutex::new(Tracked::default()),
            datagram_path,
        };
        Ok((client, Driver { h3, shared }))
    }

    /// The session's id (its CONNECT stream).
    pub fn session_id(&self) -> SessionId {
        self.id
    }

    /// The KWIK session underneath.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Opens a bidirectional stream of this session.
    pub async fn open_bi(&self) -> Result<ClientBidiStream, WebTransportError> {
        let halves = self.session.open_bi().await?;
        let bidi = crate::BidiStream::new(halves);
        lock(&self.streams).add(Some(&bidi.send.stream), Some(&bidi.recv.half));
        let mut stream = BufRecvStream::new(bidi);
        let mut head = WriteBuf::<Bytes>::from(BidiStreamHeader::WebTransportBidi(self.id));
        while head.has_remaining() {
            poll_fn(|cx| stream.poll_send(cx, &mut head)).await?;
        }
        Ok(stream)
    }

    /// Opens a unidirectional stream of this session.
    pub async fn open_uni(&self) -> Result<ClientSendStream, WebTransportError> {
        let send = crate::SendStream::new(self.session.open_uni().await?);
        lock(&self.streams).add(Some(&send.stream), None);
        let mut stream = BufRecvStream::new(send);
        let mut head = WriteBuf::<Bytes>::from(UniStreamHeader::WebTransportUni(self.id));
        while head.has_remaining() {
            poll_fn(|cx| stream.poll_send(cx, &mut head)).await?;
        }
        Ok(stream)
    }

    /// Accepts the server's next bidirectional stream of this session; `None` once the
    /// connection is gone.
    pub async fn accept_bi(&self) -> Option<ClientBidiStream> {
        poll_fn(|cx| self.poll_accept_bi(cx)).await
    }

    fn poll_accept_bi(&self, cx: &mut Context<'_>) -> Poll<Option<ClientBidiStream>> {
        let mut pending = lock(&self.pending_bi);
        let mut ended = false;
        loop {
            match self.session.poll_accept_bi(cx) {
                Poll::Ready(Ok((send, recv))) => pending.push((send, Sniff::bidi(recv))),
                Poll::Ready(Err(_)) => {
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        let mut i = 0;
        while i < pending.len() {
            let Poll::Ready(sniffed) = pending[i].1.poll(cx) else {
                i += 1;
                continue;
            };
            let (mut send, _) = pending.swap_remove(i);
            match sniffed {
                Sniffed::WebTransport(session, recv) if session == self.stream => {
                    let send = crate::SendStream::new(send);
                    lock(&self.streams).add(Some(&send.stream), Some(&recv.half));
                    return Poll::Ready(Some(BufRecvStream::new(crate::BidiStream::from_halves(
                        send, recv,
                    ))));
                }
                Sniffed::WebTransport(_, recv) => {
                    reject(&mut send, recv, BUFFERED_STREAM_REJECTED);
                }
                Sniffed::Other(recv) => reject(&mut send, recv, STREAM_CREATION_ERROR),
            }
        }
        if ended && pending.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Accepts the server's next unidirectional stream of this session; `None` once the
    /// connection is gone. The [`Driver`] must be running: it reads each stream's type.
    pub async fn accept_uni(&self) -> Option<ClientRecvStream> {
        poll_fn(|cx| {
            let mut inner = lock(&self.shared.inner);
            while let Some((session, stream)) = inner.uni.pop_front() {
                if session == self.stream {
                    lock(&self.streams).add(None, Some(&stream.half));
                    return Poll::Ready(Some(BufRecvStream::new(stream)));
                }
                let mut stream = stream;
                h3::quic::RecvStream::stop_sending(&mut stream, BUFFERED_STREAM_REJECTED);
            }
            if inner.error.is_some() {
                return Poll::Ready(None);
            }
            // A future dropped and made again (in a select loop) must not pile up wakers.
            if !inner.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                inner.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Sends this session's datagrams; [`Datagrams::send_wait`] waits for buffer space.
    pub fn datagrams(&self) -> Datagrams {
        Datagrams::new(self.session.clone(), self.datagram_path, self.stream)
    }

    /// h3-datagram's sender for this session (it never waits: a full buffer drops the
    /// oldest queued datagrams).
    pub fn datagram_sender(&self) -> DatagramSender<crate::SendDatagramHandler, Bytes> {
        lock(&self.h3).get_datagram_sender(StreamId::from(self.id))
    }

    /// Reads the connection's datagrams (h3-datagram's reader); each names its session.
    pub fn datagram_reader(&self) -> DatagramReader<crate::RecvDatagramHandler> {
        lock(&self.h3).get_datagram_reader()
    }

    /// Closes the session: sends CLOSE_WEBTRANSPORT_SESSION with `code` and `reason` (cut
    /// to [`crate::MAX_CLOSE_REASON`] bytes), finishes the CONNECT stream, and resets and
    /// stops the session's streams with [`SESSION_GONE`].
    pub async fn close(&self, code: u32, reason: &str) -> Result<(), WebTransportError> {
        let mut send = self.connect_send.lock().await;
        send.send_data(close_capsule(code, reason)).await?;
        send.finish().await?;
        lock(&self.streams).end();
        Ok(())
    }

    /// Waits until the server ends the session: its close capsule, or the end of its
    /// CONNECT stream without one (code 0, no reason). The session's streams are then reset
    /// and stopped with [`SESSION_GONE`]. A call dropped halfway loses nothing; a later
    /// call returns the same close.
    pub async fn closed(&self) -> Result<Closed, WebTransportError> {
        let mut recv = self.connect_recv.lock().await;
        let recv = &mut *recv;
        loop {
            if let Some(closed) = &recv.closed {
                lock(&self.streams).end();
                return Ok(closed.clone());
            }
            // What `recv_data` returns is parsed before this future can be dropped again.
            let closed = match recv.stream.recv_data().await? {
                None => {
                    recv.capsules.finish()?;
                    Some(Closed {
                        code: 0,
                        reason: String::new(),
                    })
                }
                Some(mut data) => {
                    let mut closed = None;
                    while data.has_remaining() && closed.is_none() {
                        let chunk = data.chunk();
                        let n = chunk.len();
                        closed = recv.capsules.push(chunk)?;
                        data.advance(n);
                    }
                    closed
                }
            };
            recv.closed = closed;
        }
    }
}

/// Refuses a stream the server opened: stops reading it and resets the reply.
fn reject(send: &mut kwik_async::SendStream, recv: crate::RecvStream, code: u64) {
    let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
    // Either half may have ended already; there is nothing more to refuse then.
    let _ = send.reset(code);
    let mut recv = recv;
    h3::quic::RecvStream::stop_sending(&mut recv, code.into_inner());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_gain_webtransport_and_other_bytes_pass() {
        // Stream type 0, SETTINGS of one pair (H3_DATAGRAM = 1), then nothing.
        let control = Bytes::from_static(&[0x00, 0x04, 0x03, 0x40, 0x33, 0x01]);
        let out = announce_in_settings(control);
        let (len, _) = get_varint(&out[2..]).unwrap();
        let mut pairs = Vec::new();
        let mut rest = &out[3..3 + len as usize];
        while !rest.is_empty() {
            let (id, a) = get_varint(rest).unwrap();
            let (v, b) = get_varint(&rest[a..]).unwrap();
            pairs.push((id, v));
            rest = &rest[a + b..];
        }
        assert_eq!(
            pairs,
            [
                (0x33, 1),
                (SETTINGS_ENABLE_WEBTRANSPORT, 1),
                (SETTINGS_WEBTRANSPORT_MAX_SESSIONS, 1)
            ]
        );
        // Settings h3 sent as 0 are set to 1, not repeated.
        let mut control = BytesMut::new();
        for v in [0, 4, 7] {
            put_varint(&mut control, v);
        }
        for (id, v) in [(0x33, 1), (SETTINGS_ENABLE_WEBTRANSPORT, 0)] {
            put_varint(&mut control, id);
            put_varint(&mut control, v);
        }
        let out = announce_in_settings(control.freeze());
        let (len, n) = get_varint(&out[2..]).unwrap();
        assert_eq!(out.len(), 2 + n + len as usize);
        // The same 7 bytes with the value set, and SETTINGS_WEBTRANSPORT_MAX_SESSIONS.
        assert_eq!(len, 7 + 5);
        assert_eq!(out[2 + n + 6], 1);
        // A QPACK stream, a truncated frame, a cut pair and garbage are left alone.
        for other in [
            &[0x02][..],
            &[0x00, 0x04, 0x09, 0x01],
            &[0x00, 0x04, 0x01, 0x40],
            &[0xff],
        ] {
            let b = Bytes::copy_from_slice(other);
            assert_eq!(announce_in_settings(b.clone()), b);
        }
    }
}
