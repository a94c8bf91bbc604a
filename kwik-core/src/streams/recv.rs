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
}

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
        }
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
                    self.segments.insert(offset, data);
                    break;
                }
                Some((start, len)) => {
                    let before = data.split_to((start - offset) as usize);
                    if !before.is_empty() {
                        self.segments.insert(offset, before);
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

    /// Separate runs of buffered bytes beyond the contiguous prefix.
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

    /// Merges adjacent segments by copying, so that many tiny frames cost one entry.
    pub(super) fn compact(&mut self) {
        let mut merged: BTreeMap<u64, Bytes> = BTreeMap::new();
        let mut run: Option<(u64, Vec<u8>)> = None;
        for (start, data) in std::mem::take(&mut self.segments) {
            match &mut run {
                Some((run_start, buf)) if *run_start + buf.len() as u64 == start => {
                    buf.extend_from_slice(&data)
                }
                _ => {
                    if let Some((s, buf)) = run.take() {
                        merged.insert(s, Bytes::from(buf));
                    }
                    run = Some((start, data.to_vec()));
                }
            }
        }
        if let Some((s, buf)) = run {
            merged.insert(s, Bytes::from(buf));
        }
        self.segments = merged;
    }

    /// Whether everything up to the final size has been read.
    pub(super) fn fully_read(&self) -> bool {
        self.final_size == Some(self.read)
    }
}
