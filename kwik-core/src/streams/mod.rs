//! Logical streams of one session: ids, send and receive state, flow control, reassembly.
//!
//! This is pure state: frames come in through [`Streams::on_frame`], frames to send come out
//! of [`Streams::poll_signal`] and [`Streams::poll_data`], and application-facing events out
//! of [`Streams::poll_event`]. Which carrier or path a frame travels on is not its concern.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::{FxBuildHasher, FxHashMap};

use bytes::Bytes;
use quinn_proto::{Dir, Side, VarInt};

use crate::error::{ErrorCode, ProtocolError};
use crate::frame::Frame;
use crate::ids::StreamId;
use crate::varint;

mod delegated;
mod recv;
mod retain;
mod send;
mod signals;

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
    /// Stream bytes received at offsets already received (held or read).
    pub(crate) duplicate_bytes: u64,
    /// Peer streams refused because they were opened after this side began draining.
    pub(crate) refused: u64,
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
    /// Per direction, the first peer stream index refused (a draining server's): such
    /// streams are never handed to `accept`, and are stopped (and a bidirectional one's
    /// send half reset) with the `Draining` code when the peer first uses them.
    refuse_from: [Option<u64>; 2],
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
            refuse_from: [None; 2],
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
        let opened = self.refuse_from[i].map_or(self.remote_opened[i], |from| {
            from.min(self.remote_opened[i])
        });
        if self.next_accept[i] >= opened {
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

    /// Gives the peer stream `id` its receive (and for bidirectional streams, send) state;
    /// a refused one is stopped and reset at once.
    fn materialize(&mut self, id: StreamId) {
        self.recv.insert(id, Recv::new(self.stream_window));
        if id.dir() == Dir::Bi {
            self.send.insert(id, Send::new(self.peer_stream_window));
        }
        self.counters.materialized += 1;
        if self.refuses(id) {
            let code = ErrorCode::Draining.to_wire();
            let _ = self.stop(id, code);
            self.reset_send(id, code);
            self.counters.refused += 1;
        }
    }

    /// Bytes written to stream `id` so far (delegated ranges included), if it is ours to
    /// write.
    pub(crate) fn written(&self, id: StreamId) -> Option<u64> {
        self.send.get(&id).map(|s| s.written())
    }

    /// Refuses every stream the peer opens from now on (a draining server): see
    /// `refuse_from`.
    pub(crate) fn refuse_new_remote(&mut self) {
        for i in 0..2 {
            self.refuse_from[i].get_or_insert(self.remote_opened[i]);
        }
    }

    /// Whether peer stream `id` was opened after [`Self::refuse_new_remote`].
    fn refuses(&self, id: StreamId) -> bool {
        let i = dir_index(id.dir());
        !self.is_local(id) && self.refuse_from[i].is_some_and(|from| id.index() >= from)
    }

    /// Whether this side still writes a stream: one finished with bytes or its fin not
    /// acknowledged yet, one with bytes queued, framed and unacknowledged or reserved for a
    /// delegation, or a peer's stream whose answer is not finished. A stream this side
    /// opened that holds nothing unacknowledged (HTTP/3's control stream) is not written.
    pub(crate) fn writes_open_stream(&self) -> bool {
        self.send.iter().any(|(id, s)| match s.state {
            SendState::Reset => false,
            SendState::Finishing | SendState::FinSent => true,
            SendState::Open => {
                !self.is_local(*id) || s.queued > 0 || s.acked < s.offset || !s.skips.is_empty()
            }
        })
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
        if !self.refuses(id) {
            self.events.push_back(StreamEvent::Opened(id.dir()));
        }
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

    /// Whether a stream's send half exists (is writable or finishing).
    pub(crate) fn is_sending(&self, id: StreamId) -> bool {
        self.send.contains_key(&id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
