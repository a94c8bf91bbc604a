//! Metrics through the [`metrics`] facade (feature `metrics`): whatever recorder the
//! application installed (Prometheus, StatsD, a test recorder) receives them.
//!
//! Events are counted as they happen; the engine's counters are sampled once per
//! [`SAMPLE_INTERVAL`] by the driver and recorded as deltas, so the hot path pays nothing.
//! Labels come from small fixed sets (role, path kind, direction, state, code, reason,
//! outcome): a server with many sessions does not grow a series per session.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `kwik_sessions_opened_total` | counter | `role`, `mode` (kwik, plain) |
//! | `kwik_sessions_closed_total` | counter | `role`, `reason` |
//! | `kwik_sessions` | gauge | `role`, `mode` |
//! | `kwik_fallbacks_total` | counter | (client sessions that fell back to plain QUIC) |
//! | `kwik_connections` | gauge | |
//! | `kwik_paths` | gauge | `state` |
//! | `kwik_path_events_total` | counter | `event` (added, active, degraded, failed, removed) |
//! | `kwik_path_failures_total` | counter | `reason` |
//! | `kwik_path_bytes_total` | counter | `kind`, `direction` (UDP payload) |
//! | `kwik_path_packets_total` | counter | `kind`, `direction` (UDP datagrams) |
//! | `kwik_path_lost_packets_total` | counter | `kind` |
//! | `kwik_path_stream_bytes_total` | counter | `kind`, `direction` (logical stream payload) |
//! | `kwik_control_messages_total` | counter | `kind`, `direction` |
//! | `kwik_path_rtt_seconds` | histogram | `kind` (one sample per path per interval in which its session was active) |
//! | `kwik_path_cwnd_bytes` | histogram | `kind` (one sample per path per interval in which its session was active) |
//! | `kwik_udp_datagrams_total` | counter | `direction` (the whole endpoint) |
//! | `kwik_udp_bytes_total` | counter | `direction` (the whole endpoint) |
//! | `kwik_protocol_violations_total` | counter | `code` |
//! | `kwik_delegations_finished_total` | counter | `outcome` (done, failed) |
//! | `kwik_stripes_finished_total` | counter | |
//! | `kwik_stripe_chunks_total` | counter | |
//! | `kwik_stripe_copies_total` | counter | |
//! | `kwik_stripe_copy_bytes_total` | counter | `reason` (end_game, stall, window, failover, other: stream bytes received twice) |
//! | `kwik_failovers_total` | counter | |
//! | `kwik_pulls_refused_total` | counter | `side` (served: this server refused; pulled: a server refused this client) |
//! | `kwik_drains_total` | counter | `event` (notice: a server announced its drain to this client; path_closed: this client closed a drained path; session_done: this server ended a drained session whose work was done; deadline: ... at the drain deadline) |

use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use rustc_hash::FxHashMap;

use kwik_core::{
    DelegationOutcome, EndpointStats, ErrorCode, Event, Mode, PathError, PathId, PathInfo,
    PathState, Role, SessionError, SessionHandle,
};

/// How often the engine's counters are sampled.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

const RX: &str = "rx";
const TX: &str = "tx";

/// What was recorded of one path so far.
#[derive(Debug, Default, Clone, Copy)]
struct Recorded {
    bytes: [u64; 2],
    packets: [u64; 2],
    lost: u64,
    stream_bytes: [u64; 2],
    control: [u64; 2],
}

/// The recorder side of one endpoint: what was already counted, and when to sample next.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    next: Option<Instant>,
    endpoint: EndpointStats,
    paths: FxHashMap<(SessionHandle, PathId), Recorded>,
    /// Sessions counted as opened, with their role (also to count them as closed once).
    sessions: FxHashMap<SessionHandle, Role>,
    /// This endpoint's share of each gauge: several endpoints in one process add up.
    gauges: Gauges,
    /// What each session added to the gauges at its last sample, and its activity then.
    seen: FxHashMap<SessionHandle, Seen>,
}

