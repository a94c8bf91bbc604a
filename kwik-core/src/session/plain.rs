//! Plain sessions ([`Mode::Plain`]): one QUIC connection with a peer that negotiated an
//! application protocol instead of `kwik/1`. The session's logical streams are the
//! connection's QUIC streams, so every stream operation here is quinn-proto's, and its
//! stream events are handed on as the session's.
//!
//! A range reserved with `stripe` (or `delegate` to path 0) is served by this server
//! alone: it goes to the application as consecutive delegations of at most
//! [`PLAIN_DELEGATION`] bytes, the next only once the one before it was written, and their
//! bytes go onto the stream in order, under QUIC's flow control. The stream takes no other
//! writes until its ranges are written (writes are `Blocked`, and a `StreamWritable` event
//! follows), and a `finish` meanwhile takes effect behind them.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use quinn_proto::{Dir, VarInt};
use rustc_hash::{FxHashMap, FxHashSet};

use super::effects::Cx;
use super::{Mode, PathRecord, Phase, SessionState};
use crate::delegation::{DelegateError, DelegationOutcome, IncomingDelegation, Outgoing};
use crate::error::{ClosedStream, ErrorCode, ProtocolError, ReadError, SessionError, WriteError};
use crate::event::Event;
use crate::ids::{DelegationId, PathId, StreamId, StripeId};
use crate::path::Path;

/// Largest delegation a plain session hands its application at once.
pub(crate) const PLAIN_DELEGATION: u64 = 4 << 20;

/// A plain session's ranges, by stream.
#[derive(Debug, Default)]
pub(crate) struct PlainState {
    /// Bytes handed to QUIC on each stream this side writes that has had a range or may
    /// get one: the offsets of ranges.
    sent: FxHashMap<StreamId, u64>,
    /// Ranges reserved on each stream, in stream order.
    ranges: FxHashMap<StreamId, Ranges>,
    /// Streams the application finished (QUIC holds their fin) and QUIC has not reported
    /// done: a peer's STOP_SENDING on one of them is answered with a reset at once, since
    /// nobody will reset it later.
    finished: FxHashSet<StreamId>,
    /// What the application must hear after its own calls, which have no event queue:
    /// drained by the next drive.
    notices: Vec<Notice>,
}

/// An event owed to the application, queued where no event can be sent.
#[derive(Debug, Clone, Copy)]
enum Notice {
    /// A delegation's writer waits for room it will never get: it must try again (and
    /// learn that the range is gone).
    DelegationWritable(u64),
    /// A writer waits behind ranges that are gone.
    StreamWritable(StreamId),
    /// A `delegate` range will not be served.
    DelegationFailed { id: u64, first_missing: u64 },
}

#[derive(Debug, Default)]
struct Ranges {
    queue: VecDeque<Range>,
    /// The stream offset past the last range.
    end: u64,
    /// The application finished the stream: the fin follows the ranges.
    fin: bool,
    /// A write waited for the ranges.
    writer_blocked: bool,
}

#[derive(Debug)]
struct Range {
    /// The stripe's or delegation's id, as the application was given it.
    id: u64,
    stripe: bool,
    request: Bytes,
    /// Stream offset of the range's first byte.
    start: u64,
    len: u64,
    /// Bytes of the range handed to the application so far.
    handed: u64,
    /// The delegation the application writes now.
    current: Option<u64>,
}

/// The connection of a plain session, borrowed from its paths alone.
fn primary(paths: &mut BTreeMap<PathId, PathRecord>) -> Option<&mut Path> {
    paths.get_mut(&PathId::PRIMARY)?.conn.as_deref_mut()
}

/// quinn-proto's id of logical stream `id` (the same number).
fn quic(id: StreamId) -> Option<quinn_proto::StreamId> {
    VarInt::from_u64(id.0).ok().map(quinn_proto::StreamId::from)
}

fn logical(id: quinn_proto::StreamId) -> StreamId {
    StreamId(u64::from(id))
}

fn write_error(e: quinn_proto::WriteError) -> WriteError {
    match e {
        quinn_proto::WriteError::Blocked => WriteError::Blocked,
        quinn_proto::WriteError::Stopped(code) => WriteError::Stopped(code),
        quinn_proto::WriteError::ClosedStream => WriteError::ClosedStream,
    }
}

impl SessionState {
    fn plain_conn(&mut self) -> Option<&mut Path> {
        primary(&mut self.paths)
    }

    /// Opens a QUIC stream, if the peer's limit allows.
    pub(crate) fn plain_open(&mut self, dir: Dir) -> Option<StreamId> {
        let id = self.plain_conn()?.conn.streams().open(dir)?;
        self.streams.counters.opened_local += 1;
        Some(logical(id))
    }

