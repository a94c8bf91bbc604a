//! `engine_multi`: a client, a primary and its secondaries over the simulator's network
//! ([`crate::net`]) with links the input impairs; the engines' loop on it, and the checks
//! of their errors.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::net::{Datagram, LinkConfig, Network, Script};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kwik_core::{
    Config, DelegationId, Endpoint, EndpointConfig, ErrorCode, GroupKey, LoadBalancing, PathError,
    PathId, PathState, Role, ServerConfig, SessionError, SessionHandle, StreamId,
};

use super::{MAX_DRAIN, MultiReport, base, client_config, server_config};

mod apps;
mod ops;

pub use ops::{engine_multi, engine_multi_report};

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
    /// One link between the client and each server address (see [`MULTI_LINKS`]).
    net: Network,
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
        let mut net = Network::new(0, now);
        for (i, far) in MULTI_LINKS.iter().enumerate() {
            let delay = delays[usize::from(link_bits >> (2 * i)) & 3];
            let link = LinkConfig::default().delay_ms(delay).mtu(usize::MAX);
            net.link(MULTI_CLIENT.ip(), far.ip(), link);
        }
        let mut world = Self {
            net,
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
        while world.net.now() < deadline {
            world.step();
            if world.client.session.is_some() && world.primary.is_some() {
                return world;
            }
        }
        panic!("the in-memory handshake did not complete");
    }

    fn now(&self) -> Instant {
        self.net.now()
    }

    /// Gives both directions of link `link` the fates of `script` (`None` heals them).
    fn script(&mut self, link: usize, script: Option<Script>) {
        let (a, b) = (MULTI_CLIENT.ip(), MULTI_LINKS[link].ip());
        self.net.script(a, b, script);
        self.net.script(b, a, script);
    }

    /// Blackholes link `link` both ways, what is in flight on it included, or lifts that.
    fn toggle_blackhole(&mut self, link: usize) {
        let (a, b) = (MULTI_CLIENT.ip(), MULTI_LINKS[link].ip());
        for (from, to) in [(a, b), (b, a)] {
            if let Some(c) = self.net.config_mut(from, to) {
                c.up = !c.up;
            }
        }
    }

    /// Sends what node `n` has to send; returns whether it sent anything.
    fn transmit(&mut self, n: usize) -> bool {
        let now = self.net.now();
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
            let src = if n == M_CLIENT {
                assert!(
                    link_of(t.destination).is_some(),
                    "client: datagram to unknown address {}",
                    t.destination
                );
                node.addr
            } else {
                assert_eq!(
                    t.destination, MULTI_CLIENT,
                    "{}: datagram to a stranger",
                    node.name
                );
                match (t.src_ip, node.alias) {
                    (Some(ip), Some(alias)) if alias.ip() == ip => alias,
                    _ => node.addr,
                }
            };
            let seg = t.segment_size.unwrap_or(t.size).max(1);
            for d in self.buf[..t.size].chunks(seg) {
                self.net.send(Datagram::new(src, t.destination, d.to_vec()));
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
        let now = self.net.now();
        while let Some(p) = self.net.pop_delivered() {
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
        let now = self.net.now();
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
            self.net.advance_to(now.max(limit));
            return false;
        };
        // A deadline already past is retried a millisecond later, as a real clock would.
        let next = next.max(now + Duration::from_millis(1));
        if next > limit {
            self.net.advance_to(now.max(limit));
            self.deliver();
            return false;
        }
        self.net.advance_to(next);
        self.deliver();
        true
    }

    fn step(&mut self) {
        let limit = self.net.now() + Duration::from_secs(3600);
        self.step_until(limit);
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.net.now() + d;
        while self.net.now() < limit && self.step_until(limit) {}
        self.pump();
    }

    /// Moves the clock without delivering anything on the way (a stalled process).
    fn jump(&mut self, d: Duration) {
        self.pump();
        self.net.advance_by(d);
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
}

fn path_states(paths: &[kwik_core::PathInfo]) -> Vec<(u32, PathState)> {
    paths.iter().map(|p| (p.id.0, p.state)).collect()
}