/// A session as last sampled.
#[derive(Debug, Clone, Copy)]
struct Seen {
    activity: u64,
    role: Role,
    mode: Mode,
    /// Its paths by state, in [`STATES`] order.
    states: [u64; 5],
}

/// Sessions by role and mode, paths by state and connections, as last added to the
/// gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Gauges {
    roles: [[u64; 2]; 3],
    states: [u64; 5],
    connections: u64,
}

impl Gauges {
    /// Moves the process-wide gauges by what this endpoint's figures changed.
    fn apply(&self, was: &Self) {
        let moved = |g: metrics::Gauge, now: u64, was: u64| {
            if now > was {
                g.increment((now - was) as f64);
            } else if was > now {
                g.decrement((was - now) as f64);
            }
        };
        for role in [Role::Client, Role::Primary, Role::Secondary] {
            let i = role_index(role);
            for mode in [Mode::Kwik, Mode::Plain] {
                let m = mode_index(mode);
                let g = gauge!("kwik_sessions", "role" => role.name(), "mode" => mode.name());
                moved(g, self.roles[i][m], was.roles[i][m]);
            }
        }
        for (i, state) in STATES.iter().enumerate() {
            moved(
                gauge!("kwik_paths", "state" => *state),
                self.states[i],
                was.states[i],
            );
        }
        moved(
            gauge!("kwik_connections"),
            self.connections,
            was.connections,
        );
    }
}

impl Drop for Telemetry {
    /// The endpoint is gone: its share leaves the gauges.
    fn drop(&mut self) {
        Gauges::default().apply(&self.gauges);
    }
}

impl Telemetry {
    pub(crate) fn new() -> Self {
        describe();
        Self::default()
    }

    /// When the driver must sample next, while the endpoint has anything to drive.
    pub(crate) fn deadline(&mut self, now: Instant) -> Instant {
        *self.next.get_or_insert(now + SAMPLE_INTERVAL)
    }

    /// Counts an engine event.
    pub(crate) fn on_event(&mut self, engine: &mut kwik_core::Endpoint, event: &Event) {
        match event {
            Event::Connected(h) | Event::Incoming(h) => {
                let (role, mode) = engine
                    .session(*h)
                    .map_or((Role::Client, Mode::Kwik), |s| (s.role(), s.mode()));
                if self.sessions.insert(*h, role).is_none() {
                    counter!(
                        "kwik_sessions_opened_total",
                        "role" => role.name(),
                        "mode" => mode.name(),
                    )
                    .increment(1);
                }
            }
            Event::Closed { session, error } => {
                // What the session carried since the last sample, before it is let go.
                self.sample_session(engine, *session);
                let role = match self.sessions.get(session) {
                    Some(r) => *r,
                    None => engine.session(*session).map_or(Role::Client, |s| s.role()),
                };
                counter!(
                    "kwik_sessions_closed_total",
                    "role" => role.name(),
                    "reason" => close_reason(error),
                )
                .increment(1);
            }
            Event::PathAdded { .. } => path_event("added"),
            Event::PathActive { .. } => path_event("active"),
            Event::PathDegraded { .. } => path_event("degraded"),
            Event::PathRemoved { .. } => path_event("removed"),
            Event::PathFailed { error, .. } => {
                path_event("failed");
                counter!("kwik_path_failures_total", "reason" => failure_reason(error))
                    .increment(1);
            }
            Event::DelegationFinished { outcome, .. } => {
                let outcome = match outcome {
                    DelegationOutcome::Done => "done",
                    _ => "failed",
                };
                counter!("kwik_delegations_finished_total", "outcome" => outcome).increment(1);
            }
            Event::StripeFinished { .. } => counter!("kwik_stripes_finished_total").increment(1),
            Event::PullRefused { .. } => {
                counter!("kwik_pulls_refused_total", "side" => "pulled").increment(1);
            }
            _ => {}
        }
    }

