//! Flow-control and stream-state frames the session owes the peer (`MAX_DATA`, `DATA_ACK`,
//! resets, stops), sent on the signal carrier ahead of data.

use quinn_proto::Dir;

use super::{Streams, dir_index};
use crate::frame::Frame;

impl Streams {
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
}
