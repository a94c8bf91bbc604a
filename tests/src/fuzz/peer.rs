//! Fuzz scenarios in which an *established, authenticated* peer turns hostile: after an
//! honest QUIC handshake and KWIK setup, a bare quinn-proto endpoint ([`crate::raw`])
//! writes input-chosen bytes on its control stream and on carriers it opens, finishes and
//! resets streams, sends QUIC datagrams and lets time pass.
//!
//! - [`peer_client`]: a server engine faces a hostile client (after its `Hello`);
//! - [`peer_primary`]: a client engine faces a hostile primary (after its `Welcome`);
//! - [`peer_secondary`]: a client engine faces a hostile secondary it joined at the
//!   primary's request (after its `JoinResult`).
//!
//! Beside the hostile session, the engine under attack runs an honest session with a
//! KWIK engine over its own link, echoing a body on a stream. After every input the
//! scenario checks: nothing panicked, the engine holds no more sessions, streams or
//! buffered bytes than its configuration allows, a session it closed was closed with a
//! typed KWIK error, and the honest session is alive and its echo arrived intact.
//!
//! Every random choice comes from the input: the first bytes seed the simulated network
//! and the QUIC endpoints. The fuzz targets in `fuzz/` call these functions, and
//! `tests/tests/sim_hostile/fuzz_peer_corpus.rs` replays the committed corpora through them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kwik_core::{
    CertificateDer, ClientConfig, Config, Dir, ErrorCode, PrivateKeyDer, PrivatePkcs8KeyDer,
    ServerConfig, SessionError, SessionHandle, StreamId, VarInt,
};
use kwik_proto::AddPath;
use kwik_proto::control_frame::Kind;
use quinn_proto::StreamId as QuicStream;
use quinn_proto::crypto::rustls::QuicServerConfig;

use super::{CERT_DER, KEY_DER};
use crate::app::{App, payload, sha256};
use crate::net::LinkConfig;
use crate::raw::{RawPeer, RawServer, client_config, default_limits};
use crate::sim::{NodeId, Sim, WALL_CLOCK_START, addr, drive_until};

/// What the client application asks the hostile primary for.
const REQUEST: &[u8] = b"GET /";

/// Bytes of the honest session's echo.
const ECHO_LEN: usize = 48 * 1024;

/// The engine's limits: small, so that inputs reach them.
fn engine_config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 64 * 1024;
    c.receive_window = 256 * 1024;
    c.max_concurrent_bidi_streams = 16;
    c.max_concurrent_uni_streams = 16;
    c.max_reassembly_gaps = 32;
    c.max_carriers_per_path = 8;
    c.max_paths_per_session = 4;
    c
}

fn cert() -> CertificateDer<'static> {
    CertificateDer::from(CERT_DER.to_vec())
}

fn server_config(config: Config) -> ServerConfig {
    ServerConfig::with_single_cert(
        vec![cert()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY_DER.to_vec())),
        config,
    )
    .expect("valid server config")
}

fn client_config_engine(config: Config) -> ClientConfig {
    ClientConfig::with_root_certificates([cert()], config).expect("valid client config")
}

fn raw_server_config() -> quinn_proto::ServerConfig {
    let mut tls = kwik_core::rustls::ServerConfig::builder_with_provider(Arc::new(
        kwik_core::rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&kwik_core::rustls::version::TLS13])
    .expect("TLS 1.3 is supported")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY_DER.to_vec())),
    )
    .expect("valid certificate and key");
    tls.alpn_protocols = vec![kwik_core::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).expect("TLS 1.3 config usable for QUIC");
    quinn_proto::ServerConfig::with_crypto(Arc::new(crypto))
}

/// The input, read front to back; past its end every read is empty.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// The hostile end: a raw client or a raw server.
enum Hostile {
    Client(usize),
    Server(usize),
}

/// Which engine is attacked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Client,
    Primary,
    Secondary,
}

/// What one run saw, for reports and tests.
#[derive(Debug, Default, Clone)]
pub struct PeerReport {
    /// Operations applied.
    pub ops: u64,
    /// Whether the engine closed the hostile session, and with which error.
    pub closed: Option<String>,
    /// Whether the hostile side's connection was closed by the engine.
    pub connection_closed: bool,
}

