//! The receive half of a logical stream: reassembly by offset.

use std::collections::BTreeMap;

use bytes::Bytes;
use quinn_proto::{Dir, VarInt};

use super::{StreamEvent, Streams, dir_index, violation};
use crate::error::{ClosedStream, ErrorCode, ProtocolError, ReadError};
use crate::frame::Frame;
use crate::ids::StreamId;

#[derive(Debug)]
pub(super) struct Recv {
    /// Received bytes not yet read, by offset; never overlapping.
    pub(super) segments: BTreeMap<u64, Bytes>,
    /// Bytes consumed by the application.
    pub(super) read: u64,
    /// Highest offset received (exclusive).
    pub(super) end: u64,
    /// First offset not held contiguously from `read`.
    pub(super) contiguous: u64,
    pub(super) final_size: Option<u64>,
    /// The limit announced to the peer.
    pub(super) max_data: u64,
    /// The last DATA_ACK offset sent.
    pub(super) acked: u64,
    pub(super) reset: Option<VarInt>,
    /// The application stopped reading: data is dropped on arrival.
    pub(super) stopped: bool,
    /// A `Readable` event is outstanding.
    pub(super) notified: bool,
    /// Compact when `segments` holds more entries than this.
    pub(super) compact_at: usize,
    /// Segments that start past the end of the one before them (or past `read`): the
    /// gaps a reader waits on, kept up to date by every insertion.
    pub(super) gap_count: usize,
    /// Bytes held in `segments`.
    pub(super) held: u64,
}

/// Segments at least this long are never copied by compaction: only runs of smaller ones
/// are merged, so each byte is copied at most about `KEEP / max_gaps + 1` times however
/// the peer cuts its frames.
const KEEP: usize = 4096;

/// Compaction waits while segments hold this many bytes on average. Every segment is a
/// slice of the datagram it arrived in, so segments of a packet's size (in-order data a
/// reader has not taken yet) pin little more than they hold, and copying them would only
/// cost; tiny ones pin a datagram each for a few bytes.
const SMALL_AVERAGE: u64 = 512;

impl Recv {
    pub(super) fn new(max_data: u64) -> Self {
        Self {
            segments: BTreeMap::new(),
            read: 0,
            end: 0,
            contiguous: 0,
            final_size: None,
            max_data,
            acked: 0,
            reset: None,
            stopped: false,
            notified: false,
            compact_at: 0,
            gap_count: 0,
            held: 0,
        }
    }

    /// Inserts `data` at `a` into a hole (it overlaps no segment), keeping `gap_count`.
    fn put(&mut self, a: u64, data: Bytes) {
        let b = a + data.len() as u64;
        let prev_end = self
            .segments
            .range(..a)
            .next_back()
            .map_or(self.read, |(s, d)| s + d.len() as u64)
            .max(self.read);
        let next = self.segments.range(b..).next().map(|(s, _)| *s);
        self.gap_count += usize::from(a > prev_end);
        if let Some(n) = next {
            self.gap_count += usize::from(n > b);
            self.gap_count -= usize::from(n > prev_end);
        }
        self.held += data.len() as u64;
        self.segments.insert(a, data);
    }

    /// The first offset in `[start, end)` neither read nor held.
    pub(super) fn first_missing(&self, start: u64, end: u64) -> Option<u64> {
        let mut pos = start.max(self.read);
        // Every byte below `contiguous` is held: no walk over the window's segments.
        if pos < self.contiguous {
            pos = self.contiguous;
        }
        while pos < end {
            match self.segments.range(..=pos).next_back() {
                Some((&s, held)) if s + held.len() as u64 > pos => pos = s + held.len() as u64,
                _ => return Some(pos),
            }
        }
        None
    }

    /// Stores `data` at `offset`, keeping only bytes not already held or read.
    pub(super) fn insert(&mut self, mut offset: u64, mut data: Bytes) {
        if offset < self.read {
            let skip = (self.read - offset).min(data.len() as u64) as usize;
            let _ = data.split_to(skip);
            offset += skip as u64;
        }
        if data.is_empty() {
            return;
        }
        // In-order arrival, the common case: past every held byte, so it overlaps nothing
        // and only the last segment decides whether it opens a gap.
        let held_end = self
            .segments
            .last_key_value()
            .map_or(self.read, |(s, d)| s + d.len() as u64)
            .max(self.read);
        if offset >= held_end {
            self.gap_count += usize::from(offset > held_end);
            if offset == self.contiguous {
                self.contiguous = offset + data.len() as u64;
            }
            self.held += data.len() as u64;
            self.segments.insert(offset, data);
            return;
        }
        if let Some((&start, held)) = self.segments.range(..=offset).next_back() {
            let held_end = start + held.len() as u64;
            if held_end > offset {
                let skip = (held_end - offset).min(data.len() as u64) as usize;
                let _ = data.split_to(skip);
                offset += skip as u64;
            }
        }
        while !data.is_empty() {
            let end = offset + data.len() as u64;
            let next = self
                .segments
                .range(offset..end)
                .next()
                .map(|(&s, b)| (s, b.len()));
            match next {
                None => {
                    self.put(offset, data);
                    break;
                }
                Some((start, len)) => {
                    let before = data.split_to((start - offset) as usize);
                    if !before.is_empty() {
                        self.put(offset, before);
                    }
                    let skip = (len).min(data.len());
                    let _ = data.split_to(skip);
                    offset = start + len as u64;
                }
            }
        }
        while let Some((&start, held)) = self.segments.range(..=self.contiguous).next_back() {
            let held_end = start + held.len() as u64;
            if held_end <= self.contiguous {
                break;
            }
            self.contiguous = held_end;
        }
    }

