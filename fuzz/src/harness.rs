//! The checks behind every fuzz target.
//!
//! Each function takes the raw fuzz input and panics on a failed check. The fuzz targets
//! call them, and `kwik-core/tests/fuzz_corpus.rs` includes this file to replay the
//! committed corpora with the same checks, so it may only use `kwik-core`, `bytes` and std.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kwik_core::control::{ControlDecoder, MAX_CONTROL_FRAME};
use kwik_core::frame::Frame;
use kwik_core::{
    CertificateDer, ClientConfig, Config, DelegationId, DelegationOutcome, Dir, Endpoint,
    EndpointConfig, ErrorCode, Event, GroupKey, LoadBalancing, PathError, PathId, PathKind,
    PathState, PrivateKeyDer, PrivatePkcs8KeyDer, ReadError, Role, ServerConfig, SessionError,
    SessionHandle, StreamId, VarInt, WriteError,
};

/// Self-signed certificate for `localhost` (DER), generated once with rcgen.
pub const CERT_DER: &[u8] = include_bytes!("../cert.der");
/// Its PKCS#8 private key (DER).
pub const KEY_DER: &[u8] = include_bytes!("../key.der");

/// The fixed clock origin of the engine harnesses: captured once per process, so that a
/// run's timeline depends on the input only.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

// ---------------------------------------------------------------------------------------
// frame_decode

/// Decodes data-plane frames from `data` until it runs out or fails; every decoded frame
/// must re-encode to at most the bytes it took, decode back to itself, and every strict
/// prefix of its encoding must be "incomplete" rather than an error or a frame.
pub fn frame_decode(data: &[u8]) {
    let mut buf = Bytes::copy_from_slice(data);
    loop {
        let before = buf.len();
        match Frame::decode(&mut buf) {
            Ok(Some(frame)) => {
                let consumed = before - buf.len();
                assert!(consumed > 0, "a decoded frame takes bytes");
                let mut wire = Vec::new();
                frame.encode(&mut wire);
                assert!(
                    wire.len() <= consumed,
                    "re-encoding of {frame:?} takes {} bytes, the input {consumed}",
                    wire.len()
                );
                let cuts = (0..wire.len().min(32)).chain([wire.len() - 1]);
                for cut in cuts {
                    let mut part = Bytes::copy_from_slice(&wire[..cut]);
                    assert_eq!(Frame::decode(&mut part), Ok(None), "prefix of {cut} bytes");
                    assert_eq!(part.len(), cut, "an incomplete frame takes nothing");
                }
                let mut again = Bytes::from(wire);
                assert_eq!(Frame::decode(&mut again), Ok(Some(frame)));
                assert!(again.is_empty(), "a re-encoded frame decodes whole");
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame takes nothing");
                break;
            }
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------------------
// control_decode

/// The chunk size the first input byte selects: 1..=128, or multiples of 256 up to 32 KiB.
pub fn control_chunk_size(first: u8) -> usize {
    if first < 128 {
        usize::from(first) + 1
    } else {
        usize::from(first - 127) * 256
    }
}

/// Pushes `data[1..]` into a [`ControlDecoder`] in chunks of the size `data[0]` selects and
/// pulls messages after each; the decoder's buffer stays bounded.
pub fn control_decode(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = control_chunk_size(first);
    let bound = MAX_CONTROL_FRAME + 10 + chunk;
    let mut decoder = ControlDecoder::default();
    for piece in rest.chunks(chunk) {
        decoder.push(piece);
        assert!(
            decoder.buffered() <= bound,
            "{} buffered",
            decoder.buffered()
        );
        loop {
            match decoder.next_frame() {
                Ok(Some(_kind)) => {
                    assert!(
                        decoder.buffered() <= bound,
                        "{} buffered",
                        decoder.buffered()
                    );
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // What is left is less than one frame: a prefix of at most 10 bytes and a body
        // shorter than the limit.
        assert!(
            decoder.buffered() < MAX_CONTROL_FRAME + 10,
            "{} buffered after a drain",
            decoder.buffered()
        );
    }
}

// ---------------------------------------------------------------------------------------
// engine_input

fn fuzz_config(bits: u8) -> Config {
    let mut c = Config::default();
    // Time only advances as the input says: no idle timeout within one run.
    c.idle_timeout = Duration::from_secs(3600);
    // Health probes would keep timers due forever; the simulated link never dies here.
    c.path_health_check_interval = Duration::from_secs(3600);
    c.stream_receive_window = if bits & 1 != 0 { 1024 } else { 64 << 10 };
    c.receive_window = if bits & 2 != 0 {
        c.stream_receive_window
    } else {
        1 << 20
    };
    let streams = if bits & 4 != 0 { 2 } else { 64 };
    c.max_concurrent_bidi_streams = streams;
    c.max_concurrent_uni_streams = streams;
    c.streams_per_carrier = if bits & 8 != 0 { 1 } else { 4 };
    c.max_carriers_per_path = if bits & 16 != 0 { 1 } else { 8 };
    c
}

/// A server config with the committed certificate.
pub fn server_config(config: Config) -> ServerConfig {
    ServerConfig::with_single_cert(
        vec![CertificateDer::from(CERT_DER)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY_DER)),
        config,
    )
    .expect("the committed certificate and key make a server config")
}

/// A client config trusting only the committed certificate.
pub fn client_config(config: Config) -> ClientConfig {
    ClientConfig::with_root_certificates([CertificateDer::from(CERT_DER)], config)
        .expect("the committed certificate makes a client config")
}

fn remote(choice: u8) -> SocketAddr {
    match choice & 3 {
        0 => SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 4433)),
        1 => SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 50_000)),
        2 => SocketAddr::from((Ipv6Addr::LOCALHOST, 1)),
        _ => SocketAddr::from((Ipv4Addr::new(192, 0, 2, 9), 0)),
    }
}

/// Most datagrams one drain may produce before the endpoint is deemed to loop.
const MAX_DRAIN: usize = 10_000;

fn drain_endpoint(ep: &mut Endpoint, now: Instant, buf: &mut Vec<u8>) {
    let mut sent = 0;
    while let Some(t) = ep.poll_transmit(now, 1, buf) {
        assert!(t.size <= buf.len(), "transmit larger than its buffer");
        sent += 1;
        assert!(sent < MAX_DRAIN, "poll_transmit does not end");
    }
    ep.handle_timeout(now);
    let mut events = 0;
    while ep.poll_event().is_some() {
        events += 1;
        assert!(events < MAX_DRAIN, "poll_event does not end");
    }
}

/// Feeds the input as UDP datagrams to a server endpoint.
///
/// Input: a sequence of records `[len, meta, payload...]`, where `len` is the payload
/// length, or `[0xff, meta, len_lo, len_hi, payload...]` with a little-endian `u16` length
/// (QUIC Initials need 1200 bytes); the last payload is cut short at the end of the input. `meta & 3` picks the sender address, and
/// the clock advances by `(meta >> 2)^2 * 16` ms before the datagram (0..=63.5 s).
pub fn engine_input(data: &[u8]) {
    static SERVER: OnceLock<ServerConfig> = OnceLock::new();
    let server = SERVER.get_or_init(|| server_config(fuzz_config(0))).clone();
    let mut ep = Endpoint::new(
        EndpointConfig {
            seed: [7; 32],
            allow_mtud: false,
        },
        Some(server),
    );
    let mut now = base();
    let mut buf = Vec::with_capacity(1500);
    let mut rest = data;
    while let [len, meta, tail @ ..] = rest {
        let (len, tail) = match (*len, tail) {
            (0xff, [lo, hi, tail @ ..]) => (usize::from(u16::from_le_bytes([*lo, *hi])), tail),
            (0xff, _) => break,
            (len, tail) => (usize::from(len), tail),
        };
        let (datagram, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let step = u64::from(meta >> 2);
        now += Duration::from_millis(step * step * 16);
        ep.handle_datagram(now, remote(*meta), None, None, BytesMut::from(datagram));
        drain_endpoint(&mut ep, now, &mut buf);
    }
    // Let the timers run out: whatever the datagrams opened times out and drains.
    for _ in 0..64 {
        let Some(t) = ep.poll_timeout(now) else {
            break;
        };
        now = now.max(t);
        ep.handle_timeout(now);
        drain_endpoint(&mut ep, now, &mut buf);
    }
}

// ---------------------------------------------------------------------------------------
// engine_streams

/// The byte at `offset` of logical stream `id`, in either direction.
pub fn pattern(id: StreamId, offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8) ^ id.0.wrapping_mul(131)) as u8
}

