//! The KWIK simulator: a deterministic network in virtual time ([`net`]) and a world of
//! KWIK engines on it ([`Sim`]), for the integration tests and the fuzz targets alike.
//!
//! The loop follows the sans-IO rule: after every input, drain every output (transmits,
//! events), then advance the clock to the earliest of the network's next delivery and the
//! endpoints' timers. Hosts that are not KWIK engines (bare QUIC peers, hostile peers)
//! plug in through [`Hosts`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod net;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kwik_core::{EcnCodepoint, Endpoint, EndpointConfig, Event, ServerConfig};

use crate::net::{Datagram, Network};

/// Hosts that are not KWIK engines, driven beside a [`Sim`]'s nodes.
pub trait Hosts {
    /// No hosts yet; `seed` is the world's, for theirs.
    fn new(seed: u64) -> Self;
    /// Takes a datagram for one of them; hands it back when none listens at its
    /// destination.
    fn deliver(&mut self, now: Instant, dg: Datagram) -> Option<Datagram>;
    /// Sends what they have to send.
    fn transmit(&mut self, now: Instant, net: &mut Network);
    /// Runs their timers that are due.
    fn handle_timeout(&mut self, now: Instant);
    /// Their earliest timer.
    fn poll_timeout(&mut self) -> Option<Instant>;
}

/// No hosts besides the nodes.
impl Hosts for () {
    fn new(_: u64) -> Self {}
    fn deliver(&mut self, _: Instant, dg: Datagram) -> Option<Datagram> {
        Some(dg)
    }
    fn transmit(&mut self, _: Instant, _: &mut Network) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

/// One host: an engine bound to one address.
pub struct Node {
    /// The engine.
    pub endpoint: Endpoint,
    /// Its address.
    pub addr: SocketAddr,
    /// Events drained from the engine and not yet taken by the test.
    pub events: Vec<Event>,
    /// More addresses of the same host (a multihomed server).
    pub aliases: Vec<SocketAddr>,
    /// The host's process is stalled (see [`Sim::freeze`]): datagrams wait in `backlog`
    /// and its timers do not fire.
    pub frozen: bool,
    /// Datagrams that arrived while frozen, in order.
    pub backlog: Vec<Datagram>,
    /// The engine's timer when it was frozen.
    pub frozen_deadline: Option<Instant>,
}

/// A simulated world: a network, the KWIK engines on it, and other `hosts`.
pub struct Sim<H = ()> {
    /// The network between the nodes.
    pub net: Network,
    /// The KWIK hosts.
    pub nodes: Vec<Node>,
    /// The other hosts, driven alongside the nodes.
    pub hosts: H,
    /// Datagrams delivered to each watched address (see [`Sim::watch`]), in order, with
    /// the time of delivery.
    watched: BTreeMap<SocketAddr, Vec<(Instant, Datagram)>>,
    buf: Vec<u8>,
    seed: u64,
}

/// The Unix time at which every simulation starts.
pub const WALL_CLOCK_START: Duration = Duration::from_secs(1_800_000_000);

/// Index of a node in [`Sim::nodes`].
pub type NodeId = usize;

impl<H: Hosts> Sim<H> {
    /// An empty world whose clock starts at an arbitrary fixed instant.
    pub fn new(seed: u64) -> Self {
        Self {
            net: Network::new(seed, Instant::now()),
            nodes: Vec::new(),
            hosts: H::new(seed),
            watched: BTreeMap::new(),
            buf: Vec::with_capacity(64 * 1024),
            seed,
        }
    }

    /// Adds a host at `addr`; with `server` it accepts sessions.
    pub fn add_node(&mut self, addr: SocketAddr, server: Option<ServerConfig>) -> NodeId {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&(self.nodes.len() as u64).to_le_bytes());
        let mut endpoint = Endpoint::new(
            EndpointConfig {
                seed,
                allow_mtud: false,
            },
            server,
        );
        // Every node's wall clock agrees, as NTP-synchronised servers would.
        endpoint.set_wall_clock(self.net.now(), WALL_CLOCK_START);
        self.nodes.push(Node {
            endpoint,
            addr,
            events: Vec::new(),
            aliases: Vec::new(),
            frozen: false,
            backlog: Vec::new(),
            frozen_deadline: None,
        });
        self.nodes.len() - 1
    }

    /// Gives `node` another address (a multihomed host): datagrams to it reach the node,
    /// and the node answers from it.
    pub fn add_alias(&mut self, node: NodeId, addr: SocketAddr) {
        self.nodes[node].aliases.push(addr);
    }

    /// Records every datagram delivered to `addr` from now on (see [`Sim::watched`]),
    /// whether or not a host listens there.
    pub fn watch(&mut self, addr: SocketAddr) {
        self.watched.entry(addr).or_default();
    }

    /// The datagrams delivered to a watched `addr` so far, with the time of delivery.
    pub fn watched(&self, addr: SocketAddr) -> &[(Instant, Datagram)] {
        self.watched.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.net.now()
    }

