//! The async session: open and accept streams, close, stats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Dir, PathId, RawSendError, SessionHandle, SessionStats, StreamId, VarInt};

use crate::driver::{SessionRef, Shared, dir_index};
use crate::error::SessionError;
use crate::stream::{RecvStream, SendStream};

/// A KWIK session: one logical connection over one or more paths. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Session {
    inner: Arc<SessionRef>,
}

impl Session {
    /// Wraps a handle whose `refs` count the caller already raised.
    pub(crate) fn from_handle(shared: Arc<Shared>, handle: SessionHandle) -> Self {
        Self {
            inner: Arc::new(SessionRef { shared, handle }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) fn handle(&self) -> SessionHandle {
        self.inner.handle
    }

    pub(crate) fn inner_ref(&self) -> &Arc<SessionRef> {
        &self.inner
    }

    fn poll_open(&self, cx: &mut Context<'_>, dir: Dir) -> Poll<Result<StreamId, SessionError>> {
        let mut state = self.inner.shared.lock();
        if let Some(e) = state.session_error(self.handle()) {
            return Poll::Ready(Err(e));
        }
        let Some(mut session) = state.engine.session(self.handle()) else {
            return Poll::Ready(Err(SessionError::LocallyClosed));
        };
        if let Some(e) = session.primary_lost() {
            return Poll::Ready(Err(e));
        }
        if session.is_draining() {
            return Poll::Ready(Err(SessionError::Draining));
        }
        let opened = session.open(dir);
        match opened {
            Some(id) => Poll::Ready(Ok(id)),
            None => {
                crate::driver::register(&mut state.waiters(self.handle()).open[dir_index(dir)], cx);
                Poll::Pending
            }
        }
    }

    fn poll_accept(&self, cx: &mut Context<'_>, dir: Dir) -> Poll<Result<StreamId, SessionError>> {
        let mut state = self.inner.shared.lock();
        let accepted = state
            .engine
            .session(self.handle())
            .and_then(|mut s| s.accept(dir));
        if let Some(id) = accepted {
            return Poll::Ready(Ok(id));
        }
        if let Some(e) = state.session_error(self.handle()) {
            return Poll::Ready(Err(e));
        }
        crate::driver::register(&mut state.waiters(self.handle()).accept[dir_index(dir)], cx);
        Poll::Pending
    }

    /// The poll form of [`Session::open_bi`], for layers built on poll functions.
    pub fn poll_open_bi(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SendStream, RecvStream), SessionError>> {
        self.poll_open(cx, Dir::Bi).map_ok(|id| {
            (
                SendStream::new(self.inner.clone(), id),
                RecvStream::new(self.inner.clone(), id),
            )
        })
    }

    /// The poll form of [`Session::open_uni`].
    pub fn poll_open_uni(&self, cx: &mut Context<'_>) -> Poll<Result<SendStream, SessionError>> {
        self.poll_open(cx, Dir::Uni)
            .map_ok(|id| SendStream::new(self.inner.clone(), id))
    }

    /// The poll form of [`Session::accept_bi`].
    pub fn poll_accept_bi(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SendStream, RecvStream), SessionError>> {
        self.poll_accept(cx, Dir::Bi).map_ok(|id| {
            (
                SendStream::new(self.inner.clone(), id),
                RecvStream::new(self.inner.clone(), id),
            )
        })
    }

    /// The poll form of [`Session::accept_uni`].
    pub fn poll_accept_uni(&self, cx: &mut Context<'_>) -> Poll<Result<RecvStream, SessionError>> {
        self.poll_accept(cx, Dir::Uni)
            .map_ok(|id| RecvStream::new(self.inner.clone(), id))
    }

    /// Opens a bidirectional stream, waiting for the peer's stream limit if needed.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        std::future::poll_fn(|cx| self.poll_open_bi(cx)).await
    }

    /// Opens a unidirectional stream.
    pub async fn open_uni(&self) -> Result<SendStream, SessionError> {
        std::future::poll_fn(|cx| self.poll_open_uni(cx)).await
    }

    /// The next bidirectional stream the peer opened.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        std::future::poll_fn(|cx| self.poll_accept_bi(cx)).await
    }

