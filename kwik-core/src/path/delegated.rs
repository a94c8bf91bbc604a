//! Delegated carriers: ranges this server writes for other servers' sessions' streams.

use std::collections::BTreeMap;

use bytes::Bytes;
use quinn_proto::{Dir, VarInt};

use super::tx::{flush, stream_header};
use super::{Path, PathResult};
use crate::delegation::Outgoing;
use crate::streams::FRAME_PAYLOAD;

impl Path {
    /// Frames the delegated ranges this side serves, each on a carrier of its own that
    /// finishes with the range. Completed delegations leave `outgoing`; those that had
    /// refused a write and have room again are added to `writable`.
    pub(crate) fn write_delegated(
        &mut self,
        outgoing: &mut BTreeMap<u64, Outgoing>,
        writable: &mut Vec<u64>,
    ) -> PathResult<()> {
        let ids: Vec<u64> = outgoing.keys().copied().collect();
        for id in ids {
            let Some(out) = outgoing.get_mut(&id) else {
                continue;
            };
            let opening = self.delegated.get(&id).is_none_or(|c| c.id.is_none());
            if opening && out.queue.is_empty() {
                continue;
            }
            // Out of QUIC streams: try again when the peer grants more.
            if opening && !self.open_signal() {
                break;
            }
            let carrier = self.delegated.entry(id).or_default();
            if carrier.id.is_none() {
                let Some(qid) = self.conn.streams().open(Dir::Uni) else {
                    break;
                };
                // Lowest offsets first: a path serves its ranges one after another, so
                // each completes as early as it can instead of all at the end, and a
                // range re-delegated after a failure (which the reader waits for) goes
                // ahead of newer ones.
                let rank = (out.framed >> 16).min(1 << 30);
                let priority = -i32::try_from(rank).unwrap_or(i32::MAX);
                let _ = self.conn.send_stream(qid).set_priority(priority);
                carrier.id = Some(qid);
            }
            loop {
                flush(&mut self.conn, carrier)?;
                if !carrier.pending.is_empty() {
                    break;
                }
                let Some((offset, pieces)) = out.take(FRAME_PAYLOAD) else {
                    break;
                };
                let len: usize = pieces.iter().map(Bytes::len).sum();
                let header = stream_header(&mut self.headers, out.stream, offset, len, false);
                carrier.pending.push_back(header);
                carrier.pending.extend(pieces);
                self.counters.frames_sent += 1;
                self.counters.stream_bytes_sent += len as u64;
            }
            if out.blocked && out.room() > 0 {
                out.blocked = false;
                writable.push(id);
            }
            if out.is_complete() && carrier.pending.is_empty() {
                if let Some(qid) = carrier.id {
                    let _ = self.conn.send_stream(qid).finish();
                }
                outgoing.remove(&id);
                self.delegated.remove(&id);
            }
        }
        Ok(())
    }

    /// Abandons the carrier of delegation `id`: what it did not send is never sent.
    pub(crate) fn cancel_delegated(&mut self, id: u64) {
        if let Some(carrier) = self.delegated.remove(&id)
            && let Some(qid) = carrier.id
        {
            let _ = self.conn.send_stream(qid).reset(VarInt::from_u32(0));
        }
    }
}
