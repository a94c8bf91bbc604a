//! Sending on a path: the session's frames cut onto carriers (the signal carrier first),
//! copies for redundant scheduling, and carriers released when their streams finish.

use bytes::{Bytes, BytesMut};
use quinn_proto::{Connection, Dir};

use super::{Allowance, CarrierTx, MAX_COPY_BACKLOG, Path, PathResult};
use crate::error::{ErrorCode, ProtocolError};
use crate::frame::{self, MAX_HEADER};
use crate::ids::StreamId;
use crate::streams::{FRAME_PAYLOAD, Streams};

impl Path {
    /// Moves signalling and data frames from the session into carriers and on into QUIC.
    pub(crate) fn write(
        &mut self,
        streams: &mut Streams,
        streams_per_carrier: usize,
        max_carriers: usize,
        allowance: Allowance,
        copies: Option<&mut Vec<Bytes>>,
    ) -> PathResult<()> {
        // A connection still in its handshake cannot open streams yet: what it would take
        // (credit updates above all) waits in the session for a path that can send.
        if self.conn.is_handshaking() {
            return Ok(());
        }
        // Nothing to frame, free or flush: a drive after data arrived mostly finds this.
        if !streams.has_signal()
            && streams.sendable().next().is_none()
            && streams.release_epoch() == self.release_epoch
            && self.holds_nothing()
        {
            return Ok(());
        }
        self.write_signals(streams)?;
        self.flush_copies()?;
        // Frames already taken go out first, whether or not more are taken.
        for carrier in &mut self.carriers {
            flush(&mut self.conn, carrier)?;
        }
        self.flush_finishing()?;
        match allowance {
            Allowance::None => Ok(()),
            Allowance::Frames(limit) => {
                self.write_data(streams, streams_per_carrier, max_carriers, limit, copies)
            }
        }
    }

    /// Whether no carrier holds bytes QUIC has not taken yet.
    fn holds_nothing(&self) -> bool {
        self.signal.pending.is_empty()
            && self.copy.pending.is_empty()
            && self.finishing.is_empty()
            && self
                .carriers
                .iter()
                .all(|c| c.pending.is_empty() && c.staged.is_empty())
    }

    pub(super) fn write_signals(&mut self, streams: &mut Streams) -> PathResult<()> {
        let mut buf = BytesMut::new();
        while buf.len() < 64 * 1024 {
            let Some(frame) = streams.poll_signal() else {
                break;
            };
            frame.encode(&mut buf);
            self.counters.frames_sent += 1;
        }
        // The signal carrier opens before any data carrier: the peer's limit on QUIC streams
        // follows its own carrier limit, which may be below ours, and data carriers must not
        // use up the stream it needs.
        if (!buf.is_empty() || streams.sendable().next().is_some()) && !self.open_signal() {
            return Err(ProtocolError::new(
                ErrorCode::StreamLimit,
                "peer allows no carrier",
            ));
        }
        if !buf.is_empty() {
            self.signal.pending.push_back(buf.freeze());
        }
        flush(&mut self.conn, &mut self.signal)
    }

    /// Opens the signal carrier if it is not open yet; returns whether it is. Every other
    /// carrier (data, copies, delegated ranges) opens only after it, so that none of them
    /// can use up the QUIC stream it needs.
    pub(super) fn open_signal(&mut self) -> bool {
        if self.signal.id.is_some() {
            return true;
        }
        let Some(id) = self.conn.streams().open(Dir::Uni) else {
            return false;
        };
        // Credit updates must not queue behind bulk data.
        let _ = self.conn.send_stream(id).set_priority(1);
        self.signal.id = Some(id);
        true
    }

    pub(super) fn write_data(
        &mut self,
        streams: &mut Streams,
        per_carrier: usize,
        max_carriers: usize,
        mut limit: usize,
        mut copies: Option<&mut Vec<Bytes>>,
    ) -> PathResult<()> {
        loop {
            self.release(streams, per_carrier)?;
            let mut ids = std::mem::take(&mut self.sendable);
            ids.clear();
            ids.extend(streams.sendable_from(self.refused.take()));
            let result = self.write_frames(
                streams,
                &ids,
                per_carrier,
                max_carriers,
                &mut limit,
                copies.as_deref_mut(),
            );
            self.sendable = ids;
            if !result? {
                return Ok(());
            }
        }
    }