    /// The next unidirectional stream the peer opened.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        std::future::poll_fn(|cx| self.poll_accept_uni(cx)).await
    }

    /// Closes the session on every path with `code` and `reason`.
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        let mut state = self.inner.shared.lock();
        let now = self.inner.shared.now();
        if let Some(mut s) = state.engine.session(self.handle()) {
            s.close(now, code, reason);
        }
        state.wake_driver();
    }

    /// Waits until the session ends, and says why.
    pub async fn closed(&self) -> SessionError {
        std::future::poll_fn(|cx| {
            let mut state = self.inner.shared.lock();
            if let Some(e) = state
                .sessions
                .get(&self.handle())
                .and_then(|w| w.error.clone())
            {
                return Poll::Ready(e);
            }
            if state.engine.session(self.handle()).is_none() {
                return Poll::Ready(SessionError::LocallyClosed);
            }
            crate::driver::register(&mut state.waiters(self.handle()).closed, cx);
            Poll::Pending
        })
        .await
    }

    /// Why the session ended, if it did.
    pub fn close_reason(&self) -> Option<SessionError> {
        let state = self.inner.shared.lock();
        state
            .sessions
            .get(&self.handle())
            .and_then(|w| w.error.clone())
    }

    /// The primary path's remote address.
    pub fn remote_address(&self) -> SocketAddr {
        let mut state = self.inner.shared.lock();
        state
            .engine
            .session(self.handle())
            .and_then(|s| s.remote_address())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Smoothed RTT of the primary path.
    pub fn rtt(&self) -> Duration {
        let mut state = self.inner.shared.lock();
        state
            .engine
            .session(self.handle())
            .and_then(|s| s.rtt())
            .unwrap_or_default()
    }

    /// The application protocol the server chose from the client's offer (ALPN's role
    /// inside KWIK, see [`kwik_core::Config::app_protocols`]); `None` if it chose none.
    pub fn app_protocol(&self) -> Option<Bytes> {
        let mut state = self.inner.shared.lock();
        state
            .engine
            .session(self.handle())
            .and_then(|s| s.app_protocol())
    }

    /// Whether the session speaks KWIK with its peer or runs plain QUIC because the peer
    /// does not (see [`kwik_core::Mode::Plain`]): a server's plain session is a stock QUIC
    /// client's (an HTTP/3 client, a browser), a client's is the fallback when the server
    /// chose an application protocol instead of `kwik/1`.
    pub fn mode(&self) -> kwik_core::Mode {
        let mut state = self.inner.shared.lock();
        state
            .engine
            .session(self.handle())
            .map_or(kwik_core::Mode::Kwik, |s| s.mode())
    }

    /// Client: the primary's error while the session lives on without it, its secondaries
    /// finishing what they owe (`closed()` resolves with this error once they are done or
    /// their tickets expired; meanwhile opening a stream fails with it, and path 0 is
    /// failed). See [`kwik_core::Session::primary_lost`].
    pub fn primary_lost(&self) -> Option<SessionError> {
        let mut state = self.inner.shared.lock();
        state
            .engine
            .session(self.handle())
            .and_then(|s| s.primary_lost())
    }

    /// The old name of [`Session::id`].
    #[deprecated(since = "0.1.0", note = "use `id`")]
    pub fn session_id(&self) -> u64 {
        self.id()
    }

    /// A number unique to this session within its endpoint, as quinn's
    /// `Connection::stable_id`: the endpoint's handle of the session, not the session id
    /// that every server and the client share ([`Session::id`]).
    pub fn stable_id(&self) -> usize {
        self.handle().0 as usize
    }

    /// Sends `data` as one unreliable datagram on `path`, and only there.
    pub fn send_raw(&self, path: PathId, data: Bytes) -> Result<(), RawSendError> {
        let mut state = self.inner.shared.lock();
        self.raw_send(&mut state, path, data, true)
    }

    /// Hands a datagram to the engine (`displace`: pushing older queued ones out if the
    /// buffer is full) and wakes the driver to send it.
    fn raw_send(
        &self,
        state: &mut crate::driver::State,
        path: PathId,
        data: Bytes,
        displace: bool,
    ) -> Result<(), RawSendError> {
        let r = match state.engine.session(self.handle()) {
            Some(mut s) if displace => s.send_raw(path, data),
            Some(mut s) => s.try_send_raw(path, data),
            None => Err(RawSendError::SessionLost(
                state
                    .session_error(self.handle())
                    .unwrap_or(SessionError::LocallyClosed),
            )),
        };
        if r.is_ok() {
            state.wake_driver();
        }
        r
    }

    /// Sends `data` as one unreliable datagram on `path`, waiting while the path's send
    /// buffer is full instead of pushing older datagrams out as [`Session::send_raw`] does.
    pub async fn send_raw_wait(&self, path: PathId, data: Bytes) -> Result<(), RawSendError> {
        let mut data = Some(data);
        std::future::poll_fn(|cx| self.poll_send_raw(cx, path, &mut data)).await
    }

    /// The poll form of [`Session::send_raw_wait`]: sends the datagram in `data` and takes
    /// it, or leaves it there and returns `Pending` until the path has room.
    pub fn poll_send_raw(
        &self,
        cx: &mut Context<'_>,
        path: PathId,
        data: &mut Option<Bytes>,
    ) -> Poll<Result<(), RawSendError>> {
        let Some(d) = data.take() else {
            return Poll::Ready(Ok(()));
        };
        let mut state = self.inner.shared.lock();
        match self.raw_send(&mut state, path, d, false) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(RawSendError::Blocked(d)) => {
                *data = Some(d);
                crate::driver::register(&mut state.waiters(self.handle()).raw_send, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// The largest raw datagram `path` carries now, if it carries any.
    pub fn max_raw_size(&self, path: PathId) -> Option<usize> {
        let mut state = self.inner.shared.lock();
        state.engine.session(self.handle())?.max_raw_size(path)
    }

    /// The next raw datagram, with the path it came on.
    pub async fn read_raw(&self) -> Result<(PathId, Bytes), SessionError> {
        std::future::poll_fn(|cx| self.poll_read_raw(cx)).await
    }

    /// The poll form of [`Session::read_raw`].
    pub fn poll_read_raw(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(PathId, Bytes), SessionError>> {
        let mut state = self.inner.shared.lock();
        if let Some(d) = state
            .engine
            .session(self.handle())
            .and_then(|mut s| s.read_raw())
        {
            return Poll::Ready(Ok(d));
        }
        if let Some(e) = state.session_error(self.handle()) {
            return Poll::Ready(Err(e));
        }
        crate::driver::register(&mut state.waiters(self.handle()).raw, cx);
        Poll::Pending
    }

    /// Stats of the session and each path.
    pub fn stats(&self) -> SessionStats {
        let mut state = self.inner.shared.lock();
        state
            .engine
            .session(self.handle())
            .map(|s| s.stats())
            .unwrap_or_default()
    }
}