fn pattern_bytes(id: StreamId, offset: u64, n: usize) -> Vec<u8> {
    (0..n as u64).map(|i| pattern(id, offset + i)).collect()
}

/// How one half of a stream ended, as the application saw it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum End {
    #[default]
    Open,
    /// `finish` succeeded (send) or the read returned `Ok(None)` (receive).
    Fin,
    /// `reset` succeeded (send) or the read returned `Reset` (receive).
    Reset,
    /// The peer stopped it (send) or `stop` succeeded (receive).
    Stopped,
}

#[derive(Debug, Default)]
struct Track {
    own: bool,
    written: u64,
    send: End,
    read: u64,
    recv: End,
    /// Bytes owed back on a peer's bidirectional stream, as much as was read.
    echo_owed: u64,
    /// The peer finished: finish the echo once it is written.
    echo_fin: bool,
}

struct Peer {
    name: &'static str,
    ep: Endpoint,
    addr: SocketAddr,
    session: Option<SessionHandle>,
    closed: Option<SessionError>,
    /// Code of a `close` this side issued.
    closed_with: Option<u32>,
    streams: BTreeMap<StreamId, Track>,
    order: Vec<StreamId>,
    total_written: u64,
}

/// Most bytes one side writes in a run, so that every run stays short.
const MAX_TOTAL_WRITE: u64 = 256 << 10;
/// Rounds the final settling may take before the engines are deemed stuck.
const SETTLE_ROUNDS: usize = 20_000;

impl Peer {
    fn new(name: &'static str, seed: u8, addr: SocketAddr, server: Option<ServerConfig>) -> Self {
        Self {
            name,
            ep: Endpoint::new(
                EndpointConfig {
                    seed: [seed; 32],
                    allow_mtud: false,
                },
                server,
            ),
            addr,
            session: None,
            closed: None,
            closed_with: None,
            streams: BTreeMap::new(),
            order: Vec::new(),
            total_written: 0,
        }
    }

    fn track(&mut self, id: StreamId, own: bool) {
        if !self.streams.contains_key(&id) {
            self.order.push(id);
            self.streams.insert(
                id,
                Track {
                    own,
                    ..Track::default()
                },
            );
        }
    }

    fn pick(&self, b: u8) -> Option<StreamId> {
        if self.order.is_empty() {
            return None;
        }
        Some(self.order[usize::from(b) % self.order.len()])
    }

    fn open(&mut self, dir: Dir) {
        let Some(h) = self.session else { return };
        let Some(id) = self.ep.session(h).and_then(|mut s| s.open(dir)) else {
            return;
        };
        let me = self.is_client();
        assert_eq!(
            id.initiator() == kwik_core::Side::Client,
            me,
            "{}: opened {id}",
            self.name
        );
        assert_eq!(id.dir(), dir);
        assert!(
            !self.streams.contains_key(&id),
            "{}: {id} opened twice",
            self.name
        );
        self.track(id, true);
    }

    fn is_client(&self) -> bool {
        self.name == "client"
    }

    fn accept(&mut self, dir: Dir) -> bool {
        let Some(h) = self.session else { return false };
        let Some(id) = self.ep.session(h).and_then(|mut s| s.accept(dir)) else {
            return false;
        };
        assert_ne!(
            id.initiator() == kwik_core::Side::Client,
            self.is_client(),
            "{}: accepted its own {id}",
            self.name
        );
        assert!(
            !self.streams.contains_key(&id),
            "{}: {id} accepted twice",
            self.name
        );
        self.track(id, false);
        self.read_all(id);
        true
    }

    fn accept_all(&mut self) {
        while self.accept(Dir::Bi) {}
        while self.accept(Dir::Uni) {}
    }

    /// Writes up to `n` pattern bytes; `chunks` uses the zero-copy path.
    fn write(&mut self, id: StreamId, n: usize, chunks: bool) -> Option<usize> {
        let h = self.session?;
        let t = self.streams.get_mut(&id)?;
        let n = n.min((MAX_TOTAL_WRITE - self.total_written) as usize);
        if n == 0 {
            return Some(0);
        }
        let data = pattern_bytes(id, t.written, n);
        let mut session = self.ep.session(h)?;
        let mut send = session.send_stream(id);
        let result = if chunks {
            let third = n / 3;
            let whole = Bytes::from(data);
            let mut pieces = [
                whole.slice(..third),
                whole.slice(third..2 * third),
                whole.slice(2 * third..),
            ];
            let r = send.write_chunks(&mut pieces);
            let left: usize = pieces.iter().map(Bytes::len).sum();
            if let Ok(k) = r {
                assert_eq!(
                    left,
                    n - k,
                    "{}: write_chunks leaves what it did not take",
                    self.name
                );
            }
            r
        } else {
            send.write(&data)
        };
        match result {
            Ok(k) => {
                assert!(k <= n && k > 0, "{}: write took {k} of {n}", self.name);
                assert!(
                    t.own || id.dir() == Dir::Bi,
                    "{}: wrote on the peer's uni {id}",
                    self.name
                );
                assert_eq!(t.send, End::Open, "{}: wrote on ended {id}", self.name);
                t.written += k as u64;
                self.total_written += k as u64;
                Some(k)
            }
            Err(WriteError::Stopped(_)) => {
                t.send = End::Stopped;
                t.echo_owed = 0;
                None
            }
            Err(_) => None,
        }
    }

    fn finish(&mut self, id: StreamId) {
        let Some(h) = self.session else { return };
        let Some(t) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(mut session) = self.ep.session(h) else {
            return;
        };
        if session.send_stream(id).finish().is_ok() {
            assert_eq!(t.send, End::Open, "{}: finished ended {id}", self.name);
            t.send = End::Fin;
        }
    }

    fn reset(&mut self, id: StreamId, code: u8) {
        let Some(h) = self.session else { return };
        let Some(t) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(mut session) = self.ep.session(h) else {
            return;
        };
        if session
            .send_stream(id)
            .reset(VarInt::from_u32(code.into()))
            .is_ok()
        {
            t.send = End::Reset;
            t.echo_owed = 0;
        }
    }

    fn stop(&mut self, id: StreamId, code: u8) {
        let Some(h) = self.session else { return };
        let Some(t) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(mut session) = self.ep.session(h) else {
            return;
        };
        if session
            .recv_stream(id)
            .stop(VarInt::from_u32(code.into()))
            .is_ok()
        {
            assert!(
                t.recv == End::Open || t.recv == End::Fin,
                "{}: stopped {id} after {:?}",
                self.name,
                t.recv
            );
            t.recv = End::Stopped;
        }
    }

    /// One read of at most `max` bytes; returns whether it produced bytes.
    fn read(&mut self, id: StreamId, max: usize) -> bool {
        let Some(h) = self.session else { return false };
        let Some(t) = self.streams.get_mut(&id) else {
            return false;
        };
        let Some(mut session) = self.ep.session(h) else {
            return false;
        };
        match session.recv_stream(id).read(max) {
            Ok(Some(bytes)) => {
                assert!(!bytes.is_empty(), "{}: empty read on {id}", self.name);
                assert!(bytes.len() <= max, "{}: read more than asked", self.name);
                assert_eq!(t.recv, End::Open, "{}: data on ended {id}", self.name);
                let expected = pattern_bytes(id, t.read, bytes.len());
                assert!(
                    bytes[..] == expected[..],
                    "{}: wrong bytes on {id} at offset {}",
                    self.name,
                    t.read
                );
                t.read += bytes.len() as u64;
                if !t.own && id.dir() == Dir::Bi && t.send == End::Open {
                    t.echo_owed += bytes.len() as u64;
                }
                true
            }
            Ok(None) => {
                assert_eq!(t.recv, End::Open, "{}: second end of {id}", self.name);
                t.recv = End::Fin;
                if !t.own && id.dir() == Dir::Bi {
                    t.echo_fin = true;
                }
                false
            }
            Err(ReadError::Reset(_)) => {
                assert_eq!(t.recv, End::Open, "{}: reset after end of {id}", self.name);
                t.recv = End::Reset;
                false
            }
            Err(_) => false,
        }
    }

