//! Deterministic in-process network simulator running in virtual time.
//!
//! The [`Network`] moves [`Datagram`]s between IP addresses over directed
//! links, each with its own [`LinkConfig`] and independent state. Nothing here
//! reads the wall clock: the virtual clock starts at the `start` instant given
//! to [`Network::new`] and only moves when [`Network::advance_to`] is called.
//! All randomness comes from a single `ChaCha8Rng` seeded with the `seed`
//! passed to [`Network::new`], and all internal collections are ordered
//! (`BTreeMap`, `BinaryHeap` keyed by `(arrival, sequence)`), so the same seed
//! and the same sequence of calls produce bit-for-bit identical results.
//!
//! # Link model
//!
//! Each link direction behaves like a `tbf` bottleneck followed by a `netem`
//! delay line:
//!
//! 1. If the link is down the datagram is dropped (`dropped_down`).
//! 2. If the datagram is larger than the MTU it is dropped (`dropped_mtu`).
//! 3. If the link has a rate, the bytes still queued ahead of this datagram
//!    (time until the serializer is free × rate) plus the datagram itself must
//!    fit in `queue_bytes`, otherwise it is dropped (`dropped_queue`,
//!    drop-tail). The datagram then occupies the serializer for
//!    `len * 8 / rate` seconds and departs at
//!    `max(now, link_free_at) + serialization`.
//! 4. The datagram is then lost on the wire with probability `loss`
//!    (`dropped_loss`); a lost datagram still consumed link capacity.
//! 5. Survivors arrive at `departure + delay + U[0, jitter]`, plus
//!    `reorder_delay` with probability `reorder`.
//!
//! Jitter is applied per datagram (like `netem`), so a non-zero jitter can
//! reorder datagrams as well.
//!
//! # Link down
//!
//! [`Network::set_up`] with `up == false` drops every datagram currently in
//! flight on the affected direction(s) (counted as `dropped_down`) and flushes
//! the bottleneck queue. A link that is taken down by editing
//! [`LinkConfig::up`] through [`Network::config_mut`] drops its in-flight
//! datagrams lazily: any datagram whose link is down at the time it would be
//! delivered is dropped instead (also `dropped_down`).
//!
//! # Same-address traffic
//!
//! Datagrams whose source and destination IP are equal are delivered with
//! zero delay, regardless of any configured link (loopback).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Configuration of one link direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck rate in bits per second; 0 means unlimited.
    pub rate_bps: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Uniformly distributed extra delay in `[0, jitter]`, drawn per datagram.
    pub jitter: Duration,
    /// Probability (`0.0..=1.0`) that a datagram is lost.
    pub loss: f64,
    /// Probability (`0.0..=1.0`) that a datagram gets `reorder_delay` extra
    /// delay, so that later datagrams overtake it.
    pub reorder: f64,
    /// Extra delay applied to datagrams selected for reordering.
    pub reorder_delay: Duration,
    /// Datagrams with a payload larger than this many bytes are dropped.
    pub mtu: usize,
    /// Drop-tail bottleneck queue capacity in bytes; 0 means unlimited.
    /// Only meaningful when `rate_bps` is non-zero.
    pub queue_bytes: usize,
    /// Whether the link is up. A down link drops everything.
    pub up: bool,
}

impl Default for LinkConfig {
    /// Unlimited rate, 10 ms delay, no jitter/loss/reorder, MTU 1500,
    /// unlimited queue, up.
    fn default() -> Self {
        Self {
            rate_bps: 0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            mtu: 1500,
            queue_bytes: 0,
            up: true,
        }
    }
}

impl LinkConfig {
    /// Sets the bottleneck rate in bits per second (0 = unlimited).
    #[must_use]
    pub fn rate_bps(mut self, bps: u64) -> Self {
        self.rate_bps = bps;
        self
    }

    /// Sets the bottleneck rate in kbit/s (0 = unlimited).
    #[must_use]
    pub fn rate_kbit(self, kbit: u64) -> Self {
        self.rate_bps(kbit.saturating_mul(1_000))
    }

    /// Sets the bottleneck rate in Mbit/s (0 = unlimited).
    #[must_use]
    pub fn rate_mbit(self, mbit: u64) -> Self {
        self.rate_bps(mbit.saturating_mul(1_000_000))
    }