    /// Records what the engine counted since the last sample.
    pub(crate) fn sample(&mut self, engine: &mut kwik_core::Endpoint, now: Instant) {
        self.next = Some(now + SAMPLE_INTERVAL);
        self.sample_endpoint(engine.stats());
        let handles: Vec<SessionHandle> = engine.session_handles().collect();
        let mut gauges = Gauges {
            connections: self.endpoint.connections,
            ..Gauges::default()
        };
        for &h in &handles {
            let Some(activity) = engine.session(h).map(|s| s.activity()) else {
                continue;
            };
            // A session nothing happened to since the last look has the same figures: it
            // adds what it added then (thousands of idle sessions cost a lookup each).
            let seen = match self.seen.get(&h) {
                Some(seen) if seen.activity == activity => *seen,
                _ => {
                    let Some((role, paths)) = self.sample_session(engine, h) else {
                        continue;
                    };
                    let mut seen = Seen {
                        activity,
                        role,
                        mode: engine.session(h).map_or(Mode::Kwik, |s| s.mode()),
                        states: [0; 5],
                    };
                    for p in paths {
                        seen.states[state_index(p.state)] += 1;
                    }
                    self.seen.insert(h, seen);
                    seen
                }
            };
            gauges.roles[role_index(seen.role)][mode_index(seen.mode)] += 1;
            for (total, n) in gauges.states.iter_mut().zip(seen.states) {
                *total += n;
            }
        }
        if gauges != self.gauges {
            gauges.apply(&self.gauges);
            self.gauges = gauges;
        }
        // Sessions the engine let go of: their paths are recorded for good.
        self.paths
            .retain(|(h, _), _| handles.binary_search(h).is_ok());
        self.sessions
            .retain(|h, _| handles.binary_search(h).is_ok());
        self.seen.retain(|h, _| handles.binary_search(h).is_ok());
    }

    /// The endpoint is idle (no connection left): a last sample, then none until it works
    /// again.
    pub(crate) fn idle(&mut self, engine: &mut kwik_core::Endpoint, now: Instant) {
        if self.next.is_some() {
            self.sample(engine, now);
            self.next = None;
        }
    }

    fn sample_endpoint(&mut self, now: EndpointStats) {
        let was = std::mem::replace(&mut self.endpoint, now);
        let delta = |n: u64, w: u64| n.saturating_sub(w);
        let labelled = [
            (
                "kwik_udp_datagrams_total",
                "direction",
                TX,
                now.datagrams_sent,
                was.datagrams_sent,
            ),
            (
                "kwik_udp_datagrams_total",
                "direction",
                RX,
                now.datagrams_received,
                was.datagrams_received,
            ),
            (
                "kwik_udp_bytes_total",
                "direction",
                TX,
                now.bytes_sent,
                was.bytes_sent,
            ),
            (
                "kwik_udp_bytes_total",
                "direction",
                RX,
                now.bytes_received,
                was.bytes_received,
            ),
            (
                "kwik_pulls_refused_total",
                "side",
                "served",
                now.pulls_refused,
                was.pulls_refused,
            ),
            (
                "kwik_drains_total",
                "event",
                "notice",
                now.drain_notices,
                was.drain_notices,
            ),
            (
                "kwik_drains_total",
                "event",
                "path_closed",
                now.paths_drained,
                was.paths_drained,
            ),
            (
                "kwik_drains_total",
                "event",
                "session_done",
                now.sessions_drained,
                was.sessions_drained,
            ),
            (
                "kwik_drains_total",
                "event",
                "deadline",
                now.drain_deadline_closes,
                was.drain_deadline_closes,
            ),
        ];
        for (name, label, value, n, w) in labelled {
            add(name, label, value, delta(n, w));
        }
        let plain = [
            (
                "kwik_stripe_chunks_total",
                now.stripe_chunks,
                was.stripe_chunks,
            ),
            (
                "kwik_stripe_copies_total",
                now.stripe_copies,
                was.stripe_copies,
            ),
            ("kwik_failovers_total", now.failovers, was.failovers),
            ("kwik_fallbacks_total", now.fallbacks, was.fallbacks),
        ];
        for (name, n, w) in plain {
            if n > w {
                counter!(name).increment(n - w);
            }
        }
        let (c, w) = (now.stripe_copy_bytes, was.stripe_copy_bytes);
        for (reason, n, w) in [
            ("end_game", c.end_game, w.end_game),
            ("stall", c.stall, w.stall),
            ("window", c.window, w.window),
            ("failover", c.failover, w.failover),
            ("other", c.other, w.other),
        ] {
            add(
                "kwik_stripe_copy_bytes_total",
                "reason",
                reason,
                delta(n, w),
            );
        }
        if now.protocol_violations > was.protocol_violations {
            for code in ErrorCode::ALL {
                let d = delta(
                    now.protocol_violations_of(code),
                    was.protocol_violations_of(code),
                );
                add("kwik_protocol_violations_total", "code", code.name(), d);
            }
        }
    }