    fn read_all(&mut self, id: StreamId) {
        let mut reads = 0;
        while self.read(id, 4096) {
            reads += 1;
            assert!(reads < 100_000, "{}: reads of {id} never end", self.name);
        }
    }

    /// Writes what the echo owes on the peer's bidirectional streams.
    fn flush_echo(&mut self) {
        let owing: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, t)| t.echo_owed > 0 || (t.echo_fin && t.send == End::Open))
            .map(|(id, _)| *id)
            .collect();
        for id in owing {
            loop {
                let owed = self.streams.get(&id).map_or(0, |t| t.echo_owed);
                if owed == 0 {
                    break;
                }
                let Some(k) = self.write(id, owed.min(32 << 10) as usize, false) else {
                    break;
                };
                if k == 0 {
                    break;
                }
                if let Some(t) = self.streams.get_mut(&id) {
                    t.echo_owed -= k as u64;
                }
            }
            if self
                .streams
                .get(&id)
                .is_some_and(|t| t.echo_owed == 0 && t.echo_fin && t.send == End::Open)
            {
                self.finish(id);
            }
        }
    }

    fn events(&mut self) {
        let mut readable = Vec::new();
        let mut n = 0;
        while let Some(event) = self.ep.poll_event() {
            n += 1;
            assert!(n < 1_000_000, "{}: poll_event does not end", self.name);
            match event {
                Event::Connected(h) | Event::Incoming(h) => {
                    assert!(self.session.is_none(), "{}: a second session", self.name);
                    self.session = Some(h);
                }
                Event::Closed { session, error } => {
                    assert_eq!(
                        Some(session),
                        self.session,
                        "{}: closed a stranger",
                        self.name
                    );
                    // `Reset` is only allowed after the peer closed: `check_delivery` checks.
                    assert!(
                        matches!(
                            error,
                            SessionError::ApplicationClosed { .. }
                                | SessionError::LocallyClosed
                                | SessionError::Reset
                        ),
                        "{}: session closed with {error:?}",
                        self.name
                    );
                    assert!(self.closed.is_none(), "{}: closed twice", self.name);
                    self.closed = Some(error);
                }
                Event::StreamReadable { stream, .. } => readable.push(stream),
                Event::StreamStopped { stream, code, .. } => {
                    let Some(h) = self.session else { continue };
                    if let Some(t) = self.streams.get_mut(&stream) {
                        t.send = End::Stopped;
                        t.echo_owed = 0;
                    }
                    if let Some(mut s) = self.ep.session(h) {
                        let mut send = s.send_stream(stream);
                        assert_eq!(send.stopped(), Ok(Some(code)), "{}", self.name);
                        send.forget();
                        assert!(!send.is_open(), "{}: {stream} open after forget", self.name);
                    }
                }
                _ => {}
            }
        }
        for id in readable {
            if self.streams.get(&id).is_some_and(|t| !t.own) {
                self.read_all(id);
            }
        }
        self.flush_echo();
    }
}

struct World {
    peers: [Peer; 2],
    now: Instant,
    buf: Vec<u8>,
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

impl World {
    fn connect(server_bits: u8, client_bits: u8) -> Self {
        let client_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 5000));
        let server_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 4433));
        let server = server_config(fuzz_config(server_bits));
        let mut world = Self {
            peers: [
                Peer::new("client", 1, client_addr, None),
                Peer::new("server", 2, server_addr, Some(server)),
            ],
            now: base(),
            buf: Vec::with_capacity(1500),
        };
        let config = client_config(fuzz_config(client_bits));
        let now = world.now;
        world.peers[CLIENT]
            .ep
            .connect(now, &config, server_addr, "localhost")
            .expect("connect starts");
        for _ in 0..200 {
            world.step();
            if world.peers.iter().all(|p| p.session.is_some()) {
                return world;
            }
        }
        panic!("the in-memory handshake did not complete");
    }

    /// Advances the clock by 1 ms, then delivers every datagram each side has to send.
    /// Returns whether any datagram moved.
    fn step(&mut self) -> bool {
        self.now += Duration::from_millis(1);
        let now = self.now;
        let mut moved = false;
        for from in [CLIENT, SERVER] {
            let to = 1 - from;
            let mut out = Vec::new();
            while let Some(t) = self.peers[from].ep.poll_transmit(now, 1, &mut self.buf) {
                assert_eq!(t.destination, self.peers[to].addr, "misaddressed datagram");
                let seg = t.segment_size.unwrap_or(t.size).max(1);
                for d in self.buf[..t.size].chunks(seg) {
                    out.push(BytesMut::from(d));
                }
                assert!(out.len() < MAX_DRAIN, "poll_transmit does not end");
            }
            let src = self.peers[from].addr;
            for d in out {
                moved = true;
                self.peers[to].ep.handle_datagram(now, src, None, None, d);
            }
        }
        for p in &mut self.peers {
            p.ep.handle_timeout(now);
            p.events();
        }
        moved
    }

    /// Delivers until nothing moves and no timer is due soon; `false` if that never came.
    fn settle(&mut self) -> bool {
        for _ in 0..SETTLE_ROUNDS {
            for p in &mut self.peers {
                p.accept_all();
                let ids = p.order.clone();
                for id in ids {
                    p.read_all(id);
                }
                p.flush_echo();
            }
            if self.step() {
                continue;
            }
            let now = self.now;
            let next = self
                .peers
                .iter_mut()
                .filter_map(|p| p.ep.poll_timeout(now))
                .min();
            match next {
                Some(t) if t <= now + Duration::from_secs(5) => self.now = self.now.max(t),
                _ => return true,
            }
        }
        false
    }

    /// After settling: whatever was finished arrived whole, and closes were seen.
    fn check_delivery(&self) {
        for (w, r) in [(CLIENT, SERVER), (SERVER, CLIENT)] {
            let (writer, reader) = (&self.peers[w], &self.peers[r]);
            for (id, t) in &reader.streams {
                let sent = writer.streams.get(id);
                let written = sent.map_or(0, |s| s.written);
                assert!(
                    t.read <= written,
                    "{}: read {} of {id}, {} wrote {written}",
                    reader.name,
                    t.read,
                    writer.name
                );
                if t.recv == End::Fin {
                    assert!(
                        sent.is_some_and(|s| s.send != End::Open),
                        "{}: saw the end of {id} that {} never ended",
                        reader.name,
                        writer.name
                    );
                }
            }
            if writer.closed.is_some() || reader.closed.is_some() {
                continue;
            }
            for (id, t) in &writer.streams {
                if t.send != End::Fin {
                    continue;
                }
                let got = reader.streams.get(id);
                if got.is_some_and(|g| g.recv == End::Stopped) {
                    continue;
                }
                assert!(
                    got.is_some_and(|g| g.recv == End::Fin && g.read == t.written),
                    "{}: finished {id} after {} bytes, {} has {:?}",
                    writer.name,
                    t.written,
                    reader.name,
                    got.map(|g| (g.read, g.recv))
                );
            }
        }
        for (a, b) in [(CLIENT, SERVER), (SERVER, CLIENT)] {
            let (closer, peer) = (&self.peers[a], &self.peers[b]);
            if peer.closed == Some(SessionError::Reset) {
                assert!(
                    closer.closed_with.is_some(),
                    "{}: stateless reset though {} never closed",
                    peer.name,
                    closer.name
                );
            }
            let (Some(code), None) = (closer.closed_with, peer.closed_with) else {
                continue;
            };
            match &peer.closed {
                Some(SessionError::ApplicationClosed { code: c, reason }) => {
                    assert_eq!(*c, VarInt::from_u32(code), "{} closed", closer.name);
                    assert_eq!(&reason[..], b"bye", "{} closed", closer.name);
                }
                // quinn-proto 0.11.19 sends no CONNECTION_CLOSE while congestion control
                // blocks the stream data still queued (quinn-rs/quinn#2785): the peer learns of
                // the close from a stateless reset, or not before its idle timeout.
                Some(SessionError::Reset) | None => {}
                other => panic!(
                    "{} closed with {code}, {} saw {other:?}",
                    closer.name, peer.name
                ),
            }
        }
    }
}