    /// Sets the one-way propagation delay.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the one-way propagation delay in milliseconds.
    #[must_use]
    pub fn delay_ms(self, ms: u64) -> Self {
        self.delay(Duration::from_millis(ms))
    }

    /// Sets the maximum uniform jitter.
    #[must_use]
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the maximum uniform jitter in milliseconds.
    #[must_use]
    pub fn jitter_ms(self, ms: u64) -> Self {
        self.jitter(Duration::from_millis(ms))
    }

    /// Sets the loss probability.
    #[must_use]
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Sets the reorder probability and the extra delay given to reordered
    /// datagrams.
    #[must_use]
    pub fn reorder(mut self, p: f64, extra_delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = extra_delay;
        self
    }

    /// Sets the MTU (maximum datagram payload size in bytes).
    #[must_use]
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Sets the drop-tail queue capacity in bytes (0 = unlimited).
    #[must_use]
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Sets the drop-tail queue capacity to the number of bytes the link
    /// serializes in `ms` milliseconds at its current rate (at least one MTU).
    /// Call after setting the rate. Has no effect on an unlimited-rate link
    /// other than setting an unlimited queue.
    #[must_use]
    pub fn queue_ms(mut self, ms: u64) -> Self {
        if self.rate_bps == 0 {
            self.queue_bytes = 0;
            return self;
        }
        let bytes = u128::from(self.rate_bps) * u128::from(ms) / 8_000;
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.queue_bytes = bytes.max(self.mtu).max(1);
        self
    }

    /// Sets whether the link is up.
    #[must_use]
    pub fn up(mut self, up: bool) -> Self {
        self.up = up;
        self
    }
}

/// A UDP datagram travelling through the simulated network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// ECN codepoint (passed through unchanged).
    pub ecn: Option<u8>,
    /// Payload.
    pub data: Vec<u8>,
}

impl Datagram {
    /// Creates a datagram without an ECN codepoint.
    pub fn new(src: SocketAddr, dst: SocketAddr, data: Vec<u8>) -> Self {
        Self {
            src,
            dst,
            ecn: None,
            data,
        }
    }
}

/// Per-direction counters. Also kept for address pairs without a link
/// (then only `sent` and `dropped_no_link` move) and for same-address
/// (loopback) traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to [`Network::send`].
    pub sent: u64,
    /// Datagrams returned by [`Network::pop_delivered`].
    pub delivered: u64,
    /// Datagrams lost at random (the `loss` probability), or whose arrival
    /// time cannot be represented.
    pub dropped_loss: u64,
    /// Datagrams dropped because the bottleneck queue was full.
    pub dropped_queue: u64,
    /// Datagrams dropped because the link was (or went) down.
    pub dropped_down: u64,
    /// Datagrams dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Datagrams dropped because no link exists between the addresses.
    pub dropped_no_link: u64,
    /// Payload bytes handed to [`Network::send`].
    pub bytes_sent: u64,
    /// Payload bytes returned by [`Network::pop_delivered`].
    pub bytes_delivered: u64,
}

impl LinkStats {
    /// Total number of dropped datagrams, for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss
            + self.dropped_queue
            + self.dropped_down
            + self.dropped_mtu
            + self.dropped_no_link
    }

    fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.dropped_loss += other.dropped_loss;
        self.dropped_queue += other.dropped_queue;
        self.dropped_down += other.dropped_down;
        self.dropped_mtu += other.dropped_mtu;
        self.dropped_no_link += other.dropped_no_link;
        self.bytes_sent += other.bytes_sent;
        self.bytes_delivered += other.bytes_delivered;
    }
}

type LinkKey = (IpAddr, IpAddr);

#[derive(Debug)]
struct LinkState {
    config: LinkConfig,
    /// Time at which the serializer finishes the last accepted datagram.
    free_at: Instant,
}

#[derive(Debug)]
struct InFlight {
    arrival: Instant,
    seq: u64,
    key: LinkKey,
    dg: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    /// Reversed so that `BinaryHeap` (a max-heap) pops the earliest
    /// `(arrival, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.arrival, other.seq).cmp(&(self.arrival, self.seq))
    }
}

