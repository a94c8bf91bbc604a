//! Multi-server sessions in the async API: paths, delegations and striping.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use kwik_core::{
    AddPathError, DelegateError, DelegationId, IncomingDelegation, PathId, PathInfo, PathKind,
    RemovePathError, Role, StripeId,
};

use crate::driver::SessionRef;
use crate::error::{ClosedStream, SessionError, WriteError};
use crate::event::PathEvent;
use crate::session::Session;
use crate::stream::SendStream;

impl Session {
    /// What this side is in the session: client, primary or joined secondary.
    pub fn role(&self) -> Role {
        let mut state = self.shared().lock();
        state
            .engine
            .session(self.handle())
            .map_or(Role::Client, |s| s.role())
    }

    /// The session's id, the same on every server and the client (0 until a client's
    /// session is established). Logs, spans and qlog file names carry it.
    pub fn id(&self) -> u64 {
        let mut state = self.shared().lock();
        state.engine.session(self.handle()).map_or(0, |s| s.id())
    }

    /// Primary: asks the client to connect to the server at `address` (verified as
    /// `server_name`) and join it to this session. The server config needs the group key.
    /// [`Session::path_event`] reports when the path is active.
    pub fn add_path(&self, address: SocketAddr, server_name: &str) -> Result<PathId, AddPathError> {
        let mut state = self.shared().lock();
        let now = self.shared().now();
        let r = match state.engine.session(self.handle()) {
            Some(mut s) => s.add_path(now, address, server_name),
            None => Err(AddPathError::SessionLost(SessionError::LocallyClosed)),
        };
        state.wake_driver();
        r
    }

    /// Primary: asks the client to open another path to this same server, at `address`
    /// (one of this server's own addresses): same-peer multipath. The session's streams are
    /// spread over every path to this server by `Config::load_balancing`; a
    /// `PathKind::Backup` path carries them only when no other path is left.
    pub fn add_same_peer_path(
        &self,
        address: SocketAddr,
        server_name: &str,
        kind: PathKind,
    ) -> Result<PathId, AddPathError> {
        let mut state = self.shared().lock();
        let now = self.shared().now();
        let r = match state.engine.session(self.handle()) {
            Some(mut s) => s.add_same_peer_path(now, address, server_name, kind),
            None => Err(AddPathError::SessionLost(SessionError::LocallyClosed)),
        };
        state.wake_driver();
        r
    }

    /// Removes a path; its unfinished delegated ranges are handed back.
    pub fn remove_path(&self, path: PathId) -> Result<(), RemovePathError> {
        let mut state = self.shared().lock();
        let now = self.shared().now();
        let r = match state.engine.session(self.handle()) {
            Some(mut s) => s.remove_path(now, path),
            None => Err(RemovePathError::SessionLost(SessionError::LocallyClosed)),
        };
        state.wake_driver();
        r
    }

    /// Every path of the session, the primary path first.
    pub fn paths(&self) -> Vec<PathInfo> {
        let mut state = self.shared().lock();
        state
            .engine
            .session(self.handle())
            .map(|s| s.paths())
            .unwrap_or_default()
    }

    /// The next path event of this session.
    pub async fn path_event(&self) -> Result<PathEvent, SessionError> {
        poll_fn(|cx| self.poll_backlog(cx, false, |w| &mut w.path_events)).await
    }

    /// The next range this server was delegated, with the writer that must deliver
    /// exactly its bytes.
    pub async fn accept_delegation(
        &self,
    ) -> Result<(IncomingDelegation, DelegationWriter), SessionError> {
        let d = poll_fn(|cx| {
            let mut state = self.shared().lock();
            if let Some(d) = state
                .engine
                .session(self.handle())
                .and_then(|mut s| s.accept_delegation())
            {
                return Poll::Ready(Ok(d));
            }
            if let Some(e) = state.session_error(self.handle()) {
                return Poll::Ready(Err(e));
            }
            crate::driver::register(&mut state.waiters(self.handle()).delegations, cx);
            Poll::Pending
        })
        .await?;
        let writer = DelegationWriter {
            session: self.inner_ref().clone(),
            id: d.id,
        };
        Ok((d, writer))
    }
}