    /// One round of [`Self::write_data`] over `ids`: frames at most one frame per stream.
    /// Small frames are staged in their carrier and go to QUIC at the end of the round.
    /// Returns whether anything was framed (and `limit` is not used up).
    pub(super) fn write_frames(
        &mut self,
        streams: &mut Streams,
        ids: &[StreamId],
        per_carrier: usize,
        max_carriers: usize,
        limit: &mut usize,
        mut copies: Option<&mut Vec<Bytes>>,
    ) -> PathResult<bool> {
        let mut progress = false;
        for &id in ids {
            if *limit == 0 {
                break;
            }
            let Some(c) = self.carrier_for(id, per_carrier, max_carriers) else {
                // The first stream refused a carrier is the first to ask in the next round:
                // streams that become sendable later take the places of those that left
                // the list, ahead of it, and would take every freed carrier first.
                self.refused.get_or_insert(id);
                continue;
            };
            let carrier = &mut self.carriers[c];
            flush(&mut self.conn, carrier)?;
            if !carrier.pending.is_empty() {
                continue;
            }
            let pieces = &mut self.pieces;
            pieces.clear();
            let Some((offset, fin)) = streams.poll_data_into(id, FRAME_PAYLOAD, pieces) else {
                continue;
            };
            let len: usize = pieces.iter().map(Bytes::len).sum();
            if len <= COALESCE {
                let start = carrier.staged.len();
                // A round's first frame gets an allocation of its exact size, which QUIC
                // then takes without another (a buffer with spare room would need one).
                let head_len = frame::stream_header_len(id, offset, len, fin);
                carrier.staged.reserve(head_len + len);
                frame::encode_stream_header(id, offset, len, fin, &mut carrier.staged);
                for piece in pieces.drain(..) {
                    carrier.staged.extend_from_slice(&piece);
                }
                if let Some(copies) = copies.as_deref_mut() {
                    copies.push(Bytes::copy_from_slice(&carrier.staged[start..]));
                }
            } else {
                let header = stream_header(&mut self.headers, id, offset, len, fin);
                if let Some(copies) = copies.as_deref_mut() {
                    copies.push(header.clone());
                    copies.extend(pieces.iter().cloned());
                }
                carrier.unstage();
                carrier.pending.push_back(header);
                carrier.pending.extend(pieces.drain(..));
                flush(&mut self.conn, carrier)?;
            }
            self.counters.frames_sent += 1;
            self.counters.stream_bytes_sent += len as u64;
            progress = true;
            *limit -= 1;
            // The slot frees with the fin, so that the next stream of the same round can
            // take it (a stream that must send a lost range again takes a slot anew).
            if fin && !streams.holds_carrier(id) {
                self.free_slot(id, per_carrier)?;
            }
        }
        // (A flush error above closes the path: what is staged then goes nowhere.)
        for carrier in &mut self.carriers {
            if !carrier.staged.is_empty() {
                carrier.unstage();
                flush(&mut self.conn, carrier)?;
            }
        }
        Ok(progress && *limit > 0)
    }

    /// Gives back `id`'s carrier slot. With one stream per carrier, the carrier's QUIC
    /// stream ends with its logical stream: the next stream gets a QUIC stream of its own,
    /// and never waits behind a lost tail of the one before.
    fn free_slot(&mut self, id: StreamId, per_carrier: usize) -> PathResult<()> {
        let Some(c) = self.assignment.remove(&id) else {
            return Ok(());
        };
        let carrier = &mut self.carriers[c];
        carrier.streams -= 1;
        if per_carrier == 1 && carrier.streams == 0 && carrier.id.is_some() {
            carrier.unstage();
            self.finishing.push(std::mem::take(carrier));
            self.flush_finishing()?;
        }
        Ok(())
    }

    /// Writes what the finishing carriers still hold, and ends the QUIC stream of each
    /// one that holds nothing more.
    fn flush_finishing(&mut self) -> PathResult<()> {
        if self.finishing.is_empty() {
            return Ok(());
        }
        let conn = &mut self.conn;
        let mut result = Ok(());
        self.finishing.retain_mut(|carrier| {
            if result.is_err() {
                return true;
            }
            result = flush(conn, carrier);
            if !carrier.pending.is_empty() {
                return true;
            }
            if let Some(id) = carrier.id {
                // A carrier the peer stopped is reported by `flush` while it holds bytes;
                // one that holds none has nothing left to lose.
                let _ = conn.send_stream(id).finish();
            }
            false
        });
        result
    }

    /// Queues frames another path sent, to send them here too (redundant scheduling).
    /// Beyond [`MAX_COPY_BACKLOG`] queued bytes, copies are dropped: the other path
    /// carries them anyway.
    pub(crate) fn push_copies(&mut self, frames: &[Bytes]) {
        let queued: usize = self.copy.pending.iter().map(Bytes::len).sum();
        if queued > MAX_COPY_BACKLOG {
            return;
        }
        self.copy.pending.extend(frames.iter().cloned());
        self.counters.stream_bytes_sent += frames.iter().map(|f| f.len() as u64).sum::<u64>();
    }

    pub(super) fn flush_copies(&mut self) -> PathResult<()> {
        if self.copy.pending.is_empty() {
            return Ok(());
        }
        if self.copy.id.is_none() {
            if !self.open_signal() {
                return Ok(());
            }
            let Some(id) = self.conn.streams().open(Dir::Uni) else {
                return Ok(());
            };
            self.copy.id = Some(id);
        }
        flush(&mut self.conn, &mut self.copy)
    }

