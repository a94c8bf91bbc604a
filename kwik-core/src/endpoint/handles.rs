//! Borrowed handles through which the application commands one session and its streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{Dir, Side, VarInt};

use super::Endpoint;
use crate::delegation::{DelegateError, IncomingDelegation, Outgoing};
use crate::error::{ClosedStream, RawSendError, ReadError, SessionError, WriteError};
use crate::ids::{DelegationId, PathId, SessionHandle, StreamId, StripeId};
use crate::session::{
    AddPathError, Mode, PathInfo, PathKind, Phase, RemovePathError, Role, SessionState,
};
use crate::stats::SessionStats;

/// Commands for one session, borrowed from its [`Endpoint`].
#[derive(Debug)]
pub struct Session<'a> {
    pub(super) endpoint: &'a mut Endpoint,
    pub(super) handle: SessionHandle,
}

impl Session<'_> {
    fn state(&self) -> Option<&SessionState> {
        self.endpoint.sessions.get(&self.handle)
    }

    fn state_mut(&mut self) -> Option<&mut SessionState> {
        self.endpoint.sessions.get_mut(&self.handle)
    }

    /// This session's handle.
    pub fn handle(&self) -> SessionHandle {
        self.handle
    }

    /// Which role this side plays.
    pub fn side(&self) -> Side {
        self.state().map_or(Side::Client, |s| s.side)
    }

    /// The session id the server assigned (0 until established on a client).
    pub fn id(&self) -> u64 {
        self.state().map_or(0, |s| s.id)
    }

    /// The application protocol the server chose from the client's offer (see
    /// [`crate::Config::app_protocols`]); `None` if it chose none or setup is not done.
    pub fn app_protocol(&self) -> Option<Bytes> {
        self.state().and_then(|s| s.app_protocol.clone())
    }

    /// The primary path's remote address.
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.state().map(|s| s.remote)
    }

    /// Whether the session setup completed and it has not ended.
    pub fn is_established(&self) -> bool {
        self.state().is_some_and(|s| s.phase == Phase::Established)
    }

    /// Why the session ended, if it did.
    pub fn error(&self) -> Option<SessionError> {
        self.state().and_then(|s| s.error.clone())
    }

    /// Smoothed RTT of the primary path.
    pub fn rtt(&self) -> Option<Duration> {
        Some(self.state()?.conn(PathId::PRIMARY)?.conn.rtt())
    }

    /// Whether the session's server is draining (this side, or a client's primary that
    /// announced it): the session opens no new streams, and ends once the streams in
    /// flight are done. See [`Endpoint::drain`](crate::Endpoint::drain).
    pub fn is_draining(&self) -> bool {
        self.state().is_some_and(|s| s.draining.is_some())
    }

    /// Client: the error of a primary that was lost while secondaries still owed the
    /// session bytes. The session lives on until they are in (or their tickets expire),
    /// then ends with this error; meanwhile no stream opens, and path 0 is failed.
    pub fn primary_lost(&self) -> Option<SessionError> {
        self.state().and_then(|s| s.lost_error())
    }

    /// Opens a logical stream; `None` when the peer's stream limit is reached (a
    /// `StreamAvailable` event follows when it rises), the session is not established, or
    /// its server is draining ([`Session::is_draining`]: no stream opens again).
    pub fn open(&mut self, dir: Dir) -> Option<StreamId> {
        let s = self.state_mut()?;
        if s.phase != Phase::Established || s.draining.is_some() || s.client.lost.is_some() {
            return None;
        }
        let opened = match s.mode {
            Mode::Kwik => s.streams.open(dir),
            Mode::Plain => s.plain_open(dir),
        };
        if opened.is_some() && s.mode == Mode::Plain {
            // quinn-proto sends nothing for an opened stream until it is written.
            self.endpoint.mark_dirty(self.handle);
        }
        opened
    }

    /// Takes the next logical stream the peer opened.
    pub fn accept(&mut self, dir: Dir) -> Option<StreamId> {
        let s = self.state_mut()?;
        match s.mode {
            Mode::Kwik => s.streams.accept(dir),
            Mode::Plain => {
                // QUIC may grant the peer another stream: the connection has a frame to
                // send.
                let id = s.plain_accept(dir);
                self.endpoint.touch_session(self.handle);
                id
            }
        }
    }

    /// Whether the session speaks KWIK with its peer or runs plain QUIC (the peer does not
    /// speak KWIK: see [`Mode::Plain`]). A client's session is `Kwik` until the handshake
    /// shows otherwise.
    pub fn mode(&self) -> Mode {
        self.state().map_or(Mode::Kwik, |s| s.mode)
    }

    /// The send half of a logical stream.
    pub fn send_stream(&mut self, id: StreamId) -> SendStream<'_> {
        SendStream {
            endpoint: &mut *self.endpoint,
            handle: self.handle,
            id,
        }
    }

    /// The receive half of a logical stream.
    pub fn recv_stream(&mut self, id: StreamId) -> RecvStream<'_> {
        RecvStream {
            endpoint: &mut *self.endpoint,
            handle: self.handle,
            id,
        }
    }

    /// Closes every path of the session with an application code (below
    /// [`KWIK_ERROR_BASE`](crate::KWIK_ERROR_BASE)) and reason.
    pub fn close(&mut self, now: Instant, code: VarInt, reason: &[u8]) {
        let h = self.handle;
        for k in self.endpoint.session_paths(h) {
            if let Some(p) = self.endpoint.conn_mut(k) {
                p.close_app(now, code, Bytes::copy_from_slice(reason));
            }
        }
        self.endpoint
            .close_session(now, h, SessionError::LocallyClosed);
        self.endpoint.mark_dirty(h);
    }

    /// Sends `data` as one unreliable QUIC datagram on `path`, and only there.
    ///
    /// Datagrams that find the send buffer full replace the oldest queued ones; the path's
    /// `raw_displaced` counts each send that did. [`Self::try_send_raw`] hands the datagram
    /// back instead.
    pub fn send_raw(&mut self, path: PathId, data: Bytes) -> Result<(), RawSendError> {
        self.raw_send(path, data, true)
    }

    /// Sends `data` as one unreliable QUIC datagram on `path` if its send buffer has room;
    /// otherwise returns it in [`RawSendError::Blocked`], and a [`Event::RawWritable`] for
    /// the path follows once there is room.
    ///
    /// [`Event::RawWritable`]: crate::Event::RawWritable
    pub fn try_send_raw(&mut self, path: PathId, data: Bytes) -> Result<(), RawSendError> {
        self.raw_send(path, data, false)
    }

    fn raw_send(&mut self, path: PathId, data: Bytes, displace: bool) -> Result<(), RawSendError> {
        let state = self
            .state()
            .ok_or(RawSendError::SessionLost(SessionError::LocallyClosed))?;
        if let Some(e) = &state.error {
            return Err(RawSendError::SessionLost(e.clone()));
        }
        let p = self
            .endpoint
            .sessions
            .get_mut(&self.handle)
            .and_then(|s| s.conn_mut(path))
            .ok_or(RawSendError::UnknownPath(path))?;
        let key = p.key;
        let size = data.len();
        let mut datagrams = p.conn.datagrams();
        let max = datagrams.max_size();
        let full = datagrams.send_buffer_space() < size;
        match datagrams.send(data, displace) {
            Ok(()) => {}
            Err(quinn_proto::SendDatagramError::TooLarge) => {
                return Err(RawSendError::TooLarge { size, max });
            }
            Err(quinn_proto::SendDatagramError::UnsupportedByPeer) => {
                return Err(RawSendError::UnsupportedByPeer);
            }
            Err(quinn_proto::SendDatagramError::Disabled) => {
                return Err(RawSendError::TooLarge { size, max: None });
            }
            Err(quinn_proto::SendDatagramError::Blocked(data)) => {
                p.raw_blocked = true;
                return Err(RawSendError::Blocked(data));
            }
        }
        if full {
            p.counters.raw_displaced += 1;
        }
        p.counters.raw_sent += 1;
        self.endpoint.dirty.insert(key);
        Ok(())
    }

    /// The largest raw datagram `path` carries now, if it carries any.
    pub fn max_raw_size(&mut self, path: PathId) -> Option<usize> {
        self.state_mut()?
            .conn_mut(path)?
            .conn
            .datagrams()
            .max_size()
    }

    /// The next raw datagram received, with the path it came on.
    pub fn read_raw(&mut self) -> Option<(PathId, Bytes)> {
        self.state_mut()?.raw.pop_front()
    }

    /// Stats of the session and each of its paths.
    pub fn stats(&self) -> SessionStats {
        self.endpoint.session_stats(self.handle).unwrap_or_default()
    }

    /// A count that grows whenever something happens to the session (a datagram for one
    /// of its paths, a command, one of its timers, a datagram sent). A sampler of
    /// [`Session::stats`] may skip a session whose count did not move since its last look:
    /// none of its figures did either.
    pub fn activity(&self) -> u64 {
        self.state().map_or(0, |s| s.activity)
    }

    /// What this side is in the session: client, primary or joined secondary.
    pub fn role(&self) -> Role {
        self.state().map_or(Role::Client, |s| s.role)
    }

    /// Primary: asks the client to connect to the server at `address` (verified as
    /// `server_name`) and join it to this session. Needs the server config's group key.
    /// The path is usable once a `PathActive` event names it.
    pub fn add_path(
        &mut self,
        now: Instant,
        address: SocketAddr,
        server_name: &str,
    ) -> Result<PathId, AddPathError> {
        self.add_path_of(now, address, server_name, PathKind::Secondary)
    }

    /// Primary: asks the client to open another path to this server, at `address` (one of
    /// this server's own addresses, verified as `server_name`): same-peer multipath. The
    /// session's streams are then spread over every path to this server by
    /// `Config::load_balancing`; a `PathKind::Backup` path carries them only when no other
    /// path is left. Needs the group key, like `add_path`.
    pub fn add_same_peer_path(
        &mut self,
        now: Instant,
        address: SocketAddr,
        server_name: &str,
        kind: PathKind,
    ) -> Result<PathId, AddPathError> {
        self.add_path_of(now, address, server_name, kind)
    }

    fn add_path_of(
        &mut self,
        now: Instant,
        address: SocketAddr,
        server_name: &str,
        kind: PathKind,
    ) -> Result<PathId, AddPathError> {
        if self.mode() == Mode::Plain {
            return Err(AddPathError::PlainSession);
        }
        let keys = self
            .endpoint
            .server
            .as_ref()
            .and_then(|s| s.group_key.clone())
            .ok_or(AddPathError::NoGroupKey)?;
        let (key_id, group) = keys.current();
        self.endpoint
            .with_session(now, self.handle, |s, cx| {
                s.add_path(cx, (key_id, group), address, server_name, kind)
            })
            .unwrap_or(Err(AddPathError::SessionLost(SessionError::LocallyClosed)))
    }

    /// Removes a path (primary: tells the client to drop it; client: drops it). Its
    /// unfinished delegated ranges are handed back.
    pub fn remove_path(&mut self, now: Instant, path: PathId) -> Result<(), RemovePathError> {
        let Some(s) = self.state() else {
            return Err(RemovePathError::SessionLost(SessionError::LocallyClosed));
        };
        if let Some(e) = &s.error {
            return Err(RemovePathError::SessionLost(e.clone()));
        }
        if s.mode == Mode::Plain {
            return Err(RemovePathError::PlainSession);
        }
        let removed = self
            .endpoint
            .with_session(now, self.handle, |s, cx| s.remove_path(cx, path))
            .unwrap_or(false);
        if removed {
            Ok(())
        } else {
            Err(RemovePathError::NoSuchPath(path))
        }
    }

    /// Every path of the session this side knows of, the primary path first.
    pub fn paths(&self) -> Vec<PathInfo> {
        self.endpoint.paths_of(self.handle)
    }

    /// The next range this server was delegated: write its bytes through
    /// [`Session::delegated`].
    pub fn accept_delegation(&mut self) -> Option<IncomingDelegation> {
        self.state_mut()?.serving.incoming.pop_front()
    }

    /// The writer of a delegated range.
    pub fn delegated(&mut self, id: DelegationId) -> Delegated<'_> {
        Delegated {
            endpoint: &mut *self.endpoint,
            handle: self.handle,
            id,
        }
    }
}