/// Drives two connected endpoints with the input as a program of API calls.
///
/// Input: `[server config bits, client config bits, ops...]`; each op is a byte whose bit 0
/// picks the side (0 client) and `(op >> 1) % 12` the call, followed by its argument bytes.
/// The side's application auto-reads the peer's streams it accepted and echoes on the
/// peer's bidirectional streams as many pattern bytes as it read. At the end both sides
/// accept and read everything until nothing moves, and every finished stream must have
/// arrived whole; no session may close for any reason but an application close.
pub fn engine_streams(data: &[u8]) {
    let [server_bits, client_bits, ops @ ..] = data else {
        return;
    };
    let mut world = World::connect(*server_bits, *client_bits);
    let mut ops = ops.iter().copied();
    while let Some(op) = ops.next() {
        let side = usize::from(op & 1);
        let mut arg = || ops.next().unwrap_or(0);
        let now = world.now;
        let p = &mut world.peers[side];
        match (op >> 1) % 12 {
            0 => p.open(Dir::Bi),
            1 => p.open(Dir::Uni),
            kind @ (2 | 3) => {
                let (a, b) = (arg(), arg());
                if let Some(id) = p.pick(a) {
                    p.write(id, usize::from(b) * 128 + 1, kind == 3);
                }
            }
            4 => {
                if let Some(id) = p.pick(arg()) {
                    p.finish(id);
                }
            }
            5 => {
                let (a, code) = (arg(), arg());
                if let Some(id) = p.pick(a) {
                    p.reset(id, code);
                }
            }
            6 => {
                let (a, code) = (arg(), arg());
                if let Some(id) = p.pick(a) {
                    p.stop(id, code);
                }
            }
            7 => {
                let (a, max) = (arg(), arg());
                if let Some(id) = p.pick(a) {
                    p.read(id, usize::from(max) * 64 + 1);
                }
            }
            8 => {
                for _ in 0..=(arg() % 8) {
                    world.step();
                }
            }
            9 => {
                world.now += Duration::from_millis(u64::from(arg()));
                world.step();
            }
            10 => {
                let code = arg();
                if code < 16
                    && p.closed_with.is_none()
                    && let Some(mut s) = p.session.and_then(|h| p.ep.session(h))
                {
                    s.close(now, VarInt::from_u32(code.into()), b"bye");
                    p.closed_with = Some(code.into());
                }
            }
            _ => {
                let dir = if arg() & 1 == 0 { Dir::Bi } else { Dir::Uni };
                p.accept(dir);
            }
        }
    }
    assert!(world.settle(), "the engines never went quiet");
    world.check_delivery();
}

// ---------------------------------------------------------------------------------------
// engine_multi

const MULTI_CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000);
const MULTI_PRIMARY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), 4433);
/// The primary's second address, for same-peer paths.
const MULTI_ALIAS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)), 4433);
const MULTI_SECONDARIES: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)), 4433),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1)), 4433),
];
/// The far end of each link, by link index: the primary, its alias, each secondary.
const MULTI_LINKS: [SocketAddr; 4] = [
    MULTI_PRIMARY,
    MULTI_ALIAS,
    MULTI_SECONDARIES[0],
    MULTI_SECONDARIES[1],
];
const MULTI_GROUP_KEY: [u8; 32] = [0x4b; 32];
/// Unix time at the clock origin, given to every endpoint as its wall clock.
const MULTI_EPOCH: Duration = Duration::from_secs(1_700_000_000);

/// Largest body one stripe, delegation or write covers.
const MULTI_MAX_BODY: u64 = 1 << 20;
/// Most body bytes the primary hands out in one run, over every stream.
const MULTI_MAX_TOTAL: u64 = 2 << 20;
/// Most operations one input runs.
const MULTI_MAX_OPS: usize = 256;
/// Operations stop once the clock passed this much virtual time.
const MULTI_OPS_TIME: Duration = Duration::from_secs(90);
/// How long the final settling may take before a stream that should complete is deemed
/// stuck: path failure detection, re-delegation and idle timeouts fit well inside.
const MULTI_SETTLE: Duration = Duration::from_secs(40);
/// Rounds of sends and events at one instant before the engines are deemed to livelock.
const MULTI_MAX_ROUNDS: usize = 20_000;
/// Consecutive 1 ms steps an endpoint may ask for a timeout already past.
const MULTI_MAX_STALE: u32 = 5_000;
/// Generous bounds of what one engine holds in a run. Up to 7 live paths of one session
/// may lead to the same secondary, and the connections of removed paths drain for a while
/// (the client takes 4 AddPath a second, in bursts of 8), so a secondary may hold a dozen
/// sessions; what matters is that churn does not make them grow without bound.
const MULTI_MAX_SESSIONS: usize = 24;
const MULTI_MAX_CONNECTIONS: u64 = 48;
const MULTI_MAX_PATHS: usize = 64;

const M_CLIENT: usize = 0;
const M_PRIMARY: usize = 1;

fn link_of(addr: SocketAddr) -> Option<usize> {
    MULTI_LINKS.iter().position(|a| *a == addr)
}

/// The node that owns `addr`.
fn node_of(addr: SocketAddr) -> Option<usize> {
    match addr {
        MULTI_CLIENT => Some(M_CLIENT),
        MULTI_PRIMARY | MULTI_ALIAS => Some(M_PRIMARY),
        a => MULTI_SECONDARIES
            .iter()
            .position(|s| *s == a)
            .map(|i| i + 2),
    }
}

/// What an impaired link does to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pass,
    Drop,
    Duplicate,
    /// Held back, so that later datagrams overtake it.
    Delay,
}

/// A link's impairment: the fate of each datagram by turns from `pattern` (two bits per
/// datagram), for `left` more datagrams.
#[derive(Debug, Clone, Copy)]
struct Impair {
    pattern: u8,
    left: u16,
    n: u32,
}

impl Impair {
    fn next(&mut self) -> Fate {
        let bits = (self.pattern >> ((self.n % 4) * 2)) & 3;
        self.n += 1;
        self.left = self.left.saturating_sub(1);
        match bits {
            0 => Fate::Pass,
            1 => Fate::Drop,
            2 => Fate::Duplicate,
            _ => Fate::Delay,
        }
    }
}

#[derive(Debug, Default)]
struct Link {
    delay: Duration,
    /// Drops everything, both ways, including what is in flight.
    blackholed: bool,
    impair: Option<Impair>,
}

struct Packet {
    link: usize,
    src: SocketAddr,
    dst: SocketAddr,
    data: Vec<u8>,
}

/// The in-memory network: one link between the client and each server address.
struct Net {
    now: Instant,
    links: [Link; 4],
    in_flight: BTreeMap<(Instant, u64), Packet>,
    seq: u64,
}

impl Net {
    fn send(&mut self, packet: Packet) {
        let link = &mut self.links[packet.link];
        if link.blackholed {
            return;
        }
        let fate = match &mut link.impair {
            Some(i) => {
                let fate = i.next();
                if i.left == 0 {
                    link.impair = None;
                }
                fate
            }
            None => Fate::Pass,
        };
        let at = self.now + link.delay;
        match fate {
            Fate::Pass => self.push(at, packet),
            Fate::Drop => {}
            Fate::Duplicate => {
                let copy = Packet {
                    data: packet.data.clone(),
                    ..packet
                };
                self.push(at, copy);
                self.push(at + Duration::from_millis(1), packet);
            }
            Fate::Delay => {
                let extra = link.delay * 3 + Duration::from_millis(7);
                self.push(at + extra, packet);
            }
        }
    }

    fn push(&mut self, at: Instant, packet: Packet) {
        self.seq += 1;
        self.in_flight.insert((at, self.seq), packet);
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }

