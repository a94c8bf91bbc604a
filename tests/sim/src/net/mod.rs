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
//! # Scripted impairment
//!
//! [`Network::script`] gives a link direction a [`Script`]: the fate of each of its next
//! datagrams (pass, drop, duplicate, hold back), decided by the caller rather than by
//! chance, as a fuzz target draws them from its input. A scripted datagram still meets
//! the rest of the model first.
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

mod link;

pub use link::LinkConfig;

const NANOS_PER_SEC: u128 = 1_000_000_000;

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
    script: Option<Script>,
}

/// What a [`Script`] does to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered as the link would.
    Pass,
    /// Lost (counted as `dropped_loss`).
    Drop,
    /// Delivered twice, the copy a millisecond later.
    Duplicate,
    /// Held back by three times the link's delay plus 7 ms, so that later datagrams
    /// overtake it.
    Delay,
}

/// The fates of a link direction's next datagrams: by turns from `pattern`, two bits a
/// datagram (`00` pass, `01` drop, `10` duplicate, `11` delay), for `left` datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    pattern: u8,
    left: u16,
    n: u32,
}

impl Script {
    /// The next `left` datagrams meet the fates of `pattern`, by turns.
    pub fn new(pattern: u8, left: u16) -> Self {
        Self {
            pattern,
            left,
            n: 0,
        }
    }

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
                script: None,
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
        let fate = match &mut link.script {
            Some(script) => {
                let fate = script.next();
                if script.left == 0 {
                    link.script = None;
                }
                fate
            }
            None => Fate::Pass,
        };
        match fate {
            Fate::Pass => {}
            Fate::Drop => {
                stats.dropped_loss += 1;
                return;
            }
            Fate::Duplicate => {
                if let Some(arrival) = departure.checked_add(extra) {
                    let copy = dg.clone();
                    push(&mut self.in_flight, &mut self.seq, arrival, key, copy);
                }
                extra = extra.saturating_add(Duration::from_millis(1));
            }
            Fate::Delay => {
                let hold = cfg.delay.saturating_mul(3) + Duration::from_millis(7);
                extra = extra.saturating_add(hold);
            }
        }
        match departure.checked_add(extra) {
            Some(arrival) => push(&mut self.in_flight, &mut self.seq, arrival, key, dg),
            None => stats.dropped_loss += 1,
        }
    }

    /// Gives the link direction `from -> to` a scripted impairment (`None` ends it);
    /// returns false if there is no such link.
    pub fn script(&mut self, from: IpAddr, to: IpAddr, script: Option<Script>) -> bool {
        match self.links.get_mut(&(from, to)) {
            Some(link) => {
                link.script = script.filter(|s| s.left > 0);
                true
            }
            None => false,
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
mod tests;
