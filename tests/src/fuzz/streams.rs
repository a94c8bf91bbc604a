//! `engine_streams`: two connected endpoints driven by a program of stream API calls.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kwik_core::{
    Dir, Endpoint, EndpointConfig, Event, ReadError, ServerConfig, SessionError, SessionHandle,
    StreamId, VarInt, WriteError,
};

use super::{MAX_DRAIN, base, client_config, fuzz_config, pattern_bytes, server_config};

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
            id.initiator() == quinn_proto::Side::Client,
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
            id.initiator() == quinn_proto::Side::Client,
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
