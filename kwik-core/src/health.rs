//! Path health: periodic probes on the control stream and the failure verdict.
//!
//! Policy: health judges liveness, not queue delay. Both ends probe each path with a `Ping`
//! every `path_health_check_interval`, and the other end answers with a `Pong`. The path
//! counts as alive while the peer is heard from: a `Pong`, or any authenticated packet
//! (ACKs advancing, stream data, the peer's own probes). A `Pong` stuck behind a full
//! queue does not matter as long as anything else gets through. A path fails when nothing
//! was heard for `max(3 × RTT, interval × path_failure_threshold)` — the window. Since the
//! last packet heard can be no older than the moment a path dies, a dead path is declared
//! failed at most one window after its death, inside the target of `window + RTT`.
//!
//! On a lossy path a live peer can fall silent by chance: each probe round trip is lost
//! with probability `q = 1 - (1 - p)²` at packet loss `p`, and QUIC's own probes back off.
//! The window then holds enough probe intervals that a run of lost round trips that long
//! happens less than once in a million windows: `n = ln(1e-6) / ln(q)` intervals, never
//! fewer than the threshold. At 0.5 % loss that is the threshold (3); at 1 %, 4; at 10 %, 9. The loss
//! rate is the caller's recent measurement ([`Health::observe_loss`]); on a clean path the
//! window is exactly `max(3 × RTT, interval × threshold)`.
//!
//! **Idle paths.** Probing every interval is what finds a busy path's death fast, and what
//! would cost an endpoint with thousands of idle sessions a core. A path that carried
//! nothing but probes for two windows, and whose peer answers, is *idle*
//! ([`Health::probe_idle`] sets how it is
//! probed then): its cadence slows to the idle interval (QUIC's keep-alive where that is
//! often enough, each end hearing the other's keep-alive or its acknowledgement; else the
//! client's own `Ping`), and it fails after `threshold` idle intervals of silence (the
//! loss-aware count applies too). The first use of an idle path ([`Health::on_busy`])
//! restarts the busy cadence and the busy window from that moment: an idle path that died is
//! found dead at its next use, within one window of it.
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
    /// When the peer was last heard from (a `Pong`, any packet, or the start of
    /// probing).
    last_pong: Option<Instant>,
    /// Recent packet loss rate of the path, 0 to 1.
    loss: f64,
    /// The silence that fails a busy path at `loss` whatever the RTT: `interval` times
    /// [`failure_intervals`]. Kept with what it is computed from: every deadline asks for it.
    busy_floor: Duration,
    /// The same for an idle path: `idle_interval` times [`failure_intervals`].
    idle_floor: Duration,
    /// Probe cadence of an idle path; zero: the path never counts as idle.
    idle_interval: Duration,
    /// Whether this side sends `Ping`s while the path is idle (else the peer's, or QUIC's
    /// keep-alive, keep it heard from).
    idle_pings: bool,
    /// The path carried nothing but probes for two windows.
    idle: bool,
    /// When the path last carried something other than probes (or probing started).
    last_busy: Option<Instant>,
}

/// The chance of a false failure per window the loss-aware window allows.
const FALSE_FAILURE: f64 = 1e-6;

/// Probe intervals of silence that fail a path at packet loss rate `loss`: enough that a
/// run of lost probe round trips that long happens less than once in a million windows,
/// and never fewer than `threshold`.
fn failure_intervals(loss: f64, threshold: u32) -> u32 {
    let p = loss.clamp(0.0, 0.5);
    let q = 1.0 - (1.0 - p) * (1.0 - p);
    if q <= 0.0 {
        return threshold;
    }
    let n = (FALSE_FAILURE.ln() / q.ln()).ceil();
    threshold.max(n.min(64.0) as u32)
}

