//! Async send and receive halves of logical streams.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use kwik_core::{StreamId, VarInt};

use crate::driver::SessionRef;
use crate::error::{
    ClosedStream, ReadError, ReadExactError, ReadToEndError, StoppedError, WriteError,
};

/// The sending half of a logical stream. Dropping it finishes the stream.
#[derive(Debug)]
pub struct SendStream {
    session: Arc<SessionRef>,
    id: StreamId,
    done: bool,
}

impl SendStream {
    pub(crate) fn new(session: Arc<SessionRef>, id: StreamId) -> Self {
        Self {
            session,
            id,
            done: false,
        }
    }

    /// The logical stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    pub(crate) fn session_ref(&self) -> &Arc<SessionRef> {
        &self.session
    }

    fn poll_write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut kwik_core::SendStream<'_>) -> Result<T, kwik_core::WriteError>,
    ) -> Poll<Result<T, WriteError>> {
        let shared = &self.session.shared;
        let h = self.session.handle;
        let mut state = shared.lock();
        let result = match state.engine.session(h) {
            Some(mut s) => op(&mut s.send_stream(self.id)),
            None => Err(kwik_core::WriteError::SessionLost(
                kwik_core::SessionError::LocallyClosed,
            )),
        };
        match result {
            Ok(v) => {
                state.wake_driver();
                Poll::Ready(Ok(v))
            }
            Err(kwik_core::WriteError::Blocked) => {
                state.waiters(h).writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(kwik_core::WriteError::Stopped(code)) => {
                Poll::Ready(Err(WriteError::Stopped(code)))
            }
            Err(kwik_core::WriteError::SessionLost(e)) => {
                let e = state.session_error(h).unwrap_or(e);
                Poll::Ready(Err(WriteError::ConnectionLost(e)))
            }
            Err(_) => Poll::Ready(Err(WriteError::ClosedStream)),
        }
    }

    /// The poll form of [`SendStream::write`], for layers built on poll functions.
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        self.poll_write_with(cx, |s| s.write(buf))
    }

    /// Writes some of `buf`, waiting for flow-control credit; returns how much.
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, WriteError> {
        poll_fn(|cx| self.poll_send(cx, buf)).await
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), WriteError> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Writes a whole chunk without copying it.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        let mut chunks = [chunk];
        self.write_all_chunks(&mut chunks).await
    }

    /// Writes whole chunks without copying them.
    pub async fn write_all_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), WriteError> {
        loop {
            let Some(first) = chunks.iter().position(|c| !c.is_empty()) else {
                return Ok(());
            };
            let rest = &mut chunks[first..];
            poll_fn(|cx| self.poll_write_with(cx, |s| s.write_chunks(rest))).await?;
        }
    }

    /// Ends the stream after the bytes written so far.
    pub fn finish(&mut self) -> Result<(), ClosedStream> {
        self.done = true;
        let mut state = self.session.shared.lock();
        let r = match state.engine.session(self.session.handle) {
            Some(mut s) => s.send_stream(self.id).finish(),
            None => Err(ClosedStream),
        };
        state.wake_driver();
        r
    }

    /// Abandons the stream, telling the peer `code`.
    pub fn reset(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        self.done = true;
        let mut state = self.session.shared.lock();
        let r = match state.engine.session(self.session.handle) {
            Some(mut s) => s.send_stream(self.id).reset(code),
            None => Err(ClosedStream),
        };
        state.wake_driver();
        r
    }

    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<VarInt>, StoppedError>> {
        let h = self.session.handle;
        let mut state = self.session.shared.lock();
        let r = state
            .engine
            .session(h)
            .map(|mut s| s.send_stream(self.id).stopped());
        match r {
            Some(Ok(code)) => Poll::Ready(Ok(code)),
            None => Poll::Ready(Err(StoppedError::ConnectionLost(
                state
                    .session_error(h)
                    .unwrap_or(kwik_core::SessionError::LocallyClosed),
            ))),
            Some(Err(_)) => {
                if let Some(e) = state.session_error(h) {
                    return Poll::Ready(Err(StoppedError::ConnectionLost(e)));
                }
                state.waiters(h).stopped.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Waits until the peer stopped the stream (`Some(code)`) or acknowledged every byte of
    /// a finished stream (`None`).
    pub async fn stopped(&mut self) -> Result<Option<VarInt>, StoppedError> {
        poll_fn(|cx| self.poll_stopped(cx)).await
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let mut state = self.session.shared.lock();
        let h = self.session.handle;
        let mut changed = false;
        if let Some(mut s) = state.engine.session(h) {
            let mut stream = s.send_stream(self.id);
            if !self.done {
                changed |= stream.finish().is_ok();
            }
            changed |= stream.forget();
        }
        if let Some(w) = state.sessions.get_mut(&h) {
            w.writers.remove(&self.id);
            w.stopped.remove(&self.id);
        }
        if changed {
            state.wake_driver();
        }
    }
}

/// The receiving half of a logical stream. Dropping it before the end stops the stream.
#[derive(Debug)]
pub struct RecvStream {
    session: Arc<SessionRef>,
    id: StreamId,
    /// Part of a chunk read but not yet handed to the application.
    buffered: Bytes,
    done: bool,
    /// Stopped by this side: later reads fail rather than report a clean end.
    stopped: bool,
}

impl RecvStream {
    pub(crate) fn new(session: Arc<SessionRef>, id: StreamId) -> Self {
        Self {
            session,
            id,
            buffered: Bytes::new(),
            done: false,
            stopped: false,
        }
    }

    /// The logical stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        if !self.buffered.is_empty() {
            let n = max.min(self.buffered.len());
            return Poll::Ready(Ok(Some(self.buffered.split_to(n))));
        }
        if self.stopped {
            return Poll::Ready(Err(ReadError::ClosedStream));
        }
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let h = self.session.handle;
        let mut state = self.session.shared.lock();
        let result = match state.engine.session(h) {
            Some(mut s) => s.recv_stream(self.id).read(max),
            None => Err(kwik_core::ReadError::SessionLost(
                kwik_core::SessionError::LocallyClosed,
            )),
        };
        // Most reads owe the peer nothing (no credit update yet): the driver sleeps on.
        if result.is_ok() && state.engine.needs_drive() {
            state.wake_driver();
        }
        match result {
            Ok(Some(chunk)) => Poll::Ready(Ok(Some(chunk))),
            Ok(None) => {
                self.done = true;
                Poll::Ready(Ok(None))
            }
            Err(kwik_core::ReadError::Blocked) => {
                crate::driver::StreamWakers::register(&mut state.waiters(h).readers, self.id, cx);
                Poll::Pending
            }
            Err(kwik_core::ReadError::Reset(code)) => {
                self.done = true;
                Poll::Ready(Err(ReadError::Reset(code)))
            }
            Err(kwik_core::ReadError::SessionLost(e)) => {
                let e = state.session_error(h).unwrap_or(e);
                Poll::Ready(Err(ReadError::ConnectionLost(e)))
            }
            Err(_) => Poll::Ready(Err(ReadError::ClosedStream)),
        }
    }

    /// The poll form of [`RecvStream::read_chunk`], for layers built on poll functions.
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        self.poll_chunk(cx, max)
    }

    /// Reads the next chunk of at most `max` bytes, without copying; `None` at the end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    pub(crate) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<Option<usize>, ReadError>> {
        match self.poll_chunk(cx, buf.len()) {
            Poll::Ready(Ok(Some(chunk))) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Poll::Ready(Ok(Some(chunk.len())))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(None)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads into `buf`; `None` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        poll_fn(|cx| self.poll_read_buf(cx, buf)).await
    }

    /// Fills `buf` exactly.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadExactError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]).await? {
                Some(n) => filled += n,
                None => return Err(ReadExactError::FinishedEarly(filled)),
            }
        }
        Ok(())
    }

    /// Reads the whole stream, failing if it is longer than `size_limit`.
    ///
    /// The chunks are gathered first and copied once into a vector of the exact size.
    pub async fn read_to_end(&mut self, size_limit: usize) -> Result<Vec<u8>, ReadToEndError> {
        // A body that arrives in one chunk (the common case for small messages) is copied
        // once into a vector of its size; later chunks are appended.
        let mut first: Option<Bytes> = None;
        let mut out: Vec<u8> = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            len += chunk.len();
            if len > size_limit {
                return Err(ReadToEndError::TooLong);
            }
            if let Some(f) = first.take() {
                out.reserve(f.len() + chunk.len());
                out.extend_from_slice(&f);
            }
            if out.is_empty() {
                first = Some(chunk);
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        Ok(first.map_or(out, |f| f.to_vec()))
    }

    /// Stops reading: the peer is asked to stop sending with `code`. Later reads fail with
    /// `ClosedStream`, as with quinn: a stopped stream never looks finished.
    pub fn stop(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        if self.done {
            return Err(ClosedStream);
        }
        self.done = true;
        self.stopped = true;
        self.buffered = Bytes::new();
        let mut state = self.session.shared.lock();
        let r = match state.engine.session(self.session.handle) {
            Some(mut s) => s.recv_stream(self.id).stop(code),
            None => Err(ClosedStream),
        };
        // A task that shares this half (h3's readers do) and waits for data would wait
        // forever: nothing more arrives on a stopped stream. It reads the stop instead.
        if let Some(w) = state.waiters(self.session.handle).readers.remove(&self.id) {
            w.wake();
        }
        state.wake_driver();
        r
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stop(VarInt::from_u32(0));
        }
        let mut state = self.session.shared.lock();
        if let Some(w) = state.sessions.get_mut(&self.session.handle) {
            w.readers.remove(&self.id);
        }
    }
}

#[cfg(feature = "tokio-io")]
mod tokio_io {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use super::{RecvStream, SendStream};

    impl tokio::io::AsyncRead for RecvStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let chunk = ready!(this.poll_chunk(cx, buf.remaining()))?;
            if let Some(chunk) = chunk {
                buf.put_slice(&chunk);
            }
            Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncWrite for SendStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.poll_write_with(cx, |s| s.write(buf))
                .map_err(Into::into)
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.done {
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(
                this.finish()
                    .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e)),
            )
        }
    }
}

#[cfg(feature = "futures-io")]
mod futures_io_impl {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use super::{RecvStream, SendStream};

    impl futures_io::AsyncRead for RecvStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = ready!(this.poll_read_buf(cx, buf))?;
            Poll::Ready(Ok(n.unwrap_or(0)))
        }
    }

    impl futures_io::AsyncWrite for SendStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.poll_write_with(cx, |s| s.write(buf))
                .map_err(Into::into)
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.done {
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(
                this.finish()
                    .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e)),
            )
        }
    }
}