    /// The next datagram due by now, unless its link is blackholed (then it is lost).
    fn pop_due(&mut self) -> Option<Option<Packet>> {
        let entry = self.in_flight.first_entry()?;
        if entry.key().0 > self.now {
            return None;
        }
        let packet = entry.remove();
        Some((!self.links[packet.link].blackholed).then_some(packet))
    }
}

/// One stream the primary opened: the body byte at offset `o` is `pattern(id, o)`.
#[derive(Debug, Default, Clone, Copy)]
struct Body {
    /// Offsets below this were written, delegated or striped.
    end: u64,
    finished: bool,
    /// The latest stripe's range (a stripe starts once the previous one finished), for
    /// the `stripe-credit` known issue.
    stripe: Option<(u64, u64)>,
}

/// A range a server's application was delegated, and how far it wrote it.
#[derive(Debug)]
struct Serving {
    session: SessionHandle,
    id: DelegationId,
    stream: StreamId,
    next: u64,
    end: u64,
}

/// A server's application: it serves every range it is delegated with the body function.
#[derive(Debug, Default)]
struct ServerApp {
    sessions: BTreeMap<SessionHandle, Role>,
    serving: Vec<Serving>,
    /// Serves only when told to (op), until the final settling.
    paused: bool,
    /// Closed its sessions and stopped accepting.
    shut_down: bool,
}

/// The client's application: reads every stream the primary opens as it arrives.
#[derive(Debug, Default)]
struct ClientApp {
    session: Option<SessionHandle>,
    /// Per stream: bytes read and whether the fin was read.
    streams: BTreeMap<StreamId, (u64, bool)>,
    paused: bool,
    closed: Option<SessionError>,
}

/// What a run of [`engine_multi`] reached; the corpus test checks the seeds with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MultiReport {
    /// `PathActive` events on the primary for secondary paths.
    pub secondaries_joined: u64,
    /// `PathActive` events on the primary for same-peer paths.
    pub same_peer_joined: u64,
    /// Stripes started.
    pub stripes: u64,
    /// `StripeFinished` events.
    pub stripes_finished: u64,
    /// Delegations made with `delegate`.
    pub delegations: u64,
    /// Body bytes the secondaries wrote.
    pub secondary_bytes: u64,
    /// `PathFailed` events on the client.
    pub path_failures: u64,
    /// `DelegationFinished` events with a failed outcome (the primary serves the rest).
    pub delegations_failed: u64,
    /// Streams read to the fin.
    pub completed: usize,
    /// The sessions were alive at the end, so every stream had to complete.
    pub completion_checked: bool,
}

/// Whether a session or path error is one honest engines may cause each other: every
/// protocol error between two engines of this crate is a bug, but for a path closed for
/// not answering health checks and a join refused because its proof expired while the
/// clock jumped or because the server stopped accepting.
fn honest_error(code: ErrorCode, reason: &str) -> bool {
    code == ErrorCode::PathUnresponsive
        || (code == ErrorCode::JoinRefused
            && (reason.contains("expired") || reason.contains("accepts no new sessions")))
}

struct MultiNode {
    name: &'static str,
    ep: Endpoint,
    addr: SocketAddr,
    alias: Option<SocketAddr>,
    /// Consecutive steps this endpoint asked for a timeout already past.
    stale: u32,
}

struct Multi {
    net: Net,
    nodes: Vec<MultiNode>,
    /// Server applications, by node index minus one: the primary, then the secondaries.
    servers: Vec<ServerApp>,
    client: ClientApp,
    /// The primary's session with the client.
    primary: Option<SessionHandle>,
    bodies: BTreeMap<StreamId, Body>,
    order: Vec<StreamId>,
    total: u64,
    /// Paths the primary added with `add_same_peer_path`.
    same_peer: Vec<PathId>,
    secondaries: usize,
    buf: Vec<u8>,
    report: MultiReport,
}

fn multi_config(bits: u8) -> Config {
    let mut c = Config::default();
    c.idle_timeout = Duration::from_secs(10);
    c.path_recovery_timeout = Duration::from_secs(4);
    c.load_balancing = match (bits >> 1) % 8 {
        0 | 5 => LoadBalancing::MinRtt,
        1 | 6 => LoadBalancing::RoundRobin,
        2 | 7 => LoadBalancing::Weighted,
        3 => LoadBalancing::Adaptive,
        _ => LoadBalancing::Redundant,
    };
    if bits & 16 != 0 {
        c.stream_receive_window = 64 << 10;
        c.receive_window = 256 << 10;
    } else {
        c.stream_receive_window = 1 << 20;
        c.receive_window = 4 << 20;
    }
    if bits & 32 != 0 {
        c.stripe_depth = 1;
    }
    if bits & 64 != 0 {
        c.streams_per_carrier = 1;
    }
    c
}

impl Multi {
    fn new(config_bits: u8, link_bits: u8) -> Self {
        let config = multi_config(config_bits);
        let mut server = server_config(config.clone());
        server.group_key(GroupKey::new(MULTI_GROUP_KEY));
        let now = base();
        let node = |name, seed: u8, addr, alias, server: Option<ServerConfig>| {
            let mut ep = Endpoint::new(
                EndpointConfig {
                    seed: [seed; 32],
                    allow_mtud: false,
                },
                server,
            );
            ep.set_wall_clock(now, MULTI_EPOCH);
            MultiNode {
                name,
                ep,
                addr,
                alias,
                stale: 0,
            }
        };
        let nodes = vec![
            node("client", 11, MULTI_CLIENT, None, None),
            node(
                "primary",
                12,
                MULTI_PRIMARY,
                Some(MULTI_ALIAS),
                Some(server.clone()),
            ),
            node(
                "secondary 1",
                13,
                MULTI_SECONDARIES[0],
                None,
                Some(server.clone()),
            ),
            node("secondary 2", 14, MULTI_SECONDARIES[1], None, Some(server)),
        ];
        let delays = [1, 2, 5, 12];
        let links = std::array::from_fn(|i| Link {
            delay: Duration::from_millis(delays[usize::from(link_bits >> (2 * i)) & 3]),
            ..Link::default()
        });
        let mut world = Self {
            net: Net {
                now,
                links,
                in_flight: BTreeMap::new(),
                seq: 0,
            },
            nodes,
            servers: (0..3).map(|_| ServerApp::default()).collect(),
            client: ClientApp::default(),
            primary: None,
            bodies: BTreeMap::new(),
            order: Vec::new(),
            total: 0,
            same_peer: Vec::new(),
            secondaries: 1 + usize::from(config_bits & 1),
            buf: Vec::with_capacity(1500),
            report: MultiReport::default(),
        };
        world.nodes[M_CLIENT]
            .ep
            .connect(now, &client_config(config), MULTI_PRIMARY, "localhost")
            .expect("connect starts");
        let deadline = now + Duration::from_secs(5);
        while world.net.now < deadline {
            world.step();
            if world.client.session.is_some() && world.primary.is_some() {
                return world;
            }
        }
        panic!("the in-memory handshake did not complete");
    }

    fn now(&self) -> Instant {
        self.net.now
    }

    /// Sends what node `n` has to send; returns whether it sent anything.
    fn transmit(&mut self, n: usize) -> bool {
        let now = self.net.now;
        let mut sent = 0;
        let node = &mut self.nodes[n];
        while let Some(t) = node.ep.poll_transmit(now, 1, &mut self.buf) {
            sent += 1;
            assert!(
                sent < MAX_DRAIN,
                "{}: poll_transmit does not end",
                node.name
            );
            assert!(t.size <= self.buf.len(), "transmit larger than its buffer");
            let (src, link) = if n == M_CLIENT {
                let link = link_of(t.destination).unwrap_or_else(|| {
                    panic!("client: datagram to unknown address {}", t.destination)
                });
                (node.addr, link)
            } else {
                assert_eq!(
                    t.destination, MULTI_CLIENT,
                    "{}: datagram to a stranger",
                    node.name
                );
                let src = match (t.src_ip, node.alias) {
                    (Some(ip), Some(alias)) if alias.ip() == ip => alias,
                    _ => node.addr,
                };
                (src, link_of(src).expect("every server address has a link"))
            };
            let seg = t.segment_size.unwrap_or(t.size).max(1);
            for d in self.buf[..t.size].chunks(seg) {
                self.net.send(Packet {
                    link,
                    src,
                    dst: t.destination,
                    data: d.to_vec(),
                });
            }
        }
        sent > 0
    }