/// The earlier of two optional instants (either, if only one is set).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
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
        self.set_floors();
        self.next_ping = Some(now + interval);
        self.last_pong = Some(now);
        self.last_busy = Some(now);
        self.idle = false;
    }

    /// How the path is probed once idle: every `interval` (zero: never idle), with this
    /// side's own `Ping`s if `pings`.
    pub fn probe_idle(&mut self, interval: Duration, pings: bool) {
        self.idle_interval = interval;
        self.idle_pings = pings;
        self.set_floors();
    }

    /// Whether the path is idle (see the module's documentation).
    #[cfg_attr(not(feature = "_internal_test_exports"), allow(dead_code))]
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// The path carried something other than probes at `now`. An idle path is busy again:
    /// probes at the busy cadence, and silence from now on fails it within one window.
    pub fn on_busy(&mut self, now: Instant) {
        if self.last_pong.is_none() {
            return;
        }
        self.last_busy = Some(now);
        if std::mem::take(&mut self.idle) {
            self.last_pong = self.last_pong.max(Some(now));
            self.next_ping = Some(now + self.interval);
        }
    }

    /// How long the peer may stay silent now: [`Health::window`] while busy, at least
    /// `threshold` idle intervals while idle.
    pub fn current_window(&self, rtt: Duration) -> Duration {
        let busy = self.window(rtt);
        if self.idle {
            busy.max(self.idle_floor)
        } else {
            busy
        }
    }

    /// How long a client lets the path be silent before it counts as degraded: half the
    /// current window, and never less than one probe interval and a round trip.
    pub fn degraded_after(&self, rtt: Duration) -> Duration {
        let interval = if self.idle {
            self.idle_interval
        } else {
            self.interval
        };
        (self.current_window(rtt) / 2).max(interval + rtt)
    }

    /// How long the peer may stay silent before the path fails.
    pub fn window(&self, rtt: Duration) -> Duration {
        (rtt * 3).max(self.busy_floor)
    }

    /// Feeds a loss sample: of `sent` packets since the last sample, `lost` were lost.
    /// The rate is a moving average that forgets quickly (half weight a sample).
    pub fn observe_loss(&mut self, sent: u64, lost: u64) {
        if sent == 0 {
            return;
        }
        let sample = (lost as f64 / sent as f64).min(1.0);
        self.loss = 0.5 * self.loss + 0.5 * sample;
        self.set_floors();
    }

    /// Computes the window floors again from the intervals, threshold and loss rate.
    fn set_floors(&mut self) {
        let intervals = failure_intervals(self.loss, self.threshold);
        self.busy_floor = self.interval * intervals;
        self.idle_floor = self.idle_interval * intervals;
    }

    /// When a path that is not degraded becomes so (silent for [`Health::degraded_after`]
    /// or longer), while probing.
    pub fn degraded_at(&self, rtt: Duration) -> Option<Instant> {
        self.last_pong.map(|t| t + self.degraded_after(rtt))
    }

    /// When [`Health::on_timeout`] must next run.
    pub fn deadline(&self, rtt: Duration) -> Option<Instant> {
        // A busy path is looked at every interval (its next probe), which is also when it
        // may turn idle.
        let failure = self.last_pong.map(|t| t + self.current_window(rtt));
        earliest(self.next_ping, failure)
    }

    /// Advances to `now`: a probe to send, a failure, both or neither.
    pub fn on_timeout(&mut self, now: Instant, rtt: Duration) -> HealthVerdict {
        let mut verdict = HealthVerdict::default();
        let Some(last) = self.last_pong else {
            return verdict;
        };
        if now >= last + self.current_window(rtt) {
            verdict.failed = true;
            self.next_ping = None;
            self.last_pong = None;
            return verdict;
        }
        if !self.idle
            && !self.idle_interval.is_zero()
            && self
                .last_busy
                .is_some_and(|t| now >= t + self.window(rtt) * 2)
            && now <= last + self.interval + rtt
        {
            // Two windows with nothing but probes, and the peer answers: probe at the idle
            // cadence from now.
            self.idle = true;
            self.next_ping = self.idle_pings.then(|| now + self.idle_interval);
        }
        if self.next_ping.is_some_and(|t| t <= now) {
            self.seq += 1;
            verdict.ping = Some(self.seq);
            let interval = if self.idle {
                self.idle_interval
            } else {
                self.interval
            };
            self.next_ping = Some(now + interval);
        }
        verdict
    }

    /// How long the peer has been silent, while probing.
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        self.last_pong.map(|t| now.saturating_duration_since(t))
    }

    /// The peer was heard from at `now` (a packet of its arrived), while probing.
    pub fn on_progress(&mut self, now: Instant) {
        if let Some(last) = &mut self.last_pong {
            *last = (*last).max(now);
        }
    }

    /// A `Pong` arrived. Answers to probes never sent are ignored.
    pub fn on_pong(&mut self, now: Instant, seq: u64) {
        if seq >= 1 && seq <= self.seq && self.last_pong.is_some() {
            self.last_pong = Some(now);
        }
    }
}
