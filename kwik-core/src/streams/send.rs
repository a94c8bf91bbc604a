//! The send half of logical streams: writes, flow-control credit, finishing and resetting,
//! and the frames [`Streams::poll_data`] cuts for the carriers.

use bytes::Bytes;
use quinn_proto::VarInt;

use super::{SendState, StreamEvent, Streams, log_release};
use crate::error::{ClosedStream, WriteError};
use crate::frame::Frame;
use crate::ids::StreamId;
use crate::varint;

impl Streams {
    /// Session credit grew: every stream refused a write may try again.
    pub(super) fn wake_blocked_writers(&mut self) {
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

    pub(super) fn blocked(&mut self, id: StreamId, empty: bool) -> Result<usize, WriteError> {
        if empty {
            return Ok(0);
        }
        if let Some(s) = self.send.get_mut(&id) {
            s.blocked = true;
        }
        Err(WriteError::Blocked)
    }

    pub(super) fn write_credit(&self, id: StreamId) -> Result<u64, WriteError> {
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

    pub(super) fn queue_bytes(&mut self, id: StreamId, data: Bytes) {
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
        if s.stopped.is_some() {
            // As with quinn: finishing a stream the peer stopped (and so reset) is
            // harmless; `stopped` and writes report the peer's code.
            return Ok(());
        }
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

    pub(super) fn reset_send(&mut self, id: StreamId, code: VarInt) {
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

    /// Streams that have something to frame, about in the order they became so.
    pub(crate) fn sendable(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.sendable.iter().copied()
    }

    /// [`Self::sendable`], turned to start at `first` if it is still there.
    pub(crate) fn sendable_from(
        &self,
        first: Option<StreamId>,
    ) -> impl Iterator<Item = StreamId> + '_ {
        let at = first
            .and_then(|id| self.sendable.get_index_of(&id))
            .unwrap_or(0);
        let (head, tail) = self.sendable.as_slice().split_at(at);
        tail.iter().chain(head).copied()
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
}
