//! The client of a WebTransport session ([`Client`]) and the [`Driver`] of its HTTP/3
//! connection.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use h3::client::{RequestStream, SendRequest};
use h3::error::ConnectionError;
use h3::quic::{SendStreamUnframed, StreamId, WriteBuf};
use h3::stream::{BidiStreamHeader, BufRecvStream, UniStreamHeader};
use h3_datagram::datagram_handler::{DatagramReader, DatagramSender, HandleDatagramsExt};
use kwik_async::{PathId, Session, SessionError, VarInt};

use super::sniff::{Sniff, Sniffed};
use super::{
    BUFFERED_STREAM_REJECTED, ClientBidiStream, ClientRecvStream, ClientSendStream, Datagrams,
    STREAM_CREATION_ERROR, SessionId, Tracked, WebTransportError, session_stream,
};
use crate::capsule::{CapsuleReader, close_capsule};
use crate::{Closed, Connection, lock};

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
