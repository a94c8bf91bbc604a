//! HTTP/3 over a KWIK session.
//!
//! The [`h3`] crate is written against a handful of QUIC transport traits
//! ([`h3::quic::Connection`], [`h3::quic::OpenStreams`], [`h3::quic::SendStream`],
//! [`h3::quic::SendStreamUnframed`], [`h3::quic::RecvStream`], [`h3::quic::BidiStream`]).
//! This crate implements them over [`kwik_async::Session`] and its streams, so h3's client
//! and server run unchanged on a KWIK session: its control stream, QPACK streams, request
//! streams and GOAWAY all travel as KWIK logical streams, whose ids follow QUIC's numbering.
//!
//! The session types are those of `kwik-async`, which `kwik-tokio` and `kwik-smol` share,
//! so this crate works on either runtime.
//!
//! The session may be plain ([`kwik_async::Mode::Plain`]): a stock HTTP/3 client (or a
//! browser's WebTransport) that negotiated `h3` by ALPN on a KWIK server's port, or a
//! stock HTTP/3 server a KWIK client fell back to. Its logical streams are then the QUIC
//! streams themselves, so this crate speaks ordinary HTTP/3 over QUIC to such a peer, and
//! [`Striper::send_striped`] has the primary serve the whole body itself.
//!
//! Both sides name HTTP/3 in [`kwik_async::Config::app_protocols`] ([`ALPN`]), which is
//! also what TLS's ALPN offers after `kwik/1`. Over KWIK, a server that lists only
//! [`ALPN`] refuses a session that does not offer it with
//! `ErrorCode::NoApplicationProtocol`, before any stream exists, and
//! [`kwik_async::Session::app_protocol`] tells either side what was chosen.
//!
//! Errors keep their codes: a session the peer closed with an application code reaches h3
//! as [`ConnectionErrorIncoming::ApplicationClose`] with that code, a reset or stopped
//! stream as [`StreamErrorIncoming::StreamTerminated`] with the peer's code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use kwik_async::{ReadError, Session, SessionError, VarInt, WriteError};

pub use h3;

mod capsule;
mod datagram;
mod stripe;
mod varint;
pub mod webtransport;
pub use capsule::{CapsuleError, Closed, MAX_CLOSE_REASON};
pub use datagram::{RecvDatagramHandler, SendDatagramHandler};
pub use h3_datagram;
pub use stripe::{
    Content, MalformedRequest, Spawn, StripeError, StripedRequest, Striper, serve_stripes,
};

/// The application protocol name of HTTP/3 over a KWIK session, as ALPN names HTTP/3.
pub const ALPN: &[u8] = b"h3";

/// The halves of the request streams this side accepted, by KWIK stream id, so that
/// helpers can reach streams h3 owns: the [`Striper`] writes striped bodies on send halves,
/// [`webtransport::ServerControl`] reads and writes capsules on CONNECT streams.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) send: Mutex<HashMap<u64, Weak<Mutex<kwik_async::SendStream>>>>,
    pub(crate) recv: Mutex<HashMap<u64, Weak<Mutex<RecvHalf>>>>,
    /// Set once a [`webtransport::ServerControl`] exists: streams then tell which
    /// WebTransport session they belong to, by their header.
    pub(crate) watch: std::sync::atomic::AtomicBool,
    /// Set once a [`Striper`] or a [`webtransport::ServerControl`] exists: only then are
    /// accepted request streams filed here (both are taken before h3 gets the connection).
    pub(crate) lookups: std::sync::atomic::AtomicBool,
    /// The WebTransport streams of each session, by CONNECT stream id.
    pub(crate) sessions: Mutex<HashMap<u64, webtransport::Tracked>>,
}

impl Registry {
    /// This registry, if helpers look request streams up in it.
    pub(crate) fn filing(self: &Arc<Self>) -> Option<Arc<Self>> {
        self.lookups
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self.clone())
    }

    /// Files accepted request streams from now on.
    pub(crate) fn file_streams(&self) {
        self.lookups
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn send_half(&self, id: u64) -> Option<Arc<Mutex<kwik_async::SendStream>>> {
        lock(&self.send).get(&id).and_then(Weak::upgrade)
    }

    pub(crate) fn recv_half(&self, id: u64) -> Option<Arc<Mutex<RecvHalf>>> {
        lock(&self.recv).get(&id).and_then(Weak::upgrade)
    }
}