/// Writes the bytes of one delegated range, in order.
#[derive(Debug)]
pub struct DelegationWriter {
    session: Arc<SessionRef>,
    id: DelegationId,
}

impl DelegationWriter {
    /// The delegation.
    pub fn id(&self) -> DelegationId {
        self.id
    }

    /// Bytes still owed.
    pub fn remaining(&self) -> u64 {
        let mut state = self.session.shared.lock();
        state
            .engine
            .session(self.session.handle)
            .map_or(0, |mut s| s.delegated(self.id).remaining())
    }

    /// Writes all of `chunk` without copying it, waiting for room; bytes beyond the range
    /// are refused with `ClosedStream`.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            poll_fn(|cx| {
                let h = self.session.handle;
                let mut state = self.session.shared.lock();
                let r = match state.engine.session(h) {
                    Some(mut s) => s
                        .delegated(self.id)
                        .write_chunks(std::slice::from_mut(&mut chunk)),
                    None => Err(kwik_core::WriteError::SessionLost(
                        kwik_core::SessionError::LocallyClosed,
                    )),
                };
                match r {
                    Ok(0) => Poll::Ready(Err(WriteError::ClosedStream)),
                    Ok(_) => {
                        state.wake_driver();
                        Poll::Ready(Ok(()))
                    }
                    Err(kwik_core::WriteError::Blocked) => {
                        state
                            .waiters(h)
                            .delegation_writers
                            .insert(self.id, cx.waker().clone());
                        Poll::Pending
                    }
                    Err(kwik_core::WriteError::SessionLost(e)) => {
                        let e = state.session_error(h).unwrap_or(e);
                        Poll::Ready(Err(WriteError::ConnectionLost(e)))
                    }
                    Err(_) => Poll::Ready(Err(WriteError::ClosedStream)),
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        self.write_chunk(Bytes::copy_from_slice(buf)).await
    }

    /// Refuses the range instead of writing it, when this server's copy of the content does
    /// not match the request: the client pulls it from another server (see
    /// [`kwik_core::Delegated::refuse`]). Only before the first byte is written.
    pub fn refuse(self) -> Result<(), ClosedStream> {
        let mut state = self.session.shared.lock();
        let r = match state.engine.session(self.session.handle) {
            Some(mut s) => s.delegated(self.id).refuse(),
            None => Err(ClosedStream),
        };
        state.wake_driver();
        r
    }
}

impl SendStream {
    /// Primary: reserves the next `len` bytes of this stream for the server on `path`
    /// (see [`kwik_core::SendStream::delegate`]).
    pub fn delegate(
        &mut self,
        path: PathId,
        request: Bytes,
        len: u64,
    ) -> Result<DelegationId, DelegateError> {
        let session = self.session_ref();
        let mut state = session.shared.lock();
        let now = session.shared.now();
        let r = match state.engine.session(session.handle) {
            Some(mut s) => s.send_stream(self.id()).delegate(now, path, request, len),
            None => Err(DelegateError::SessionLost(SessionError::LocallyClosed)),
        };
        state.wake_driver();
        r
    }

    /// Primary: serves the next `len` bytes of this stream from every active path at once,
    /// this server included (see [`kwik_core::SendStream::stripe`]). The session's
    /// [`Session::accept_delegation`] hands this server its own share.
    pub fn stripe(&mut self, request: Bytes, len: u64) -> Result<StripeId, DelegateError> {
        let session = self.session_ref();
        let mut state = session.shared.lock();
        let now = session.shared.now();
        let r = match state.engine.session(session.handle) {
            Some(mut s) => s.send_stream(self.id()).stripe(now, request, len),
            None => Err(DelegateError::SessionLost(SessionError::LocallyClosed)),
        };
        state.wake_driver();
        r
    }
}