/// Writes the bytes of one delegated range, borrowed from its [`Endpoint`].
#[derive(Debug)]
pub struct Delegated<'a> {
    endpoint: &'a mut Endpoint,
    handle: SessionHandle,
    id: DelegationId,
}

impl Delegated<'_> {
    fn outgoing(&mut self) -> Result<&mut Outgoing, WriteError> {
        let s = self
            .endpoint
            .sessions
            .get_mut(&self.handle)
            .ok_or(WriteError::SessionLost(SessionError::LocallyClosed))?;
        if let Some(e) = &s.error {
            return Err(WriteError::SessionLost(e.clone()));
        }
        s.serving
            .outgoing
            .get_mut(&self.id.0)
            .ok_or(WriteError::ClosedStream)
    }

    /// Refuses the range instead of writing it, when this server's copy of the content
    /// does not match the request: the client hears `PullRefused` with
    /// [`TicketError::Content`](crate::TicketError::Content) and pulls the range from
    /// another server. Only before the first byte is written (`ClosedStream` after).
    pub fn refuse(&mut self) -> Result<(), ClosedStream> {
        // A delegation arrived with a datagram, so the engine has seen an input.
        let Some(now) = self.endpoint.last_now else {
            return Err(ClosedStream);
        };
        let id = self.id.0;
        let refused = self
            .endpoint
            .with_session(now, self.handle, |s, cx| s.refuse_outgoing(cx, id));
        if refused == Some(true) {
            self.endpoint.mark_dirty(self.handle);
            Ok(())
        } else {
            Err(ClosedStream)
        }
    }

    /// Bytes still owed, queued ones excluded.
    pub fn remaining(&mut self) -> u64 {
        self.outgoing().map_or(0, |o| o.end - o.written)
    }

    /// Queues the next bytes of the range; returns how many were taken (`Blocked` when
    /// the buffer is full, a `DelegationWritable` event follows). Bytes beyond the range
    /// are not taken.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let mut chunk = [Bytes::copy_from_slice(data)];
        self.write_chunks(&mut chunk)
    }

    /// Queues whole chunks without copying; taken bytes are removed from `chunks`.
    pub fn write_chunks(&mut self, chunks: &mut [Bytes]) -> Result<usize, WriteError> {
        let out = self.outgoing()?;
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let mut room = out.room();
        if total == 0 {
            return Ok(0);
        }
        if room == 0 {
            out.blocked = true;
            return Err(WriteError::Blocked);
        }
        let mut taken = 0;
        for chunk in chunks.iter_mut() {
            if room == 0 {
                break;
            }
            let n = room.min(chunk.len() as u64) as usize;
            let part = chunk.split_to(n);
            room -= n as u64;
            taken += n;
            out.written += n as u64;
            if !part.is_empty() {
                out.queue.push_back(part);
            }
        }
        self.endpoint.mark_dirty(self.handle);
        Ok(taken)
    }
}

