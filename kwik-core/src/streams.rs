//! Logical streams of one session: ids, send and receive state, flow control, reassembly.
//!
//! This is pure state: frames come in through [`Streams::on_frame`], frames to send come out
//! of [`Streams::poll_signal`] and [`Streams::poll_data`], and application-facing events out
//! of [`Streams::poll_event`]. Which carrier or path a frame travels on is not its concern.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::{FxBuildHasher, FxHashMap};

use bytes::Bytes;
use quinn_proto::{Dir, Side, VarInt};

use crate::error::{ClosedStream, ErrorCode, ProtocolError, ReadError, WriteError};
use crate::frame::Frame;
use crate::ids::StreamId;
use crate::varint;

mod recv;

use recv::Recv;

type FxIndexSet<T> = indexmap::IndexSet<T, FxBuildHasher>;

/// What the application may want to know about its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEvent {
    /// The peer opened one or more streams of `dir`.
    Opened(Dir),
    /// New data, a fin or a reset can be read.
    Readable(StreamId),
    /// A write that was blocked may now succeed.
    Writable(StreamId),
    /// The peer holds every byte of a finished stream.
    Finished(StreamId),
    /// The peer asked us to stop sending; the stream was reset.
    Stopped(StreamId, VarInt),
    /// More streams of `dir` may be opened.
    Available(Dir),
}

fn dir_index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// Largest payload this side puts in one `STREAM` frame: a trade-off between per-frame
/// overhead and how long one stream can hold a carrier.
pub(crate) const FRAME_PAYLOAD: usize = 64 * 1024;

/// Releases the log keeps: a path that falls further behind rescans its carrier slots.
const RELEASE_LOG: usize = 4096;

/// Appends `id` to the release log, dropping the oldest entry beyond [`RELEASE_LOG`].
fn log_release(log: &mut VecDeque<StreamId>, base: &mut u64, id: StreamId) {
    log.push_back(id);
    if log.len() > RELEASE_LOG {
        log.pop_front();
        *base += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// Taking writes.
    Open,
    /// Finished by the application; the fin may not have been framed yet.
    Finishing,
    /// Fin framed; waiting for the peer to acknowledge every byte.
    FinSent,
    /// Reset (by the application or after the peer's STOP_SENDING).
    Reset,
}

#[derive(Debug)]
struct Send {
    /// Written by the application, not yet framed.
    queue: VecDeque<Bytes>,
    queued: u64,
    /// Next offset to frame.
    offset: u64,
    /// The peer's MAX_STREAM_DATA.
    max_data: u64,
    /// The peer's DATA_ACK.
    acked: u64,
    state: SendState,
    /// The code of the peer's STOP_SENDING, reported to writes.
    stopped: Option<VarInt>,
    /// A write was refused for lack of credit: report `Writable` when credit comes.
    blocked: bool,
    /// Ranges reserved for other writers (delegations), as `(offset, len)` in offset
    /// order: framing jumps over them.
    skips: VecDeque<(u64, u64)>,
    /// Framed bytes the peer has not acknowledged (`DATA_ACK`), by offset, kept while the
    /// session has several paths to the peer: a path that dies takes its frames with it.
    retained: VecDeque<(u64, Bytes)>,
    /// Retained bytes to frame again, after a path died.
    resend: VecDeque<(u64, Bytes)>,
    /// The fin must be framed again.
    refin: bool,
}

impl Send {
    fn new(max_data: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            queued: 0,
            offset: 0,
            max_data,
            acked: 0,
            state: SendState::Open,
            stopped: None,
            blocked: false,
            skips: VecDeque::new(),
            retained: VecDeque::new(),
            resend: VecDeque::new(),
            refin: false,
        }
    }

    fn written(&self) -> u64 {
        self.offset + self.queued + self.skips.iter().map(|&(_, len)| len).sum::<u64>()
    }

    fn has_frame(&self) -> bool {
        self.queued > 0
            || (self.state == SendState::Finishing && self.fin_allowed())
            || !self.resend.is_empty()
            || self.refin
    }

    /// The fin may be framed: the peer's credit covers the final size (a striped range
    /// ahead of it may reach past the credit, which the peer grants as it pulls).
    fn fin_allowed(&self) -> bool {
        self.queued == 0 && self.written() <= self.max_data
    }

    /// Forgets retained bytes below `acked`.
    fn trim_retained(&mut self) {
        while let Some((offset, data)) = self.retained.front_mut() {
            let end = *offset + data.len() as u64;
            if end <= self.acked {
                self.retained.pop_front();
            } else {
                if *offset < self.acked {
                    let _ = data.split_to((self.acked - *offset) as usize);
                    *offset = self.acked;
                }
                break;
            }
        }
    }

    /// Moves the framing offset over reserved ranges that start at it.
    fn apply_skips(&mut self) {
        while let Some(&(pos, len)) = self.skips.front() {
            if pos != self.offset {
                break;
            }
            self.offset += len;
            self.skips.pop_front();
        }
    }
}

/// Pending frames the receive side owes the peer, coalesced until sent.
#[derive(Debug, Default)]
struct Signals {
    max_data: bool,
    max_streams: [bool; 2],
    max_stream_data: BTreeSet<StreamId>,
    /// Streams owing a DATA_ACK, with the offset to acknowledge.
    data_ack: BTreeMap<StreamId, u64>,
    once: VecDeque<Frame>,
}