/// A deterministic virtual-time network of directed links between IP
/// addresses. See the [module documentation](self) for the model.
#[derive(Debug)]
pub struct Network {
    now: Instant,
    rng: ChaCha8Rng,
    seq: u64,
    links: BTreeMap<LinkKey, LinkState>,
    stats: BTreeMap<LinkKey, LinkStats>,
    in_flight: BinaryHeap<InFlight>,
}

impl Network {
    /// Creates an empty network whose virtual clock starts at `start`, with all
    /// randomness derived from `seed`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            now: start,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seq: 0,
            links: BTreeMap::new(),
            stats: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
        }
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Installs a link in both directions between `a` and `b`, each direction
    /// with its own independent queue and state and the same `config`.
    ///
    /// Replacing an existing link changes its configuration but keeps its
    /// queue state, counters and in-flight datagrams.
    pub fn link(&mut self, a: IpAddr, b: IpAddr, config: LinkConfig) {
        self.link_one_way(a, b, config);
        if a != b {
            self.link_one_way(b, a, config);
        }
    }

    /// Installs (or reconfigures) the link direction `from -> to` only.
    pub fn link_one_way(&mut self, from: IpAddr, to: IpAddr, config: LinkConfig) {
        let now = self.now;
        self.links
            .entry((from, to))
            .and_modify(|l| l.config = config)
            .or_insert(LinkState {
                config,
                free_at: now,
            });
    }

    /// Removes the link `from -> to` (one direction). In-flight datagrams on
    /// it are dropped and counted as `dropped_down`; subsequent sends count as
    /// `dropped_no_link`. Returns whether a link existed.
    pub fn unlink_one_way(&mut self, from: IpAddr, to: IpAddr) -> bool {
        let existed = self.links.remove(&(from, to)).is_some();
        if existed {
            self.purge_in_flight((from, to));
        }
        existed
    }

    /// Brings both directions between `a` and `b` up or down. Taking a link
    /// down drops all datagrams in flight on it (`dropped_down`) and flushes
    /// its bottleneck queue. Does nothing for directions without a link.
    pub fn set_up(&mut self, a: IpAddr, b: IpAddr, up: bool) {
        self.set_up_one_way(a, b, up);
        if a != b {
            self.set_up_one_way(b, a, up);
        }
    }

    /// Brings the direction `from -> to` up or down; see [`Network::set_up`].
    pub fn set_up_one_way(&mut self, from: IpAddr, to: IpAddr, up: bool) {
        let now = self.now;
        let Some(link) = self.links.get_mut(&(from, to)) else {
            return;
        };
        link.config.up = up;
        if !up {
            link.free_at = now;
            self.purge_in_flight((from, to));
        }
    }

    /// Mutable access to the configuration of the direction `from -> to`.
    ///
    /// Changes apply to datagrams sent afterwards, except that setting
    /// `up = false` here also drops in-flight datagrams lazily at their
    /// delivery time (see the module documentation).
    pub fn config_mut(&mut self, from: IpAddr, to: IpAddr) -> Option<&mut LinkConfig> {
        self.links.get_mut(&(from, to)).map(|l| &mut l.config)
    }

    /// Configuration of the direction `from -> to`, if a link exists.
    pub fn config(&self, from: IpAddr, to: IpAddr) -> Option<&LinkConfig> {
        self.links.get(&(from, to)).map(|l| &l.config)
    }

    /// Hands a datagram to the network at the current virtual time.
    ///
    /// Datagrams between addresses with no link are dropped and counted as
    /// `dropped_no_link`. Same-IP traffic is delivered with zero delay.
    pub fn send(&mut self, dg: Datagram) {
        let key = (dg.src.ip(), dg.dst.ip());
        let len = dg.data.len();
        let now = self.now;
        let stats = self.stats.entry(key).or_default();
        stats.sent += 1;
        stats.bytes_sent = stats.bytes_sent.saturating_add(len as u64);

        if key.0 == key.1 {
            push(&mut self.in_flight, &mut self.seq, now, key, dg);
            return;
        }

        let Some(link) = self.links.get_mut(&key) else {
            stats.dropped_no_link += 1;
            return;
        };
        let cfg = link.config;
        if !cfg.up {
            stats.dropped_down += 1;
            return;
        }
        if len > cfg.mtu {
            stats.dropped_mtu += 1;
            return;
        }

        let departure = if cfg.rate_bps == 0 {
            now
        } else {
            let start = link.free_at.max(now);
            let backlog = start.saturating_duration_since(now).as_nanos();
            let queued = backlog.saturating_mul(u128::from(cfg.rate_bps)) / (8 * NANOS_PER_SEC);
            if cfg.queue_bytes != 0 && queued.saturating_add(len as u128) > cfg.queue_bytes as u128
            {
                stats.dropped_queue += 1;
                return;
            }
            let bits = (len as u128).saturating_mul(8);
            let ser_ns = (bits * NANOS_PER_SEC).div_ceil(u128::from(cfg.rate_bps));
            let ser = Duration::from_nanos(u64::try_from(ser_ns).unwrap_or(u64::MAX));
            match start.checked_add(ser) {
                Some(departure) => {
                    link.free_at = departure;
                    departure
                }
                None => {
                    stats.dropped_loss += 1;
                    return;
                }
            }
        };

        if chance(&mut self.rng, cfg.loss) {
            stats.dropped_loss += 1;
            return;
        }

        let mut extra = cfg.delay;
        if !cfg.jitter.is_zero() {
            let max = u64::try_from(cfg.jitter.as_nanos()).unwrap_or(u64::MAX);
            extra = extra.saturating_add(Duration::from_nanos(self.rng.random_range(0..=max)));
        }
        if chance(&mut self.rng, cfg.reorder) {
            extra = extra.saturating_add(cfg.reorder_delay);
        }
        match departure.checked_add(extra) {
            Some(arrival) => push(&mut self.in_flight, &mut self.seq, arrival, key, dg),
            None => stats.dropped_loss += 1,
        }
    }

    /// Earliest time at which a datagram will be delivered, if any is in
    /// flight. May be `<= now` if deliverable datagrams have not been popped.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|f| f.arrival)
    }

    /// Advances the virtual clock to `t`. The clock never goes backwards: an
    /// earlier `t` is a bug (debug assertion) and is ignored in release builds.
    pub fn advance_to(&mut self, t: Instant) {
        debug_assert!(t >= self.now, "virtual time must not go backwards");
        if t > self.now {
            self.now = t;
        }
    }

    /// Advances the virtual clock by `d`. If the resulting instant is not
    /// representable the clock is left unchanged.
    pub fn advance_by(&mut self, d: Duration) {
        if let Some(t) = self.now.checked_add(d) {
            self.now = t;
        }
    }

    /// Pops one datagram whose delivery time is `<= now`, in
    /// `(delivery time, send sequence)` order.
    pub fn pop_delivered(&mut self) -> Option<Datagram> {
        loop {
            if self.in_flight.peek()?.arrival > self.now {
                return None;
            }
            let f = self.in_flight.pop()?;
            let stats = self.stats.entry(f.key).or_default();
            let link_up = f.key.0 == f.key.1 || self.links.get(&f.key).is_some_and(|l| l.config.up);
            if !link_up {
                stats.dropped_down += 1;
                continue;
            }
            stats.delivered += 1;
            stats.bytes_delivered = stats.bytes_delivered.saturating_add(f.dg.data.len() as u64);
            return Some(f.dg);
        }
    }

    /// Number of datagrams currently in flight (including deliverable ones
    /// not yet popped).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Counters for the direction `from -> to` (all zero if nothing was ever
    /// sent between these addresses).
    pub fn stats(&self, from: IpAddr, to: IpAddr) -> LinkStats {
        self.stats.get(&(from, to)).copied().unwrap_or_default()
    }

    /// Counters summed over all address pairs.
    pub fn total_stats(&self) -> LinkStats {
        let mut total = LinkStats::default();
        for s in self.stats.values() {
            total.add(s);
        }
        total
    }

    fn purge_in_flight(&mut self, key: LinkKey) {
        let before = self.in_flight.len();
        self.in_flight.retain(|f| f.key != key);
        let dropped = (before - self.in_flight.len()) as u64;
        if dropped != 0 {
            self.stats.entry(key).or_default().dropped_down += dropped;
        }
    }
}