struct World {
    sim: Sim,
    /// The engine under attack and its application.
    engine: NodeId,
    app: App,
    /// The honest KWIK engine of the other session and its application.
    honest: NodeId,
    honest_app: App,
    hostile: Hostile,
    /// The engine's session with the hostile side, once it exists.
    hostile_session: Option<SessionHandle>,
    /// The honest session's handle on the engine, and the echo stream on its client side.
    honest_session: Option<SessionHandle>,
    echo: Option<(NodeId, SessionHandle, StreamId)>,
    /// Streams the hostile side opened.
    streams: Vec<QuicStream>,
}

fn wire_config(bits: u8) -> LinkConfig {
    let link = LinkConfig::default().rate_mbit(50).delay_ms(5);
    if bits & 1 != 0 { link.loss(0.02) } else { link }
}

impl World {
    fn sim(w: &mut World) -> &mut Sim {
        &mut w.sim
    }

    /// Moves every event to the applications.
    fn pump(&mut self) {
        let events = self.sim.take_events(self.engine);
        for e in &events {
            if let kwik_core::Event::Incoming(h) | kwik_core::Event::Connected(h) = e
                && Some(*h) != self.honest_session
            {
                self.hostile_session.get_or_insert(*h);
            }
        }
        self.app
            .poll(&mut self.sim.nodes[self.engine].endpoint, events);
        let events = self.sim.take_events(self.honest);
        self.honest_app
            .poll(&mut self.sim.nodes[self.honest].endpoint, events);
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut World) -> bool) -> bool {
        drive_until(self, limit, World::sim, |w| {
            w.pump();
            done(w)
        })
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        self.run_until(d, |w| w.sim.now() >= end);
    }

    fn peer(&mut self) -> Option<&mut RawPeer> {
        match self.hostile {
            Hostile::Client(i) => Some(&mut self.sim.hosts.raw[i]),
            Hostile::Server(_) => None,
        }
    }

    fn raw_server(&mut self) -> Option<&mut RawServer> {
        match self.hostile {
            Hostile::Server(i) => Some(&mut self.sim.hosts.raw_servers[i]),
            Hostile::Client(_) => None,
        }
    }

    fn conn(&mut self) -> Option<&mut quinn_proto::Connection> {
        match self.hostile {
            Hostile::Client(i) => self.sim.hosts.raw[i].conn(),
            Hostile::Server(i) => self.sim.hosts.raw_servers[i].conn(),
        }
    }

    fn open(&mut self, dir: Dir) -> Option<QuicStream> {
        let id = self.conn()?.streams().open(dir)?;
        self.streams.push(id);
        Some(id)
    }

    fn write(&mut self, id: QuicStream, data: Bytes) {
        match self.hostile {
            Hostile::Client(i) => self.sim.hosts.raw[i].write(id, data),
            Hostile::Server(i) => self.sim.hosts.raw_servers[i].write(id, data),
        }
    }

    fn finish(&mut self, id: QuicStream) {
        match self.hostile {
            Hostile::Client(i) => self.sim.hosts.raw[i].finish(id),
            Hostile::Server(i) => self.sim.hosts.raw_servers[i].finish(id),
        }
    }

    fn write_control(&mut self, data: Bytes) {
        if let Some(p) = self.peer() {
            if p.control.is_some() {
                p.write_control(data);
            }
        } else if let Some(s) = self.raw_server() {
            s.write_control(data);
        }
    }

    /// Starts the honest session's echo: `client` opens a stream on `session` and
    /// writes [`ECHO_LEN`] bytes and a fin; the server side echoes them.
    fn start_echo(&mut self, client: NodeId, session: SessionHandle, seed: u64) {
        let ep = &mut self.sim.nodes[client].endpoint;
        let id = ep
            .session(session)
            .and_then(|mut s| s.open(Dir::Bi))
            .expect("the honest session opens a stream");
        let app = if client == self.engine {
            &mut self.app
        } else {
            &mut self.honest_app
        };
        app.send(ep, session, id, payload(seed, ECHO_LEN), true);
        self.echo = Some((client, session, id));
    }

    /// Whether the echo came back whole.
    fn echo_done(&self) -> bool {
        let Some((client, session, id)) = self.echo else {
            return false;
        };
        let app = if client == self.engine {
            &self.app
        } else {
            &self.honest_app
        };
        app.received.get(&(session, id)).is_some_and(|r| r.finished)
    }

    /// Applies the input's operations, running the network a little after each.
    fn apply(&mut self, input: &mut Input<'_>, report: &mut PeerReport) {
        while let Some(op) = input.byte() {
            report.ops += 1;
            let arg = input.byte().unwrap_or(0);
            match op % 10 {
                // Raw bytes on the control stream.
                0 => {
                    let data = Bytes::copy_from_slice(input.bytes(arg as usize));
                    self.write_control(data);
                }
                // A length-prefixed control frame whose body is the input's.
                1 => {
                    let body = input.bytes(arg as usize);
                    let mut frame = Vec::with_capacity(body.len() + 2);
                    prost::encoding::encode_varint(body.len() as u64, &mut frame);
                    frame.extend_from_slice(body);
                    self.write_control(Bytes::from(frame));
                }
                // A new carrier (unidirectional) or bidirectional stream with bytes.
                2 | 3 => {
                    let dir = if op % 10 == 2 { Dir::Uni } else { Dir::Bi };
                    let data = Bytes::copy_from_slice(input.bytes(arg as usize));
                    if let Some(id) = self.open(dir) {
                        self.write(id, data);
                    }
                }
                // More bytes on a stream opened before.
                4 => {
                    let pick = input.byte().unwrap_or(0) as usize;
                    let data = Bytes::copy_from_slice(input.bytes(arg as usize));
                    if let Some(&id) = self.streams.get(pick % self.streams.len().max(1)) {
                        self.write(id, data);
                    }
                }
                // A flood: one chunk written `arg` × 16 times on one stream.
                5 => {
                    let pick = input.byte().unwrap_or(0) as usize;
                    let len = input.byte().unwrap_or(0) as usize;
                    let chunk = Bytes::copy_from_slice(input.bytes(len));
                    if let Some(&id) = self.streams.get(pick % self.streams.len().max(1)) {
                        for _ in 0..arg as usize * 16 {
                            self.write(id, chunk.clone());
                        }
                    }
                }
                // Finish a stream.
                6 => {
                    if let Some(&id) = self.streams.get(arg as usize % self.streams.len().max(1)) {
                        self.finish(id);
                    }
                }
                // Reset a stream, or stop reading one the engine opened.
                7 => {
                    let code = VarInt::from_u32(u32::from(input.byte().unwrap_or(0)));
                    let pick = arg as usize;
                    let own = self.streams.get(pick % self.streams.len().max(1)).copied();
                    // A stream the engine opened toward the hostile side.
                    let engine_side = match self.hostile {
                        Hostile::Client(_) => quinn_proto::Side::Server,
                        Hostile::Server(_) => quinn_proto::Side::Client,
                    };
                    if let Some(conn) = self.conn() {
                        match own {
                            Some(id) if pick.is_multiple_of(2) => {
                                let _ = conn.send_stream(id).reset(code);
                            }
                            _ => {
                                let id =
                                    QuicStream::new(engine_side, Dir::Uni, u64::from(arg >> 1));
                                let _ = conn.recv_stream(id).stop(code);
                            }
                        }
                    }
                }
                // A QUIC datagram (a raw datagram on this path).
                8 => {
                    let data = Bytes::copy_from_slice(input.bytes(arg as usize));
                    if let Some(conn) = self.conn() {
                        let _ = conn.datagrams().send(data, true);
                    }
                }
                // Let time pass.
                _ => self.run_for(Duration::from_millis(u64::from(arg) * 8)),
            }
            self.run_for(Duration::from_millis(2));
        }
    }

    /// The invariants that hold after any input.
    fn check(&mut self, target: Target, report: &mut PeerReport) {
        let config = engine_config();
        let ep = &mut self.sim.nodes[self.engine].endpoint;
        assert!(
            ep.session_count() <= 2,
            "{} sessions on the engine",
            ep.session_count()
        );
        for h in [self.hostile_session, self.honest_session]
            .into_iter()
            .flatten()
        {
            let Some(s) = ep.session(h) else { continue };
            let stats = s.stats();
            let streams = config.max_concurrent_bidi_streams + config.max_concurrent_uni_streams;
            assert!(
                stats.streams_open <= streams,
                "{} streams open, the limit is {streams}",
                stats.streams_open
            );
            // Unread bytes: the session window, plus one stream window for the bytes of a
            // stripe the client pulls beyond it.
            let unread = config.receive_window + config.stream_receive_window;
            assert!(
                stats.bytes_unread <= unread,
                "{} bytes unread, above {unread}",
                stats.bytes_unread
            );
            assert!(
                stats.paths.len() <= 2 * config.max_paths_per_session as usize,
                "{} paths",
                stats.paths.len()
            );
            for p in &stats.paths {
                assert!(
                    p.carriers <= config.max_carriers_per_path as usize + 1,
                    "{} carriers on {:?}",
                    p.carriers,
                    p.id
                );
            }
        }
        // A session the engine ended, it ended with a typed error.
        if let Some((_, error)) = self
            .app
            .closed
            .iter()
            .find(|(h, _)| Some(*h) == self.hostile_session)
        {
            match error {
                SessionError::ProtocolViolation(e) => assert_ne!(
                    e.code,
                    ErrorCode::Internal,
                    "an internal error is a bug: {e}"
                ),
                SessionError::LocallyClosed => panic!("closed without a reason"),
                _ => {}
            }
            report.closed = Some(error.to_string());
        }
        report.connection_closed = match self.hostile {
            Hostile::Client(i) => self.sim.hosts.raw[i].lost.is_some(),
            Hostile::Server(i) => self.sim.hosts.raw_servers[i].lost.is_some(),
        };
        // The honest session: alive, and its echo arrives whole.
        let done = self.run_until(Duration::from_secs(20), |w| w.echo_done());
        let honest_closed: Vec<_> = self
            .app
            .closed
            .iter()
            .filter(|(h, _)| Some(*h) == self.honest_session)
            .chain(&self.honest_app.closed)
            .collect();
        assert!(
            honest_closed.is_empty(),
            "{target:?}: the honest session closed: {honest_closed:?}"
        );
        assert!(done, "{target:?}: the honest echo did not complete");
        let (client, session, id) = self.echo.expect("echo started");
        let app = if client == self.engine {
            &self.app
        } else {
            &self.honest_app
        };
        let r = &app.received[&(session, id)];
        assert_eq!(r.bytes, ECHO_LEN as u64, "the echo's length");
        assert_eq!(
            r.digest(),
            sha256(&payload(7, ECHO_LEN)),
            "the echo's bytes"
        );
    }
}

