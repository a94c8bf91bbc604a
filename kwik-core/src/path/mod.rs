//! One path: a QUIC connection to one server address, with its control stream and carriers.
//!
//! A path moves bytes between QUIC streams and the session: control frames in and out of
//! the control stream, data-plane frames in and out of carriers. It owns no logical stream
//! state; that lives in the session's [`Streams`].

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::HandshakeData;
use quinn_proto::{Connection, Dir, StreamId as QuicStreamId, VarInt};
use rustc_hash::FxHashMap;

use crate::control::ControlDecoder;
use crate::error::{ErrorCode, ProtocolError};
use crate::health::Health;
use crate::ids::{ConnKey, PathId, StreamId};
use crate::rate::TokenBucket;

mod control;
mod delegated;
mod rx;
mod tx;

/// Bytes of encoded frames waiting for one carrier to accept them.
#[derive(Debug, Default)]
struct CarrierTx {
    id: Option<QuicStreamId>,
    pending: VecDeque<Bytes>,
    /// Small frames of the current round of framing, copied into one buffer that goes to
    /// QUIC as one piece at the end of the round (see `COALESCE`).
    staged: BytesMut,
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
    pub(crate) control_unknown: u64,
}

/// One QUIC connection of a session's path (or of a server connection that is not in a
/// session yet).
#[derive(Debug)]
pub(crate) struct Path {
    pub(crate) conn: Connection,
    /// The path it carries; a server's connection is path 0 until a Join says otherwise.
    pub(crate) id: PathId,
    /// quinn-proto's handle of the connection.
    pub(crate) key: ConnKey,
    pub(crate) remote: std::net::SocketAddr,
    pub(crate) side: quinn_proto::Side,
    /// `path{session, path, remote, kind}`, entered while the engine drives this
    /// connection; a child of the session's span where the session came first.
    pub(crate) span: tracing::Span,
    control: Option<QuicStreamId>,
    control_rx: ControlDecoder,
    control_tx: Vec<u8>,
    /// Carrier of flow-control and signalling frames, written ahead of data.
    signal: CarrierTx,
    carriers: Vec<CarrierTx>,
    /// Carriers whose only stream ended with `streams_per_carrier = 1`: their last bytes
    /// go out, then QUIC's fin (each logical stream had a QUIC stream of its own).
    finishing: Vec<CarrierTx>,
    assignment: FxHashMap<StreamId, usize>,
    /// The first stream that found no carrier in the last round of framing.
    refused: Option<StreamId>,
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
    /// Health probes and answers sent and received.
    probes: u64,
    /// Messages, frames and datagrams other than probes at the last look, for health.
    used: u64,
    /// Bounds the control messages the peer may send.
    control_budget: TokenBucket,
    /// This side closed the connection: nothing more is read or written.
    pub(crate) closing: bool,
    /// The application protocol TLS negotiated, once the handshake data is in.
    pub(crate) alpn: Option<Bytes>,
    /// The connection negotiated an application protocol instead of `kwik/1`: its QUIC
    /// streams are the session's logical streams (a plain session).
    pub(crate) plain: bool,
    /// A plain connection's stream events, for its session to hand on.
    pub(crate) plain_events: Vec<quinn_proto::StreamEvent>,
    /// A raw datagram was handed back for want of room: QUIC says when there is room
    /// again while sending, so each transmit has the path driven to hear it.
    pub(crate) raw_blocked: bool,
    /// When the connection last handed out a datagram.
    pub(crate) last_sent: Option<std::time::Instant>,
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

/// What quinn-proto reported for a connection since it was last driven.
#[derive(Debug, Default)]
pub(crate) struct Polled {
    /// The handshake completed (a client's session's first message is due).
    pub(crate) connected: bool,
    /// TLS negotiated the application protocol ([`Path::alpn`], [`Path::plain`]).
    pub(crate) negotiated: bool,
    /// The connection was lost (not closed by this side).
    pub(crate) lost: Option<quinn_proto::ConnectionError>,
    /// Raw datagrams may be sent again.
    pub(crate) raw_writable: bool,
}

impl Path {
    /// A path for `conn`, boxed: a path is several KiB (QUIC's connection among them),
    /// and the maps that hold paths keep room for several entries per node.
    pub(crate) fn new(
        key: ConnKey,
        conn: Connection,
        id: PathId,
        side: quinn_proto::Side,
        span: tracing::Span,
        control_rate: u32,
    ) -> Box<Self> {
        Box::new(Self {
            remote: conn.remote_address(),
            conn,
            id,
            key,
            side,
            span,
            control: None,
            control_rx: ControlDecoder::default(),
            control_tx: Vec::new(),
            signal: CarrierTx::default(),
            carriers: Vec::new(),
            finishing: Vec::new(),
            assignment: FxHashMap::default(),
            refused: None,
            rx: FxHashMap::default(),
            readable: Vec::new(),
            control_readable: false,
            counters: PathCounters::default(),
            health: Health::default(),
            heard: 0,
            stream_frames: 0,
            release_epoch: 0,
            loss_mark: (0, 0),
            probes: 0,
            used: 0,
            control_budget: TokenBucket::new(control_rate),
            closing: false,
            alpn: None,
            plain: false,
            plain_events: Vec::new(),
            raw_blocked: false,
            last_sent: None,
            delegated: BTreeMap::new(),
            copy: CarrierTx::default(),
            sendable: Vec::new(),
            pieces: Vec::new(),
            rx_pieces: Vec::new(),
            headers: BytesMut::new(),
        })
    }

