//! The receive half of a logical stream: reassembly by offset.

use std::collections::BTreeMap;

use bytes::Bytes;
use quinn_proto::VarInt;

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