    /// Sends, handles events and runs the applications until nothing moves at this instant.
    fn pump(&mut self) {
        for round in 0.. {
            assert!(
                round < MULTI_MAX_ROUNDS,
                "the engines never go quiet at one instant"
            );
            let mut busy = false;
            for n in 0..self.nodes.len() {
                busy |= self.transmit(n);
            }
            busy |= self.client_events();
            for n in 1..self.nodes.len() {
                busy |= self.server_events(n);
            }
            busy |= self.client_read();
            for n in 1..self.nodes.len() {
                if !self.servers[n - 1].paused {
                    busy |= self.serve(n, u64::MAX);
                }
            }
            if !busy {
                break;
            }
        }
    }

    /// Delivers what is due and runs the timers at the current instant.
    fn deliver(&mut self) {
        let now = self.net.now;
        while let Some(packet) = self.net.pop_due() {
            let Some(p) = packet else { continue };
            let n = node_of(p.dst).expect("every link ends at a node");
            self.nodes[n].ep.handle_datagram(
                now,
                p.src,
                Some(p.dst.ip()),
                None,
                BytesMut::from(&p.data[..]),
            );
        }
        for node in &mut self.nodes {
            node.ep.handle_timeout(now);
        }
    }

    /// Settles the current instant, then moves to the next delivery or timer, but not past
    /// `limit`. Returns whether anything is left to happen before `limit`.
    fn step_until(&mut self, limit: Instant) -> bool {
        self.pump();
        let now = self.net.now;
        let mut next = self.net.next_delivery();
        for node in &mut self.nodes {
            let Some(t) = node.ep.poll_timeout(now) else {
                node.stale = 0;
                continue;
            };
            if t <= now {
                // Its timers ran at `now` and still want to run: a driver would spin.
                node.stale += 1;
                assert!(
                    node.stale < MULTI_MAX_STALE,
                    "{}: poll_timeout stays in the past after handle_timeout",
                    node.name
                );
            } else {
                node.stale = 0;
            }
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let Some(next) = next else {
            self.net.now = self.net.now.max(limit);
            return false;
        };
        // A deadline already past is retried a millisecond later, as a real clock would.
        let next = next.max(now + Duration::from_millis(1));
        if next > limit {
            self.net.now = self.net.now.max(limit);
            self.deliver();
            return false;
        }
        self.net.now = next;
        self.deliver();
        true
    }

    fn step(&mut self) {
        let limit = self.net.now + Duration::from_secs(3600);
        self.step_until(limit);
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.net.now + d;
        while self.net.now < limit && self.step_until(limit) {}
        self.pump();
    }

    /// Moves the clock without delivering anything on the way (a stalled process).
    fn jump(&mut self, d: Duration) {
        self.pump();
        self.net.now += d;
        self.deliver();
        self.pump();
    }

    // ---- checks -------------------------------------------------------------------

    /// Panics on an error honest engines must not cause each other.
    fn check_error(&self, who: &str, what: &str, code: ErrorCode, reason: &str) {
        if honest_error(code, reason) {
            return;
        }
        panic!("{who}: {what} between honest engines: {code:?}: {reason}");
    }

    fn check_session_error(&self, who: &str, error: &SessionError) {
        match error {
            SessionError::ProtocolViolation(e) => {
                self.check_error(who, "a protocol violation", e.code, &e.reason)
            }
            SessionError::PeerProtocolError { code, reason } => {
                self.check_error(who, "closed by the peer for a violation", *code, reason)
            }
            _ => {}
        }
    }

    fn check_path_error(&self, who: &str, path: PathId, error: &PathError) {
        match error {
            PathError::Protocol(e) => self.check_error(
                who,
                &format!("{path} failed with a violation"),
                e.code,
                &e.reason,
            ),
            PathError::Connection(e) => self.check_session_error(who, e),
            _ => {}
        }
    }

    // ---- applications -------------------------------------------------------------

    fn client_events(&mut self) -> bool {
        let mut any = false;
        let mut n = 0;
        while let Some(event) = self.nodes[M_CLIENT].ep.poll_event() {
            any = true;
            n += 1;
            assert!(n < 1_000_000, "client: poll_event does not end");
            match event {
                Event::Connected(h) => {
                    assert!(self.client.session.is_none(), "client: connected twice");
                    self.client.session = Some(h);
                }
                Event::Incoming(_) => panic!("client: an incoming session"),
                Event::Closed { session, error } => {
                    assert_eq!(
                        Some(session),
                        self.client.session,
                        "client: closed a stranger"
                    );
                    assert!(self.client.closed.is_none(), "client: closed twice");
                    self.check_session_error("client", &error);
                    self.client.closed = Some(error);
                }
                Event::PathFailed { path, error, .. } => {
                    assert_ne!(
                        path,
                        PathId::PRIMARY,
                        "client: the primary path failed alone"
                    );
                    self.check_path_error("client", path, &error);
                    self.report.path_failures += 1;
                }
                _ => {}
            }
        }
        any
    }

    fn server_events(&mut self, n: usize) -> bool {
        let mut any = false;
        let mut count = 0;
        while let Some(event) = self.nodes[n].ep.poll_event() {
            any = true;
            count += 1;
            let name = self.nodes[n].name;
            assert!(count < 1_000_000, "{name}: poll_event does not end");
            match event {
                Event::Incoming(h) => {
                    // Events are queued: the session may be gone already (its connection
                    // drained in the same drive).
                    let Some(role) = self.nodes[n].ep.session(h).map(|s| s.role()) else {
                        continue;
                    };
                    let app = &mut self.servers[n - 1];
                    assert!(
                        !app.sessions.contains_key(&h),
                        "{name}: {h:?} came in twice"
                    );
                    app.sessions.insert(h, role);
                    match role {
                        Role::Primary => {
                            assert_eq!(n, M_PRIMARY, "{name}: a client dialed a secondary");
                            assert!(self.primary.is_none(), "{name}: a second primary session");
                            self.primary = Some(h);
                        }
                        Role::Secondary => {}
                        Role::Client => panic!("{name}: a client session came in"),
                    }
                }
                Event::Connected(_) => panic!("{name}: a server connected out"),
                Event::Closed { error, .. } => self.check_session_error(name, &error),
                Event::DelegationReceived { session } => self.accept_delegations(n, session),
                Event::PathActive { path, .. } if n == M_PRIMARY => {
                    if self.same_peer.contains(&path) {
                        self.report.same_peer_joined += 1;
                    } else {
                        self.report.secondaries_joined += 1;
                    }
                }
                Event::PathFailed { path, error, .. } => self.check_path_error(name, path, &error),
                Event::StripeFinished { .. } => self.report.stripes_finished += 1,
                Event::DelegationFinished { outcome, .. } if outcome != DelegationOutcome::Done => {
                    self.report.delegations_failed += 1;
                }
                _ => {}
            }
        }
        any
    }

    fn accept_delegations(&mut self, n: usize, session: SessionHandle) {
        let name = self.nodes[n].name;
        let Some(mut s) = self.nodes[n].ep.session(session) else {
            return;
        };
        while let Some(d) = s.accept_delegation() {
            assert!(d.len > 0, "{name}: an empty delegation");
            let body = self.bodies.get(&d.stream).unwrap_or_else(|| {
                panic!("{name}: delegated {} the primary never opened", d.stream)
            });
            assert!(
                d.offset.checked_add(d.len).is_some_and(|e| e <= body.end),
                "{name}: delegated {}..+{} of {}, the primary handed out {}",
                d.offset,
                d.len,
                d.stream,
                body.end
            );
            self.servers[n - 1].serving.push(Serving {
                session,
                id: d.id,
                stream: d.stream,
                next: d.offset,
                end: d.offset + d.len,
            });
        }
    }

    /// Writes up to `budget` bytes of node `n`'s delegated ranges; returns whether it
    /// wrote any.
    fn serve(&mut self, n: usize, mut budget: u64) -> bool {
        let name = self.nodes[n].name;
        let ep = &mut self.nodes[n].ep;
        let app = &mut self.servers[n - 1];
        let mut wrote = 0;
        app.serving.retain_mut(|r| {
            let Some(mut s) = ep.session(r.session) else {
                return false;
            };
            let mut d = s.delegated(r.id);
            while r.next < r.end && budget > 0 {
                let want = (r.end - r.next).min(32 << 10).min(budget) as usize;
                match d.write(&pattern_bytes(r.stream, r.next, want)) {
                    Ok(k) => {
                        assert!(
                            k > 0 && k <= want,
                            "{name}: delegated write took {k} of {want}"
                        );
                        r.next += k as u64;
                        budget -= k as u64;
                        wrote += k as u64;
                        assert_eq!(
                            d.remaining(),
                            r.end - r.next,
                            "{name}: remaining bytes of {:?}",
                            r.id
                        );
                    }
                    Err(WriteError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            r.next < r.end
        });
        if n != M_PRIMARY {
            self.report.secondary_bytes += wrote;
        }
        wrote > 0
    }

    /// The client accepts the primary's streams and, unless paused, reads them.
    fn client_read(&mut self) -> bool {
        let Some(h) = self.client.session else {
            return false;
        };
        let Some(mut s) = self.nodes[M_CLIENT].ep.session(h) else {
            return false;
        };
        let mut any = false;
        for dir in [Dir::Uni, Dir::Bi] {
            while let Some(id) = s.accept(dir) {
                any = true;
                assert_eq!(
                    id.initiator(),
                    kwik_core::Side::Server,
                    "client: accepted {id}"
                );
                assert!(
                    self.bodies.contains_key(&id),
                    "client: accepted {id} the primary never opened"
                );
                assert!(
                    self.client.streams.insert(id, (0, false)).is_none(),
                    "client: accepted {id} twice"
                );
            }
        }
        if self.client.paused {
            return any;
        }
        for (id, (read, fin)) in self.client.streams.iter_mut() {
            let body = self.bodies.get(id).copied().unwrap_or_default();
            let mut reads = 0;
            while !*fin {
                reads += 1;
                assert!(reads < 100_000, "client: reads of {id} never end");
                match s.recv_stream(*id).read(64 << 10) {
                    Ok(Some(bytes)) => {
                        any = true;
                        assert!(!bytes.is_empty(), "client: empty read on {id}");
                        assert!(
                            bytes[..] == pattern_bytes(*id, *read, bytes.len())[..],
                            "client: wrong bytes on {id} at offset {}",
                            *read
                        );
                        *read += bytes.len() as u64;
                        assert!(
                            *read <= body.end,
                            "client: read {} bytes of {id}, the primary handed out {}",
                            *read,
                            body.end
                        );
                    }
                    Ok(None) => {
                        any = true;
                        *fin = true;
                        assert!(body.finished, "client: the end of {id} nobody finished");
                        assert_eq!(*read, body.end, "client: {id} ended early or late");
                        self.report.completed += 1;
                    }
                    Err(ReadError::Reset(code)) => {
                        panic!("client: {id} reset with {code} though nobody reset it")
                    }
                    Err(_) => break,
                }
            }
        }
        any
    }

    // ---- operations ---------------------------------------------------------------

    fn primary_session(&mut self) -> Option<kwik_core::Session<'_>> {
        let h = self.primary?;
        self.nodes[M_PRIMARY].ep.session(h)
    }

    fn pick_stream(&self, b: u8) -> Option<StreamId> {
        (!self.order.is_empty()).then(|| self.order[usize::from(b) % self.order.len()])
    }

    fn body_len(&self, hi: u8, lo: u8) -> u64 {
        let len = (u64::from(u16::from_be_bytes([hi, lo])) + 1) * 16;
        len.min(MULTI_MAX_BODY).min(MULTI_MAX_TOTAL - self.total)
    }

    fn open(&mut self, dir: Dir) {
        let Some(id) = self.primary_session().and_then(|mut s| s.open(dir)) else {
            return;
        };
        assert_eq!(
            id.initiator(),
            kwik_core::Side::Server,
            "primary: opened {id}"
        );
        assert!(
            self.bodies.insert(id, Body::default()).is_none(),
            "primary: {id} opened twice"
        );
        self.order.push(id);
    }

    fn write(&mut self, id: StreamId, n: u64) {
        let n = n.min(MULTI_MAX_TOTAL - self.total);
        let Some(body) = self.bodies.get(&id).copied() else {
            return;
        };
        if n == 0 || body.finished {
            return;
        }
        let data = pattern_bytes(id, body.end, n as usize);
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if let Ok(k) = s.send_stream(id).write(&data) {
            assert!(k > 0 && k as u64 <= n, "primary: write took {k} of {n}");
            self.total += k as u64;
            if let Some(b) = self.bodies.get_mut(&id) {
                b.end += k as u64;
            }
        }
    }

    fn stripe(&mut self, id: StreamId, len: u64) {
        let now = self.now();
        if len == 0 || self.bodies.get(&id).is_none_or(|b| b.finished) {
            return;
        }
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if s.send_stream(id)
            .stripe(now, Bytes::from_static(b"body"), len)
            .is_ok()
        {
            self.report.stripes += 1;
            self.total += len;
            if let Some(b) = self.bodies.get_mut(&id) {
                b.stripe = Some((b.end, b.end + len));
                b.end += len;
            }
        }
    }

    fn delegate(&mut self, id: StreamId, pick: u8, len: u64) {
        if len == 0 || self.bodies.get(&id).is_none_or(|b| b.finished) {
            return;
        }
        let now = self.now();
        let Some(mut s) = self.primary_session() else {
            return;
        };
        let paths = s.paths();
        let path = paths[usize::from(pick) % paths.len()].id;
        if s.send_stream(id)
            .delegate(now, path, Bytes::from_static(b"range"), len)
            .is_ok()
        {
            self.report.delegations += 1;
            self.total += len;
            if let Some(b) = self.bodies.get_mut(&id) {
                b.end += len;
            }
        }
    }

    fn finish(&mut self, id: StreamId) {
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if s.send_stream(id).finish().is_ok() {
            let b = self
                .bodies
                .get_mut(&id)
                .expect("a stream the primary opened");
            assert!(!b.finished, "primary: finished {id} twice");
            b.finished = true;
        }
    }

    fn add_path(&mut self, which: u8) {
        let now = self.now();
        let addr = MULTI_SECONDARIES[usize::from(which) % self.secondaries];
        if let Some(mut s) = self.primary_session() {
            let _ = s.add_path(now, addr, "localhost");
        }
    }

    fn add_same_peer_path(&mut self, backup: bool) {
        let now = self.now();
        let kind = if backup {
            PathKind::Backup
        } else {
            PathKind::SamePeer
        };
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if let Ok(path) = s.add_same_peer_path(now, MULTI_ALIAS, "localhost", kind) {
            self.same_peer.push(path);
        }
    }

    /// `remove_path` on the primary (`client` false) or the client of the `pick`th path
    /// other than the primary path.
    fn remove_path(&mut self, client: bool, pick: u8) {
        let now = self.now();
        let (n, h) = if client {
            (M_CLIENT, self.client.session)
        } else {
            (M_PRIMARY, self.primary)
        };
        let Some(mut s) = h.and_then(|h| self.nodes[n].ep.session(h)) else {
            return;
        };
        let paths: Vec<PathId> = s
            .paths()
            .iter()
            .filter(|p| !p.is_primary)
            .map(|p| p.id)
            .collect();
        if paths.is_empty() {
            return;
        }
        s.remove_path(now, paths[usize::from(pick) % paths.len()]);
    }

    /// Secondary `which` closes every session it holds; with `shut_down`, it also stops
    /// accepting, so that the client's retries find nobody.
    fn close_secondary(&mut self, which: u8, shut_down: bool) {
        let now = self.now();
        let n = 2 + usize::from(which) % self.secondaries;
        let app = &mut self.servers[n - 1];
        let ep = &mut self.nodes[n].ep;
        for h in app.sessions.keys() {
            if let Some(mut s) = ep.session(*h) {
                s.close(now, VarInt::from_u32(0), b"shutting down");
            }
        }
        if shut_down && !app.shut_down {
            app.shut_down = true;
            ep.set_server_config(None);
        }
    }

    /// The engines hold no more than a generous bound of sessions, connections and paths.
    fn check_bounds(&mut self) {
        for node in &mut self.nodes {
            let stats = node.ep.stats();
            assert!(
                node.ep.session_count() <= MULTI_MAX_SESSIONS,
                "{}: {} sessions",
                node.name,
                node.ep.session_count()
            );
            assert!(
                stats.connections <= MULTI_MAX_CONNECTIONS,
                "{}: {} connections",
                node.name,
                stats.connections
            );
        }
        for (n, h) in [(M_CLIENT, self.client.session), (M_PRIMARY, self.primary)] {
            let name = self.nodes[n].name;
            if let Some(s) = h.and_then(|h| self.nodes[n].ep.session(h)) {
                let paths = s.paths();
                assert!(
                    paths.len() <= MULTI_MAX_PATHS,
                    "{name}: the session holds {} paths",
                    paths.len()
                );
                let live = paths
                    .iter()
                    .filter(|p| p.state != PathState::Removed)
                    .count();
                assert!(
                    live <= 8,
                    "{name}: {live} live paths, above max_paths_per_session"
                );
            }
        }
    }

    fn session_alive(&mut self, n: usize, h: Option<SessionHandle>) -> bool {
        h.and_then(|h| self.nodes[n].ep.session(h))
            .is_some_and(|s| s.error().is_none())
    }

    /// Every stream the primary finished was read to its end.
    fn complete(&self) -> bool {
        self.bodies
            .iter()
            .all(|(id, b)| !b.finished || self.client.streams.get(id).is_some_and(|(_, fin)| *fin))
    }

    /// Heals the network (blackholes stay), lets every application work, finishes every
    /// stream and runs until each completed or a session ended.
    fn settle(&mut self) {
        for link in &mut self.net.links {
            link.impair = None;
        }
        for app in &mut self.servers {
            app.paused = false;
        }
        self.client.paused = false;
        self.pump();
        for id in self.order.clone() {
            if self.bodies.get(&id).is_some_and(|b| !b.finished) {
                self.finish(id);
            }
        }
        let limit = self.now() + MULTI_SETTLE;
        loop {
            self.pump();
            let alive = self.session_alive(M_CLIENT, self.client.session)
                && self.session_alive(M_PRIMARY, self.primary);
            if !alive || self.complete() || self.now() >= limit {
                break;
            }
            self.step_until(limit);
        }
        self.check_bounds();
        let alive = self.session_alive(M_CLIENT, self.client.session)
            && self.session_alive(M_PRIMARY, self.primary);
        if !alive {
            return;
        }
        // The primary path is up and every server serves: a range is delivered or its
        // path fails and the primary serves it, so every finished stream completes.
        self.report.completion_checked = true;
        for (id, b) in &self.bodies {
            let got = self.client.streams.get(id).copied();
            assert!(
                !b.finished || got.is_some_and(|(_, fin)| fin),
                "{id} of {} bytes did not complete within {MULTI_SETTLE:?}: the client has \
                 {got:?}; primary paths {:?}; client paths {:?}",
                b.end,
                self.primary
                    .and_then(|h| self.nodes[M_PRIMARY].ep.session(h))
                    .map(|s| path_states(&s.paths())),
                self.client
                    .session
                    .and_then(|h| self.nodes[M_CLIENT].ep.session(h))
                    .map(|s| path_states(&s.paths())),
            );
        }
    }
}

fn path_states(paths: &[kwik_core::PathInfo]) -> Vec<(u32, PathState)> {
    paths.iter().map(|p| (p.id.0, p.state)).collect()
}

/// Drives a client, a primary and one or two secondaries sharing a group key over an
/// in-memory network, with the input as a program of operations.
///
/// Input: `[config bits, link delay bits, ops...]`. Config bit 0 adds a second secondary,
/// bits 1..=3 pick the load balancing, bit 4 small windows, bit 5 a stripe depth of 1, bit
/// 6 one stream per carrier; each link's delay is 1, 2, 5 or 12 ms by two bits of the
/// second byte (primary, its alias, secondary 1, secondary 2). Each op is a byte,
/// `op % 16` the call, followed by its argument bytes: add a secondary path, add a
/// same-peer path, remove a path, open a stream, write, stripe, delegate, finish, pause a
/// server's application, let one serve, impair a link, blackhole a link, close a secondary,
/// run for a while, jump the clock, and a client call (pause reading or remove a path).
///
/// The body byte at offset `o` of stream `id` is `pattern(id, o)` whoever sends it, so
/// every read is checked; nothing may read past what the primary handed out, protocol
/// errors between these honest engines fail the run, and at the end, the network healed
/// but for blackholes, every finished stream must complete if both sessions are alive.
pub fn engine_multi(data: &[u8]) {
    engine_multi_report(data);
}

/// [`engine_multi`], returning what the run reached.
pub fn engine_multi_report(data: &[u8]) -> MultiReport {
    let [config_bits, link_bits, ops @ ..] = data else {
        return MultiReport::default();
    };
    let mut w = Multi::new(*config_bits, *link_bits);
    let stop = w.now() + MULTI_OPS_TIME;
    let mut ops = ops.iter().copied();
    let mut count = 0;
    while let Some(op) = ops.next() {
        count += 1;
        if count > MULTI_MAX_OPS || w.now() >= stop {
            break;
        }
        let mut arg = || ops.next().unwrap_or(0);
        match op % 16 {
            0 => w.add_path(arg()),
            1 => w.add_same_peer_path(arg() & 1 != 0),
            2 => w.remove_path(false, arg()),
            3 => w.open(if arg() & 1 == 0 { Dir::Uni } else { Dir::Bi }),
            4 => {
                let (s, len) = (arg(), arg());
                if let Some(id) = w.pick_stream(s) {
                    w.write(id, (u64::from(len) + 1) * 256);
                }
            }
            5 => {
                let (s, hi, lo) = (arg(), arg(), arg());
                let len = w.body_len(hi, lo);
                if let Some(id) = w.pick_stream(s) {
                    w.stripe(id, len);
                }
            }
            6 => {
                let (s, path, hi, lo) = (arg(), arg(), arg(), arg());
                let len = w.body_len(hi, lo);
                if let Some(id) = w.pick_stream(s) {
                    w.delegate(id, path, len);
                }
            }
            7 => {
                if let Some(id) = w.pick_stream(arg()) {
                    w.finish(id);
                }
            }
            8 => {
                let i = usize::from(arg()) % (1 + w.secondaries);
                w.servers[i].paused = !w.servers[i].paused;
            }
            9 => {
                let (i, kib) = (arg(), arg());
                let n = 1 + usize::from(i) % (1 + w.secondaries);
                w.serve(n, (u64::from(kib) + 1) << 10);
            }
            10 => {
                let (link, pattern, left) = (arg(), arg(), arg());
                w.net.links[usize::from(link) % 4].impair = Some(Impair {
                    pattern,
                    left: u16::from(left) + 1,
                    n: 0,
                });
            }
            11 => {
                let link = &mut w.net.links[1 + usize::from(arg()) % 3];
                link.blackholed = !link.blackholed;
            }
            12 => {
                let a = arg();
                w.close_secondary(a >> 1, a & 1 != 0);
            }
            13 => w.run_for(Duration::from_millis((u64::from(arg()) + 1) * 2)),
            14 => {
                let ms = u64::from(arg());
                w.jump(Duration::from_millis(ms * ms));
            }
            _ => {
                let a = arg();
                if a & 1 == 0 {
                    w.client.paused = !w.client.paused;
                } else {
                    w.remove_path(true, a >> 1);
                }
            }
        }
        w.pump();
        w.check_bounds();
    }
    w.settle();
    w.report
}