/// Locks `m`; a panic while it was held leaves the data as consistent as any operation.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A KWIK session as an h3 QUIC connection.
#[derive(Debug)]
pub struct Connection {
    session: Session,
    /// The halves of the request streams this side accepted.
    registry: Arc<Registry>,
    /// The path HTTP datagrams are sent on.
    datagram_path: kwik_async::PathId,
    /// Set on a WebTransport client: its peer-initiated streams are sorted out here.
    webtransport: Option<Arc<webtransport::ClientShared>>,
    /// Peer-initiated unidirectional streams whose type is not known yet (WebTransport
    /// client only).
    sniffing: Vec<webtransport::Sniff>,
}

impl Connection {
    /// Wraps `session` for h3.
    pub fn new(session: Session) -> Self {
        Self {
            session,
            registry: Arc::default(),
            datagram_path: kwik_async::PathId::PRIMARY,
            webtransport: None,
            sniffing: Vec::new(),
        }
    }

    /// Sends HTTP datagrams on `path` instead of the primary path (a path to the same
    /// server: `Session::add_same_peer_path`, or the path of the server that handles them).
    pub fn with_datagram_path(mut self, path: kwik_async::PathId) -> Self {
        self.datagram_path = path;
        self
    }

    /// Sends striped responses on the request streams this connection accepts (server
    /// side). Take it before handing the connection to h3: request streams are filed for
    /// it only from then on (without a striper or WebTransport, they are not filed at all).
    pub fn striper(&self) -> Striper {
        self.registry.file_streams();
        Striper {
            registry: self.registry.clone(),
        }
    }

    /// The session underneath.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl<B: Buf> quic::Connection<B> for Connection {
    type RecvStream = RecvStream;
    type OpenStreams = OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        let Some(wt) = &self.webtransport else {
            let watch = self.registry.watching();
            return self
                .session
                .poll_accept_uni(cx)
                .map_ok(|s| {
                    let mut s = RecvStream::new(s);
                    s.watch = watch;
                    s
                })
                .map_err(connection_error);
        };
        // A WebTransport client: h3 0.0.8's client does not take WebTransport streams, so
        // each stream's type is read here; WebTransport streams go to the session, the
        // rest to h3 with the bytes read so far in front.
        loop {
            match self.session.poll_accept_uni(cx) {
                Poll::Ready(Ok(s)) => self.sniffing.push(webtransport::Sniff::uni(s)),
                Poll::Ready(Err(e)) => {
                    wt.fail(e.clone());
                    return Poll::Ready(Err(connection_error(e)));
                }
                Poll::Pending => break,
            }
        }
        let mut i = 0;
        while i < self.sniffing.len() {
            match self.sniffing[i].poll(cx) {
                Poll::Pending => i += 1,
                Poll::Ready(sniffed) => {
                    self.sniffing.swap_remove(i);
                    match sniffed {
                        webtransport::Sniffed::WebTransport(session, stream) => {
                            wt.push_uni(session, stream);
                        }
                        webtransport::Sniffed::Other(stream) => {
                            return Poll::Ready(Ok(stream));
                        }
                    }
                }
            }
        }
        Poll::Pending
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        if self.webtransport.is_some() {
            // The server's bidirectional streams are WebTransport streams, which the
            // WebTransport client accepts itself; h3's client would refuse them.
            return Poll::Pending;
        }
        // Without a helper that looks request streams up, a request costs no filing.
        let filing = self.registry.filing();
        let watching = self.registry.watching();
        self.session
            .poll_accept_bi(cx)
            .map_ok(|halves| {
                let mut stream = BidiStream::new(halves);
                if let Some(registry) = filing {
                    stream.send.register(&registry);
                    stream.recv.register(&registry);
                }
                stream.recv.watch = watching;
                stream
            })
            .map_err(connection_error)
    }

    fn opener(&self) -> Self::OpenStreams {
        OpenStreams {
            session: self.session.clone(),
            webtransport: self.webtransport.is_some(),
            registry: self.registry.clone(),
        }
    }
}