    /// Drains every node's transmits into the network and its events into `events`.
    pub fn drain(&mut self) {
        let now = self.net.now();
        for node in &mut self.nodes {
            if node.frozen {
                continue;
            }
            while let Some(t) = node.endpoint.poll_transmit(now, 1, &mut self.buf) {
                let seg = t.segment_size.unwrap_or(t.size).max(1);
                for chunk in self.buf[..t.size].chunks(seg) {
                    self.net.send(Datagram {
                        src: source(node, t.src_ip),
                        dst: t.destination,
                        ecn: t.ecn.map(|e| e as u8),
                        data: chunk.to_vec(),
                    });
                }
            }
            while let Some(e) = node.endpoint.poll_event() {
                node.events.push(e);
            }
        }
        self.hosts.transmit(now, &mut self.net);
    }

    /// Advances to the next thing that happens (a delivery or a timer) and handles it.
    /// Returns false if nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_event() else {
            return false;
        };
        if next > self.net.now() {
            self.net.advance_to(next);
        }
        let now = self.net.now();
        while let Some(dg) = self.net.pop_delivered() {
            if let Some(log) = self.watched.get_mut(&dg.dst) {
                log.push((now, dg.clone()));
            }
            let Some(node) = self
                .nodes
                .iter_mut()
                .find(|n| n.addr == dg.dst || n.aliases.contains(&dg.dst))
            else {
                // Nobody listening: dropped, as a closed port drops it.
                let _ = self.hosts.deliver(now, dg);
                continue;
            };
            if node.frozen {
                node.backlog.push(dg);
                continue;
            }
            feed(node, now, dg);
        }
        for node in &mut self.nodes {
            if node.frozen {
                continue;
            }
            if node.endpoint.poll_timeout(now).is_some_and(|t| t <= now) {
                node.endpoint.handle_timeout(now);
            }
        }
        self.hosts.handle_timeout(now);
        self.drain();
        true
    }

    /// Stalls `node`'s process, as a starved or descheduled one: from now on datagrams to
    /// it queue up unread and its timers do not fire, until [`Sim::thaw`].
    pub fn freeze(&mut self, node: NodeId) {
        let now = self.net.now();
        let n = &mut self.nodes[node];
        n.frozen = true;
        n.frozen_deadline = n.endpoint.poll_timeout(now);
    }

    /// Resumes `node` now: like an event loop waking up late, it reads every datagram that
    /// queued up, then handles its overdue timers, at one instant.
    pub fn thaw(&mut self, node: NodeId) {
        let now = self.net.now();
        let n = &mut self.nodes[node];
        n.frozen = false;
        for dg in std::mem::take(&mut n.backlog) {
            feed(n, now, dg);
        }
        // The timer the loop armed before it stalled, as an async driver keeps it.
        if n.frozen_deadline.take().is_some_and(|t| t <= now) {
            n.endpoint.handle_timeout(now);
        }
        self.drain();
    }

    /// When the next thing happens: the earliest network delivery or timer.
    pub fn next_event(&mut self) -> Option<Instant> {
        self.drain();
        let now = self.net.now();
        let timer = self
            .nodes
            .iter_mut()
            .filter(|n| !n.frozen)
            .filter_map(|n| n.endpoint.poll_timeout(now))
            .chain(self.hosts.poll_timeout())
            .min();
        [timer, self.net.next_delivery()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handles everything that happens within the next `d` of virtual time, then moves the
    /// clock to exactly `d` later (unlike [`Sim::run_until`], never past it).
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now() + d;
        while self.next_event().is_some_and(|t| t <= deadline) {
            self.step();
        }
        self.net.advance_to(deadline);
    }

    /// Steps until `done` says so or `limit` of virtual time passes; `done` runs after
    /// every step and may drive the application. Returns whether `done` was reached.
    pub fn run_until(&mut self, limit: Duration, done: impl FnMut(&mut Self) -> bool) -> bool {
        drive_until(self, limit, |sim| sim, done)
    }

    /// Takes the events a node produced so far.
    pub fn take_events(&mut self, node: NodeId) -> Vec<Event> {
        std::mem::take(&mut self.nodes[node].events)
    }
}

/// The loop of [`Sim::run_until`] for a `world` that holds its [`Sim`] (found by `sim`)
/// beside other state: steps until `done` says so or `limit` of virtual time passes; `done`
/// runs before the first step, after every step and once more at the end, and may drive the
/// application. Returns whether `done` was reached.
pub fn drive_until<W: ?Sized, H: Hosts>(
    world: &mut W,
    limit: Duration,
    sim: fn(&mut W) -> &mut Sim<H>,
    mut done: impl FnMut(&mut W) -> bool,
) -> bool {
    let deadline = sim(world).now() + limit;
    loop {
        if done(world) {
            return true;
        }
        let sim = sim(world);
        if sim.now() >= deadline || !sim.step() {
            return done(world);
        }
    }
}

/// Hands one datagram to a node's engine.
fn feed(node: &mut Node, now: Instant, dg: Datagram) {
    let ecn = dg.ecn.and_then(EcnCodepoint::from_bits);
    node.endpoint.handle_datagram(
        now,
        dg.src,
        Some(dg.dst.ip()),
        ecn,
        BytesMut::from(&dg.data[..]),
    );
}

/// The address a node sends from: the alias whose IP the engine chose, else its own.
fn source(node: &Node, src_ip: Option<IpAddr>) -> SocketAddr {
    src_ip
        .and_then(|ip| node.aliases.iter().find(|a| a.ip() == ip).copied())
        .unwrap_or(node.addr)
}

/// An address on the simulated network.
pub fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from(ip), port)
}
