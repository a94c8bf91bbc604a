//! A soak in the simulator: many client sessions stripe bodies from a primary and two
//! secondaries, over and over, while secondaries go silent and come back at random and
//! hostile peers come and go (garbage on the control stream, control floods, a reader
//! that barely reads). Every byte of every transfer is compared with the body, and the
//! engines' structures (sessions, connections, paths, carriers, streams, buffered bytes)
//! are sampled every virtual second against their bounds.
//!
//! `tests/tests/sim/soak_sim.rs` runs one virtual minute of it; the `soak` example runs the
//! same pattern on loopback sockets in real time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_core::{
    Config, Dir, Endpoint, Event, GroupKey, PathState, ReadError, Role, SessionHandle, StreamId,
};
use kwik_proto::Ping;
use kwik_proto::control_frame::Kind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::app::payload;
use crate::certs::TestCert;
use crate::cluster::{GROUP_KEY, Server};
use crate::net::LinkConfig;
use crate::raw::{client_config, control_frame, default_limits};
use crate::sim::{NodeId, Sim, addr, drive_until};

/// What a soak runs.
#[derive(Debug, Clone, Copy)]
pub struct SoakConfig {
    /// Seeds the network and every random choice.
    pub seed: u64,
    /// Honest client sessions (one client host each).
    pub sessions: usize,
    /// Virtual time to run.
    pub duration: Duration,
    /// Largest body one transfer stripes.
    pub max_body: usize,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            sessions: 8,
            duration: Duration::from_secs(60),
            max_body: 2 << 20,
        }
    }
}

/// The highest of each structure seen at any sample.
#[derive(Debug, Default, Clone)]
pub struct Peaks {
    /// Sessions on any one server.
    pub server_sessions: u64,
    /// QUIC connections on any one server.
    pub server_connections: u64,
    /// Paths (any state) of any one client session.
    pub paths: usize,
    /// Live (not removed) paths of any one client session.
    pub live_paths: usize,
    /// Carriers any server opened on one path.
    pub carriers: usize,
    /// Open streams of any one session.
    pub streams: u64,
    /// Received, unread bytes of any one session.
    pub unread: u64,
}

/// What a soak saw.
#[derive(Debug, Default, Clone)]
pub struct SoakReport {
    /// Transfers whose every byte arrived and matched the body.
    pub transfers: u64,
    /// Bytes those transfers carried.
    pub bytes: u64,
    /// Transfers that ended with a wrong length or a wrong byte.
    pub mismatches: u64,
    /// Honest sessions that ended.
    pub sessions_lost: Vec<String>,
    /// Times a secondary was silenced.
    pub blackholes: u64,
    /// Paths re-added after the client removed them.
    pub readds: u64,
    /// Hostile peers that came.
    pub hostile: u64,
    /// Hostile peers the servers closed with a typed error.
    pub hostile_closed: u64,
    /// Transfers completed per honest session, lowest.
    pub fewest_transfers: u64,
    /// The structures' peaks.
    pub peaks: Peaks,
    /// Server structures at the end, after the hostile peers left.
    pub end_sessions: u64,
    /// Server connections at the end.
    pub end_connections: u64,
}

/// One honest client: its session and the transfer under way.
struct Client {
    node: NodeId,
    session: SessionHandle,
    /// The primary's handle of this session.
    primary_session: Option<SessionHandle>,
    connected: bool,
    closed: Option<String>,
    /// The stream being read, its expected length, the bytes so far, and whether each
    /// matched the body.
    stream: Option<StreamId>,
    expected: u64,
    read: u64,
    intact: bool,
    /// Reads at most this many bytes per virtual millisecond (a slow reader), if set.
    slow: Option<u64>,
    last_read: Option<Instant>,
    transfers: u64,
    /// Lengths the primary striped on this session, in stream order, not yet read.
    queued: std::collections::VecDeque<u64>,
    busy: bool,
}

/// The soak world.
struct Soak {
    sim: Sim,
    cert: TestCert,
    servers: Vec<NodeId>,
    server_addrs: Vec<SocketAddr>,
    apps: Vec<Server>,
    body: Bytes,
    clients: Vec<Client>,
    rng: ChaCha8Rng,
    report: SoakReport,
    /// Secondaries silenced, until when.
    silenced: BTreeMap<usize, Instant>,
    /// Hostile raw peers, by index in `sim.hosts.raw`.
    hostile: Vec<usize>,
    max_body: usize,
}

