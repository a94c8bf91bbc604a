//! A raw QUIC peer for hostile scenarios: a bare `quinn_proto` client that speaks as much
//! KWIK as a test wants (TLS with the KWIK ALPN, a Hello on the control stream) and then
//! writes whatever bytes it likes on its streams.
//!
//! Register one with [`Sim::add_raw`](crate::sim::Sim::add_raw); the simulation loop
//! delivers its datagrams and fires its timers like those of any node.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kwik_core::control::ControlDecoder;
use kwik_core::frame::Frame;
use kwik_core::{CertificateDer, EcnCodepoint, PrivateKeyDer, rustls};
use kwik_proto::control_frame::Kind;
use kwik_proto::{ControlFrame, Hello, JoinResult, Limits, Pong, Welcome};
use prost::Message;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, StreamEvent, StreamId,
    VarInt,
};

use crate::certs::TestCert;
use crate::net::Datagram;

/// A QUIC client config with the KWIK ALPN that trusts only `roots` (TLS 1.3, ring).
pub fn client_config(roots: &[CertificateDer<'static>]) -> quinn_proto::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone()).expect("valid root certificate");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3 is supported")
    .with_root_certificates(store)
    .with_no_client_auth();
    tls.alpn_protocols = vec![kwik_core::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("TLS 1.3 config usable for QUIC");
    quinn_proto::ClientConfig::new(Arc::new(crypto))
}

/// Generous limits for a raw peer's Hello.
pub fn default_limits() -> Limits {
    Limits {
        max_data: 1 << 24,
        max_stream_data: 1 << 22,
        max_bidi_streams: 100,
        max_uni_streams: 100,
        max_paths: 1,
    }
}

/// `kind` as one length-delimited control frame.
pub fn control_frame(kind: Option<Kind>) -> Vec<u8> {
    ControlFrame { kind }.encode_length_delimited_to_vec()
}

/// The encoding of data-plane `frames`, back to back.
pub fn frames(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// Bytes queued for one QUIC stream.
#[derive(Default)]
struct Outgoing {
    data: VecDeque<Bytes>,
    fin: bool,
}

/// Hands queued bytes (and fins) to QUIC as far as its credit allows; forgets streams
/// whose every byte was taken.
fn flush_outgoing(conn: &mut Connection, outgoing: &mut BTreeMap<StreamId, Outgoing>) {
    let mut done = Vec::new();
    for (&id, out) in outgoing.iter_mut() {
        let mut stream = conn.send_stream(id);
        while !out.data.is_empty() {
            match stream.write_chunks(out.data.make_contiguous()) {
                Ok(written) => {
                    out.data.drain(..written.chunks);
                    if written.bytes == 0 {
                        break;
                    }
                }
                Err(_) => {
                    // Stopped or reset: nothing more goes out on it.
                    out.data.clear();
                    out.fin = false;
                }
            }
        }
        if out.data.is_empty() {
            if out.fin {
                let _ = stream.finish();
            }
            done.push(id);
        }
    }
    for id in done {
        outgoing.remove(&id);
    }
}

/// One bare quinn-proto endpoint with at most one connection, on the simulated network:
/// the plumbing a raw client and a raw server share.
struct Quic {
    addr: SocketAddr,
    endpoint: quinn_proto::Endpoint,
    conn: Option<(ConnectionHandle, Connection)>,
    /// Datagrams the endpoint answered on its own.
    responses: VecDeque<Datagram>,
    /// Bytes queued on streams this end opened (or the control stream of a client).
    outgoing: BTreeMap<StreamId, Outgoing>,
    buf: Vec<u8>,
}

impl Quic {
    fn new(addr: SocketAddr, endpoint: quinn_proto::Endpoint) -> Self {
        Self {
            addr,
            endpoint,
            conn: None,
            responses: VecDeque::new(),
            outgoing: BTreeMap::new(),
            buf: Vec::with_capacity(2048),
        }
    }

    fn conn(&mut self) -> Option<&mut Connection> {
        self.conn.as_mut().map(|(_, c)| c)
    }

    fn open(&mut self, dir: Dir) -> Option<StreamId> {
        self.conn()?.streams().open(dir)
    }

    fn write(&mut self, id: StreamId, data: Bytes) {
        let out = self.outgoing.entry(id).or_default();
        if !data.is_empty() {
            out.data.push_back(data);
        }
    }

    fn finish(&mut self, id: StreamId) {
        self.outgoing.entry(id).or_default().fin = true;
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn()?.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(conn) = self.conn()
            && conn.poll_timeout().is_some_and(|t| t <= now)
        {
            conn.handle_timeout(now);
        }
    }

    /// An answer of the endpoint's own, else the connection's next datagram.
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        if let Some(dg) = self.responses.pop_front() {
            return Some(dg);
        }
        let (_, conn) = self.conn.as_mut()?;
        self.buf.clear();
        let t = conn.poll_transmit(now, 1, &mut self.buf)?;
        Some(Datagram {
            src: self.addr,
            dst: t.destination,
            ecn: t.ecn.map(|e| e as u8),
            data: self.buf[..t.size].to_vec(),
        })
    }
}

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

/// A QUIC server config with the KWIK ALPN serving `cert` (TLS 1.3, ring).
pub fn server_config(cert: &TestCert) -> quinn_proto::ServerConfig {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3 is supported")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.cert.clone()],
        PrivateKeyDer::Pkcs8(cert.key.clone_key()),
    )
    .expect("valid certificate and key");
    tls.alpn_protocols = vec![kwik_core::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).expect("TLS 1.3 config usable for QUIC");
    quinn_proto::ServerConfig::with_crypto(Arc::new(crypto))
}

/// The first connection id of a client's QUIC v1 Initial packet in `datagram`, if the
/// datagram starts with one: every connection attempt picks a fresh one and keeps it for
/// its retransmissions, so distinct ids count distinct attempts.
pub fn initial_dcid(datagram: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = datagram.split_first()?;
    // Long header, fixed bit, packet type Initial (0b00).
    if first & 0xf0 != 0xc0 || rest.get(..4)? != [0, 0, 0, 1] {
        return None;
    }
    let len = usize::from(*rest.get(4)?);
    rest.get(5..5 + len)
}

/// A bare QUIC server on the simulated network, for hostile-primary scenarios: it accepts
/// one connection, answers the client's Hello with a Welcome (and its Pings with Pongs,
/// so the client keeps the path alive), then writes whatever control frames the test
/// queues and records every control frame the client sends.
///
/// Register one with [`Sim::add_raw_server`](crate::sim::Sim::add_raw_server).
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