/// The engine's address, the honest peer's and the hostile peers'.
const ENGINE: [u8; 4] = [10, 0, 0, 1];
const HONEST: [u8; 4] = [10, 0, 1, 1];
const HOSTILE: [u8; 4] = [10, 0, 2, 1];
const HOSTILE_SECONDARY: [u8; 4] = [10, 0, 3, 1];

fn seed_of(input: &mut Input<'_>) -> (u64, u8) {
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&{
        let b = input.bytes(8);
        let mut s = [0u8; 8];
        s[..b.len()].copy_from_slice(b);
        s
    });
    (u64::from_le_bytes(seed), input.byte().unwrap_or(0))
}

/// A server engine faces a hostile client that completed the handshake and its `Hello`.
pub fn peer_client(data: &[u8]) -> PeerReport {
    let mut input = Input { data };
    let (seed, bits) = seed_of(&mut input);
    let mut sim = Sim::new(seed);
    let server_addr = addr(ENGINE, 4433);
    let honest_addr = addr(HONEST, 5000);
    let hostile_addr = addr(HOSTILE, 6000);
    sim.net
        .link(server_addr.ip(), honest_addr.ip(), wire_config(0));
    sim.net
        .link(server_addr.ip(), hostile_addr.ip(), wire_config(bits));
    let engine = sim.add_node(server_addr, Some(server_config(engine_config())));
    let honest = sim.add_node(honest_addr, None);
    let peer = sim.hosts.add_raw(hostile_addr);
    let now = sim.now();
    sim.hosts.raw[peer].connect(now, client_config(&[cert()]), server_addr, "localhost");
    let mut w = World {
        sim,
        engine,
        app: App::echo(),
        honest,
        honest_app: App::keeping(),
        hostile: Hostile::Client(peer),
        hostile_session: None,
        honest_session: None,
        echo: None,
        streams: Vec::new(),
    };
    let up = w.run_until(Duration::from_secs(5), |w| w.sim.hosts.raw[peer].connected);
    assert!(up, "handshake: {:?}", w.sim.hosts.raw[peer].lost);
    w.sim.hosts.raw[peer].answer_pings = bits & 2 == 0;
    w.sim.hosts.raw[peer].hello(default_limits());
    let welcomed = w.run_until(Duration::from_secs(5), |w| {
        w.sim.hosts.raw[peer].welcome().is_some() && w.hostile_session.is_some()
    });
    assert!(
        welcomed,
        "Hello not welcomed: {:?}",
        w.sim.hosts.raw[peer].lost
    );
    if let Some(control) = w.sim.hosts.raw[peer].control {
        w.streams.push(control);
    }
    // The honest client connects second and starts its echo.
    let now = w.sim.now();
    let h = w.sim.nodes[honest]
        .endpoint
        .connect(
            now,
            &client_config_engine(Config::default()),
            server_addr,
            "localhost",
        )
        .expect("connect");
    let hostile_before = w.hostile_session;
    let up = w.run_until(Duration::from_secs(5), |w| {
        w.honest_app.sessions.contains(&h) && w.app.sessions.len() >= 2
    });
    assert!(up, "the honest session did not come up");
    w.honest_session = w
        .app
        .sessions
        .iter()
        .copied()
        .find(|s| Some(*s) != hostile_before);
    w.hostile_session = hostile_before;
    w.start_echo(honest, h, 7);
    let mut report = PeerReport::default();
    w.apply(&mut input, &mut report);
    w.run_for(Duration::from_secs(1));
    w.check(Target::Client, &mut report);
    report
}