fn server_config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 1 << 20;
    c.receive_window = 4 << 20;
    c
}

fn client_engine_config() -> Config {
    server_config()
}

impl Soak {
    fn new(cfg: SoakConfig) -> Self {
        let cert = TestCert::localhost();
        let mut sim = Sim::new(cfg.seed);
        let mut servers = Vec::new();
        let mut server_addrs = Vec::new();
        for i in 0..3u8 {
            let a = addr([10, 1, i + 1, 1], 4433);
            let mut config = cert.server(server_config());
            config.group_key(GroupKey::new(GROUP_KEY));
            config.max_sessions(4 * cfg.sessions + 16);
            servers.push(sim.add_node(a, Some(config)));
            server_addrs.push(a);
        }
        let mut clients = Vec::new();
        for k in 0..cfg.sessions {
            let a = addr([10, 0, (k / 200) as u8, (k % 200) as u8 + 2], 5000);
            for (i, s) in server_addrs.iter().enumerate() {
                let rate = [20, 10, 5][i];
                let link = LinkConfig::default()
                    .rate_mbit(rate)
                    .delay_ms(5 + 5 * i as u64)
                    .queue_ms(50);
                sim.net.link(a.ip(), s.ip(), link);
            }
            let node = sim.add_node(a, None);
            let now = sim.now();
            let session = sim.nodes[node]
                .endpoint
                .connect(
                    now,
                    &cert.client(client_engine_config()),
                    server_addrs[0],
                    "localhost",
                )
                .expect("connect");
            clients.push(Client {
                node,
                session,
                primary_session: None,
                connected: false,
                closed: None,
                stream: None,
                expected: 0,
                read: 0,
                intact: true,
                // The last client is a slow reader: 50 kB/s.
                slow: (k + 1 == cfg.sessions && cfg.sessions > 1).then_some(50),
                last_read: None,
                transfers: 0,
                queued: Default::default(),
                busy: false,
            });
        }
        let apps = (0..3).map(|_| Server::default()).collect();
        Self {
            sim,
            cert,
            servers,
            server_addrs,
            apps,
            body: payload(cfg.seed, cfg.max_body),
            clients,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x50a4),
            report: SoakReport::default(),
            silenced: BTreeMap::new(),
            hostile: Vec::new(),
            max_body: cfg.max_body,
        }
    }

    fn sim(s: &mut Soak) -> &mut Sim {
        &mut s.sim
    }

    /// Hands events to the applications and moves data.
    fn poll(&mut self) {
        let now = self.sim.now();
        for (i, node) in self.servers.iter().enumerate() {
            let events = self.sim.take_events(*node);
            let app = &mut self.apps[i];
            app.poll(&mut self.sim.nodes[*node].endpoint, events, &self.body);
            // The soak keeps no event log: it would grow for the whole run.
            app.events.clear();
            app.closed.clear();
        }
        for c in &mut self.clients {
            let events = self.sim.take_events(c.node);
            let ep = &mut self.sim.nodes[c.node].endpoint;
            for e in events {
                match e {
                    Event::Connected(h) if h == c.session => c.connected = true,
                    Event::Closed { session, error } if session == c.session => {
                        c.closed = Some(error.to_string());
                    }
                    _ => {}
                }
            }
            read_client(c, ep, now, &self.body, &mut self.report);
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        drive_until(self, d, Soak::sim, |s| {
            s.poll();
            s.sim.now() >= end
        });
    }

    /// The primary's sessions with the honest clients, matched by the client's address.
    fn match_sessions(&mut self) {
        let primary = self.servers[0];
        for c in &mut self.clients {
            if c.primary_session.is_some() {
                continue;
            }
            let client_addr = self.sim.nodes[c.node].addr;
            let ep = &mut self.sim.nodes[primary].endpoint;
            c.primary_session = self.apps[0]
                .sessions
                .iter()
                .filter(|(_, r)| **r == Role::Primary)
                .map(|(h, _)| *h)
                .find(|h| {
                    ep.session(*h)
                        .and_then(|s| s.remote_address())
                        .is_some_and(|a| a == client_addr)
                });
        }
    }

    /// The primary keeps both secondaries in every session (adding back a path the client
    /// removed) and starts the next transfer of every idle session.
    fn drive_primary(&mut self) {
        self.match_sessions();
        let now = self.sim.now();
        let primary = self.servers[0];
        let secondaries = [self.server_addrs[1], self.server_addrs[2]];
        for c in &mut self.clients {
            let Some(h) = c.primary_session else { continue };
            let ep = &mut self.sim.nodes[primary].endpoint;
            let Some(mut s) = ep.session(h) else { continue };
            let paths = s.paths();
            for a in secondaries {
                let live = paths
                    .iter()
                    .any(|p| p.address == a && p.state != PathState::Removed);
                if !live {
                    let had = paths.iter().any(|p| p.address == a);
                    if s.add_path(now, a, "localhost").is_ok() && had {
                        self.report.readds += 1;
                    }
                }
            }
            if !c.busy && c.closed.is_none() {
                let len = self.rng.random_range(1..=self.max_body) as u64;
                let Some(id) = s.open(Dir::Uni) else { continue };
                let mut send = s.send_stream(id);
                if send.stripe(now, Bytes::from_static(b"body"), len).is_ok()
                    && send.finish().is_ok()
                {
                    c.queued.push_back(len);
                    c.busy = true;
                }
            }
        }
    }

    /// Silences a random secondary for 1 to 12 s (past `path_recovery_timeout` at times),
    /// and heals those whose time is up.
    fn faults(&mut self) {
        let now = self.sim.now();
        let healed: Vec<usize> = self
            .silenced
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in healed {
            self.silenced.remove(&i);
            self.set_server_up(i, true);
        }
        if self.rng.random_range(0..4) == 0 {
            let i = self.rng.random_range(1..3);
            if !self.silenced.contains_key(&i) {
                let secs = self.rng.random_range(1..=12);
                self.silenced.insert(i, now + Duration::from_secs(secs));
                self.set_server_up(i, false);
                self.report.blackholes += 1;
            }
        }
    }

    fn set_server_up(&mut self, server: usize, up: bool) {
        let ip = self.server_addrs[server].ip();
        for c in &self.clients {
            let client_ip = self.sim.nodes[c.node].addr.ip();
            self.sim.net.set_up(client_ip, ip, up);
        }
    }

    /// Now and then a hostile peer connects to the primary: it sends garbage on its
    /// control stream, or floods it with pings.
    fn hostile_peer(&mut self) {
        if self.rng.random_range(0..3) != 0 {
            return;
        }
        let n = self.report.hostile as usize;
        let a = addr([10, 9, (n / 200) as u8, (n % 200) as u8 + 1], 6000);
        let primary = self.server_addrs[0];
        self.sim.net.link(
            a.ip(),
            primary.ip(),
            LinkConfig::default().rate_mbit(20).delay_ms(5),
        );
        let peer = self.sim.hosts.add_raw(a);
        let now = self.sim.now();
        self.sim.hosts.raw[peer].connect(
            now,
            client_config(std::slice::from_ref(&self.cert.cert)),
            primary,
            "localhost",
        );
        self.hostile.push(peer);
        self.report.hostile += 1;
    }

    /// Hostile peers that completed their handshake act.
    fn hostile_act(&mut self) {
        for &p in &self.hostile {
            let peer = &mut self.sim.hosts.raw[p];
            if !peer.connected || peer.lost.is_some() {
                continue;
            }
            if peer.control.is_none() {
                peer.hello(default_limits());
                continue;
            }
            if p % 2 == 0 {
                let garbage: Vec<u8> = (0..64).map(|i| (i * 37 + p) as u8).collect();
                peer.write_control(garbage);
            } else {
                // Above the servers' 1,000 control messages per second.
                for seq in 0..1500 {
                    peer.write_control(control_frame(Some(Kind::Ping(Ping { seq }))));
                }
            }
        }
    }

    /// Samples the structures.
    fn sample(&mut self) {
        let peaks = &mut self.report.peaks;
        for node in &self.servers {
            let stats = self.sim.nodes[*node].endpoint.stats();
            peaks.server_sessions = peaks.server_sessions.max(stats.sessions);
            peaks.server_connections = peaks.server_connections.max(stats.connections);
        }
        for (i, node) in self.servers.iter().enumerate() {
            let ep = &mut self.sim.nodes[*node].endpoint;
            for h in self.apps[i].sessions.keys() {
                let Some(s) = ep.session(*h) else { continue };
                for p in &s.stats().paths {
                    peaks.carriers = peaks.carriers.max(p.carriers);
                }
            }
        }
        for c in &self.clients {
            let ep = &mut self.sim.nodes[c.node].endpoint;
            let Some(s) = ep.session(c.session) else {
                continue;
            };
            let stats = s.stats();
            let paths = s.paths();
            peaks.paths = peaks.paths.max(paths.len());
            let live = paths
                .iter()
                .filter(|p| p.state != PathState::Removed)
                .count();
            peaks.live_paths = peaks.live_paths.max(live);
            for p in &stats.paths {
                peaks.carriers = peaks.carriers.max(p.carriers);
            }
            peaks.streams = peaks.streams.max(stats.streams_open);
            peaks.unread = peaks.unread.max(stats.bytes_unread);
        }
    }
}

