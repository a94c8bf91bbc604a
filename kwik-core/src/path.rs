//! One path: a QUIC connection to one server address, with its control stream and carriers.
//!
//! A path moves bytes between QUIC streams and the session: control frames in and out of
//! the control stream, data-plane frames in and out of carriers. It owns no logical stream
//! state; that lives in the session's [`Streams`].

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{Connection, Dir, StreamId as QuicStreamId, VarInt};
use rustc_hash::FxHashMap;

use crate::control::{ControlDecoder, MAX_CONTROL_FRAME};
use crate::delegation::Outgoing;
use crate::error::{ErrorCode, ProtocolError};
use crate::frame::{self, Frame, MAX_HEADER};
use crate::health::Health;
use crate::ids::{PathId, StreamId};
use crate::rate::TokenBucket;
use crate::streams::{FRAME_PAYLOAD, Streams};

/// Bytes of encoded frames waiting for one carrier to accept them.
#[derive(Debug, Default)]
struct CarrierTx {
    id: Option<QuicStreamId>,
    pending: VecDeque<Bytes>,
    /// Logical streams assigned to this carrier.
    streams: usize,
}

/// Decoding state of one incoming carrier.
#[derive(Debug, Default)]
struct CarrierRx {
    /// The start of a frame (at most [`frame::MAX_HEAD`] bytes) cut off at the end of what
    /// was read so far.
    partial: BytesMut,
    /// The `STREAM` frame whose payload is being read: it is passed on in the pieces it
    /// arrives in, never gathered.
    payload: Option<Payload>,
    /// Listed in [`Path::readable`].
    listed: bool,
}

/// The rest of a `STREAM` frame's payload.
#[derive(Debug)]
struct Payload {
    id: StreamId,
    offset: u64,
    left: u64,
    fin: bool,
}

impl CarrierRx {
    /// Whether the carrier stopped inside a frame.
    fn inside_frame(&self) -> bool {
        !self.partial.is_empty() || self.payload.is_some()
    }
}

/// Transport facts about a path, for stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PathCounters {
    pub(crate) frames_sent: u64,
    pub(crate) frames_received: u64,
    pub(crate) raw_sent: u64,
    pub(crate) raw_displaced: u64,
    pub(crate) raw_received: u64,
    pub(crate) stream_bytes_received: u64,
    pub(crate) stream_bytes_sent: u64,
    pub(crate) control_sent: u64,
    pub(crate) control_received: u64,
}

#[derive(Debug)]
pub(crate) struct Path {
    pub(crate) conn: Connection,
    pub(crate) id: PathId,
    control: Option<QuicStreamId>,
    control_rx: ControlDecoder,
    control_tx: Vec<u8>,
    /// Carrier of flow-control and signalling frames, written ahead of data.
    signal: CarrierTx,
    carriers: Vec<CarrierTx>,
    assignment: FxHashMap<StreamId, usize>,
    rx: FxHashMap<QuicStreamId, CarrierRx>,
    /// Carriers QUIC reported readable, each listed once (see [`CarrierRx::listed`]).
    readable: Vec<QuicStreamId>,
    /// QUIC reported the control stream readable.
    control_readable: bool,
    pub(crate) counters: PathCounters,
    pub(crate) health: Health,
    /// Authenticated frames heard from the peer at the last look, for health.
    heard: u64,
    /// QUIC STREAM frames received at the last look: a stripe lane's progress.
    pub(crate) stream_frames: u64,
    /// The streams' release count at the last look (see `release`).
    release_epoch: u64,
    /// Packets sent and lost at the last loss sample, for health.
    loss_mark: (u64, u64),
    /// Bounds the control messages the peer may send.
    control_budget: TokenBucket,
    /// This side closed the connection: nothing more is read or written.
    pub(crate) closing: bool,
    /// A raw datagram was handed back for want of room: QUIC says when there is room
    /// again while sending, so each transmit has the path driven to hear it.
    pub(crate) raw_blocked: bool,
    /// Carriers of the delegated ranges this side writes, one per delegation.
    delegated: BTreeMap<u64, CarrierTx>,
    /// Carrier of frames copied from another path (redundant scheduling).
    copy: CarrierTx,
    /// Reused from drive to drive, so that framing allocates nothing in steady state:
    /// the streams with data to frame, and one frame's payload pieces.
    sendable: Vec<StreamId>,
    pieces: Vec<Bytes>,
    /// The chunks one carrier read returned, reused likewise.
    rx_pieces: Vec<Bytes>,
    /// Frame heads are cut from this buffer, so that they share an allocation (see
    /// [`stream_header`]).
    headers: BytesMut,
}