impl<B: Buf> quic::OpenStreams<B> for Connection {
    type BidiStream = BidiStream<B>;
    type SendStream = SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bidi(&self.session, cx, &self.registry)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        let webtransport = self.webtransport.is_some();
        open_send(&self.session, cx, webtransport, &self.registry)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        close(&self.session, code, reason);
    }
}

/// Opens streams on a session; h3 keeps one beside the connection.
#[derive(Debug, Clone)]
pub struct OpenStreams {
    session: Session,
    webtransport: bool,
    registry: Arc<Registry>,
}

impl<B: Buf> quic::OpenStreams<B> for OpenStreams {
    type BidiStream = BidiStream<B>;
    type SendStream = SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bidi(&self.session, cx, &self.registry)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        open_send(&self.session, cx, self.webtransport, &self.registry)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        close(&self.session, code, reason);
    }
}

fn open_bidi<B: Buf>(
    session: &Session,
    cx: &mut Context<'_>,
    registry: &Arc<Registry>,
) -> Poll<Result<BidiStream<B>, StreamErrorIncoming>> {
    session
        .poll_open_bi(cx)
        .map_ok(|halves| {
            let mut stream = BidiStream::new(halves);
            stream.send.watch = registry
                .watching()
                .map(|r| (r, Some(Arc::downgrade(&stream.recv.half))));
            stream
        })
        .map_err(stream_connection_error)
}

/// A WebTransport client's unidirectional streams announce WebTransport in the SETTINGS
/// frame of its control stream, which h3 0.0.8's client cannot do itself.
fn open_send<B: Buf>(
    session: &Session,
    cx: &mut Context<'_>,
    webtransport: bool,
    registry: &Arc<Registry>,
) -> Poll<Result<SendStream<B>, StreamErrorIncoming>> {
    session
        .poll_open_uni(cx)
        .map_ok(|s| {
            let mut s = SendStream::new(s);
            s.announce_webtransport = webtransport;
            s.watch = registry.watching().map(|r| (r, None));
            s
        })
        .map_err(stream_connection_error)
}

fn close(session: &Session, code: h3::error::Code, reason: &[u8]) {
    session.close(
        VarInt::from_u64(code.value()).unwrap_or(VarInt::MAX),
        reason,
    );
}

/// A bidirectional request stream: both halves, which h3 may split.
#[derive(Debug)]
pub struct BidiStream<B: Buf> {
    send: SendStream<B>,
    recv: RecvStream,
}

impl<B: Buf> BidiStream<B> {
    fn new((send, recv): (kwik_async::SendStream, kwik_async::RecvStream)) -> Self {
        Self::from_halves(SendStream::new(send), RecvStream::new(recv))
    }

    pub(crate) fn from_halves(send: SendStream<B>, recv: RecvStream) -> Self {
        Self { send, recv }
    }
}

impl<B: Buf> quic::BidiStream<B> for BidiStream<B> {
    type SendStream = SendStream<B>;
    type RecvStream = RecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}

impl<B: Buf> quic::RecvStream for BidiStream<B> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl<B: Buf> quic::SendStream<B> for BidiStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl<B: Buf> quic::SendStreamUnframed<B> for BidiStream<B> {
    fn poll_send<D: Buf>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut D,
    ) -> Poll<Result<usize, StreamErrorIncoming>> {
        self.send.poll_send(cx, buf)
    }
}

/// The receive half of a logical stream, for h3. A request stream's half is shared with
/// the connection's [`webtransport::ServerControl`], which reads a CONNECT stream's
/// capsules once h3 is done with it.
#[derive(Debug)]
pub struct RecvStream {
    half: Arc<Mutex<RecvHalf>>,
    id: u64,
    registry: Option<Arc<Registry>>,
    /// Until the first bytes arrive: where to file the stream if they are a WebTransport
    /// header (server side).
    watch: Option<Arc<Registry>>,
}