/// Schedules `dg` for delivery at `arrival` with the next sequence number.
fn push(
    heap: &mut BinaryHeap<InFlight>,
    seq: &mut u64,
    arrival: Instant,
    key: LinkKey,
    dg: Datagram,
) {
    heap.push(InFlight {
        arrival,
        seq: *seq,
        key,
        dg,
    });
    *seq += 1;
}

/// Draws a Bernoulli trial with probability `p`, consuming randomness only
/// when `0 < p < 1`. NaN and non-positive values never fire; values `>= 1`
/// always fire.
fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.random::<f64>() < p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(ip(last), port)
    }

    fn dg(src: u8, dst: u8, payload: Vec<u8>) -> Datagram {
        Datagram::new(addr(src, 1000), addr(dst, 2000), payload)
    }

    fn numbered(src: u8, dst: u8, i: u32, len: usize) -> Datagram {
        let mut data = vec![0u8; len.max(4)];
        data[..4].copy_from_slice(&i.to_be_bytes());
        data.truncate(len.max(4));
        dg(src, dst, data)
    }

    fn number(d: &Datagram) -> u32 {
        u32::from_be_bytes(d.data[..4].try_into().unwrap())
    }

    /// Runs the network until nothing is in flight, returning
    /// `(offset from start, datagram)` for each delivery.
    fn drain(net: &mut Network, start: Instant) -> Vec<(Duration, Datagram)> {
        let mut out = Vec::new();
        while let Some(t) = net.next_delivery() {
            if t > net.now() {
                net.advance_to(t);
            }
            while let Some(d) = net.pop_delivered() {
                out.push((net.now() - start, d));
            }
        }
        out
    }

    /// Advances to `t`, popping every delivery due on the way at its exact
    /// delivery time.
    fn run_until(
        net: &mut Network,
        start: Instant,
        t: Instant,
        out: &mut Vec<(Duration, Datagram)>,
    ) {
        while let Some(next) = net.next_delivery().filter(|n| *n <= t) {
            net.advance_to(next.max(net.now()));
            while let Some(d) = net.pop_delivered() {
                out.push((net.now() - start, d));
            }
        }
        net.advance_to(t);
    }

    #[test]
    fn default_config() {
        let c = LinkConfig::default();
        assert_eq!(c.rate_bps, 0);
        assert_eq!(c.delay, Duration::from_millis(10));
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.queue_bytes, 0);
        assert!(c.up);
        assert_eq!(c.loss, 0.0);
        assert_eq!(c.reorder, 0.0);
        assert_eq!(LinkConfig::default().rate_mbit(10).rate_bps, 10_000_000);
    }

    #[test]
    fn plain_delay_and_not_before() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(ip(1), ip(2), LinkConfig::default().delay_ms(25));
        net.send(dg(1, 2, vec![1, 2, 3]));
        assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(25)));
        net.advance_to(start + Duration::from_millis(24));
        assert_eq!(net.pop_delivered(), None);
        net.advance_to(start + Duration::from_millis(25));
        let d = net.pop_delivered().unwrap();
        assert_eq!(d.data, vec![1, 2, 3]);
        assert_eq!(d.src, addr(1, 1000));
        assert_eq!(d.dst, addr(2, 2000));
        assert_eq!(net.pop_delivered(), None);
        assert_eq!(net.next_delivery(), None);
        let s = net.stats(ip(1), ip(2));
        assert_eq!((s.sent, s.delivered, s.bytes_delivered), (1, 1, 3));
        // Reverse direction works independently.
        net.send(dg(2, 1, vec![9]));
        assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(50)));
    }

    #[test]
    fn rate_serializes() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(
            ip(1),
            ip(2),
            LinkConfig::default()
                .rate_mbit(10)
                .delay_ms(10)
                .queue_bytes(2_000_000),
        );
        for i in 0..1000 {
            net.send(numbered(1, 2, i, 1250));
        }
        let out = drain(&mut net, start);
        assert_eq!(out.len(), 1000);
        // 1250 B at 10 Mbit/s = 1 ms each.
        assert_eq!(out[0].0, Duration::from_millis(11));
        assert_eq!(out[999].0, Duration::from_millis(1010));
        for (k, (t, d)) in out.iter().enumerate() {
            assert_eq!(number(d), k as u32);
            assert_eq!(*t, Duration::from_millis(11 + k as u64));
        }
        let s = net.stats(ip(1), ip(2));
        assert_eq!(s.delivered, 1000);
        assert_eq!(s.bytes_delivered, 1_250_000);
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn rate_link_drains_over_time() {
        // A sender pacing exactly at link rate never builds a queue.
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(
            ip(1),
            ip(2),
            LinkConfig::default()
                .rate_mbit(10)
                .delay_ms(5)
                .queue_bytes(1250),
        );
        for i in 0..100 {
            net.advance_to(start + Duration::from_millis(i));
            net.send(numbered(1, 2, i as u32, 1250));
        }
        let s = net.stats(ip(1), ip(2));
        assert_eq!(s.dropped_queue, 0);
        let out = drain(&mut net, start);
        assert_eq!(out.len(), 100);
        assert_eq!(out[99].0, Duration::from_millis(99 + 1 + 5));
    }

    #[test]
    fn drop_tail_queue() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        // 10 datagrams of 1000 B fit in the queue.
        net.link(
            ip(1),
            ip(2),
            LinkConfig::default()
                .rate_mbit(8)
                .delay_ms(0)
                .queue_bytes(10_000),
        );
        for i in 0..50 {
            net.send(numbered(1, 2, i, 1000));
        }
        let s = net.stats(ip(1), ip(2));
        assert_eq!(s.sent, 50);
        assert_eq!(s.dropped_queue, 40);
        let out = drain(&mut net, start);
        assert_eq!(out.len(), 10);
        let nums: Vec<u32> = out.iter().map(|(_, d)| number(d)).collect();
        assert_eq!(nums, (0..10).collect::<Vec<_>>());
        // 1000 B at 8 Mbit/s = 1 ms each; queue drained after 10 ms.
        assert_eq!(out[9].0, Duration::from_millis(10));
        // After draining, the queue accepts again.
        net.send(numbered(1, 2, 99, 1000));
        assert_eq!(net.stats(ip(1), ip(2)).dropped_queue, 40);
        assert_eq!(net.in_flight(), 1);
        // Other direction is independent and empty.
        assert_eq!(net.stats(ip(2), ip(1)), LinkStats::default());
    }

    #[test]
    fn loss_rate_matches() {
        let start = Instant::now();
        let mut net = Network::new(42, start);
        net.link(ip(1), ip(2), LinkConfig::default().loss(0.1));
        for i in 0..10_000 {
            net.send(numbered(1, 2, i, 100));
        }
        let out = drain(&mut net, start);
        let s = net.stats(ip(1), ip(2));
        assert_eq!(s.delivered as usize, out.len());
        assert_eq!(s.delivered + s.dropped_loss, 10_000);
        // Expected 1000 +- 30 (sd); allow ~5 sd.
        assert!(
            (850..=1150).contains(&s.dropped_loss),
            "dropped {}",
            s.dropped_loss
        );
        // Full loss drops everything, zero loss nothing.
        net.link(ip(1), ip(3), LinkConfig::default().loss(1.0));
        net.link(ip(1), ip(4), LinkConfig::default().loss(0.0));
        for i in 0..100 {
            net.send(numbered(1, 3, i, 10));
            net.send(numbered(1, 4, i, 10));
        }
        assert_eq!(net.stats(ip(1), ip(3)).dropped_loss, 100);
        assert_eq!(net.stats(ip(1), ip(4)).dropped_loss, 0);
    }

    #[test]
    fn reorder_reorders() {
        let start = Instant::now();
        let mut net = Network::new(7, start);
        net.link(
            ip(1),
            ip(2),
            LinkConfig::default()
                .delay_ms(10)
                .reorder(0.2, Duration::from_millis(5)),
        );
        let mut out = Vec::new();
        for i in 0..200 {
            run_until(&mut net, start, start + Duration::from_millis(i), &mut out);
            net.send(numbered(1, 2, i as u32, 100));
        }
        out.extend(drain(&mut net, start));
        assert_eq!(out.len(), 200);
        let nums: Vec<u32> = out.iter().map(|(_, d)| number(d)).collect();
        let inversions = nums.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 10, "inversions {inversions}");
        let delayed = out
            .iter()
            .filter(|(t, d)| *t == Duration::from_millis(u64::from(number(d)) + 15))
            .count();
        assert!((20..=60).contains(&delayed), "delayed {delayed}");
        let mut sorted = nums.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>());

        // Without reorder, order is preserved.
        let mut net = Network::new(7, start);
        net.link(ip(1), ip(2), LinkConfig::default());
        for i in 0..200 {
            net.advance_to(start + Duration::from_millis(i));
            net.send(numbered(1, 2, i as u32, 100));
        }
        let nums: Vec<u32> = drain(&mut net, start)
            .iter()
            .map(|(_, d)| number(d))
            .collect();
        assert_eq!(nums, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn jitter_bounded() {
        let start = Instant::now();
        let mut net = Network::new(3, start);
        net.link(
            ip(1),
            ip(2),
            LinkConfig::default().delay_ms(10).jitter_ms(4),
        );
        for i in 0..500 {
            net.send(numbered(1, 2, i, 100));
        }
        let out = drain(&mut net, start);
        assert_eq!(out.len(), 500);
        let min = out.iter().map(|(t, _)| *t).min().unwrap();
        let max = out.iter().map(|(t, _)| *t).max().unwrap();
        assert!(min >= Duration::from_millis(10));
        assert!(max <= Duration::from_millis(14));
        assert!(
            max - min > Duration::from_millis(3),
            "spread {:?}",
            max - min
        );
    }

    #[test]
    fn equal_time_keeps_send_order() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(ip(1), ip(2), LinkConfig::default());
        net.link(ip(3), ip(2), LinkConfig::default());
        for i in 0..20 {
            net.send(numbered(if i % 2 == 0 { 1 } else { 3 }, 2, i, 10));
        }
        let out = drain(&mut net, start);
        let nums: Vec<u32> = out.iter().map(|(_, d)| number(d)).collect();
        assert_eq!(nums, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn link_down_drops() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(ip(1), ip(2), LinkConfig::default().delay_ms(10));
        for i in 0..5 {
            net.send(numbered(1, 2, i, 100));
            net.send(numbered(2, 1, i, 100));
        }
        net.advance_to(start + Duration::from_millis(5));
        net.set_up(ip(1), ip(2), false);
        // In-flight datagrams are dropped.
        assert_eq!(net.in_flight(), 0);
        assert_eq!(net.stats(ip(1), ip(2)).dropped_down, 5);
        assert_eq!(net.stats(ip(2), ip(1)).dropped_down, 5);
        // New sends are dropped.
        net.send(numbered(1, 2, 10, 100));
        assert_eq!(net.in_flight(), 0);
        assert_eq!(net.stats(ip(1), ip(2)).dropped_down, 6);
        assert!(drain(&mut net, start).is_empty());
        // Back up: traffic flows again.
        net.set_up(ip(1), ip(2), true);
        net.send(numbered(1, 2, 11, 100));
        let out = drain(&mut net, start);
        assert_eq!(out.len(), 1);
        assert_eq!(number(&out[0].1), 11);

        // Down via config_mut: dropped lazily at delivery time.
        net.send(numbered(1, 2, 12, 100));
        net.config_mut(ip(1), ip(2)).unwrap().up = false;
        assert!(drain(&mut net, start).is_empty());
        assert_eq!(net.stats(ip(1), ip(2)).dropped_down, 7);
        assert_eq!(net.stats(ip(1), ip(2)).delivered, 1);
    }

    #[test]
    fn mtu_drops() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(ip(1), ip(2), LinkConfig::default().mtu(1200));
        net.send(dg(1, 2, vec![0; 1200]));
        net.send(dg(1, 2, vec![0; 1201]));
        net.send(dg(1, 2, vec![0; 9000]));
        let out = drain(&mut net, start);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.data.len(), 1200);
        let s = net.stats(ip(1), ip(2));
        assert_eq!(s.dropped_mtu, 2);
        assert_eq!(s.delivered, 1);
    }

    #[test]
    fn no_link_drops_and_loopback_delivers() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(ip(1), ip(2), LinkConfig::default());
        net.send(dg(1, 3, vec![1]));
        net.send(dg(3, 1, vec![1]));
        assert_eq!(net.in_flight(), 0);
        assert_eq!(net.stats(ip(1), ip(3)).dropped_no_link, 1);
        assert_eq!(net.stats(ip(3), ip(1)).dropped_no_link, 1);
        assert_eq!(net.total_stats().dropped(), 2);

        // One-way link: reverse direction has no link.
        net.link_one_way(ip(4), ip(5), LinkConfig::default());
        net.send(dg(5, 4, vec![1]));
        assert_eq!(net.stats(ip(5), ip(4)).dropped_no_link, 1);
        net.send(dg(4, 5, vec![1]));
        assert_eq!(net.in_flight(), 1);
        let _ = drain(&mut net, start);

        // Same IP: zero delay, even without a link.
        net.advance_to(start + Duration::from_secs(1));
        let mut d = dg(7, 7, vec![5]);
        d.ecn = Some(2);
        net.send(d.clone());
        assert_eq!(net.next_delivery(), Some(net.now()));
        assert_eq!(net.pop_delivered(), Some(d));
    }

    #[test]
    fn unlink_drops_in_flight() {
        let start = Instant::now();
        let mut net = Network::new(1, start);
        net.link(ip(1), ip(2), LinkConfig::default());
        net.send(dg(1, 2, vec![1]));
        assert!(net.unlink_one_way(ip(1), ip(2)));
        assert!(!net.unlink_one_way(ip(1), ip(2)));
        assert_eq!(net.in_flight(), 0);
        assert_eq!(net.stats(ip(1), ip(2)).dropped_down, 1);
        net.send(dg(2, 1, vec![1]));
        assert_eq!(net.in_flight(), 1);
    }

    fn scenario(seed: u64) -> (Vec<(Duration, Datagram)>, LinkStats) {
        let start = Instant::now();
        let mut net = Network::new(seed, start);
        let cfg = LinkConfig::default()
            .rate_mbit(5)
            .delay_ms(20)
            .jitter_ms(3)
            .loss(0.05)
            .reorder(0.05, Duration::from_millis(4))
            .queue_bytes(30_000);
        net.link(ip(1), ip(2), cfg);
        net.link(ip(1), ip(3), cfg.loss(0.02));
        let mut out = Vec::new();
        for i in 0..2000u32 {
            net.advance_to(start + Duration::from_micros(u64::from(i) * 700));
            let dst = if i % 3 == 0 { 3 } else { 2 };
            net.send(numbered(1, dst, i, 600 + (i as usize % 700)));
            net.send(numbered(dst, 1, i, 80));
            while let Some(d) = net.pop_delivered() {
                out.push((net.now() - start, d));
            }
        }
        out.extend(drain(&mut net, start));
        (out, net.total_stats())
    }

    #[test]
    fn deterministic() {
        let (a, sa) = scenario(1234);
        let (b, sb) = scenario(1234);
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        let (c, sc) = scenario(4321);
        assert!(a != c || sa != sc);
        let order = |v: &[(Duration, Datagram)]| -> Vec<(u32, IpAddr)> {
            v.iter().map(|(_, d)| (number(d), d.dst.ip())).collect()
        };
        assert_ne!(order(&a), order(&c));
        // Sanity: the scenario exercised queue drops and losses.
        assert!(sa.dropped_loss > 0);
        assert!(sa.dropped_queue > 0);
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let start = Instant::now();
        let mut net = Network::new(0, start);
        let cfg = LinkConfig {
            rate_bps: 1,
            delay: Duration::MAX,
            jitter: Duration::MAX,
            loss: f64::NAN,
            reorder: 2.0,
            reorder_delay: Duration::MAX,
            mtu: usize::MAX,
            queue_bytes: usize::MAX,
            up: true,
        };
        net.link(ip(1), ip(2), cfg);
        net.link(ip(1), ip(1), cfg);
        for _ in 0..3 {
            net.send(dg(1, 2, vec![0; 100]));
        }
        net.link(
            ip(3),
            ip(4),
            LinkConfig::default().rate_bps(u64::MAX).loss(-1.0),
        );
        net.send(dg(3, 4, vec![]));
        net.send(dg(3, 4, vec![0; 1500]));
        net.advance_by(Duration::MAX);
        net.advance_to(net.now());
        let _ = net.pop_delivered();
        let _ = net.next_delivery();
        let _ = LinkConfig::default()
            .rate_mbit(u64::MAX)
            .queue_ms(u64::MAX)
            .rate_kbit(u64::MAX);
        let _ = drain(&mut net, start);
        assert!(net.config(ip(1), ip(2)).is_some());
        assert_eq!(net.stats(ip(3), ip(4)).delivered, 2);
    }
}