/// Counters for stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StreamCounters {
    pub(crate) opened_local: u64,
    pub(crate) opened_remote: u64,
    pub(crate) bytes_written: u64,
    pub(crate) bytes_read: u64,
    /// Bytes reassembly copied to merge small segments, and map entries it visited.
    pub(crate) reassembly_copied: u64,
    pub(crate) reassembly_visited: u64,
    /// Peer streams given state (skipped ones only when first referred to).
    pub(crate) materialized: u64,
}

/// All logical streams of one session.
#[derive(Debug)]
pub(crate) struct Streams {
    side: Side,
    /// Hashed, not ordered: streams come and go at the rate of requests, and a B-tree
    /// shifts these large values on every insertion and removal.
    send: FxHashMap<StreamId, Send>,
    recv: FxHashMap<StreamId, Recv>,
    /// Streams opened by us, per direction.
    opened: [u64; 2],
    /// The peer's limit on `opened`.
    peer_max_streams: [u64; 2],
    /// Streams the peer opened (implicitly, by index), per direction.
    remote_opened: [u64; 2],
    /// Our limit on `remote_opened`.
    max_remote: [u64; 2],
    /// Next peer stream index to hand to `accept`.
    next_accept: [u64; 2],
    /// Peer streams freed before `accept` handed them out (the application stopped them by
    /// id): not to be given state again. At most the peer stream limit.
    freed_unaccepted: BTreeSet<StreamId>,
    /// The peer's initial MAX_STREAM_DATA for streams we send on.
    peer_stream_window: u64,
    stream_window: u64,
    receive_window: u64,
    max_gaps: usize,
    /// Session-level send credit: the peer's MAX_DATA against bytes written.
    peer_max_data: u64,
    data_written: u64,
    /// Session-level receive credit.
    local_max_data: u64,
    data_received: u64,
    data_consumed: u64,
    signals: Signals,
    /// Streams with bytes or a fin to frame. Hashed with a dense order: a stream enters
    /// and leaves it with every write, and a B-tree allocates and rebalances nodes for that.
    sendable: FxIndexSet<StreamId>,
    /// The streams whose sending ended (fin framed, or reset), in order: entry `i` is
    /// release number `released_base + i`. Every path to the peer frees the carrier slots
    /// it gave them from a cursor of its own (see [`Streams::released_since`]).
    released: VecDeque<StreamId>,
    released_base: u64,
    events: VecDeque<StreamEvent>,
    pub(crate) counters: StreamCounters,
    /// Keep framed bytes until acknowledged, to send them again if a path dies.
    retain: bool,
}

/// The limits one side grants the other at session setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_data: u64,
    pub(crate) max_stream_data: u64,
    pub(crate) max_bidi: u64,
    pub(crate) max_uni: u64,
}

fn violation(code: ErrorCode, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, reason)
}

impl Streams {
    pub(crate) fn new(side: Side, local: Limits, max_gaps: usize) -> Self {
        Self {
            side,
            send: FxHashMap::default(),
            recv: FxHashMap::default(),
            opened: [0; 2],
            peer_max_streams: [0; 2],
            remote_opened: [0; 2],
            max_remote: [local.max_bidi, local.max_uni],
            next_accept: [0; 2],
            freed_unaccepted: BTreeSet::new(),
            peer_stream_window: 0,
            stream_window: local.max_stream_data,
            receive_window: local.max_data,
            max_gaps,
            peer_max_data: 0,
            data_written: 0,
            local_max_data: local.max_data,
            data_received: 0,
            data_consumed: 0,
            signals: Signals::default(),
            sendable: FxIndexSet::default(),
            released: VecDeque::new(),
            released_base: 0,
            events: VecDeque::new(),
            counters: StreamCounters::default(),
            retain: false,
        }
    }

