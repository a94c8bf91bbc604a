//! Path health: periodic probes on the control stream and the failure verdict.
//!
//! Policy: the client probes each path with a `Ping` every `path_health_check_interval`;
//! the server answers with a `Pong`. A path fails when no `Pong` has arrived for
//! `max(3 × RTT, interval × path_failure_threshold)` — the window. Since the last `Pong`
//! can be no older than the moment a path dies, a dead path is declared failed at most one
//! window after its death, inside the target stall of `window + RTT`.
//!
//! Pure state: the caller feeds time and RTT and sends what it is told to.

use std::time::{Duration, Instant};

/// Health state of one path.
#[derive(Debug, Default)]
pub struct Health {
    interval: Duration,
    threshold: u32,
    /// When the next probe is due; `None` while not probing.
    next_ping: Option<Instant>,
    /// Sequence number of the last probe sent.
    seq: u64,
    /// When the peer last proved alive (a `Pong`, or the start of probing).
    last_pong: Option<Instant>,
}

/// What a timeout asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthVerdict {
    /// Send a `Ping` with this sequence number.
    pub ping: Option<u64>,
    /// The path failed.
    pub failed: bool,
}

impl Health {
    /// Starts probing at `now`.
    pub fn start(&mut self, now: Instant, interval: Duration, threshold: u32) {
        self.interval = interval;
        self.threshold = threshold;
        self.next_ping = Some(now + interval);
        self.last_pong = Some(now);
    }

    /// How long the peer may stay silent before the path fails.
    pub fn window(&self, rtt: Duration) -> Duration {
        (rtt * 3).max(self.interval * self.threshold)
    }

    /// When [`Health::on_timeout`] must next run.
    pub fn deadline(&self, rtt: Duration) -> Option<Instant> {
        let failure = self.last_pong.map(|t| t + self.window(rtt));
        [self.next_ping, failure].into_iter().flatten().min()
    }

    /// Advances to `now`: a probe to send, a failure, both or neither.
    pub fn on_timeout(&mut self, now: Instant, rtt: Duration) -> HealthVerdict {
        let mut verdict = HealthVerdict::default();
        let Some(last) = self.last_pong else {
            return verdict;
        };
        if now >= last + self.window(rtt) {
            verdict.failed = true;
            self.next_ping = None;
            self.last_pong = None;
            return verdict;
        }
        if self.next_ping.is_some_and(|t| t <= now) {
            self.seq += 1;
            verdict.ping = Some(self.seq);
            self.next_ping = Some(now + self.interval);
        }
        verdict
    }

    /// How long the peer has been silent, while probing.
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        self.last_pong.map(|t| now.saturating_duration_since(t))
    }

    /// A `Pong` arrived. Answers to probes never sent are ignored.
    pub fn on_pong(&mut self, now: Instant, seq: u64) {
        if seq >= 1 && seq <= self.seq && self.last_pong.is_some() {
            self.last_pong = Some(now);
        }
    }
}
