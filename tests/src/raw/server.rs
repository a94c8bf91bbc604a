//! The raw server: it welcomes one client, then writes whatever control frames the test
//! queues and records what the client sends.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kwik_core::EcnCodepoint;
use kwik_core::control::ControlDecoder;
use kwik_proto::control_frame::Kind;
use kwik_proto::{JoinResult, Limits, Pong, Welcome};
use quinn_proto::{Connection, ConnectionError, DatagramEvent, Dir, StreamEvent, StreamId, VarInt};

use super::{Quic, control_frame, default_limits, flush_outgoing};
use crate::net::Datagram;

/// A bare QUIC server on the simulated network, for hostile-primary scenarios: it accepts
/// one connection, answers the client's Hello with a Welcome (and its Pings with Pongs,
/// so the client keeps the path alive), then writes whatever control frames the test
/// queues and records every control frame the client sends.
///
/// Register one with [`RawHosts::add_raw_server`](crate::sim::RawHosts::add_raw_server).
pub struct RawServer {
    /// Its address.
    pub addr: SocketAddr,
    /// The QUIC handshake completed.
    pub connected: bool,
    /// Why the connection ended, once it did.
    pub lost: Option<ConnectionError>,
    /// The control stream (the first bidirectional stream the client opened).
    pub control: Option<StreamId>,
    control_rx: ControlDecoder,
    /// Control messages the client sent, in order.
    pub received: Vec<Kind>,
    /// The client's control stream did not decode.
    pub control_error: Option<String>,
    /// The session id the Welcome announces.
    pub session_id: u64,
    /// The limits the Welcome grants.
    pub limits: Limits,
    /// Whether a Hello is answered with a Welcome.
    pub welcome: bool,
    /// Whether Pings are answered with Pongs.
    pub answer_pings: bool,
    /// A Welcome was queued.
    pub welcomed: bool,
    /// Connection attempts turned away because one connection was already accepted.
    pub turned_away: u64,
    /// Whether a `Join` is answered with an accepting `JoinResult` (a raw secondary; the
    /// proof is not checked).
    pub accept_joins: bool,
    /// Every chunk received on any stream, in order, if recording (fuzz seeds); streams
    /// other than the control stream are read only while recording.
    pub recorded: Option<Vec<(StreamId, Bytes)>>,
    control_tx: VecDeque<Bytes>,
    quic: Quic,
}