/// How much of the session's stream data a path may take in one drive (not to be confused
/// with a `Pull`, the client's request for a delegated range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowance {
    /// None: another path to the peer goes first.
    None,
    /// Up to this many frames.
    Frames(usize),
}

/// Redundant copies one path may hold for its peer before more are dropped.
const MAX_COPY_BACKLOG: usize = 4 << 20;

/// Control bytes this side may hold for a peer that does not read its control stream.
pub(crate) const MAX_CONTROL_BACKLOG: usize = 64 * 1024;

/// A carrier or control stream misbehaved.
pub(crate) type PathResult<T> = Result<T, ProtocolError>;

impl Path {
    pub(crate) fn new(conn: Connection, id: PathId, control_rate: u32) -> Self {
        Self {
            conn,
            id,
            control: None,
            control_rx: ControlDecoder::default(),
            control_tx: Vec::new(),
            signal: CarrierTx::default(),
            carriers: Vec::new(),
            assignment: FxHashMap::default(),
            rx: FxHashMap::default(),
            readable: Vec::new(),
            control_readable: false,
            counters: PathCounters::default(),
            health: Health::default(),
            heard: 0,
            stream_frames: 0,
            release_epoch: 0,
            loss_mark: (0, 0),
            control_budget: TokenBucket::new(control_rate),
            closing: false,
            raw_blocked: false,
            delegated: BTreeMap::new(),
            copy: CarrierTx::default(),
            sendable: Vec::new(),
            pieces: Vec::new(),
            rx_pieces: Vec::new(),
            headers: BytesMut::new(),
        }
    }

    /// Client side: opens the control stream once the QUIC handshake is done.
    pub(crate) fn open_control(&mut self) -> PathResult<()> {
        let id = self.conn.streams().open(Dir::Bi).ok_or_else(|| {
            ProtocolError::new(ErrorCode::Handshake, "peer allows no control stream")
        })?;
        // Control messages (delegations, health) must not queue behind bulk data.
        let _ = self.conn.send_stream(id).set_priority(2);
        self.control = Some(id);
        Ok(())
    }

    /// Tells health whether the peer was heard from since the last look: any frame of an
    /// authenticated packet (ACKs, stream data, pings, datagrams) is proof of life, so a
    /// `Pong` queued behind a full bottleneck does not fail a path that delivers.
    pub(crate) fn note_progress(&mut self, now: std::time::Instant) {
        let stats = self.conn.stats();
        let rx = stats.frame_rx;
        let heard = rx.acks + rx.stream + rx.ping + rx.datagram + rx.max_data;
        self.stream_frames = rx.stream;
        if heard > self.heard {
            self.heard = heard;
            self.health.on_progress(now);
        }
        // Loss over at least 20 packets a sample, so that a lone loss is not a 100 % rate.
        let (sent, lost) = (stats.path.sent_packets, stats.path.lost_packets);
        if sent >= self.loss_mark.0 + 20 {
            self.health.observe_loss(
                sent - self.loss_mark.0,
                lost.saturating_sub(self.loss_mark.1),
            );
            self.loss_mark = (sent, lost);
        }
    }

    /// Queues one encoded control frame.
    pub(crate) fn send_control(&mut self, kind: kwik_proto::control_frame::Kind) {
        self.counters.control_sent += 1;
        crate::control::encode(kind, &mut self.control_tx);
    }