    /// Starts probing the path's health with `config`'s interval and threshold. Once idle,
    /// QUIC's keep-alive probes it if it runs at least every third of the idle timeout;
    /// else the client sends a `Ping` that often.
    pub(crate) fn start_health(&mut self, now: std::time::Instant, config: &crate::Config) {
        let interval = config.path_health_check_interval;
        self.health
            .start(now, interval, config.path_failure_threshold);
        let cadence = config.idle_timeout / 3;
        let (idle, pings) = match config.keep_alive_interval {
            Some(k) if k <= cadence => (k, false),
            _ => (cadence, self.side == quinn_proto::Side::Client),
        };
        self.health.probe_idle(idle.max(interval), pings);
    }

    /// Whether the connection is sending: it handed out a datagram within the last
    /// quarter of its round trip (2 ms at least), so that QUIC's pacing, not a lack of data,
    /// is what holds its next one. Such a connection is asked for datagrams at every
    /// output, which spreads its packets between pacing bursts.
    pub(crate) fn is_sending(&self, now: std::time::Instant) -> bool {
        let horizon = (self.conn.rtt() / 4).max(std::time::Duration::from_millis(2));
        !self.closing && self.last_sent.is_some_and(|t| now < t + horizon)
    }

    /// Tells health whether the path carried anything but probes since the last look.
    pub(crate) fn note_use(&mut self, now: std::time::Instant) {
        let c = &self.counters;
        let used = (c.frames_sent + c.frames_received + c.raw_sent + c.raw_received)
            + (c.control_sent + c.control_received - self.probes);
        if used != self.used {
            self.used = used;
            self.health.on_busy(now);
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
    /// Takes quinn-proto's events for the connection: accepts the carriers the peer
    /// opened, marks readable ones, and notes progress for the health check.
    pub(crate) fn poll_quic(&mut self, now: std::time::Instant) -> PathResult<Polled> {
        let server = self.side == quinn_proto::Side::Server;
        let mut polled = Polled::default();
        while let Some(event) = self.conn.poll() {
            match event {
                quinn_proto::Event::Connected => polled.connected = true,
                quinn_proto::Event::ConnectionLost { reason } => polled.lost = Some(reason),
                quinn_proto::Event::HandshakeDataReady => {
                    self.alpn = self
                        .conn
                        .crypto_session()
                        .handshake_data()
                        .and_then(|d| d.downcast::<HandshakeData>().ok())
                        .and_then(|d| d.protocol)
                        .map(Bytes::from);
                    self.plain = self.alpn.as_deref().is_some_and(|a| a != crate::ALPN);
                    polled.negotiated = true;
                }
                quinn_proto::Event::Stream(e) if self.plain => self.plain_events.push(e),
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Opened { .. }) => {
                    self.accept_streams(server)?;
                }
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Readable { id }) => {
                    self.mark_readable(id);
                }
                quinn_proto::Event::DatagramsUnblocked => {
                    self.raw_blocked = false;
                    polled.raw_writable = true;
                }
                quinn_proto::Event::Stream(_) | quinn_proto::Event::DatagramReceived => {}
            }
        }
        self.note_progress(now);
        Ok(polled)
    }

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

    /// 32 bytes of keying material exported from this connection's TLS session.
    pub(crate) fn exporter(&self) -> Option<[u8; crate::join::EXPORTER_LEN]> {
        let mut out = [0u8; crate::join::EXPORTER_LEN];
        self.conn
            .crypto_session()
            .export_keying_material(&mut out, crate::join::EXPORTER_LABEL, b"")
            .ok()?;
        Some(out)
    }

    /// Whether QUIC refused bytes this path holds: its send window is full.
    pub(crate) fn is_backlogged(&self) -> bool {
        self.carriers
            .iter()
            .chain(&self.finishing)
            .any(|c| !c.pending.is_empty())
    }

    /// Carriers open for writing (a QUIC stream each, its fin not sent yet).
    pub(crate) fn carrier_count(&self) -> usize {
        self.carriers.iter().filter(|c| c.id.is_some()).count() + self.finishing.len()
    }

    /// Logical streams holding a carrier slot on this path.
    pub(crate) fn assigned_streams(&self) -> usize {
        self.assignment.len()
    }

    /// Once TLS named the protocol, lets the peer open the QUIC streams its mode needs
    /// (the transport parameters granted what both modes allow): a KWIK path its carriers,
    /// a plain connection as many streams as `config` allows logical streams.
    pub(crate) fn set_stream_limits(&mut self, config: &crate::Config) {
        use crate::config::count;
        if self.plain {
            self.conn
                .set_max_concurrent_streams(Dir::Bi, count(config.max_concurrent_bidi_streams));
            self.conn
                .set_max_concurrent_streams(Dir::Uni, count(config.max_concurrent_uni_streams));
        } else if config.kwik_uni_streams() > config.max_concurrent_uni_streams {
            self.conn
                .set_max_concurrent_streams(Dir::Uni, count(config.kwik_uni_streams()));
        }
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
        self.finishing.clear();
        self.delegated.clear();
        self.copy.pending.clear();
        self.rx.clear();
        self.readable.clear();
        self.control_readable = false;
        self.plain_events.clear();
    }
}