impl RawServer {
    /// A server at `addr` serving `config`, its QUIC randomness from `seed`.
    pub fn new(addr: SocketAddr, config: quinn_proto::ServerConfig, seed: [u8; 32]) -> Self {
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            Some(Arc::new(config)),
            false,
            Some(seed),
        );
        Self {
            addr,
            quic: Quic::new(addr, endpoint),
            connected: false,
            lost: None,
            control: None,
            control_rx: ControlDecoder::default(),
            received: Vec::new(),
            control_error: None,
            session_id: 0x5e55_1011,
            limits: Limits {
                max_paths: 8,
                ..default_limits()
            },
            welcome: true,
            answer_pings: true,
            welcomed: false,
            turned_away: 0,
            accept_joins: false,
            recorded: None,
            control_tx: VecDeque::new(),
        }
    }

    /// The QUIC connection, once accepted.
    pub fn conn(&mut self) -> Option<&mut Connection> {
        self.quic.conn()
    }

    /// Queues one control message for the client, sent once the control stream exists.
    pub fn send_control(&mut self, kind: Kind) {
        self.control_tx
            .push_back(Bytes::from(control_frame(Some(kind))));
    }

    /// Queues raw bytes on the control stream.
    pub fn write_control(&mut self, data: impl Into<Bytes>) {
        self.control_tx.push_back(data.into());
    }

    /// Opens a QUIC stream of this server's.
    pub fn open(&mut self, dir: Dir) -> Option<StreamId> {
        self.quic.open(dir)
    }

    /// Queues bytes on a stream this server opened; sent as QUIC credit allows.
    pub fn write(&mut self, id: StreamId, data: impl Into<Bytes>) {
        self.quic.write(id, data.into());
    }

    /// Finishes a stream after its queued bytes.
    pub fn finish(&mut self, id: StreamId) {
        self.quic.finish(id);
    }

    /// Bytes queued on the control stream and not yet handed to QUIC.
    pub fn unsent(&self) -> usize {
        self.control_tx.iter().map(Bytes::len).sum()
    }

    /// Closes the connection with an application `code`.
    pub fn close(&mut self, now: Instant, code: VarInt, reason: &[u8]) {
        if let Some(conn) = self.conn() {
            conn.close(now, code, Bytes::copy_from_slice(reason));
        }
        self.drive();
    }

    /// Feeds one datagram from the network.
    pub fn handle_datagram(&mut self, now: Instant, dg: Datagram) {
        let ecn = dg.ecn.and_then(EcnCodepoint::from_bits);
        let mut buf = std::mem::take(&mut self.quic.buf);
        buf.clear();
        let event = self.quic.endpoint.handle(
            now,
            dg.src,
            Some(self.addr.ip()),
            ecn,
            BytesMut::from(&dg.data[..]),
            &mut buf,
        );
        match event {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some((h, conn)) = &mut self.quic.conn
                    && *h == ch
                {
                    conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(t)) => self.quic.responses.push_back(Datagram {
                src: self.addr,
                dst: t.destination,
                ecn: t.ecn.map(|e| e as u8),
                data: buf[..t.size].to_vec(),
            }),
            Some(DatagramEvent::NewConnection(incoming)) => {
                if self.quic.conn.is_some() || self.lost.is_some() {
                    self.turned_away += 1;
                    self.quic.endpoint.ignore(incoming);
                } else {
                    buf.clear();
                    match self.quic.endpoint.accept(incoming, now, &mut buf, None) {
                        Ok(conn) => self.quic.conn = Some(conn),
                        Err(e) => {
                            if let Some(t) = e.response {
                                self.quic.responses.push_back(Datagram {
                                    src: self.addr,
                                    dst: t.destination,
                                    ecn: t.ecn.map(|e| e as u8),
                                    data: buf[..t.size].to_vec(),
                                });
                            }
                        }
                    }
                }
            }
            None => {}
        }
        self.quic.buf = buf;
        self.drive();
    }

    /// When [`RawServer::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.quic.poll_timeout()
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.quic.handle_timeout(now);
        self.drive();
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        self.drive();
        self.quic.poll_transmit(now)
    }

    /// Processes connection events, reads the control stream, answers the Hello and the
    /// Pings, and writes what is queued.
    pub fn drive(&mut self) {
        let Some((ch, conn)) = &mut self.quic.conn else {
            return;
        };
        while let Some(event) = conn.poll_endpoint_events() {
            if let Some(reply) = self.quic.endpoint.handle_event(*ch, event) {
                conn.handle_event(reply);
            }
        }
        let mut readable = Vec::new();
        let recording = self.recorded.is_some();
        while let Some(event) = conn.poll() {
            match event {
                quinn_proto::Event::Connected => self.connected = true,
                quinn_proto::Event::ConnectionLost { reason } => {
                    self.lost.get_or_insert(reason);
                }
                quinn_proto::Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = conn.streams().accept(Dir::Bi) {
                        self.control.get_or_insert(id);
                        readable.push(id);
                    }
                }
                quinn_proto::Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) if recording => {
                    while let Some(id) = conn.streams().accept(Dir::Uni) {
                        readable.push(id);
                    }
                }
                quinn_proto::Event::Stream(StreamEvent::Readable { id })
                    if Some(id) == self.control || recording =>
                {
                    readable.push(id)
                }
                _ => {}
            }
        }
        for id in readable {
            let mut stream = conn.recv_stream(id);
            if let Ok(mut chunks) = stream.read(true) {
                while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                    if let Some(log) = &mut self.recorded {
                        log.push((id, chunk.bytes.clone()));
                    }
                    if Some(id) == self.control {
                        self.control_rx.push(&chunk.bytes);
                    }
                }
                let _ = chunks.finalize();
            }
        }
        loop {
            match self.control_rx.next_frame() {
                Ok(Some(kind)) => {
                    match &kind {
                        Kind::Hello(_) if self.welcome && !self.welcomed => {
                            self.welcomed = true;
                            let welcome = Kind::Welcome(Welcome {
                                version: kwik_proto::VERSION,
                                session_id: self.session_id,
                                limits: Some(self.limits),
                                ..Welcome::default()
                            });
                            self.control_tx
                                .push_front(Bytes::from(control_frame(Some(welcome))));
                        }
                        Kind::Ping(ping) if self.answer_pings => {
                            let pong = Kind::Pong(Pong { seq: ping.seq });
                            self.control_tx
                                .push_back(Bytes::from(control_frame(Some(pong))));
                        }
                        Kind::Join(_) if self.accept_joins && !self.welcomed => {
                            self.welcomed = true;
                            let joined = Kind::JoinResult(JoinResult {
                                accepted: true,
                                code: 0,
                                reason: String::new(),
                            });
                            self.control_tx
                                .push_front(Bytes::from(control_frame(Some(joined))));
                        }
                        _ => {}
                    }
                    self.received.push(kind);
                }
                Ok(None) => break,
                Err(e) => {
                    self.control_error = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(id) = self.control {
            let mut stream = conn.send_stream(id);
            while !self.control_tx.is_empty() {
                match stream.write_chunks(self.control_tx.make_contiguous()) {
                    Ok(written) => {
                        self.control_tx.drain(..written.chunks);
                        // A partly written chunk was advanced past what QUIC took.
                        if written.bytes == 0 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        flush_outgoing(conn, &mut self.quic.outgoing);
        while let Some(event) = conn.poll_endpoint_events() {
            if let Some(reply) = self.quic.endpoint.handle_event(*ch, event) {
                conn.handle_event(reply);
            }
        }
        if conn.is_drained() {
            self.quic.conn = None;
        }
    }
}