    /// Applies the limits the peer granted in its Hello or Welcome.
    pub(crate) fn set_peer_limits(&mut self, peer: Limits) {
        self.peer_stream_window = peer.max_stream_data.min(varint::MAX);
        self.peer_max_data = peer.max_data.min(varint::MAX);
        self.peer_max_streams = [peer.max_bidi.min(1 << 60), peer.max_uni.min(1 << 60)];
        for s in self.send.values_mut() {
            s.max_data = s.max_data.max(self.peer_stream_window);
        }
        for dir in [Dir::Bi, Dir::Uni] {
            if self.peer_max_streams[dir_index(dir)] > 0 {
                self.events.push_back(StreamEvent::Available(dir));
            }
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Opens a stream of ours, if the peer's limit allows.
    pub(crate) fn open(&mut self, dir: Dir) -> Option<StreamId> {
        let i = dir_index(dir);
        if self.opened[i] >= self.peer_max_streams[i] {
            return None;
        }
        let id = StreamId::new(self.side, dir, self.opened[i]);
        self.opened[i] += 1;
        self.send.insert(id, Send::new(self.peer_stream_window));
        if dir == Dir::Bi {
            self.recv.insert(id, Recv::new(self.stream_window));
        }
        self.counters.opened_local += 1;
        Some(id)
    }

    /// The next stream the peer opened that the application has not taken yet.
    pub(crate) fn accept(&mut self, dir: Dir) -> Option<StreamId> {
        let i = dir_index(dir);
        if self.next_accept[i] >= self.remote_opened[i] {
            return None;
        }
        let id = StreamId::new(!self.side, dir, self.next_accept[i]);
        if self.is_unmaterialized(id) {
            self.materialize(id);
        }
        self.freed_unaccepted.remove(&id);
        self.next_accept[i] += 1;
        Some(id)
    }

    /// Number of open streams (either side still active).
    pub(crate) fn open_count(&self) -> usize {
        let mut ids: BTreeSet<StreamId> = self.send.keys().copied().collect();
        ids.extend(self.recv.keys().copied());
        // Peer streams opened implicitly and not given state yet are open too.
        let mut implicit = 0;
        for dir in [Dir::Bi, Dir::Uni] {
            let i = dir_index(dir);
            let first = StreamId::new(!self.side, dir, self.next_accept[i]);
            let end = StreamId::new(!self.side, dir, self.remote_opened[i]);
            let with_state = ids
                .range(first..end)
                .chain(self.freed_unaccepted.range(first..end))
                .filter(|id| id.dir() == dir && !self.is_local(**id))
                .count() as u64;
            implicit += self.remote_opened[i] - self.next_accept[i] - with_state;
        }
        ids.len() + implicit as usize
    }

    fn is_local(&self, id: StreamId) -> bool {
        id.initiator() == self.side
    }

    /// Whether `id` is a peer stream that was opened implicitly (a later one was referred
    /// to) and has no state yet.
    fn is_unmaterialized(&self, id: StreamId) -> bool {
        let i = dir_index(id.dir());
        !self.is_local(id)
            && id.index() >= self.next_accept[i]
            && id.index() < self.remote_opened[i]
            && !self.recv.contains_key(&id)
            && !self.send.contains_key(&id)
            && !self.freed_unaccepted.contains(&id)
    }

    /// Gives the peer stream `id` its receive (and for bidirectional streams, send) state.
    fn materialize(&mut self, id: StreamId) {
        self.recv.insert(id, Recv::new(self.stream_window));
        if id.dir() == Dir::Bi {
            self.send.insert(id, Send::new(self.peer_stream_window));
        }
        self.counters.materialized += 1;
    }

    /// Makes sure a stream the peer refers to exists, opening peer streams implicitly.
    ///
    /// Returns `Ok(false)` for a stream that existed and is closed: frames for it are stale.
    fn ensure_stream(&mut self, id: StreamId) -> Result<bool, ProtocolError> {
        let i = dir_index(id.dir());
        if self.is_local(id) {
            if id.index() >= self.opened[i] {
                return Err(violation(
                    ErrorCode::StreamState,
                    format!("{id} was never opened"),
                ));
            }
            return Ok(true);
        }
        if id.index() >= self.max_remote[i] {
            return Err(violation(
                ErrorCode::StreamLimit,
                format!("{id} exceeds the stream limit {}", self.max_remote[i]),
            ));
        }
        if id.index() < self.remote_opened[i] {
            // A stream the peer skipped over is materialized when first referred to.
            if self.is_unmaterialized(id) {
                self.materialize(id);
            }
            return Ok(true);
        }
        // Streams below `id` open implicitly, as in QUIC, but only their count moves: each
        // gets its state when a frame or `accept` first needs it, so a frame that skips
        // ahead costs the same whatever the stream limit.
        self.counters.opened_remote += id.index() + 1 - self.remote_opened[i];
        self.remote_opened[i] = id.index() + 1;
        self.materialize(id);
        self.events.push_back(StreamEvent::Opened(id.dir()));
        Ok(true)
    }

    /// Applies one data-plane frame from the peer.
    pub(crate) fn on_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        match frame {
            Frame::Stream {
                id,
                offset,
                fin,
                data,
            } => self.on_stream(id, offset, fin, data),
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => self.on_reset(id, code, final_size),
            Frame::StopSending { id, code } => {
                self.check_sender(id)?;
                self.ensure_stream(id)?;
                if let Some(s) = self.send.get_mut(&id) {
                    let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
                    s.stopped = Some(code);
                    if s.state != SendState::Reset {
                        self.reset_send(id, code);
                        self.events.push_back(StreamEvent::Stopped(id, code));
                    }
                }
                Ok(())
            }
            Frame::MaxStreamData { id, max } => {
                self.check_sender(id)?;
                self.ensure_stream(id)?;
                if let Some(s) = self.send.get_mut(&id)
                    && max > s.max_data
                {
                    s.max_data = max;
                    if std::mem::take(&mut s.blocked) {
                        self.events.push_back(StreamEvent::Writable(id));
                    }
                    if s.has_frame() {
                        self.sendable.insert(id);
                    }
                }
                Ok(())
            }
            Frame::MaxData { max } => {
                if max > self.peer_max_data {
                    self.peer_max_data = max;
                    self.wake_blocked_writers();
                }
                Ok(())
            }
            Frame::MaxStreams { dir, max } => {
                if max > 1 << 60 {
                    return Err(violation(ErrorCode::StreamLimit, "MAX_STREAMS above 2^60"));
                }
                let i = dir_index(dir);
                if max > self.peer_max_streams[i] {
                    self.peer_max_streams[i] = max;
                    self.events.push_back(StreamEvent::Available(dir));
                }
                Ok(())
            }
            Frame::DataAck { id, offset } => {
                self.check_sender(id)?;
                self.ensure_stream(id)?;
                let Some(s) = self.send.get_mut(&id) else {
                    return Ok(());
                };
                if offset > s.offset {
                    return Err(violation(
                        ErrorCode::StreamState,
                        format!("DATA_ACK for {id} beyond what was sent"),
                    ));
                }
                s.acked = s.acked.max(offset);
                s.trim_retained();
                if s.has_frame() {
                    self.sendable.insert(id);
                }
                if s.state == SendState::FinSent && s.acked == s.offset {
                    self.events.push_back(StreamEvent::Finished(id));
                    self.send.remove(&id);
                    self.maybe_free(id);
                }
                Ok(())
            }
        }
    }

    /// Frames that only a sender may receive must name a stream we send on.
    fn check_sender(&self, id: StreamId) -> Result<(), ProtocolError> {
        if !self.is_local(id) && id.dir() == Dir::Uni {
            return Err(violation(
                ErrorCode::StreamState,
                format!("{id} is receive-only here"),
            ));
        }
        Ok(())
    }

    fn check_receiver(&self, id: StreamId) -> Result<(), ProtocolError> {
        if self.is_local(id) && id.dir() == Dir::Uni {
            return Err(violation(
                ErrorCode::StreamState,
                format!("{id} is send-only here"),
            ));
        }
        Ok(())
    }

    /// Accounts bytes up to `new_end` against the session receive window.
    fn account_received(
        data_received: &mut u64,
        local_max_data: u64,
        r: &mut Recv,
        new_end: u64,
    ) -> Result<(), ProtocolError> {
        if new_end > r.end {
            *data_received += new_end - r.end;
            r.end = new_end;
            if *data_received > local_max_data {
                return Err(violation(
                    ErrorCode::FlowControl,
                    "session receive window exceeded",
                ));
            }
        }
        Ok(())
    }

    fn on_stream(
        &mut self,
        id: StreamId,
        offset: u64,
        fin: bool,
        data: Bytes,
    ) -> Result<(), ProtocolError> {
        self.check_receiver(id)?;
        self.ensure_stream(id)?;
        let Some(r) = self.recv.get_mut(&id) else {
            return Ok(());
        };
        let end = offset + data.len() as u64;
        let fin_new = fin && r.final_size.is_none();
        if end > r.max_data {
            return Err(violation(
                ErrorCode::FlowControl,
                format!("{id}: data to {end} beyond the limit {}", r.max_data),
            ));
        }
        if let Some(final_size) = r.final_size {
            if end > final_size || (fin && end != final_size) {
                return Err(violation(
                    ErrorCode::FinalSize,
                    format!("{id}: final size changed"),
                ));
            }
        } else if fin {
            if end < r.end {
                return Err(violation(
                    ErrorCode::FinalSize,
                    format!("{id}: fin below data received"),
                ));
            }
            r.final_size = Some(end);
        }
        Self::account_received(&mut self.data_received, self.local_max_data, r, end)?;
        if r.reset.is_some() {
            return Ok(());
        }
        if r.stopped {
            // Nobody will read it: the credit returns at once.
            let consumed = end.saturating_sub(r.read);
            r.read = r.read.max(end);
            let done = r.final_size.is_some();
            self.data_consumed += consumed;
            self.update_max_data();
            if done {
                self.recv.remove(&id);
                self.maybe_free(id);
            }
            return Ok(());
        }
        let before = r.contiguous;
        r.insert(offset, data);
        if r.gap_count > self.max_gaps {
            return Err(violation(
                ErrorCode::ReassemblyLimit,
                format!("{id}: more than {} gaps", self.max_gaps),
            ));
        }
        if r.wants_compaction(self.max_gaps) {
            let (copied, visited) = r.compact();
            // The next compaction waits until the map doubles: amortised O(1) per frame.
            r.compact_at = 2 * r.segments.len();
            self.counters.reassembly_copied += copied;
            self.counters.reassembly_visited += visited;
        }
        let complete = r.final_size == Some(r.contiguous);
        if r.contiguous > before || (complete && fin_new) {
            let threshold = (self.stream_window / 4).max(1);
            if complete || r.contiguous - r.acked >= threshold {
                self.signals.data_ack.insert(id, r.contiguous);
            }
            if !r.notified {
                r.notified = true;
                self.events.push_back(StreamEvent::Readable(id));
            }
        }
        Ok(())
    }

    fn on_reset(&mut self, id: StreamId, code: u64, final_size: u64) -> Result<(), ProtocolError> {
        self.check_receiver(id)?;
        self.ensure_stream(id)?;
        let Some(r) = self.recv.get_mut(&id) else {
            return Ok(());
        };
        if final_size < r.end || r.final_size.is_some_and(|f| f != final_size) {
            return Err(violation(
                ErrorCode::FinalSize,
                format!("{id}: reset final size"),
            ));
        }
        if final_size > r.max_data {
            return Err(violation(
                ErrorCode::FlowControl,
                format!("{id}: reset beyond the limit"),
            ));
        }
        Self::account_received(&mut self.data_received, self.local_max_data, r, final_size)?;
        r.final_size = Some(final_size);
        if r.reset.is_some() {
            return Ok(());
        }
        // Unread bytes will never be read: release their credit.
        self.data_consumed += final_size - r.read;
        r.read = final_size;
        r.clear();
        if r.stopped {
            self.recv.remove(&id);
            self.maybe_free(id);
        } else {
            r.reset = Some(VarInt::from_u64(code).unwrap_or(VarInt::MAX));
            if !r.notified {
                r.notified = true;
                self.events.push_back(StreamEvent::Readable(id));
            }
        }
        self.update_max_data();
        Ok(())
    }

    /// Session credit grew: every stream refused a write may try again.
    fn wake_blocked_writers(&mut self) {
        for (id, s) in self.send.iter_mut() {
            if std::mem::take(&mut s.blocked) {
                self.events.push_back(StreamEvent::Writable(*id));
            }
        }
    }

    /// Queues application bytes; returns how many were taken.
    pub(crate) fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        let credit = self.write_credit(id)?;
        let n = credit.min(data.len() as u64) as usize;
        if n == 0 {
            return self.blocked(id, data.is_empty());
        }
        self.queue_bytes(id, Bytes::copy_from_slice(&data[..n]));
        Ok(n)
    }