    /// Records the counters of every path of session `h` since they were last recorded;
    /// returns the session's role and paths.
    fn sample_session(
        &mut self,
        engine: &mut kwik_core::Endpoint,
        h: SessionHandle,
    ) -> Option<(Role, Vec<PathInfo>)> {
        let s = engine.session(h)?;
        let (role, paths) = (s.role(), s.paths());
        for p in s.stats().paths {
            let kind = paths
                .iter()
                .find(|i| i.id == p.id)
                .map_or(path_kind(p.id == PathId::PRIMARY, false), |i| {
                    path_kind(i.is_primary, i.same_peer)
                });
            let now = Recorded {
                bytes: [p.bytes_received, p.bytes_sent],
                packets: [p.datagrams_received, p.datagrams_sent],
                lost: p.lost_packets,
                stream_bytes: [p.stream_bytes_received, p.stream_bytes_sent],
                control: [p.control_received, p.control_sent],
            };
            let was = self.paths.insert((h, p.id), now).unwrap_or_default();
            for (i, dir) in [RX, TX].into_iter().enumerate() {
                let d = |n: [u64; 2], w: [u64; 2]| n[i].saturating_sub(w[i]);
                add2("kwik_path_bytes_total", kind, dir, d(now.bytes, was.bytes));
                add2(
                    "kwik_path_packets_total",
                    kind,
                    dir,
                    d(now.packets, was.packets),
                );
                add2(
                    "kwik_path_stream_bytes_total",
                    kind,
                    dir,
                    d(now.stream_bytes, was.stream_bytes),
                );
                add2(
                    "kwik_control_messages_total",
                    kind,
                    dir,
                    d(now.control, was.control),
                );
            }
            add(
                "kwik_path_lost_packets_total",
                "kind",
                kind,
                now.lost.saturating_sub(was.lost),
            );
            // Gauges of a live connection only: a path gone keeps its last counts, and
            // its zero RTT is no sample.
            if !p.rtt.is_zero() {
                histogram!("kwik_path_rtt_seconds", "kind" => kind).record(p.rtt.as_secs_f64());
                histogram!("kwik_path_cwnd_bytes", "kind" => kind).record(p.cwnd as f64);
            }
        }
        Some((role, paths))
    }
}

fn add(name: &'static str, label: &'static str, value: &'static str, n: u64) {
    if n > 0 {
        counter!(name, label => value).increment(n);
    }
}

fn add2(name: &'static str, kind: &'static str, direction: &'static str, n: u64) {
    if n > 0 {
        counter!(name, "kind" => kind, "direction" => direction).increment(n);
    }
}

fn path_event(event: &'static str) {
    counter!("kwik_path_events_total", "event" => event).increment(1);
}

const STATES: [&str; 5] = ["connecting", "active", "degraded", "failed", "removed"];

fn state_index(state: PathState) -> usize {
    match state {
        PathState::Connecting => 0,
        PathState::Active => 1,
        PathState::Degraded => 2,
        PathState::Failed => 3,
        PathState::Removed => 4,
    }
}

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Kwik => 0,
        Mode::Plain => 1,
    }
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Client => 0,
        Role::Primary => 1,
        Role::Secondary => 2,
    }
}