/// Reads what the client's current transfer holds and checks each finished one.
fn read_client(
    c: &mut Client,
    ep: &mut Endpoint,
    now: Instant,
    body: &Bytes,
    report: &mut SoakReport,
) {
    let Some(mut s) = ep.session(c.session) else {
        return;
    };
    loop {
        if c.stream.is_none() {
            c.stream = s.accept(Dir::Uni);
            let Some(len) = c.stream.and_then(|_| c.queued.pop_front()) else {
                return;
            };
            c.expected = len;
            c.read = 0;
            c.intact = true;
        }
        let Some(id) = c.stream else { return };
        let max = match c.slow {
            Some(per_ms) => {
                let last = *c.last_read.get_or_insert(now);
                let allowed = (now - last).as_millis() as u64 * per_ms;
                if allowed == 0 {
                    return;
                }
                c.last_read = Some(now);
                allowed as usize
            }
            None => usize::MAX,
        };
        match s.recv_stream(id).read(max) {
            Ok(Some(chunk)) => {
                // Compared with the body in memory: no hash of either side.
                let at = c.read as usize;
                c.intact &= body.get(at..at + chunk.len()) == Some(&chunk[..]);
                c.read += chunk.len() as u64;
                if c.slow.is_some() {
                    return;
                }
            }
            Ok(None) => {
                if c.read == c.expected && c.intact {
                    report.transfers += 1;
                    report.bytes += c.read;
                    c.transfers += 1;
                } else {
                    report.mismatches += 1;
                }
                c.stream = None;
                c.busy = false;
            }
            Err(ReadError::Blocked) => return,
            Err(_) => {
                report.mismatches += 1;
                c.stream = None;
                c.busy = false;
                return;
            }
        }
    }
}

