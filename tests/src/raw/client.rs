//! The raw client: TLS with the KWIK ALPN, a Hello if the test wants one, then whatever
//! bytes the test writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kwik_core::EcnCodepoint;
use kwik_core::control::ControlDecoder;
use kwik_proto::control_frame::Kind;
use kwik_proto::{Hello, Limits, Welcome};
use quinn_proto::{Connection, ConnectionError, DatagramEvent, Dir, StreamEvent, StreamId, VarInt};

use super::{Quic, control_frame, flush_outgoing};
use crate::net::Datagram;

/// A bare QUIC client on the simulated network.
pub struct RawPeer {
    /// Its address.
    pub addr: SocketAddr,
    /// The QUIC handshake completed.
    pub connected: bool,
    /// Why the connection ended, once it did.
    pub lost: Option<ConnectionError>,
    /// The control stream (the first bidirectional stream), once opened.
    pub control: Option<StreamId>,
    control_rx: ControlDecoder,
    /// Control messages the server sent, in order.
    pub control_messages: Vec<Kind>,
    /// The control stream did not decode.
    pub control_error: Option<String>,
    /// Whether the peer reads the server's control stream (a hostile peer may stop).
    pub read_control: bool,
    /// Whether the peer answers the server's health checks (`Ping`) with a `Pong`.
    pub answer_pings: bool,
    /// Bytes received on streams the server opened (its carriers), by stream.
    pub carrier_bytes: BTreeMap<StreamId, u64>,
    /// Every chunk received on any stream, in order, if recording (fuzz seeds).
    pub recorded: Option<Vec<(StreamId, Bytes)>>,
    quic: Quic,
}

impl RawPeer {
    /// A peer at `addr` whose QUIC randomness comes from `seed`.
    pub fn new(addr: SocketAddr, seed: [u8; 32]) -> Self {
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
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
            control_messages: Vec::new(),
            control_error: None,
            read_control: true,
            answer_pings: false,
            carrier_bytes: BTreeMap::new(),
            recorded: None,
        }
    }

    /// Starts the QUIC handshake with `remote`.
    pub fn connect(
        &mut self,
        now: Instant,
        config: quinn_proto::ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) {
        let conn = self
            .quic
            .endpoint
            .connect(now, config, remote, server_name)
            .expect("connect");
        self.quic.conn = Some(conn);
    }

    /// The QUIC connection, once connecting.
    pub fn conn(&mut self) -> Option<&mut Connection> {
        self.quic.conn()
    }

    /// The connection's TLS keying material for join proofs (see [`kwik_core::join`]),
    /// once the handshake completed.
    pub fn exporter(&mut self) -> Option<[u8; kwik_core::join::EXPORTER_LEN]> {
        let mut out = [0u8; kwik_core::join::EXPORTER_LEN];
        self.conn()?
            .crypto_session()
            .export_keying_material(&mut out, kwik_core::join::EXPORTER_LABEL, b"")
            .ok()?;
        Some(out)
    }

    /// The application error code the connection was closed with, if it was.
    pub fn close_code(&self) -> Option<VarInt> {
        match &self.lost {
            Some(ConnectionError::ApplicationClosed(close)) => Some(close.error_code),
            _ => None,
        }
    }

    /// The server's Welcome, once received.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.control_messages.iter().find_map(|k| match k {
            Kind::Welcome(w) => Some(w),
            _ => None,
        })
    }

    /// Opens a QUIC stream.
    pub fn open(&mut self, dir: Dir) -> Option<StreamId> {
        self.quic.open(dir)
    }

    /// Queues bytes on a stream this peer opened; sent as QUIC credit allows.
    pub fn write(&mut self, id: StreamId, data: impl Into<Bytes>) {
        self.quic.write(id, data.into());
    }

    /// Finishes a stream after its queued bytes.
    pub fn finish(&mut self, id: StreamId) {
        self.quic.finish(id);
    }

    /// Opens the control stream (the first bidirectional stream) without writing to it.
    pub fn open_control(&mut self) {
        let id = self.open(Dir::Bi).expect("server allows a control stream");
        self.control = Some(id);
    }

    /// Opens the control stream and queues a Hello with `limits`, as a KWIK client does.
    pub fn hello(&mut self, limits: Limits) {
        self.open_control();
        let id = self.control.expect("control stream open");
        let hello = Kind::Hello(Hello {
            version: kwik_proto::VERSION,
            limits: Some(limits),
            ..Hello::default()
        });
        self.write(id, control_frame(Some(hello)));
    }

    /// Queues raw bytes on the control stream.
    pub fn write_control(&mut self, data: impl Into<Bytes>) {
        let id = self.control.expect("control stream open");
        self.write(id, data);
    }

    /// Opens a carrier (a unidirectional QUIC stream) and queues `data` on it.
    pub fn carrier(&mut self, data: impl Into<Bytes>) -> StreamId {
        let id = self.open(Dir::Uni).expect("server allows a carrier");
        self.write(id, data);
        id
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
            Some(DatagramEvent::NewConnection(incoming)) => self.quic.endpoint.ignore(incoming),
            None => {}
        }
        self.quic.buf = buf;
        self.drive();
    }

    /// When [`RawPeer::handle_timeout`] must next be called.
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

    /// Processes connection events, reads what arrived and writes what is queued.
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
        while let Some(event) = conn.poll() {
            match event {
                quinn_proto::Event::Connected => self.connected = true,
                quinn_proto::Event::ConnectionLost { reason } => {
                    self.lost.get_or_insert(reason);
                }
                quinn_proto::Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = conn.streams().accept(dir) {
                        readable.push(id);
                    }
                }
                quinn_proto::Event::Stream(StreamEvent::Readable { id }) => readable.push(id),
                _ => {}
            }
        }
        for id in readable {
            if Some(id) == self.control && !self.read_control {
                continue;
            }
            let mut stream = conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                continue;
            };
            while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                if let Some(log) = &mut self.recorded {
                    log.push((id, chunk.bytes.clone()));
                }
                if Some(id) == self.control {
                    self.control_rx.push(&chunk.bytes);
                } else {
                    *self.carrier_bytes.entry(id).or_default() += chunk.bytes.len() as u64;
                }
            }
            let _ = chunks.finalize();
        }
        loop {
            match self.control_rx.next_frame() {
                Ok(Some(Kind::Ping(ping))) if self.answer_pings => {
                    if let Some(control) = self.control {
                        let pong =
                            control_frame(Some(Kind::Pong(kwik_proto::Pong { seq: ping.seq })));
                        self.quic
                            .outgoing
                            .entry(control)
                            .or_default()
                            .data
                            .push_back(pong.into());
                    }
                    self.control_messages.push(Kind::Ping(ping));
                }
                Ok(Some(kind)) => self.control_messages.push(kind),
                Ok(None) => break,
                Err(e) => {
                    self.control_error = Some(e.to_string());
                    break;
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

    /// Whether the connection is gone for good.
    pub fn is_drained(&self) -> bool {
        self.quic.conn.is_none()
    }
}