/// A receive half, with what was read off it before its reader took it: the bytes (a
/// WebTransport client reads each stream's type first) and how it ended, if it did.
#[derive(Debug)]
pub(crate) struct RecvHalf {
    pub(crate) stream: kwik_async::RecvStream,
    pub(crate) prefix: Option<Bytes>,
    pub(crate) end: Option<Result<(), ReadError>>,
}

impl RecvHalf {
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        if let Some(p) = &mut self.prefix {
            let chunk = p.split_to(max.min(p.len()));
            if p.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(Some(chunk)));
        }
        match self.end.take() {
            Some(Ok(())) => Poll::Ready(Ok(None)),
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => self.stream.poll_read_chunk(cx, max),
        }
    }
}

impl RecvStream {
    fn new(stream: kwik_async::RecvStream) -> Self {
        Self::with_prefix(stream, None, None)
    }

    pub(crate) fn with_prefix(
        stream: kwik_async::RecvStream,
        prefix: Option<Bytes>,
        end: Option<Result<(), ReadError>>,
    ) -> Self {
        Self {
            id: stream.id().0,
            half: Arc::new(Mutex::new(RecvHalf {
                stream,
                prefix: prefix.filter(|p| !p.is_empty()),
                end,
            })),
            registry: None,
            watch: None,
        }
    }

    fn register(&mut self, registry: &Arc<Registry>) {
        lock(&registry.recv).insert(self.id, Arc::downgrade(&self.half));
        self.registry = Some(registry.clone());
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if let Some(registry) = &self.registry {
            lock(&registry.recv).remove(&self.id);
        }
    }
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        let r = lock(&self.half)
            .poll_chunk(cx, usize::MAX)
            .map_err(read_error);
        if let (Poll::Ready(Ok(Some(first))), Some(registry)) = (&r, self.watch.take()) {
            // The other half of a bidirectional stream, if this side accepted one.
            let send = registry.send_half(self.id);
            registry.note_header(first, send, Some(self.half.clone()));
        }
        r
    }

    fn stop_sending(&mut self, error_code: u64) {
        // Stopping a stream that already ended (or was stopped) has nothing left to do.
        let _ = lock(&self.half)
            .stream
            .stop(VarInt::from_u64(error_code).unwrap_or(VarInt::MAX));
    }

    fn recv_id(&self) -> StreamId {
        stream_id(kwik_async::StreamId(self.id))
    }
}

/// The send half of a logical stream, for h3: it holds the one buffer h3 hands it until
/// the stream has taken all of it. A request stream's half is shared with the
/// connection's [`Striper`], which writes striped bodies on it.
pub struct SendStream<B: Buf> {
    stream: Arc<Mutex<kwik_async::SendStream>>,
    id: u64,
    writing: Option<WriteBuf<B>>,
    /// A buffer h3 handed over, rewritten before sending (see `announce_webtransport`).
    rewritten: Option<Bytes>,
    /// A WebTransport client's unidirectional stream: if it turns out to be the control
    /// stream, its SETTINGS gain the WebTransport settings.
    announce_webtransport: bool,
    registry: Option<Arc<Registry>>,
    /// Until the first write: where to file the stream if it starts with a WebTransport
    /// header (server side), with the other half of a bidirectional stream.
    watch: Option<(Arc<Registry>, Option<WeakRecv>)>,
}

/// The receive half of a bidirectional stream, seen from its send half.
type WeakRecv = Weak<Mutex<RecvHalf>>;

impl<B: Buf> std::fmt::Debug for SendStream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream")
            .field("id", &self.id)
            .field(
                "unsent",
                &self.writing.as_ref().map_or(0, |w| w.remaining()),
            )
            .finish()
    }
}

impl<B: Buf> SendStream<B> {
    fn new(stream: kwik_async::SendStream) -> Self {
        Self {
            id: stream.id().0,
            stream: Arc::new(Mutex::new(stream)),
            writing: None,
            rewritten: None,
            announce_webtransport: false,
            registry: None,
            watch: None,
        }
    }