/// A client engine with two sessions: one to a raw primary at [`HOSTILE`], one to an
/// honest server at [`HONEST`] whose echo runs.
fn client_world(seed: u64, bits: u8) -> World {
    let mut sim = Sim::new(seed);
    let client_addr = addr(ENGINE, 5000);
    let honest_addr = addr(HONEST, 4433);
    let primary_addr = addr(HOSTILE, 4433);
    let secondary_addr = addr(HOSTILE_SECONDARY, 4433);
    sim.net
        .link(client_addr.ip(), honest_addr.ip(), wire_config(0));
    sim.net
        .link(client_addr.ip(), primary_addr.ip(), wire_config(bits));
    sim.net.link(
        client_addr.ip(),
        secondary_addr.ip(),
        wire_config(bits >> 1),
    );
    let engine = sim.add_node(client_addr, None);
    let honest = sim.add_node(honest_addr, Some(server_config(Config::default())));
    let primary = sim.hosts.add_raw_server(primary_addr, raw_server_config());
    sim.hosts.raw_servers[primary].answer_pings = bits & 4 == 0;
    let mut w = World {
        sim,
        engine,
        app: App::default(),
        honest,
        honest_app: App::echo(),
        hostile: Hostile::Server(primary),
        hostile_session: None,
        honest_session: None,
        echo: None,
        streams: Vec::new(),
    };
    let now = w.sim.now();
    let config = client_config_engine(engine_config());
    let ep = &mut w.sim.nodes[engine].endpoint;
    let hostile = ep
        .connect(now, &config, primary_addr, "localhost")
        .expect("connect");
    let h = ep
        .connect(now, &config, honest_addr, "localhost")
        .expect("connect");
    w.honest_session = Some(h);
    let up = w.run_until(Duration::from_secs(5), |w| {
        w.app.sessions.contains(&hostile) && w.app.sessions.contains(&h)
    });
    assert!(up, "sessions did not come up: {:?}", w.app.closed);
    w.hostile_session = Some(hostile);
    // The application asks the hostile primary for something, as a client would.
    let ep = &mut w.sim.nodes[engine].endpoint;
    if let Some(id) = ep.session(hostile).and_then(|mut s| s.open(Dir::Bi)) {
        w.app
            .send(ep, hostile, id, Bytes::from_static(REQUEST), true);
    }
    w.start_echo(engine, h, 7);
    w
}

