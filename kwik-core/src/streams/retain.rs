//! Same-peer multipath: written bytes kept until the peer's `DATA_ACK`, so that what a dead
//! path took with it can be sent again on another.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{SendState, Streams};

impl Streams {
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
}