    fn register(&mut self, registry: &Arc<Registry>) {
        lock(&registry.send).insert(self.id, Arc::downgrade(&self.stream));
        self.registry = Some(registry.clone());
    }

    fn stream(&self) -> MutexGuard<'_, kwik_async::SendStream> {
        lock(&self.stream)
    }
}

impl<B: Buf> Drop for SendStream<B> {
    fn drop(&mut self) {
        if let Some(registry) = &self.registry {
            lock(&registry.send).remove(&self.id);
        }
    }
}

impl<B: Buf> quic::SendStream<B> for SendStream<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        if let Some(data) = &mut self.rewritten {
            let mut stream = lock(&self.stream);
            while data.has_remaining() {
                let n = ready!(stream.poll_send(cx, data.chunk())).map_err(write_error)?;
                data.advance(n);
            }
        }
        self.rewritten = None;
        if let Some(data) = &mut self.writing {
            let mut stream = lock(&self.stream);
            while data.has_remaining() {
                let n = ready!(stream.poll_send(cx, data.chunk())).map_err(write_error)?;
                data.advance(n);
            }
        }
        self.writing = None;
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.writing.is_some() || self.rewritten.is_some() {
            // h3 waits for `poll_ready` between two buffers; anything else is a bug in the
            // layer above, reported as h3 expects (it closes with H3_INTERNAL_ERROR).
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "send_data before the previous buffer was sent".into(),
                ),
            });
        }
        let mut data = data.into();
        if std::mem::take(&mut self.announce_webtransport) {
            let bytes = data.copy_to_bytes(data.remaining());
            self.rewritten = Some(webtransport::announce_in_settings(bytes));
            return Ok(());
        }
        self.writing = Some(data);
        Ok(())
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        Poll::Ready(
            self.stream()
                .finish()
                .map_err(|e| StreamErrorIncoming::Unknown(Box::new(e))),
        )
    }

    fn reset(&mut self, reset_code: u64) {
        // A stream already finished or reset cannot be reset again; nothing is lost.
        let _ = self
            .stream()
            .reset(VarInt::from_u64(reset_code).unwrap_or(VarInt::MAX));
    }

    fn send_id(&self) -> StreamId {
        stream_id(kwik_async::StreamId(self.id))
    }
}

impl<B: Buf> quic::SendStreamUnframed<B> for SendStream<B> {
    fn poll_send<D: Buf>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut D,
    ) -> Poll<Result<usize, StreamErrorIncoming>> {
        if self.writing.is_some() || self.rewritten.is_some() {
            return Poll::Ready(Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "poll_send before the framed buffer was sent".into(),
                ),
            }));
        }
        self.announce_webtransport = false;
        if let Some((registry, recv)) = self.watch.take() {
            let recv = recv.and_then(|r| r.upgrade());
            registry.note_header(buf.chunk(), Some(self.stream.clone()), recv);
        }
        let n = ready!(self.stream().poll_send(cx, buf.chunk())).map_err(write_error)?;
        buf.advance(n);
        Poll::Ready(Ok(n))
    }
}

/// KWIK stream ids follow QUIC's numbering, so they are h3's ids as they are.
fn stream_id(id: kwik_async::StreamId) -> StreamId {
    // Every KWIK id is below 2^62: the engine refuses larger ones from the peer and never
    // opens that many itself.
    StreamId::try_from(id.0).unwrap_or_else(|_| unreachable!("stream id {id} above 2^62"))
}

/// What h3 needs to know of a session's end: the peer application's code, a timeout, or
/// anything else as it is.
pub(crate) fn connection_error(e: SessionError) -> ConnectionErrorIncoming {
    match e {
        SessionError::ApplicationClosed { code, .. } => ConnectionErrorIncoming::ApplicationClose {
            error_code: code.into_inner(),
        },
        SessionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_connection_error(e: SessionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: connection_error(e),
    }
}

fn read_error(e: ReadError) -> StreamErrorIncoming {
    match e {
        ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        ReadError::ConnectionLost(e) => stream_connection_error(e),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn write_error(e: WriteError) -> StreamErrorIncoming {
    match e {
        WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        WriteError::ConnectionLost(e) => stream_connection_error(e),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}
