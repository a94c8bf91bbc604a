//! The server side: h3's server builder and session accept with what WebTransport needs,
//! and the controls `h3-webtransport` lacks ([`ServerControl`]).

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, ready};

use bytes::Bytes;
use kwik_async::{PathId, Session, SessionError};

use super::{Datagrams, SessionId, WebTransportError, is_stream_header, session_stream};
use crate::capsule::{FrameReader, close_capsule, data_frame};
use crate::varint::get_varint;
use crate::{Closed, Connection, RecvHalf, Registry, lock};

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

impl Registry {
    /// This registry, if a [`ServerControl`] watches the connection's WebTransport streams.
    pub(crate) fn watching(self: &Arc<Self>) -> Option<Arc<Self>> {
        self.watch
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self.clone())
    }

    /// Files a stream under its WebTransport session if `first` (its first bytes) is a
    /// WebTransport stream header naming a CONNECT stream this side accepted. A header cut
    /// short leaves the stream unfiled.
    pub(crate) fn note_header(
        &self,
        first: &[u8],
        send: Option<Arc<Mutex<kwik_async::SendStream>>>,
        recv: Option<Arc<Mutex<RecvHalf>>>,
    ) {
        let Some((ty, n)) = get_varint(first) else {
            return;
        };
        let Some((session, _)) = get_varint(&first[n..]) else {
            return;
        };
        // The header names the session by its CONNECT stream's id.
        if !is_stream_header(ty) || self.send_half(session).is_none() {
            return;
        }
        let mut sessions = lock(&self.sessions);
        if !sessions.contains_key(&session) && sessions.len() >= 16 {
            // Sessions whose CONNECT stream is gone keep nothing worth ending.
            sessions.retain(|id, _| self.send_half(*id).is_some());
        }
        sessions
            .entry(session)
            .or_default()
            .add(send.as_ref(), recv.as_ref());
    }

    /// Resets and stops the streams of a WebTransport session (and those that come later)
    /// with [`super::SESSION_GONE`].
    pub(crate) fn end_session(&self, session: u64) {
        lock(&self.sessions).entry(session).or_default().end();
    }
}

impl Connection {
    /// The WebTransport controls of this (server) connection; see [`ServerControl`]. Its
    /// datagrams go on the path chosen with [`Connection::with_datagram_path`] before this
    /// call.
    pub fn webtransport_server(&self) -> ServerControl {
        self.registry
            .watch
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.registry.file_streams();
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
    /// [`crate::MAX_CLOSE_REASON`] bytes) on its CONNECT stream and finishes the stream,
    /// then resets and stops the session's streams with [`super::SESSION_GONE`].
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
        self.registry.end_session(id);
        Ok(())
    }

    /// Waits until the client ends `session`: its close capsule, or the end of its CONNECT
    /// stream without one (code 0, no reason); the session's streams are then reset and
    /// stopped with [`super::SESSION_GONE`]. It reads the CONNECT stream, which
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
                    self.registry.end_session(id);
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