    /// Separate runs of buffered bytes beyond the contiguous prefix, counted by walking
    /// every segment (tests compare it with `gap_count`).
    #[cfg(test)]
    pub(super) fn gaps(&self) -> usize {
        let mut gaps = 0;
        let mut prev_end = self.contiguous;
        for (&start, data) in self.segments.range(self.contiguous..) {
            if start > prev_end {
                gaps += 1;
            }
            prev_end = start + data.len() as u64;
        }
        gaps
    }

    /// Merges runs of adjacent small segments by copying, so that many tiny frames cost
    /// one entry; segments of [`KEEP`] bytes or more stay as they are. Returns the bytes
    /// copied and the entries visited.
    pub(super) fn compact(&mut self) -> (u64, u64) {
        let mut copied = 0u64;
        let visited = self.segments.len() as u64;
        let mut merged: BTreeMap<u64, Bytes> = BTreeMap::new();
        // A run of small adjacent segments: its start, and its pieces until a second one
        // makes copying worth it.
        let mut run: Option<(u64, u64, Vec<Bytes>)> = None;
        let flush = |run: Option<(u64, u64, Vec<Bytes>)>,
                     merged: &mut BTreeMap<u64, Bytes>,
                     copied: &mut u64| {
            let Some((start, _, pieces)) = run else {
                return;
            };
            if let [one] = pieces.as_slice() {
                merged.insert(start, one.clone());
                return;
            }
            let mut buf = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
            for p in &pieces {
                buf.extend_from_slice(p);
            }
            *copied += buf.len() as u64;
            merged.insert(start, Bytes::from(buf));
        };
        for (start, data) in std::mem::take(&mut self.segments) {
            if data.len() >= KEEP {
                flush(run.take(), &mut merged, &mut copied);
                merged.insert(start, data);
                continue;
            }
            match &mut run {
                Some((_, end, pieces)) if *end == start => {
                    *end += data.len() as u64;
                    pieces.push(data);
                }
                _ => {
                    flush(run.take(), &mut merged, &mut copied);
                    let end = start + data.len() as u64;
                    run = Some((start, end, vec![data]));
                }
            }
        }
        flush(run, &mut merged, &mut copied);
        self.segments = merged;
        (copied, visited)
    }

    /// Whether the segments are many and small enough on average to be worth compacting.
    pub(super) fn wants_compaction(&self, max_gaps: usize) -> bool {
        let n = self.segments.len();
        n > max_gaps.max(self.compact_at) && self.held < n as u64 * SMALL_AVERAGE
    }

    /// Drops every held byte.
    pub(super) fn clear(&mut self) {
        self.segments.clear();
        self.held = 0;
        self.gap_count = 0;
    }

    /// Whether everything up to the final size has been read.
    pub(super) fn fully_read(&self) -> bool {
        self.final_size == Some(self.read)
    }
}

impl Streams {
    /// Frames that only a sender may receive must name a stream we send on.
    pub(super) fn check_sender(&self, id: StreamId) -> Result<(), ProtocolError> {
        if !self.is_local(id) && id.dir() == Dir::Uni {
            return Err(violation(
                ErrorCode::StreamState,
                format!("{id} is receive-only here"),
            ));
        }
        Ok(())
    }

    pub(super) fn check_receiver(&self, id: StreamId) -> Result<(), ProtocolError> {
        if self.is_local(id) && id.dir() == Dir::Uni {
            return Err(violation(
                ErrorCode::StreamState,
                format!("{id} is send-only here"),
            ));
        }
        Ok(())
    }

    /// Accounts bytes up to `new_end` against the session receive window.
    pub(super) fn account_received(
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

    pub(super) fn on_stream(
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
        let (len, held) = (data.len() as u64, r.held);
        r.insert(offset, data);
        self.counters.duplicate_bytes += len - (r.held - held);
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

    pub(super) fn on_reset(
        &mut self,
        id: StreamId,
        code: u64,
        final_size: u64,
    ) -> Result<(), ProtocolError> {
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

    pub(super) fn update_max_data(&mut self) {
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
    pub(super) fn maybe_free(&mut self, id: StreamId) {
        if self.send.contains_key(&id) || self.recv.contains_key(&id) {
            return;
        }
        if !self.is_local(id) {
            let i = dir_index(id.dir());
            if id.index() >= self.next_accept[i] {
                self.freed_unaccepted.insert(id);
            }
            // A refused stream (this side drains) gives no credit back: the peer opens no
            // more streams than it could when the drain began.
            if !self.refuses(id) {
                self.max_remote[i] += 1;
                self.signals.max_streams[i] = true;
            }
        }
    }
}