    /// Queues whole chunks without copying, splitting the last one at the credit limit.
    /// Returns the bytes taken; taken chunks are left empty.
    pub(crate) fn write_chunks(
        &mut self,
        id: StreamId,
        chunks: &mut [Bytes],
    ) -> Result<usize, WriteError> {
        let mut credit = self.write_credit(id)?;
        let total: usize = chunks.iter().map(Bytes::len).sum();
        if credit == 0 {
            return self.blocked(id, total == 0);
        }
        let mut taken = 0;
        for chunk in chunks.iter_mut() {
            if credit == 0 {
                break;
            }
            let n = credit.min(chunk.len() as u64) as usize;
            let part = chunk.split_to(n);
            credit -= n as u64;
            taken += n;
            if !part.is_empty() {
                self.queue_bytes(id, part);
            }
        }
        Ok(taken)
    }

    fn blocked(&mut self, id: StreamId, empty: bool) -> Result<usize, WriteError> {
        if empty {
            return Ok(0);
        }
        if let Some(s) = self.send.get_mut(&id) {
            s.blocked = true;
        }
        Err(WriteError::Blocked)
    }

    fn write_credit(&self, id: StreamId) -> Result<u64, WriteError> {
        let s = self.send.get(&id).ok_or(WriteError::ClosedStream)?;
        if let Some(code) = s.stopped {
            return Err(WriteError::Stopped(code));
        }
        if s.state != SendState::Open {
            return Err(WriteError::ClosedStream);
        }
        let stream = s.max_data.saturating_sub(s.written());
        let session = self.peer_max_data.saturating_sub(self.data_written);
        Ok(stream.min(session))
    }