fn path_kind(primary: bool, same_peer: bool) -> &'static str {
    match (primary, same_peer) {
        (true, _) => "primary",
        (false, true) => "same_peer",
        (false, false) => "secondary",
    }
}

fn failure_reason(error: &PathError) -> &'static str {
    match error {
        PathError::Unresponsive => "unresponsive",
        PathError::Connection(_) => "connection",
        PathError::Protocol(_) => "protocol",
        PathError::Reported(_) => "reported",
        _ => "other",
    }
}

fn close_reason(error: &SessionError) -> &'static str {
    match error {
        SessionError::ProtocolViolation(_) => "protocol_violation",
        SessionError::PeerProtocolError { .. } => "peer_protocol_error",
        SessionError::ApplicationClosed { .. } => "application_closed",
        SessionError::LocallyClosed => "locally_closed",
        SessionError::TimedOut => "timed_out",
        SessionError::PathUnresponsive { .. } => "path_unresponsive",
        SessionError::Reset => "reset",
        SessionError::Transport(_) => "transport",
        SessionError::FallbackRefused { .. } => "fallback_refused",
        _ => "other",
    }
}

/// Help texts, for recorders that show them (Prometheus `# HELP`).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "kwik_sessions_opened_total",
        "Sessions established, by this side's role and mode"
    );
    describe_counter!(
        "kwik_sessions_closed_total",
        "Sessions ended, by role and reason"
    );
    describe_gauge!("kwik_sessions", "Sessions held, by role and mode");
    describe_counter!(
        "kwik_fallbacks_total",
        "Client sessions that fell back to plain QUIC (the server does not speak KWIK)"
    );
    describe_gauge!("kwik_connections", "QUIC connections held (every path)");
    describe_gauge!("kwik_paths", "Paths of the sessions held, by state");
    describe_counter!("kwik_path_events_total", "Path state changes");
    describe_counter!("kwik_path_failures_total", "Paths failed, by reason");
    describe_counter!(
        "kwik_path_bytes_total",
        Unit::Bytes,
        "UDP payload bytes per path kind"
    );
    describe_counter!("kwik_path_packets_total", "UDP datagrams per path kind");
    describe_counter!(
        "kwik_path_lost_packets_total",
        "Packets declared lost per path kind"
    );
    describe_counter!(
        "kwik_path_stream_bytes_total",
        Unit::Bytes,
        "Logical stream payload bytes per path kind (duplicates included)"
    );
    describe_counter!(
        "kwik_control_messages_total",
        "KWIK control messages per path kind"
    );
    describe_histogram!(
        "kwik_path_rtt_seconds",
        Unit::Seconds,
        "Smoothed RTT of each path"
    );
    describe_histogram!(
        "kwik_path_cwnd_bytes",
        Unit::Bytes,
        "Congestion window of each path"
    );
    describe_counter!("kwik_udp_datagrams_total", "UDP datagrams of the endpoint");
    describe_counter!(
        "kwik_udp_bytes_total",
        Unit::Bytes,
        "UDP payload bytes of the endpoint"
    );
    describe_counter!(
        "kwik_protocol_violations_total",
        "Paths closed for a peer's violation, by code"
    );
    describe_counter!(
        "kwik_delegations_finished_total",
        "Delegations settled, by outcome"
    );
    describe_counter!(
        "kwik_stripes_finished_total",
        "Stripes whose every byte arrived"
    );
    describe_counter!(
        "kwik_stripe_chunks_total",
        "Stripe chunks pulled (copies included)"
    );
    describe_counter!(
        "kwik_stripe_copies_total",
        "Stripe chunks pulled twice (stall or end game)"
    );
    describe_counter!(
        "kwik_stripe_copy_bytes_total",
        Unit::Bytes,
        "Stream bytes a client received twice, by why the range was pulled twice"
    );
    describe_counter!(
        "kwik_failovers_total",
        "Ranges a failed path owed, handed to another"
    );
    describe_counter!("kwik_pulls_refused_total", "Pulls refused under a ticket");
    describe_counter!(
        "kwik_drains_total",
        "Drains announced, and what they closed"
    );
}