    /// Frees the carrier slots of streams that stopped sending (a reset, or a fin framed
    /// on another path).
    pub(super) fn release(&mut self, streams: &mut Streams, per_carrier: usize) -> PathResult<()> {
        // Every path to the peer frees its own slots: a shared list of released streams
        // would free them on whichever path drained it first, and leak on the others.
        let epoch = streams.release_epoch();
        if epoch == self.release_epoch {
            return Ok(());
        }
        let mut freed = std::mem::take(&mut self.sendable);
        freed.clear();
        match streams.released_since(self.release_epoch) {
            Some(released) => freed.extend(released.filter(|id| !streams.holds_carrier(*id))),
            None => freed.extend(
                self.assignment
                    .keys()
                    .copied()
                    .filter(|id| !streams.holds_carrier(*id)),
            ),
        }
        self.release_epoch = epoch;
        let result = freed
            .iter()
            .try_for_each(|&id| self.free_slot(id, per_carrier));
        self.sendable = freed;
        result
    }

    /// The carrier of `id`, assigning one (and opening a QUIC stream) if needed.
    pub(super) fn carrier_for(
        &mut self,
        id: StreamId,
        per_carrier: usize,
        max_carriers: usize,
    ) -> Option<usize> {
        if let Some(c) = self.assignment.get(&id) {
            return Some(*c);
        }
        let carriers = &self.carriers;
        let least = (0..carriers.len()).min_by_key(|c| (carriers[*c].streams, *c));
        let slot = match least {
            Some(c) if carriers[c].streams < per_carrier => Some(c),
            _ if carriers.len() < max_carriers => {
                self.carriers.push(CarrierTx::default());
                Some(self.carriers.len() - 1)
            }
            _ => None,
        };
        // A slot without a QUIC stream (new, or its last one finished) opens one. Where
        // the peer grants no more streams, the least loaded open carrier takes one more.
        let opened = slot.filter(|c| {
            self.carriers[*c].id.is_some()
                || self.conn.streams().open(Dir::Uni).is_some_and(|qid| {
                    self.carriers[*c].id = Some(qid);
                    true
                })
        });
        let carriers = &self.carriers;
        let c = match opened {
            Some(c) => c,
            None => (0..carriers.len())
                .filter(|c| carriers[*c].id.is_some())
                .min_by_key(|c| (carriers[*c].streams, *c))?,
        };
        self.carriers[c].streams += 1;
        self.assignment.insert(id, c);
        Some(c)
    }
}

/// Frames with at most this many payload bytes are copied, with their heads, into one
/// buffer per carrier and round, which QUIC takes as one piece: quinn-proto looks up the
/// bytes of each packet it builds by walking a stream's unacknowledged pieces from the
/// first, so a carrier of many small streams would cost it a walk of every frame in flight
/// per packet. Larger payloads go to QUIC as they are, uncopied.
const COALESCE: usize = 2048;

impl CarrierTx {
    /// Queues the staged frames behind what QUIC has not taken yet.
    fn unstage(&mut self) {
        if !self.staged.is_empty() {
            self.pending
                .push_back(std::mem::take(&mut self.staged).freeze());
        }
    }
}

/// Bytes of frame heads one allocation holds: some 150 heads.
const HEADER_ARENA: usize = 4096;

/// Encodes a STREAM frame head into `arena` and cuts it off. Heads share the arena's
/// allocation, which is reclaimed once QUIC dropped every head cut from it (or replaced by
/// a new one while some are still unacknowledged): one allocation per some 150 frames
/// instead of one per frame.
pub(super) fn stream_header(
    arena: &mut BytesMut,
    id: StreamId,
    offset: u64,
    len: usize,
    fin: bool,
) -> Bytes {
    if arena.capacity() < MAX_HEADER {
        arena.reserve(HEADER_ARENA);
    }
    frame::encode_stream_header(id, offset, len, fin, arena);
    arena.split().freeze()
}

/// Writes as much of `carrier`'s pending bytes as QUIC takes now.
#[inline]
pub(super) fn flush(conn: &mut Connection, carrier: &mut CarrierTx) -> PathResult<()> {
    if carrier.pending.is_empty() {
        return Ok(());
    }
    flush_pending(conn, carrier)
}

fn flush_pending(conn: &mut Connection, carrier: &mut CarrierTx) -> PathResult<()> {
    let Some(id) = carrier.id else {
        return Ok(());
    };
    while !carrier.pending.is_empty() {
        let chunks = carrier.pending.make_contiguous();
        match conn.send_stream(id).write_chunks(chunks) {
            Ok(written) => {
                carrier.pending.drain(..written.chunks);
                if written.bytes == 0 {
                    break;
                }
            }
            Err(quinn_proto::WriteError::Blocked) => break,
            Err(_) => {
                return Err(ProtocolError::new(
                    ErrorCode::UnexpectedStream,
                    "peer stopped a carrier",
                ));
            }
        }
    }
    Ok(())
}