/// The send half of a logical stream, borrowed from its [`Endpoint`].
#[derive(Debug)]
pub struct SendStream<'a> {
    endpoint: &'a mut Endpoint,
    handle: SessionHandle,
    id: StreamId,
}

impl SendStream<'_> {
    /// Runs `f` on the session's state, unless the session ended; its connections are
    /// driven afterwards.
    fn run<T, E>(
        &mut self,
        lost: impl FnOnce(SessionError) -> E,
        f: impl FnOnce(&mut SessionState, StreamId) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_then(lost, f, Endpoint::mark_dirty)
    }

    /// [`Self::run`], the connections marked by `mark`: a write gives them data to send
    /// and nothing to read ([`Endpoint::mark_written`]).
    fn run_then<T, E>(
        &mut self,
        lost: impl FnOnce(SessionError) -> E,
        f: impl FnOnce(&mut SessionState, StreamId) -> Result<T, E>,
        mark: fn(&mut Endpoint, SessionHandle),
    ) -> Result<T, E> {
        let Some(s) = self.endpoint.sessions.get_mut(&self.handle) else {
            return Err(lost(SessionError::LocallyClosed));
        };
        if let Some(e) = &s.error {
            return Err(lost(e.clone()));
        }
        let r = f(s, self.id);
        mark(self.endpoint, self.handle);
        r
    }

    /// Queues bytes; returns how many were taken (`Blocked` if none could be).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let write = |s: &mut SessionState, id| match s.mode {
            Mode::Kwik => s.streams.write(id, data),
            Mode::Plain => s.plain_write(id, data),
        };
        self.run_then(WriteError::SessionLost, write, Endpoint::mark_written)
    }

    /// Queues whole chunks without copying; taken bytes are removed from `chunks`.
    pub fn write_chunks(&mut self, chunks: &mut [Bytes]) -> Result<usize, WriteError> {
        let write = |s: &mut SessionState, id| match s.mode {
            Mode::Kwik => s.streams.write_chunks(id, chunks),
            Mode::Plain => s.plain_write_chunks(id, chunks),
        };
        self.run_then(WriteError::SessionLost, write, Endpoint::mark_written)
    }

    /// Ends the stream after the bytes written so far. Finishing a stream the peer
    /// stopped is harmless (`Ok`), as with quinn: `stopped` reports the peer's code.
    ///
    /// A primary that finishes a stream right after a range it delegated (a stripe, or a
    /// plain delegation to a secondary) sends the client a refreshed copy of that range's
    /// ticket saying that the stream ends there: with it, a client whose primary is lost
    /// ends the stream once the range arrived.
    pub fn finish(&mut self) -> Result<(), ClosedStream> {
        self.run(
            |_| ClosedStream,
            |s, id| match s.mode {
                Mode::Kwik => s.streams.finish(id),
                Mode::Plain => s.plain_finish(id),
            },
        )?;
        if let Some(now) = self.endpoint.last_now {
            let id = self.id;
            self.endpoint
                .with_session(now, self.handle, |s, cx| s.mark_stream_end(cx, id));
        }
        Ok(())
    }

    /// Abandons the stream: unsent bytes are dropped and the peer told `code`.
    pub fn reset(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        self.run(
            |_| ClosedStream,
            |s, id| match s.mode {
                Mode::Kwik => s.streams.reset(id, code),
                Mode::Plain => s.plain_reset(id, code),
            },
        )
    }

    /// `Ok(Some(code))` if the peer stopped the stream, `Ok(None)` once every byte of a
    /// finished stream was acknowledged, `Err` while neither happened yet.
    pub fn stopped(&mut self) -> Result<Option<VarInt>, ClosedStream> {
        let s = self
            .endpoint
            .sessions
            .get_mut(&self.handle)
            .ok_or(ClosedStream)?;
        match s.mode {
            Mode::Kwik => s.streams.stopped(self.id),
            Mode::Plain => s.plain_stopped(self.id),
        }
    }

    /// Whether the stream still has a send half.
    pub fn is_open(&mut self) -> bool {
        self.endpoint
            .sessions
            .get_mut(&self.handle)
            .is_some_and(|s| match s.mode {
                Mode::Kwik => s.streams.is_sending(self.id),
                Mode::Plain => s.plain_is_sending(self.id),
            })
    }

    /// Primary: reserves the next `len` bytes of this stream for the server on `path`,
    /// under a ticket signed for that path alone. The client pulls the range from it;
    /// that server gets `request` through `accept_delegation` and must write exactly those
    /// bytes. Later writes go after the range. The peer's flow-control credit must cover
    /// the range now (`Blocked` otherwise). If the path fails or refuses, the undelivered
    /// rest is delegated to the primary itself (path 0), so the application's own
    /// delegation handler serves it; a `DelegationFinished` event tells the outcome.
    pub fn delegate(
        &mut self,
        now: Instant,
        path: PathId,
        request: Bytes,
        len: u64,
    ) -> Result<DelegationId, DelegateError> {
        let stream = self.id;
        let r = self
            .endpoint
            .with_session(now, self.handle, |s, cx| {
                s.delegate(cx, stream, path, request, len)
            })
            .unwrap_or(Err(DelegateError::SessionLost(SessionError::LocallyClosed)));
        self.endpoint.mark_dirty(self.handle);
        r
    }

    /// Primary: serves the next `len` bytes of this stream from every server of the
    /// session at once, this one included. One ticket, signed for any server of this
    /// session, covers the whole range; the client pulls chunks from each server over its
    /// own path and schedules them itself (shares follow each path's measured rate, a
    /// stalled or failed path's chunks go elsewhere at once). Every server, this one
    /// included, serves its chunks through `accept_delegation`. Later writes go after the
    /// range, once the client's credit reaches past it. A `StripeFinished` event follows
    /// when every byte arrived. Returns the stripe's id (its ticket's).
    pub fn stripe(
        &mut self,
        now: Instant,
        request: Bytes,
        len: u64,
    ) -> Result<StripeId, DelegateError> {
        let stream = self.id;
        let r = self
            .endpoint
            .with_session(now, self.handle, |s, cx| s.stripe(cx, stream, request, len))
            .unwrap_or(Err(DelegateError::SessionLost(SessionError::LocallyClosed)));
        self.endpoint.mark_dirty(self.handle);
        r
    }

    /// Forgets a stream the peer stopped, once the application has seen the code.
    ///
    /// Returns whether there was anything to forget.
    pub fn forget(&mut self) -> bool {
        let Some(s) = self.endpoint.sessions.get_mut(&self.handle) else {
            return false;
        };
        let forgotten = match s.mode {
            Mode::Kwik => s.streams.forget_stopped(self.id),
            Mode::Plain => s.plain_forget(self.id),
        };
        if forgotten {
            self.endpoint.mark_dirty(self.handle);
        }
        forgotten
    }
}