    /// Takes the next QUIC stream the peer opened.
    pub(crate) fn plain_accept(&mut self, dir: Dir) -> Option<StreamId> {
        let id = self.plain_conn()?.conn.streams().accept(dir)?;
        self.streams.counters.opened_remote += 1;
        Some(logical(id))
    }

    pub(crate) fn plain_write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        self.plain_write_with(id, |s| s.write(data))
    }

    pub(crate) fn plain_write_chunks(
        &mut self,
        id: StreamId,
        chunks: &mut [Bytes],
    ) -> Result<usize, WriteError> {
        self.plain_write_with(id, |s| s.write_chunks(chunks).map(|w| w.bytes))
    }

    fn plain_write_with(
        &mut self,
        id: StreamId,
        write: impl FnOnce(&mut quinn_proto::SendStream<'_>) -> Result<usize, quinn_proto::WriteError>,
    ) -> Result<usize, WriteError> {
        if let Some(r) = self.plain.ranges.get_mut(&id) {
            // Behind a range the application still writes.
            r.writer_blocked = true;
            return Err(WriteError::Blocked);
        }
        let qid = quic(id).ok_or(WriteError::ClosedStream)?;
        let p = primary(&mut self.paths).ok_or(WriteError::ClosedStream)?;
        let n = write(&mut p.conn.send_stream(qid)).map_err(write_error)?;
        p.counters.stream_bytes_sent += n as u64;
        self.streams.counters.bytes_written += n as u64;
        *self.plain.sent.entry(id).or_insert(0) += n as u64;
        Ok(n)
    }

    /// Finishes a stream, behind its ranges if it has any.
    pub(crate) fn plain_finish(&mut self, id: StreamId) -> Result<(), ClosedStream> {
        if let Some(r) = self.plain.ranges.get_mut(&id) {
            if r.fin {
                return Err(ClosedStream);
            }
            r.fin = true;
            return Ok(());
        }
        let qid = quic(id).ok_or(ClosedStream)?;
        let p = self.plain_conn().ok_or(ClosedStream)?;
        match p.conn.send_stream(qid).finish() {
            Ok(()) => {
                self.plain.finished.insert(id);
                Ok(())
            }
            // As with quinn: finishing a stream the peer stopped is harmless.
            Err(quinn_proto::FinishError::Stopped(_)) => Ok(()),
            Err(quinn_proto::FinishError::ClosedStream) => Err(ClosedStream),
        }
    }

    /// Resets a stream the peer stopped, once the application let go of it, so that QUIC
    /// forgets it. Returns whether there was one.
    pub(crate) fn plain_forget(&mut self, id: StreamId) -> bool {
        let Some(qid) = quic(id) else {
            return false;
        };
        let Some(p) = self.plain_conn() else {
            return false;
        };
        let mut stream = p.conn.send_stream(qid);
        let forgotten = match stream.stopped() {
            Ok(Some(code)) => stream.reset(code).is_ok(),
            _ => false,
        };
        if forgotten {
            self.plain.sent.remove(&id);
        }
        forgotten
    }

    /// Resets a stream; its ranges are dropped.
    pub(crate) fn plain_reset(&mut self, id: StreamId, code: VarInt) -> Result<(), ClosedStream> {
        self.drop_ranges(id);
        self.plain.sent.remove(&id);
        self.plain.finished.remove(&id);
        let qid = quic(id).ok_or(ClosedStream)?;
        let p = self.plain_conn().ok_or(ClosedStream)?;
        p.conn
            .send_stream(qid)
            .reset(code)
            .map_err(|_| ClosedStream)
    }

    /// `Ok(Some(code))` if the peer stopped the stream, `Ok(None)` once it is gone from
    /// QUIC (every byte of the finished stream acknowledged), `Err` before either.
    pub(crate) fn plain_stopped(&mut self, id: StreamId) -> Result<Option<VarInt>, ClosedStream> {
        match self.send_half(id).ok_or(ClosedStream)? {
            Ok(Some(code)) => Ok(Some(code)),
            Ok(None) => Err(ClosedStream),
            Err(_) => Ok(None),
        }
    }

    /// Whether QUIC still holds the stream's send half.
    pub(crate) fn plain_is_sending(&mut self, id: StreamId) -> bool {
        matches!(self.send_half(id), Some(Ok(_)))
    }

    /// QUIC's view of the send half of `id` (`stopped`: `Err` once it is gone, `Ok(Some)`
    /// once the peer stopped it); `None` without a connection or a valid id.
    fn send_half(
        &mut self,
        id: StreamId,
    ) -> Option<Result<Option<VarInt>, quinn_proto::ClosedStream>> {
        let qid = quic(id)?;
        Some(self.plain_conn()?.conn.send_stream(qid).stopped())
    }

    /// Reads up to `max` bytes in order; the flag says whether QUIC owes the peer credit
    /// now (the connection must be driven).
    pub(crate) fn plain_read(
        &mut self,
        id: StreamId,
        max: usize,
    ) -> (Result<Option<Bytes>, ReadError>, bool) {
        let Some(qid) = quic(id) else {
            return (Err(ReadError::ClosedStream), false);
        };
        let Some(p) = primary(&mut self.paths) else {
            return (Err(ReadError::ClosedStream), false);
        };
        let mut stream = p.conn.recv_stream(qid);
        let Ok(mut chunks) = stream.read(true) else {
            return (Err(ReadError::ClosedStream), false);
        };
        let r = match chunks.next(max) {
            Ok(Some(chunk)) => Ok(Some(chunk.bytes)),
            Ok(None) => Ok(None),
            Err(quinn_proto::ReadError::Blocked) => Err(ReadError::Blocked),
            Err(quinn_proto::ReadError::Reset(code)) => Err(ReadError::Reset(code)),
        };
        let transmit = chunks.finalize().should_transmit();
        if let Ok(Some(b)) = &r {
            p.counters.stream_bytes_received += b.len() as u64;
            self.streams.counters.bytes_read += b.len() as u64;
        }
        (r, transmit)
    }

    /// Stops reading a stream.
    pub(crate) fn plain_stop(&mut self, id: StreamId, code: VarInt) -> Result<(), ClosedStream> {
        let qid = quic(id).ok_or(ClosedStream)?;
        let p = self.plain_conn().ok_or(ClosedStream)?;
        p.conn.recv_stream(qid).stop(code).map_err(|_| ClosedStream)
    }

    /// Primary of a plain session: reserves the next `len` bytes of `stream` for this
    /// server's application, handed to it as consecutive delegations. `stripe` says how
    /// the end is reported (`StripeFinished`, or `DelegationFinished`). Returns the id.
    pub(crate) fn plain_range(
        &mut self,
        cx: &mut Cx<'_>,
        stream: StreamId,
        request: Bytes,
        len: u64,
        stripe: bool,
    ) -> Result<u64, DelegateError> {
        // Writable: QUIC holds the send half, not stopped, and the application has not
        // finished it.
        if self.send_half(stream) != Some(Ok(None))
            || self.plain.finished.contains(&stream)
            || self.plain.ranges.get(&stream).is_some_and(|r| r.fin)
        {
            return Err(DelegateError::ClosedStream);
        }
        let id = self.new_delegation_id();
        let sent = self.plain.sent.get(&stream).copied().unwrap_or(0);
        let ranges = self.plain.ranges.entry(stream).or_default();
        let start = if ranges.queue.is_empty() {
            sent
        } else {
            ranges.end
        };
        ranges.end = start + len;
        ranges.queue.push_back(Range {
            id,
            stripe,
            request,
            start,
            len,
            handed: 0,
            current: None,
        });
        self.plain.sent.entry(stream).or_insert(sent);
        self.hand_next(cx, stream);
        if let Some(p) = self.plain_conn() {
            cx.drive(p.key);
        }
        Ok(id)
    }

    /// Hands the application the next delegation of `stream`'s first range, unless it
    /// is writing one.
    fn hand_next(&mut self, cx: &mut Cx<'_>, stream: StreamId) {
        let Some(range) = self
            .plain
            .ranges
            .get(&stream)
            .and_then(|r| r.queue.front())
            .filter(|r| r.current.is_none() && r.handed < r.len)
        else {
            return;
        };
        let (ticket, request, handed) = (range.id, range.request.clone(), range.handed);
        let offset = range.start + handed;
        let len = (range.len - handed).min(PLAIN_DELEGATION);
        let id = self.new_delegation_id();
        self.serving
            .outgoing
            .insert(id, Outgoing::new(ticket, stream, offset, offset + len));
        self.serving.incoming.push_back(IncomingDelegation {
            id: DelegationId(id),
            stream,
            offset,
            len,
            request,
            body_offset: handed,
        });
        if let Some(range) = self
            .plain
            .ranges
            .get_mut(&stream)
            .and_then(|r| r.queue.front_mut())
        {
            range.current = Some(id);
        }
        cx.event(Event::DelegationReceived { session: cx.handle });
    }

    /// Drops the ranges of `stream` (reset, stopped or refused). The delegation being
    /// written refuses further writes, and whoever waits hears of it: its writer, a stream
    /// writer behind the ranges, and the primary of each `delegate` range (failed from
    /// its first byte not written). Returns whether a fin waited behind the ranges.
    fn drop_ranges(&mut self, stream: StreamId) -> bool {
        let Some(ranges) = self.plain.ranges.remove(&stream) else {
            return false;
        };
        for range in &ranges.queue {
            let mut first_missing = range.start + range.handed;
            if let Some(id) = range.current {
                if let Some(out) = self.serving.outgoing.remove(&id) {
                    first_missing = out.framed;
                }
                self.serving.incoming.retain(|d| d.id.0 != id);
                self.plain.notices.push(Notice::DelegationWritable(id));
            }
            if !range.stripe {
                self.plain.notices.push(Notice::DelegationFailed {
                    id: range.id,
                    first_missing,
                });
            }
        }
        if ranges.writer_blocked {
            self.plain.notices.push(Notice::StreamWritable(stream));
        }
        ranges.fin
    }

    /// Hands the application what it is owed (see [`Notice`]).
    fn deliver_notices(&mut self, cx: &mut Cx<'_>) {
        let session = cx.handle;
        for notice in std::mem::take(&mut self.plain.notices) {
            cx.event(match notice {
                Notice::DelegationWritable(id) => Event::DelegationWritable {
                    session,
                    delegation: DelegationId(id),
                },
                Notice::StreamWritable(stream) => Event::StreamWritable { session, stream },
                Notice::DelegationFailed { id, first_missing } => Event::DelegationFinished {
                    session,
                    delegation: DelegationId(id),
                    outcome: DelegationOutcome::Failed { first_missing },
                },
            });
        }
    }

    /// The application refused a range of `stream` before writing any of it. No other
    /// server can serve a plain session, so the stream is reset (`ErrorCode::Delegation`)
    /// and its ranges dropped; a `delegate` range is reported failed.
    pub(crate) fn plain_refuse(&mut self, cx: &mut Cx<'_>, stream: StreamId) {
        let _ = self.plain_reset(stream, ErrorCode::Delegation.to_wire());
        self.deliver_notices(cx);
        if let Some(p) = self.plain_conn() {
            cx.drive(p.key);
        }
    }

    /// Client: the primary path's server chose an application protocol instead of
    /// `kwik/1`. The session runs plain over that connection, or ends with
    /// `FallbackRefused` under `Config::require_kwik`.
    #[cold]
    pub(crate) fn fall_back(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        let Some(p) = primary(&mut self.paths) else {
            return;
        };
        let protocol = p.alpn.clone().unwrap_or_default();
        if self.config.require_kwik {
            let reason = Bytes::from_static(b"this client requires kwik/1");
            p.close_app(now, ErrorCode::NoApplicationProtocol.to_wire(), reason);
            cx.drive(p.key);
            self.close(cx, SessionError::FallbackRefused { protocol });
            return;
        }
        cx.drive(p.key);
        self.start_plain(protocol);
        self.span.record("mode", Mode::Plain.name());
        cx.stats.fallbacks += 1;
        tracing::info!(parent: &self.span, "server does not speak KWIK: plain session");
        cx.event(Event::Connected(cx.handle));
    }

    /// The session runs plain, over the application protocol TLS negotiated.
    pub(crate) fn start_plain(&mut self, protocol: Bytes) {
        self.mode = Mode::Plain;
        self.phase = Phase::Established;
        self.app_protocol = Some(protocol);
    }

    /// Drives a plain session's connection: its stream events, raw datagrams, and the
    /// bytes of the delegations the application writes.
    pub(crate) fn drive_plain(&mut self, cx: &mut Cx<'_>) -> Result<(), ProtocolError> {
        let Some(p) = self.plain_conn() else {
            return Ok(());
        };
        if p.closing {
            return Ok(());
        }
        let events = std::mem::take(&mut p.plain_events);
        let session = cx.handle;
        for e in events {
            match e {
                quinn_proto::StreamEvent::Opened { dir } => {
                    cx.event(Event::StreamOpened { session, dir });
                }
                quinn_proto::StreamEvent::Readable { id } => {
                    cx.event(Event::StreamReadable {
                        session,
                        stream: logical(id),
                    });
                }
                quinn_proto::StreamEvent::Writable { id } => {
                    // A stream writing a range hears it through its delegation.
                    if !self.plain.ranges.contains_key(&logical(id)) {
                        cx.event(Event::StreamWritable {
                            session,
                            stream: logical(id),
                        });
                    }
                }
                quinn_proto::StreamEvent::Finished { id } => {
                    self.plain.sent.remove(&logical(id));
                    self.plain.finished.remove(&logical(id));
                    cx.event(Event::StreamFinished {
                        session,
                        stream: logical(id),
                    });
                }
                quinn_proto::StreamEvent::Stopped { id, error_code } => {
                    // Writes fail with the code from now on; QUIC forgets the stream once
                    // the application lets go of it (`plain_forget`) and it is reset.
                    let stream = logical(id);
                    self.plain.sent.remove(&stream);
                    // A stream the application finished (or whose fin waited behind its
                    // ranges) is reset now: nobody holds it to reset it later.
                    let fin = self.drop_ranges(stream);
                    if self.plain.finished.remove(&stream) || fin {
                        let _ = self.plain_reset(stream, error_code);
                    }
                    cx.event(Event::StreamStopped {
                        session,
                        stream,
                        code: error_code,
                    });
                }
                quinn_proto::StreamEvent::Available { dir } => {
                    cx.event(Event::StreamAvailable { session, dir });
                }
            }
        }
        if self.take_raw(PathId::PRIMARY) {
            cx.event(Event::RawDatagram { session });
        }
        let streams: Vec<StreamId> = self.plain.ranges.keys().copied().collect();
        for stream in streams {
            self.write_ranges(cx, stream);
        }
        self.deliver_notices(cx);
        Ok(())
    }

    /// Moves what the application wrote for `stream`'s current delegation onto the
    /// stream, and moves on to the next delegation, range or the fin when it is written.
    fn write_ranges(&mut self, cx: &mut Cx<'_>, stream: StreamId) {
        loop {
            let Some(current) = self
                .plain
                .ranges
                .get(&stream)
                .and_then(|r| r.queue.front())
                .and_then(|r| r.current)
            else {
                return;
            };
            let Some(qid) = quic(stream) else {
                return;
            };
            let Some(p) = primary(&mut self.paths) else {
                return;
            };
            let Some(out) = self.serving.outgoing.get_mut(&current) else {
                return;
            };
            let mut moved = 0u64;
            let mut closed = false;
            while !out.queue.is_empty() {
                let (front, _) = out.queue.as_mut_slices();
                match p.conn.send_stream(qid).write_chunks(front) {
                    Ok(w) if w.bytes > 0 => {
                        moved += w.bytes as u64;
                        while out.queue.front().is_some_and(Bytes::is_empty) {
                            out.queue.pop_front();
                        }
                    }
                    Ok(_) | Err(quinn_proto::WriteError::Blocked) => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            out.framed += moved;
            p.counters.stream_bytes_sent += moved;
            p.counters.frames_sent += u64::from(moved > 0);
            if let Some(sent) = self.plain.sent.get_mut(&stream) {
                *sent += moved;
            }
            if closed {
                // Stopped or reset under the range: the drive hands out the notices.
                self.drop_ranges(stream);
                return;
            }
            if out.blocked && out.room() > 0 {
                out.blocked = false;
                cx.event(Event::DelegationWritable {
                    session: cx.handle,
                    delegation: DelegationId(current),
                });
            }
            if !out.is_complete() {
                return;
            }
            let len = out.end - out.start;
            self.serving.outgoing.remove(&current);
            self.range_written(cx, stream, len);
        }
    }

    /// The current delegation of `stream` (`len` bytes) is written: the next one is handed
    /// out, or the range is done and the next range, the fin or the writer goes on.
    fn range_written(&mut self, cx: &mut Cx<'_>, stream: StreamId, len: u64) {
        let Some(ranges) = self.plain.ranges.get_mut(&stream) else {
            return;
        };
        let Some(range) = ranges.queue.front_mut() else {
            return;
        };
        range.current = None;
        range.handed += len;
        if range.handed >= range.len {
            let (id, stripe) = (range.id, range.stripe);
            ranges.queue.pop_front();
            cx.event(if stripe {
                Event::StripeFinished {
                    session: cx.handle,
                    stripe: StripeId(id),
                }
            } else {
                Event::DelegationFinished {
                    session: cx.handle,
                    delegation: DelegationId(id),
                    outcome: DelegationOutcome::Done,
                }
            });
            if ranges.queue.is_empty() {
                let (fin, writer) = (ranges.fin, ranges.writer_blocked);
                self.plain.ranges.remove(&stream);
                if fin {
                    let _ = self.plain_finish(stream);
                }
                if writer {
                    cx.event(Event::StreamWritable {
                        session: cx.handle,
                        stream,
                    });
                }
                return;
            }
        }
        self.hand_next(cx, stream);
    }
}