/// A client engine faces a hostile primary that completed the handshake and `Welcome`.
pub fn peer_primary(data: &[u8]) -> PeerReport {
    let mut input = Input { data };
    let (seed, bits) = seed_of(&mut input);
    let mut w = client_world(seed, bits);
    let mut report = PeerReport::default();
    w.apply(&mut input, &mut report);
    w.run_for(Duration::from_secs(1));
    w.check(Target::Primary, &mut report);
    report
}

/// A client engine faces a hostile secondary: the (honest-looking) primary adds it, the
/// client joins it, and the secondary accepts the join and turns hostile.
pub fn peer_secondary(data: &[u8]) -> PeerReport {
    let mut input = Input { data };
    let (seed, bits) = seed_of(&mut input);
    let mut w = client_world(seed, bits);
    let secondary_addr = addr(HOSTILE_SECONDARY, 4433);
    let secondary = w
        .sim
        .hosts
        .add_raw_server(secondary_addr, raw_server_config());
    let s = &mut w.sim.hosts.raw_servers[secondary];
    s.welcome = false;
    s.accept_joins = true;
    s.answer_pings = bits & 8 == 0;
    let expiry = (WALL_CLOCK_START + Duration::from_secs(3600)).as_secs();
    let Hostile::Server(primary) = w.hostile else {
        unreachable!("a client world faces a raw primary")
    };
    w.sim.hosts.raw_servers[primary].send_control(Kind::AddPath(AddPath {
        path_id: 1,
        addr: secondary_addr.to_string(),
        server_name: "localhost".into(),
        expiry,
        path_secret: vec![0x5a; 32],
        same_peer: false,
        backup: false,
        key_id: 0,
    }));
    let joined = w.run_until(Duration::from_secs(5), |w| {
        w.sim.hosts.raw_servers[secondary].welcomed
    });
    assert!(joined, "the client did not join the secondary");
    w.run_for(Duration::from_millis(50));
    w.hostile = Hostile::Server(secondary);
    let mut report = PeerReport::default();
    w.apply(&mut input, &mut report);
    w.run_for(Duration::from_secs(1));
    w.check(Target::Secondary, &mut report);
    report
}