    /// Takes QUIC streams the peer opened: the first bidirectional one of a server is the
    /// control stream, unidirectional ones are carriers; anything else is a violation.
    pub(crate) fn accept_streams(&mut self, server: bool) -> PathResult<()> {
        while let Some(id) = self.conn.streams().accept(Dir::Bi) {
            if !server || self.control.is_some() {
                return Err(ProtocolError::new(
                    ErrorCode::UnexpectedStream,
                    "unexpected bidirectional stream",
                ));
            }
            let _ = self.conn.send_stream(id).set_priority(2);
            self.control = Some(id);
            self.control_readable = true;
        }
        while let Some(id) = self.conn.streams().accept(Dir::Uni) {
            self.rx.insert(id, CarrierRx::default());
            self.mark_readable(id);
        }
        Ok(())
    }

    /// Notes that QUIC has bytes for `id`: the control stream or a carrier taken by
    /// [`Self::accept_streams`] (other streams are not read).
    pub(crate) fn mark_readable(&mut self, id: QuicStreamId) {
        if Some(id) == self.control {
            self.control_readable = true;
        } else if let Some(carrier) = self.rx.get_mut(&id)
            && !carrier.listed
        {
            carrier.listed = true;
            self.readable.push(id);
        }
    }

    /// Reads the control stream: whole messages, in order.
    pub(crate) fn read_control(
        &mut self,
        now: std::time::Instant,
    ) -> PathResult<Vec<kwik_proto::control_frame::Kind>> {
        let mut out = Vec::new();
        let Some(id) = self.control else {
            return Ok(out);
        };
        if !std::mem::take(&mut self.control_readable) {
            return Ok(out);
        }
        let mut stream = self.conn.recv_stream(id);
        let Ok(mut chunks) = stream.read(true) else {
            return Ok(out);
        };
        let mut result = Ok(());
        loop {
            match chunks.next(MAX_CONTROL_FRAME) {
                Ok(Some(chunk)) => {
                    self.control_rx.push(&chunk.bytes);
                    loop {
                        match self.control_rx.next_frame() {
                            Ok(Some(_)) if !self.control_budget.try_take(now) => {
                                result = Err(ProtocolError::new(
                                    ErrorCode::ControlRate,
                                    "control messages above the allowed rate",
                                ));
                                break;
                            }
                            Ok(Some(kind)) => {
                                self.counters.control_received += 1;
                                out.push(kind);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                result = Err(ProtocolError::new(e.code(), e.to_string()));
                                break;
                            }
                        }
                    }
                    if result.is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    result = Err(ProtocolError::new(
                        ErrorCode::UnexpectedStream,
                        "control stream finished",
                    ));
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(_)) => {
                    result = Err(ProtocolError::new(
                        ErrorCode::UnexpectedStream,
                        "control stream reset",
                    ));
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        result.map(|()| out)
    }

    /// 32 bytes of keying material exported from this connection's TLS session.
    pub(crate) fn exporter(&self) -> Option<[u8; crate::join::EXPORTER_LEN]> {
        let mut out = [0u8; crate::join::EXPORTER_LEN];
        self.conn
            .crypto_session()
            .export_keying_material(&mut out, crate::join::EXPORTER_LABEL, b"")
            .ok()?;
        Some(out)
    }

    /// Reads every readable carrier and hands its frames to `on_frame`.
    pub(crate) fn read_carriers(
        &mut self,
        mut on_frame: impl FnMut(Frame) -> PathResult<()>,
    ) -> PathResult<()> {
        let mut ids = std::mem::take(&mut self.readable);
        let result = self.read_listed(&ids, &mut on_frame);
        // The list's allocation serves the next drive (nothing lists carriers while they
        // are read).
        ids.clear();
        self.readable = ids;
        result
    }

    fn read_listed(
        &mut self,
        ids: &[QuicStreamId],
        on_frame: &mut impl FnMut(Frame) -> PathResult<()>,
    ) -> PathResult<()> {
        let pieces = &mut self.rx_pieces;
        for &id in ids {
            let Some(carrier) = self.rx.get_mut(&id) else {
                continue;
            };
            carrier.listed = false;
            let mut stream = self.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                continue;
            };
            pieces.clear();
            let mut finished = false;
            let mut reset = false;
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => pieces.push(chunk.bytes),
                    Ok(None) => {
                        finished = true;
                        break;
                    }
                    Err(quinn_proto::ReadError::Blocked) => break,
                    Err(quinn_proto::ReadError::Reset(_)) => {
                        reset = true;
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
            for piece in pieces.drain(..) {
                self.counters.frames_received += decode_carrier(carrier, piece, &mut *on_frame)?;
            }
            if reset {
                // A writer abandoned the carrier (a cancelled delegation): the frames it
                // did not send are simply missing, as if never written; a partial frame
                // is dropped.
                self.rx.remove(&id);
                continue;
            }
            if finished {
                if carrier.inside_frame() {
                    return Err(ProtocolError::new(
                        ErrorCode::FrameEncoding,
                        "carrier ended inside a frame",
                    ));
                }
                self.rx.remove(&id);
            }
        }
        Ok(())
    }

    /// Writes queued control frames into the control stream.
    pub(crate) fn flush_control(&mut self) -> PathResult<()> {
        let Some(id) = self.control else {
            return Ok(());
        };
        if self.control_tx.len() > MAX_CONTROL_BACKLOG {
            return Err(ProtocolError::new(
                ErrorCode::ControlRate,
                "peer does not read its control stream",
            ));
        }
        if self.control_tx.is_empty() {
            return Ok(());
        }
        match self.conn.send_stream(id).write(&self.control_tx) {
            Ok(n) => {
                self.control_tx.drain(..n);
                Ok(())
            }
            Err(quinn_proto::WriteError::Blocked) => Ok(()),
            Err(_) => Err(ProtocolError::new(
                ErrorCode::UnexpectedStream,
                "control stream stopped",
            )),
        }
    }

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
        self.write_signals(streams)?;
        self.flush_copies()?;
        // Frames already taken go out first, whether or not more are taken.
        for carrier in &mut self.carriers {
            flush(&mut self.conn, carrier)?;
        }
        match allowance {
            Allowance::None => Ok(()),
            Allowance::Frames(limit) => {
                self.write_data(streams, streams_per_carrier, max_carriers, limit, copies)
            }
        }
    }

    fn write_signals(&mut self, streams: &mut Streams) -> PathResult<()> {
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
    fn open_signal(&mut self) -> bool {
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

    fn write_data(
        &mut self,
        streams: &mut Streams,
        per_carrier: usize,
        max_carriers: usize,
        mut limit: usize,
        mut copies: Option<&mut Vec<Bytes>>,
    ) -> PathResult<()> {
        loop {
            self.release(streams);
            let mut ids = std::mem::take(&mut self.sendable);
            ids.clear();
            ids.extend(streams.sendable());
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
    /// Returns whether anything was framed (and `limit` is not used up).
    fn write_frames(
        &mut self,
        streams: &mut Streams,
        ids: &[StreamId],
        per_carrier: usize,
        max_carriers: usize,
        limit: &mut usize,
        mut copies: Option<&mut Vec<Bytes>>,
    ) -> PathResult<bool> {
        if ids.is_empty() {
            return Ok(false);
        }
        let mut progress = false;
        for &id in ids {
            if *limit == 0 {
                return Ok(false);
            }
            let Some(c) = self.carrier_for(id, per_carrier, max_carriers) else {
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
            let header = stream_header(&mut self.headers, id, offset, len, fin);
            if let Some(copies) = copies.as_deref_mut() {
                copies.push(header.clone());
                copies.extend(pieces.iter().cloned());
            }
            carrier.pending.push_back(header);
            carrier.pending.extend(pieces.drain(..));
            self.counters.frames_sent += 1;
            self.counters.stream_bytes_sent += len as u64;
            flush(&mut self.conn, carrier)?;
            progress = true;
            *limit -= 1;
        }
        Ok(progress)
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

    fn flush_copies(&mut self) -> PathResult<()> {
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

    /// Whether QUIC refused bytes this path holds: its send window is full.
    pub(crate) fn is_backlogged(&self) -> bool {
        self.carriers.iter().any(|c| !c.pending.is_empty())
    }

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

    /// Frees the carrier slots of streams that stopped sending.
    fn release(&mut self, streams: &mut Streams) {
        // Every path to the peer frees its own slots: a shared list of released streams
        // would free them on whichever path drained it first, and leak on the others.
        let epoch = streams.release_epoch();
        if epoch == self.release_epoch {
            return;
        }
        let carriers = &mut self.carriers;
        match streams.released_since(self.release_epoch) {
            Some(released) => {
                for id in released {
                    if !streams.holds_carrier(id)
                        && let Some(c) = self.assignment.remove(&id)
                    {
                        carriers[c].streams -= 1;
                    }
                }
            }
            None => self.assignment.retain(|id, c| {
                let keep = streams.holds_carrier(*id);
                if !keep {
                    carriers[*c].streams -= 1;
                }
                keep
            }),
        }
        self.release_epoch = epoch;
    }

    /// The carrier of `id`, assigning one (and opening a QUIC stream) if needed.
    fn carrier_for(
        &mut self,
        id: StreamId,
        per_carrier: usize,
        max_carriers: usize,
    ) -> Option<usize> {
        if let Some(c) = self.assignment.get(&id) {
            return Some(*c);
        }
        let least = (0..self.carriers.len()).min_by_key(|c| (self.carriers[*c].streams, *c));
        let c = match least {
            Some(c) if self.carriers[c].streams < per_carrier => c,
            _ if self.carriers.len() < max_carriers => match self.conn.streams().open(Dir::Uni) {
                Some(qid) => {
                    self.carriers.push(CarrierTx {
                        id: Some(qid),
                        ..CarrierTx::default()
                    });
                    self.carriers.len() - 1
                }
                None => least?,
            },
            _ => least?,
        };
        self.carriers[c].streams += 1;
        self.assignment.insert(id, c);
        Some(c)
    }

    /// Carriers open for writing.
    pub(crate) fn carrier_count(&self) -> usize {
        self.carriers.len()
    }

    /// Logical streams holding a carrier slot on this path.
    pub(crate) fn assigned_streams(&self) -> usize {
        self.assignment.len()
    }

    /// Closes the QUIC connection over a KWIK protocol error.
    pub(crate) fn close_with(&mut self, now: std::time::Instant, error: &ProtocolError) {
        let mut reason = error.reason.clone().into_bytes();
        reason.truncate(512);
        self.conn
            .close(now, error.code.to_wire(), Bytes::from(reason));
        self.shut();
    }

    /// Closes the QUIC connection with an application code.
    pub(crate) fn close_app(&mut self, now: std::time::Instant, code: VarInt, reason: Bytes) {
        self.conn.close(now, code, reason);
        self.shut();
    }
}

impl Path {
    /// Drops everything queued: a closed connection sends no more stream data.
    fn shut(&mut self) {
        self.closing = true;
        self.control_tx = Vec::new();
        self.signal.pending.clear();
        for c in &mut self.carriers {
            c.pending.clear();
        }
        self.delegated.clear();
        self.copy.pending.clear();
        self.rx.clear();
        self.readable.clear();
        self.control_readable = false;
    }
}

/// Writes as much of `carrier`'s pending bytes as QUIC takes now.
/// Bytes of frame heads one allocation holds: some 150 heads.
const HEADER_ARENA: usize = 4096;

/// Encodes a STREAM frame head into `arena` and cuts it off. Heads share the arena's
/// allocation, which is reclaimed once QUIC dropped every head cut from it (or replaced by
/// a new one while some are still unacknowledged): one allocation per some 150 frames
/// instead of one per frame.
fn stream_header(arena: &mut BytesMut, id: StreamId, offset: u64, len: usize, fin: bool) -> Bytes {
    if arena.capacity() < MAX_HEADER {
        arena.reserve(HEADER_ARENA);
    }
    frame::encode_stream_header(id, offset, len, fin, arena);
    arena.split().freeze()
}

fn flush(conn: &mut Connection, carrier: &mut CarrierTx) -> PathResult<()> {
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

/// Decodes the frames in the next `piece` of a carrier. A `STREAM` payload is handed on as
/// slices of the pieces it arrives in (a frame that spans packets becomes several frames
/// of the same stream, which reassembly takes alike), so no payload byte is copied; only a
/// frame's head cut off between pieces is. Returns the number of frames completed.
fn decode_carrier(
    carrier: &mut CarrierRx,
    mut piece: Bytes,
    on_frame: &mut impl FnMut(Frame) -> PathResult<()>,
) -> PathResult<u64> {
    let mut frames = 0;
    loop {
        if let Some(p) = &mut carrier.payload {
            if piece.is_empty() {
                break;
            }
            let n = p.left.min(piece.len() as u64);
            let data = piece.split_to(n as usize);
            let last = n == p.left;
            let frame = Frame::Stream {
                id: p.id,
                offset: p.offset,
                fin: p.fin && last,
                data,
            };
            p.offset += n;
            p.left -= n;
            if last {
                carrier.payload = None;
                frames += 1;
            }
            on_frame(frame)?;
            continue;
        }
        if piece.is_empty() {
            break;
        }
        // The head: from this piece alone, or after the bytes kept from the last one.
        let kept = carrier.partial.len();
        let window: &[u8] = if kept == 0 {
            &piece
        } else {
            let take = piece.len().min(frame::MAX_HEAD);
            carrier.partial.extend_from_slice(&piece[..take]);
            &carrier.partial
        };
        let head = Frame::parse_head(window)
            .map_err(|e| ProtocolError::new(ErrorCode::FrameEncoding, e.to_string()))?;
        let Some((head, head_len)) = head else {
            if kept == 0 {
                carrier.partial.extend_from_slice(&piece);
            }
            // The bytes kept so far (from this piece too) are all of it.
            if carrier.partial.len() > frame::MAX_HEAD {
                return Err(ProtocolError::new(
                    ErrorCode::FrameEncoding,
                    "incomplete frame head larger than any valid head",
                ));
            }
            break;
        };
        // Kept bytes never hold a whole head, so the head ends inside this piece.
        piece.advance(head_len - kept);
        carrier.partial.clear();
        match head {
            frame::Head::Frame(frame) => {
                frames += 1;
                on_frame(frame)?;
            }
            frame::Head::Stream {
                id,
                offset,
                len: 0,
                fin,
            } => {
                frames += 1;
                on_frame(Frame::Stream {
                    id,
                    offset,
                    fin,
                    data: Bytes::new(),
                })?;
            }
            frame::Head::Stream {
                id,
                offset,
                len,
                fin,
            } => {
                carrier.payload = Some(Payload {
                    id,
                    offset,
                    left: len,
                    fin,
                })
            }
        }
    }
    Ok(frames)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quinn_proto::{Dir, Side};

    fn frames() -> Vec<Frame> {
        let id = StreamId::new(Side::Client, Dir::Bi, 3);
        let data = |n: usize, seed: u8| -> Bytes {
            (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
        };
        vec![
            Frame::Stream {
                id,
                offset: 0,
                fin: false,
                data: data(3000, 1),
            },
            Frame::MaxData { max: 1 << 40 },
            Frame::Stream {
                id,
                offset: 3000,
                fin: false,
                data: Bytes::new(),
            },
            Frame::DataAck { id, offset: 77 },
            Frame::Stream {
                id,
                offset: 3000,
                fin: true,
                data: data(1500, 2),
            },
        ]
    }

    /// Decodes `wire` cut into pieces of `size` bytes; returns the stream bytes by offset,
    /// the other frames, the fin offset, and whether every payload byte was a slice of a
    /// piece.
    fn decode_in_pieces(wire: &[u8], size: usize) -> (Vec<u8>, Vec<Frame>, Option<u64>, bool) {
        let mut carrier = CarrierRx::default();
        let mut stream = vec![0u8; 4500];
        let mut others = Vec::new();
        let mut fin = None;
        let mut zero_copy = true;
        let mut completed = 0;
        for chunk in wire.chunks(size) {
            let piece = Bytes::copy_from_slice(chunk);
            let range = piece.as_ptr() as usize..piece.as_ptr() as usize + piece.len();
            completed += decode_carrier(&mut carrier, piece.clone(), &mut |f| {
                match f {
                    Frame::Stream {
                        offset,
                        fin: f,
                        data,
                        ..
                    } => {
                        if !data.is_empty() {
                            zero_copy &= range.contains(&(data.as_ptr() as usize));
                        }
                        let at = offset as usize;
                        stream[at..at + data.len()].copy_from_slice(&data);
                        if f {
                            fin = Some(offset + data.len() as u64);
                        }
                    }
                    other => others.push(other),
                }
                Ok(())
            })
            .unwrap();
        }
        assert!(
            !carrier.inside_frame(),
            "pieces of {size}: stopped inside a frame"
        );
        assert_eq!(completed, 5, "pieces of {size}: frames completed");
        (stream, others, fin, zero_copy)
    }

    #[test]
    fn payloads_cut_anywhere_are_passed_on_as_slices_of_the_pieces() {
        let original = frames();
        let mut wire = Vec::new();
        for f in &original {
            f.encode(&mut wire);
        }
        let mut want = vec![0u8; 4500];
        for f in &original {
            if let Frame::Stream { offset, data, .. } = f {
                want[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
            }
        }
        for size in [
            1, 2, 3, 5, 7, 24, 25, 31, 32, 33, 100, 1200, 1500, 2999, 5000,
        ] {
            let (stream, others, fin, zero_copy) = decode_in_pieces(&wire, size);
            assert_eq!(stream, want, "pieces of {size}");
            assert_eq!(
                others,
                [original[1].clone(), original[3].clone()],
                "pieces of {size}"
            );
            assert_eq!(fin, Some(4500), "pieces of {size}");
            assert!(zero_copy, "pieces of {size}: a payload byte was copied");
        }
    }

    #[test]
    fn a_head_of_the_largest_size_is_kept_across_pieces() {
        // A STREAM frame whose type, id, offset and length are each sent as 8-byte varints
        // (valid, if wasteful): a 32-byte head, then 10 payload bytes.
        let eight = |v: u64| (v | 0xc0 << 56).to_be_bytes();
        let mut wire = Vec::new();
        for v in [0x01, 4, 100, 10] {
            wire.extend(eight(v));
        }
        assert_eq!(wire.len(), frame::MAX_HEAD);
        wire.extend(b"0123456789");
        for size in 1..=wire.len() {
            let mut carrier = CarrierRx::default();
            let mut got = Vec::new();
            let mut fin = false;
            for chunk in wire.chunks(size) {
                decode_carrier(&mut carrier, Bytes::copy_from_slice(chunk), &mut |f| {
                    if let Frame::Stream {
                        offset,
                        data,
                        fin: f,
                        ..
                    } = f
                    {
                        assert_eq!(offset, 100 + got.len() as u64);
                        got.extend_from_slice(&data);
                        fin |= f;
                    }
                    Ok(())
                })
                .unwrap();
                assert!(carrier.partial.len() <= frame::MAX_HEAD);
            }
            assert_eq!(got, b"0123456789", "pieces of {size}");
            assert!(fin, "pieces of {size}");
            assert!(!carrier.inside_frame());
        }
    }
}