    fn queue_bytes(&mut self, id: StreamId, data: Bytes) {
        let Some(s) = self.send.get_mut(&id) else {
            return;
        };
        let n = data.len() as u64;
        s.queued += n;
        s.queue.push_back(data);
        self.data_written += n;
        self.counters.bytes_written += n;
        self.sendable.insert(id);
    }

    pub(crate) fn finish(&mut self, id: StreamId) -> Result<(), ClosedStream> {
        let s = self.send.get_mut(&id).ok_or(ClosedStream)?;
        if s.state != SendState::Open {
            return Err(ClosedStream);
        }
        s.state = SendState::Finishing;
        self.sendable.insert(id);
        Ok(())
    }

    pub(crate) fn reset(&mut self, id: StreamId, code: VarInt) -> Result<(), ClosedStream> {
        let s = self.send.get(&id).ok_or(ClosedStream)?;
        if matches!(s.state, SendState::Reset | SendState::FinSent) {
            return Err(ClosedStream);
        }
        self.reset_send(id, code);
        Ok(())
    }

    fn reset_send(&mut self, id: StreamId, code: VarInt) {
        let Some(s) = self.send.get_mut(&id) else {
            return;
        };
        if s.state == SendState::FinSent && s.acked == s.offset {
            return;
        }
        // Unframed bytes are dropped, and the credit they held is given back.
        let returned = s.queued;
        self.data_written -= returned;
        s.queue.clear();
        s.queued = 0;
        s.retained.clear();
        s.resend.clear();
        s.refin = false;
        s.state = SendState::Reset;
        let final_size = s.offset;
        self.signals.once.push_back(Frame::ResetStream {
            id,
            code: code.into_inner(),
            final_size,
        });
        self.sendable.swap_remove(&id);
        log_release(&mut self.released, &mut self.released_base, id);
        if s.stopped.is_none() {
            self.send.remove(&id);
        }
        self.maybe_free(id);
        // Streams refused for lack of session credit may write again: tell them, as
        // MAX_DATA would (the peer sends none for bytes it never received).
        if returned > 0 {
            self.wake_blocked_writers();
        }
    }

    /// The peer's STOP_SENDING code, if the stream was stopped, or `Ok(None)` once every
    /// byte was acknowledged; `Err` while neither happened.
    pub(crate) fn stopped(&self, id: StreamId) -> Result<Option<VarInt>, ClosedStream> {
        match self.send.get(&id) {
            None => Ok(None),
            Some(s) if s.stopped.is_some() => Ok(s.stopped),
            Some(_) => Err(ClosedStream),
        }
    }

    /// Takes the stream's stopped state after the application saw it.
    pub(crate) fn forget_stopped(&mut self, id: StreamId) -> bool {
        if self.send.get(&id).is_some_and(|s| s.stopped.is_some()) {
            self.send.remove(&id);
            self.maybe_free(id);
            return true;
        }
        false
    }