/// Turns what an honest endpoint sent on its streams into the operations that replay it:
/// control bytes after the setup message (the scenario already did the setup), then each
/// stream's chunks in arrival order. `opened` streams are already in the scenario's list.
fn to_ops(recorded: &[(QuicStream, Bytes)], control: Option<QuicStream>, opened: usize) -> Vec<u8> {
    let mut ops = vec![0u8; 9];
    let mut index = std::collections::BTreeMap::new();
    let mut setup_left = None;
    for (id, chunk) in recorded {
        let mut chunk = &chunk[..];
        if Some(*id) == control {
            // Skip the setup message (Hello or Welcome): its length prefix says how long.
            let left = setup_left.get_or_insert_with(|| {
                let mut buf = chunk;
                prost::encoding::decode_varint(&mut buf)
                    .map_or(0, |len| len as usize + (chunk.len() - buf.len()))
            });
            let skip = (*left).min(chunk.len());
            *left -= skip;
            chunk = &chunk[skip..];
        }
        for piece in chunk.chunks(255) {
            if Some(*id) == control {
                ops.extend([0, piece.len() as u8]);
            } else if let Some(&i) = index.get(id) {
                ops.extend([4, piece.len() as u8, i]);
            } else {
                let op = if id.dir() == Dir::Uni { 2 } else { 3 };
                ops.extend([op, piece.len() as u8]);
                index.insert(*id, (opened + index.len()) as u8);
            }
            ops.extend_from_slice(piece);
        }
    }
    ops.extend([9, 25]);
    ops
}