/// The receive half of a logical stream, borrowed from its [`Endpoint`].
#[derive(Debug)]
pub struct RecvStream<'a> {
    endpoint: &'a mut Endpoint,
    handle: SessionHandle,
    id: StreamId,
}

impl RecvStream<'_> {
    /// Reads up to `max` bytes in order; `Ok(None)` once the stream ended.
    pub fn read(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let Some(s) = self.endpoint.sessions.get_mut(&self.handle) else {
            return Err(ReadError::SessionLost(SessionError::LocallyClosed));
        };
        if s.mode == Mode::Plain {
            let (r, transmit) = s.plain_read(self.id, max);
            if let (Err(ReadError::Blocked | ReadError::ClosedStream), Some(e)) = (&r, &s.error) {
                return Err(ReadError::SessionLost(e.clone()));
            }
            if transmit {
                self.endpoint.mark_dirty(self.handle);
            }
            return r;
        }
        let r = s.streams.read(self.id, max);
        if let (Err(ReadError::Blocked), Some(e)) = (&r, &s.error) {
            return Err(ReadError::SessionLost(e.clone()));
        }
        // A read only needs the paths driven when it owes the peer credit or a freed
        // stream, or when pulls follow the reader (delegated and striped ranges).
        if r.is_ok()
            && (s.streams.has_signal()
                || !s.client.owed.is_empty()
                || !s.client.held.is_empty()
                || s.client.lost.is_some())
        {
            self.endpoint.mark_dirty(self.handle);
        }
        r
    }

    /// Stops reading: buffered data is dropped and the peer asked to stop with `code`.
    pub fn stop(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        let s = self
            .endpoint
            .sessions
            .get_mut(&self.handle)
            .ok_or(ClosedStream)?;
        let r = match s.mode {
            Mode::Kwik => s.streams.stop(self.id, code),
            Mode::Plain => s.plain_stop(self.id, code),
        };
        self.endpoint.mark_dirty(self.handle);
        r
    }
}