/// Runs a soak and reports what it saw.
pub fn run(cfg: SoakConfig) -> SoakReport {
    let mut soak = Soak::new(cfg);
    let start = soak.sim.now();
    while soak.sim.now() < start + cfg.duration {
        soak.drive_primary();
        soak.faults();
        soak.hostile_peer();
        soak.hostile_act();
        soak.run_for(Duration::from_millis(250));
        soak.hostile_act();
        soak.run_for(Duration::from_millis(250));
        soak.drive_primary();
        soak.run_for(Duration::from_millis(500));
        soak.sample();
    }
    // Heal everything, let the hostile peers go, and settle.
    for i in 1..3 {
        soak.set_server_up(i, true);
    }
    for _ in 0..5 {
        soak.hostile_act();
        soak.run_for(Duration::from_secs(1));
    }
    soak.sample();
    for c in &soak.clients {
        if let Some(e) = &c.closed {
            soak.report.sessions_lost.push(e.clone());
        }
    }
    soak.report.fewest_transfers = soak
        .clients
        .iter()
        .filter(|c| c.slow.is_none())
        .map(|c| c.transfers)
        .min()
        .unwrap_or(0);
    soak.report.hostile_closed = soak
        .hostile
        .iter()
        .filter(|p| soak.sim.hosts.raw[**p].lost.is_some())
        .count() as u64;
    let stats = soak.sim.nodes[soak.servers[0]].endpoint.stats();
    soak.report.end_sessions = stats.sessions;
    soak.report.end_connections = stats.connections;
    soak.report
}