/// What an honest KWIK client sends its primary in a short session (a request of 3,000
/// bytes on a stream, 500 bytes on a unidirectional one, health checks), as a
/// [`peer_client`] input.
pub fn record_honest_client() -> Vec<u8> {
    let mut sim = Sim::new(1);
    let client_addr = addr(ENGINE, 5000);
    let primary_addr = addr(HOSTILE, 4433);
    sim.net
        .link(client_addr.ip(), primary_addr.ip(), wire_config(0));
    let client = sim.add_node(client_addr, None);
    let primary = sim.hosts.add_raw_server(primary_addr, raw_server_config());
    sim.hosts.raw_servers[primary].recorded = Some(Vec::new());
    let now = sim.now();
    let h = sim.nodes[client]
        .endpoint
        .connect(
            now,
            &client_config_engine(engine_config()),
            primary_addr,
            "localhost",
        )
        .expect("connect");
    let mut app = App::default();
    let up = sim.run_until(Duration::from_secs(5), |sim| {
        let events = sim.take_events(client);
        app.poll(&mut sim.nodes[client].endpoint, events);
        app.sessions.contains(&h)
    });
    assert!(up, "the session did not come up");
    let ep = &mut sim.nodes[client].endpoint;
    for (dir, len) in [(Dir::Bi, 3000), (Dir::Uni, 500)] {
        let id = ep.session(h).and_then(|mut s| s.open(dir)).expect("open");
        app.send(ep, h, id, payload(len as u64, len), true);
    }
    sim.run_for(Duration::from_secs(2));
    let server = &mut sim.hosts.raw_servers[primary];
    to_ops(
        server.recorded.as_deref().unwrap_or_default(),
        server.control,
        1,
    )
}

/// What an honest KWIK server sends a client in a short session (the echo of the
/// client's request, a 6,000-byte body on a stream it opens, health checks), as a [`peer_primary`] or [`peer_secondary`] input.
pub fn record_honest_server() -> Vec<u8> {
    let mut sim = Sim::new(2);
    let server_addr = addr(HONEST, 4433);
    let client_addr = addr(HOSTILE, 5000);
    sim.net
        .link(client_addr.ip(), server_addr.ip(), wire_config(0));
    let server = sim.add_node(server_addr, Some(server_config(engine_config())));
    let peer = sim.hosts.add_raw(client_addr);
    let now = sim.now();
    sim.hosts.raw[peer].connect(now, client_config(&[cert()]), server_addr, "localhost");
    sim.hosts.raw[peer].recorded = Some(Vec::new());
    sim.hosts.raw[peer].answer_pings = true;
    let mut app = App::echo();
    let step = |sim: &mut Sim, app: &mut App| {
        let events = sim.take_events(server);
        app.poll(&mut sim.nodes[server].endpoint, events);
    };
    let up = sim.run_until(Duration::from_secs(5), |sim| {
        step(sim, &mut app);
        sim.hosts.raw[peer].connected
    });
    assert!(up, "handshake");
    sim.hosts.raw[peer].hello(default_limits());
    let request = kwik_core::frame::Frame::Stream {
        id: StreamId::new(quinn_proto::Side::Client, Dir::Bi, 0),
        offset: 0,
        fin: true,
        data: Bytes::from_static(REQUEST),
    };
    sim.hosts.raw[peer].carrier(crate::raw::frames(&[request]));
    let welcomed = sim.run_until(Duration::from_secs(2), |sim| {
        step(sim, &mut app);
        !app.sessions.is_empty()
    });
    assert!(welcomed, "the server did not take the session");
    // The server also pushes a body of its own on a stream it opens.
    let h = app.sessions[0];
    let ep = &mut sim.nodes[server].endpoint;
    let id = ep
        .session(h)
        .and_then(|mut s| s.open(Dir::Uni))
        .expect("open");
    app.send(ep, h, id, payload(5, 6000), true);
    sim.run_until(Duration::from_secs(2), |sim| {
        step(sim, &mut app);
        false
    });
    let peer = &mut sim.hosts.raw[peer];
    to_ops(
        peer.recorded.as_deref().unwrap_or_default(),
        peer.control,
        0,
    )
}