    /// Reads up to `max` contiguous bytes. `Ok(None)` means the stream ended.
    pub(crate) fn read(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, ReadError> {
        let r = self.recv.get_mut(&id).ok_or(ReadError::ClosedStream)?;
        if r.stopped {
            return Err(ReadError::ClosedStream);
        }
        if let Some(code) = r.reset {
            self.recv.remove(&id);
            self.maybe_free(id);
            return Err(ReadError::Reset(code));
        }
        let Some(entry) = r.segments.first_entry() else {
            if r.fully_read() {
                self.recv.remove(&id);
                self.maybe_free(id);
                return Ok(None);
            }
            r.notified = false;
            return Err(ReadError::Blocked);
        };
        if *entry.key() != r.read {
            r.notified = false;
            return Err(ReadError::Blocked);
        }
        let data = if entry.get().len() <= max {
            entry.remove()
        } else {
            let start = *entry.key();
            let mut rest = entry.remove();
            let head = rest.split_to(max);
            r.segments.insert(start + max as u64, rest);
            head
        };
        let n = data.len() as u64;
        r.held -= n;
        r.read += n;
        self.data_consumed += n;
        self.counters.bytes_read += n;
        if r.final_size.is_none()
            && (r.read + self.stream_window).saturating_sub(r.max_data) >= self.stream_window / 2
        {
            r.max_data = r.read + self.stream_window;
            self.signals.max_stream_data.insert(id);
        }
        self.update_max_data();
        Ok(Some(data))
    }

    fn update_max_data(&mut self) {
        // A stripe's grant may put the limit further ahead than the window.
        if (self.data_consumed + self.receive_window).saturating_sub(self.local_max_data)
            >= self.receive_window / 2
        {
            self.local_max_data = self.data_consumed + self.receive_window;
            self.signals.max_data = true;
        }
    }

    /// Stops reading: buffered and future data is discarded and the peer asked to stop.
    pub(crate) fn stop(&mut self, id: StreamId, code: VarInt) -> Result<(), ClosedStream> {
        let r = self.recv.get_mut(&id).ok_or(ClosedStream)?;
        if r.stopped {
            return Err(ClosedStream);
        }
        r.stopped = true;
        r.clear();
        let consumed = r.end - r.read;
        r.read = r.end;
        self.data_consumed += consumed;
        let done = r.final_size.is_some() || r.reset.is_some();
        if done {
            self.recv.remove(&id);
            self.maybe_free(id);
        } else {
            self.signals.once.push_back(Frame::StopSending {
                id,
                code: code.into_inner(),
            });
        }
        self.update_max_data();
        Ok(())
    }

    /// Frees the stream id once both halves are gone; a peer stream's slot returns as credit.
    fn maybe_free(&mut self, id: StreamId) {
        if self.send.contains_key(&id) || self.recv.contains_key(&id) {
            return;
        }
        if !self.is_local(id) {
            let i = dir_index(id.dir());
            if id.index() >= self.next_accept[i] {
                self.freed_unaccepted.insert(id);
            }
            self.max_remote[i] += 1;
            self.signals.max_streams[i] = true;
        }
    }

    /// Whether a flow-control or signalling frame is owed to the peer.
    pub(crate) fn has_signal(&self) -> bool {
        let s = &self.signals;
        !s.once.is_empty()
            || s.max_data
            || s.max_streams.contains(&true)
            || !s.max_stream_data.is_empty()
            || !s.data_ack.is_empty()
    }

    /// The next flow-control or signalling frame owed to the peer.
    pub(crate) fn poll_signal(&mut self) -> Option<Frame> {
        if let Some(f) = self.signals.once.pop_front() {
            return Some(f);
        }
        if std::mem::take(&mut self.signals.max_data) {
            return Some(Frame::MaxData {
                max: self.local_max_data,
            });
        }
        for dir in [Dir::Bi, Dir::Uni] {
            let i = dir_index(dir);
            if std::mem::take(&mut self.signals.max_streams[i]) {
                return Some(Frame::MaxStreams {
                    dir,
                    max: self.max_remote[i],
                });
            }
        }
        while let Some(id) = self.signals.max_stream_data.pop_first() {
            if let Some(r) = self.recv.get(&id)
                && !r.stopped
                && r.final_size.is_none()
            {
                return Some(Frame::MaxStreamData {
                    id,
                    max: r.max_data,
                });
            }
        }
        while let Some((id, mut offset)) = self.signals.data_ack.pop_first() {
            if let Some(r) = self.recv.get_mut(&id) {
                // The sender takes an acknowledged end for a delivered fin: the last byte
                // is acknowledged only once the fin is here (nothing is, before it, on an
                // empty stream).
                offset = match r.final_size {
                    Some(_) => r.contiguous,
                    None if r.contiguous == 0 => continue,
                    None => r.contiguous - 1,
                };
                r.acked = offset;
            }
            return Some(Frame::DataAck { id, offset });
        }
        None
    }

    /// Streams that have something to frame, about in the order they became so.
    pub(crate) fn sendable(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.sendable.iter().copied()
    }

    /// Moves each time a stream's sending ends (its fin framed, or reset).
    pub(crate) fn release_epoch(&self) -> u64 {
        self.released_base + self.released.len() as u64
    }

    /// The streams released since `epoch` (an earlier [`Self::release_epoch`]), or `None`
    /// if the log no longer reaches back that far: the caller must check every stream it
    /// holds with [`Self::holds_carrier`].
    pub(crate) fn released_since(&self, epoch: u64) -> Option<impl Iterator<Item = StreamId>> {
        let skip = usize::try_from(epoch.checked_sub(self.released_base)?).ok()?;
        Some(self.released.iter().skip(skip).copied())
    }

    /// Whether `id` still needs a carrier slot: it has bytes or a fin to frame, now or
    /// after a reinjection.
    pub(crate) fn holds_carrier(&self, id: StreamId) -> bool {
        self.send.get(&id).is_some_and(|s| {
            matches!(s.state, SendState::Open | SendState::Finishing) || s.has_frame()
        })
    }

    /// Frames up to `max` bytes of `id`: returns the offset, the payload pieces and fin.
    #[cfg(test)]
    pub(crate) fn poll_data(
        &mut self,
        id: StreamId,
        max: usize,
    ) -> Option<(u64, Vec<Bytes>, bool)> {
        let mut pieces = Vec::new();
        let (offset, fin) = self.poll_data_into(id, max, &mut pieces)?;
        Some((offset, pieces, fin))
    }

    /// Frames up to `max` bytes of `id`: appends the payload pieces to `pieces` (which the
    /// caller reuses from frame to frame) and returns the offset and fin.
    pub(crate) fn poll_data_into(
        &mut self,
        id: StreamId,
        max: usize,
        pieces: &mut Vec<Bytes>,
    ) -> Option<(u64, bool)> {
        let first = pieces.len();
        let retain_limit = self.retain_limit();
        let s = self.send.get_mut(&id)?;
        s.apply_skips();
        if !s.has_frame() {
            self.sendable.swap_remove(&id);
            return None;
        }
        if let Some((offset, mut data)) = s.resend.pop_front() {
            // Bytes a dead path took with it, framed again at their offsets.
            if data.len() > max {
                let rest = data.split_off(max);
                s.resend.push_front((offset + max as u64, rest));
            }
            let end = offset + data.len() as u64;
            let fin = s.refin && s.resend.is_empty() && end == s.offset;
            if fin {
                s.refin = false;
            }
            if self.retain {
                s.retained.push_back((offset, data.clone()));
            }
            if !s.has_frame() {
                self.sendable.swap_remove(&id);
            }
            pieces.push(data);
            return Some((offset, fin));
        }
        if s.refin && s.queued == 0 {
            s.refin = false;
            let offset = s.offset;
            if !s.has_frame() {
                self.sendable.swap_remove(&id);
            }
            return Some((offset, true));
        }
        let offset = s.offset;
        let max = match s.skips.front() {
            Some(&(pos, _)) => max.min((pos - offset) as usize),
            None => max,
        };
        // Retained bytes are capped: a peer that grants credit but never acknowledges
        // (`DATA_ACK`) stalls this stream, not the writer's memory.
        let max = if self.retain {
            let held = offset.saturating_sub(s.acked);
            let room = retain_limit.saturating_sub(held);
            if room == 0 && s.queued > 0 {
                self.sendable.swap_remove(&id);
                return None;
            }
            max.min(usize::try_from(room).unwrap_or(usize::MAX))
        } else {
            max
        };
        let mut room = max;
        while room > 0 {
            let Some(front) = s.queue.front_mut() else {
                break;
            };
            if front.len() <= room {
                room -= front.len();
                if let Some(piece) = s.queue.pop_front() {
                    pieces.push(piece);
                }
            } else {
                pieces.push(front.split_to(room));
                room = 0;
            }
        }
        let n = (max - room) as u64;
        if self.retain {
            let mut at = offset;
            for piece in &pieces[first..] {
                s.retained.push_back((at, piece.clone()));
                at += piece.len() as u64;
            }
        }
        s.queued -= n;
        s.offset += n;
        s.apply_skips();
        // The fin goes on this frame only if the frame ends the stream: when a range
        // reserved for another writer follows, the next frame (empty) carries it.
        let fin = s.state == SendState::Finishing
            && s.skips.is_empty()
            && s.offset == offset + n
            && s.fin_allowed();
        if fin {
            s.state = SendState::FinSent;
            log_release(&mut self.released, &mut self.released_base, id);
        }
        if !s.has_frame() {
            self.sendable.swap_remove(&id);
        }
        Some((offset, fin))
    }

    /// Reserves the next `len` bytes of `id` for another writer (a delegation): returns
    /// their offset. The session credit they need is taken now. A plain delegation needs
    /// the stream credit too; a `stripe` does not: its receiver grants stream credit with
    /// each pull, and raises its session window by the stripe's length when it learns of
    /// it (so the primary's own writes wait for that grant, not for the stripe).
    pub(crate) fn reserve(
        &mut self,
        id: StreamId,
        len: u64,
        stripe: bool,
    ) -> Result<u64, WriteError> {
        let s = self.send.get(&id).ok_or(WriteError::ClosedStream)?;
        if let Some(code) = s.stopped {
            return Err(WriteError::Stopped(code));
        }
        if s.state != SendState::Open {
            return Err(WriteError::ClosedStream);
        }
        if !stripe && self.credit(id) < len {
            return Err(WriteError::Blocked);
        }
        let Some(s) = self.send.get_mut(&id) else {
            return Err(WriteError::ClosedStream);
        };
        let offset = s.written();
        if offset.saturating_add(len) > varint::MAX {
            return Err(WriteError::ClosedStream);
        }
        s.skips.push_back((offset, len));
        s.apply_skips();
        self.data_written = self.data_written.saturating_add(len);
        Ok(offset)
    }

    /// Bytes `id` may still send under the peer's stream and session limits, ignoring any
    /// stripe lock.
    pub(crate) fn credit(&self, id: StreamId) -> u64 {
        let Some(s) = self.send.get(&id) else {
            return 0;
        };
        let stream = s.max_data.saturating_sub(s.written());
        let session = self.peer_max_data.saturating_sub(self.data_written);
        stream.min(session)
    }

    /// Checks a delegation the primary announced for a stream it sends on: the stream must
    /// be one the peer sends on, and the range inside the credit granted. Opens the stream
    /// if it is new.
    pub(crate) fn check_delegated(
        &mut self,
        id: StreamId,
        end: u64,
        stripe: bool,
    ) -> Result<(), ProtocolError> {
        self.check_receiver(id)?;
        self.ensure_stream(id)?;
        if let Some(r) = self.recv.get(&id)
            && end > r.max_data
            && !stripe
        {
            return Err(violation(
                ErrorCode::FlowControl,
                format!("{id}: delegation beyond the stream's credit"),
            ));
        }
        Ok(())
    }

    /// A stripe of `len` bytes was announced: the session window grows by its length, as
    /// the primary counted it against its session credit when it reserved the range.
    pub(crate) fn grant_stripe(&mut self, len: u64) {
        self.local_max_data = self.local_max_data.saturating_add(len);
        self.signals.max_data = true;
    }

    /// The end of the range of `id` the reader's window allows pulls up to: what was read
    /// plus the stream window. `None` when its receive half is gone.
    pub(crate) fn pull_limit(&self, id: StreamId) -> Option<u64> {
        let r = self.recv.get(&id)?;
        (!r.stopped && r.reset.is_none()).then_some(r.read + self.stream_window)
    }

    /// Grants the sender credit up to `end` of `id` (a pull is the credit for its bytes).
    pub(crate) fn grant(&mut self, id: StreamId, end: u64) {
        if let Some(r) = self.recv.get_mut(&id)
            && end > r.max_data
        {
            r.max_data = end;
            self.signals.max_stream_data.insert(id);
        }
    }

    /// The client's own stream window.
    pub(crate) fn stream_window(&self) -> u64 {
        self.stream_window
    }

    /// The first byte of `[start, end)` of `id` not yet received, or `None` when every one
    /// is (or will never be needed: the stream was read, reset or stopped).
    pub(crate) fn first_missing(&self, id: StreamId, start: u64, end: u64) -> Option<u64> {
        let r = self.recv.get(&id)?;
        if r.reset.is_some() || r.stopped {
            return None;
        }
        r.first_missing(start, end)
    }

    /// Whether `id` had a receive half that is gone (read to the end, or reset or stopped
    /// and read): late bytes of it are dropped, whoever sends them.
    pub(crate) fn recv_finished(&self, id: StreamId) -> bool {
        let i = dir_index(id.dir());
        let opened = if self.is_local(id) {
            id.dir() == Dir::Bi && id.index() < self.opened[i]
        } else {
            id.index() < self.remote_opened[i]
        };
        opened && !self.recv.contains_key(&id) && !self.is_unmaterialized(id)
    }

    /// Received bytes held for the application, over every stream.
    pub(crate) fn unread_bytes(&self) -> u64 {
        self.recv
            .values()
            .flat_map(|r| r.segments.values())
            .map(|b| b.len() as u64)
            .sum()
    }

    /// Written bytes not framed yet, over every stream.
    pub(crate) fn unsent_bytes(&self) -> u64 {
        self.send.values().map(|s| s.queued).sum()
    }

    /// How far the application read `id`; `None` when its receive half is gone.
    pub(crate) fn read_offset(&self, id: StreamId) -> Option<u64> {
        self.recv.get(&id).map(|r| r.read)
    }

    /// Most bytes one stream keeps framed and unacknowledged while retaining: the local
    /// stream window (at least 64 KiB). At the cap the stream waits for `DATA_ACK`.
    pub(crate) fn retain_limit(&self) -> u64 {
        self.stream_window.max(64 * 1024)
    }

    /// Bytes retained for reinjection, in all streams.
    pub(crate) fn retained_bytes(&self) -> u64 {
        self.send
            .values()
            .flat_map(|s| s.retained.iter())
            .map(|(_, b)| b.len() as u64)
            .sum()
    }

    /// Keeps framed bytes until the peer acknowledges them (several paths to the peer).
    pub(crate) fn set_retain(&mut self, retain: bool) {
        self.retain = retain;
    }

    /// A path to the peer died with frames in flight: every unacknowledged byte is framed
    /// again, and every credit and acknowledgement the peer may have missed is sent again.
    /// The peer drops what it already holds.
    pub(crate) fn reinject(&mut self) {
        for (id, s) in self.send.iter_mut() {
            s.trim_retained();
            let mut again: VecDeque<(u64, Bytes)> = std::mem::take(&mut s.retained);
            again.append(&mut s.resend);
            again.make_contiguous().sort_by_key(|(offset, _)| *offset);
            s.resend = again;
            if s.state == SendState::FinSent {
                s.refin = true;
            }
            if s.has_frame() {
                self.sendable.insert(*id);
            }
        }
        self.signals.max_data = true;
        self.signals.max_streams = [true; 2];
        for (id, r) in &self.recv {
            if !r.stopped && r.final_size.is_none() {
                self.signals.max_stream_data.insert(*id);
            }
            self.signals.data_ack.insert(*id, r.contiguous);
        }
    }

    /// Whether a stream's send half exists (is writable or finishing).
    pub(crate) fn is_sending(&self, id: StreamId) -> bool {
        self.send.contains_key(&id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
