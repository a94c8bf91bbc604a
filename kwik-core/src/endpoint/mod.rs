//! The engine: one QUIC endpoint, every path's connection and every session.
//!
//! # Driving it
//!
//! The endpoint is a state machine without I/O. Its methods come in four kinds:
//! - inputs: [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`] and
//!   [`Endpoint::connect`];
//! - commands through borrowed handles: [`Endpoint::session`] and the
//!   [`SendStream`]/[`RecvStream`] it hands out;
//! - outputs, drained after every input or command, in this order:
//!   [`Endpoint::poll_transmit`] until `None`, then [`Endpoint::poll_event`] until `None`,
//!   then [`Endpoint::poll_timeout`], whose deadline is fed back as `handle_timeout`;
//! - getters ([`Endpoint::stats`], [`Session::stats`], ...).
//!
//! Time only enters through `now` arguments.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kwik_proto::control_frame::Kind;
use quinn_proto::{DatagramEvent, EcnCodepoint, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::config::{ClientConfig, ServerConfig};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::ids::{PathId, SessionHandle};
use crate::path::Path;
use crate::session::{PathMeta, PathState, Phase, Role, SessionState};
use crate::stats::EndpointStats;
use crate::ticket::{Budgets, TicketKey};

mod accept;
mod apply;
mod delegations;
mod drive;
mod event;
mod handles;
mod multi;
mod paths;
mod pulls;
mod qlog;
mod stats;

pub use event::{Event, Transmit};
pub use handles::{Delegated, RecvStream, SendStream, Session};
pub use multi::{AddPathError, MAX_DELEGATIONS, PathKind};
#[cfg(feature = "qlog")]
pub use qlog::QlogFactory;

/// Why [`Endpoint::connect`] could not start a session.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// QUIC refused the attempt (bad server name, unsupported address, ...).
    #[error(transparent)]
    Quic(#[from] quinn_proto::ConnectError),
}

/// Endpoint-wide settings that are not per session.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Seed of every random choice the engine and quinn-proto make (connection ids,
    /// session ids). Equal seeds with equal inputs give equal outputs, TLS randomness aside.
    pub seed: [u8; 32],
    /// Whether path MTU discovery may run (the socket must not fragment).
    pub allow_mtud: bool,
}

/// The KWIK engine.
///
/// Inputs are `handle_*` calls and `connect`; after each, drain `poll_transmit` until
/// `None`, then `poll_event`, then feed `poll_timeout` back as `handle_timeout`. Commands
/// go through the borrowed handle of [`Endpoint::session`]. Time only enters through
/// `now` arguments.
#[derive(Debug)]
pub struct Endpoint {
    quic: quinn_proto::Endpoint,
    server: Option<ServerConfig>,
    /// Every QUIC connection, by quinn-proto's connection handle.
    paths: BTreeMap<usize, PathSlot>,
    sessions: BTreeMap<SessionHandle, SessionState>,
    next_session: u64,
    events: VecDeque<Event>,
    /// Datagrams quinn-proto answered on its own (version negotiation, refusals).
    responses: VecDeque<(Transmit, Bytes)>,
    /// Paths with work to do before the next output.
    dirty: BTreeSet<usize>,
    /// Where the next `poll_transmit` starts, for fairness between paths.
    transmit_cursor: usize,
    rng: ChaCha20Rng,
    #[cfg(feature = "qlog")]
    qlog: qlog::Qlog,
    buf: Vec<u8>,
    stats: EndpointStats,
    /// The latest time an input carried, for work done while polling events.
    last_now: Option<Instant>,
    /// An instant and the Unix time at it, for join proof expiry.
    wall: Option<(Instant, std::time::Duration)>,
    /// Signs and checks delegation tickets: derived from the group key, or drawn from
    /// the seed when there is none (then only this server's own tickets verify).
    ticket_key: TicketKey,
    /// Bytes served under each ticket, for their budgets.
    budgets: Budgets,
}

/// The ticket key of a server: from its group key, else from `fallback` secret bytes.
fn ticket_key_of(server: Option<&ServerConfig>, fallback: [u8; 32]) -> TicketKey {
    let group = server
        .and_then(|s| s.group_key.clone())
        .unwrap_or_else(|| crate::join::GroupKey::new(fallback));
    TicketKey::derive(&group)
}

#[derive(Debug)]
struct PathSlot {
    path: Path,
    session: Option<SessionHandle>,
    remote: SocketAddr,
    side: Side,
    /// `path{session, path, remote, kind}`, entered while the engine drives this
    /// connection; a child of the session's span where the session came first.
    span: tracing::Span,
}

/// The span of one path's connection: `kind` is `primary`, `secondary` or `same-peer`. A
/// server's incoming connection (`path: None`) learns its session, path and kind from its
/// first control message (see [`label_path_span`]).
fn path_span(
    parent: Option<&tracing::Span>,
    path: Option<PathId>,
    remote: SocketAddr,
    kind: &str,
) -> tracing::Span {
    let parent = parent.and_then(|p| p.id());
    let span = tracing::info_span!(
        parent: parent,
        "path",
        session = tracing::field::Empty,
        path = tracing::field::Empty,
        remote = %remote,
        kind = tracing::field::Empty,
    );
    if let Some(path) = path {
        span.record("path", tracing::field::display(path));
        span.record("kind", kind);
    }
    span
}

/// Records the session and path an incoming connection turned out to carry.
fn label_path_span(span: &tracing::Span, h: SessionHandle, path: PathId, kind: &str) {
    span.record("session", h.0);
    span.record("path", tracing::field::display(path));
    span.record("kind", kind);
}

impl Endpoint {
    /// Creates an endpoint; with `server` it accepts sessions.
    pub fn new(config: EndpointConfig, server: Option<ServerConfig>) -> Self {
        let mut rng = ChaCha20Rng::from_seed(config.seed);
        let quic_seed: [u8; 32] = rng.random();
        let quic = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            server.as_ref().map(|s| s.quic.clone()),
            config.allow_mtud,
            Some(quic_seed),
        );
        let fallback: [u8; 32] = rng.random();
        let ticket_key = ticket_key_of(server.as_ref(), fallback);
        Self {
            quic,
            server,
            paths: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_session: 0,
            events: VecDeque::new(),
            responses: VecDeque::new(),
            dirty: BTreeSet::new(),
            transmit_cursor: 0,
            rng,
            #[cfg(feature = "qlog")]
            qlog: qlog::Qlog::default(),
            buf: Vec::new(),
            stats: EndpointStats::default(),
            last_now: None,
            wall: None,
            ticket_key,
            budgets: Budgets::default(),
        }
    }

    /// Tells the engine the wall-clock time: at `now`, `since_epoch` had passed since the
    /// Unix epoch. Join proofs carry an expiry in Unix seconds, so servers that add or
    /// admit paths need it; the engine keeps time from `now` arguments afterwards.
    pub fn set_wall_clock(&mut self, now: Instant, since_epoch: std::time::Duration) {
        self.wall = Some((now, since_epoch));
    }

    /// Replaces the server configuration (or stops accepting with `None`).
    pub fn set_server_config(&mut self, server: Option<ServerConfig>) {
        self.quic
            .set_server_config(server.as_ref().map(|s| s.quic.clone()));
        if server.as_ref().is_some_and(|s| s.group_key.is_some()) {
            self.ticket_key = ticket_key_of(server.as_ref(), [0; 32]);
        }
        self.server = server;
    }

    /// Starts a session with the server at `remote`, verified as `server_name`.
    pub fn connect(
        &mut self,
        now: Instant,
        config: &ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<SessionHandle, ConnectError> {
        let (dial, token) = self.dial_config(&config.quic, &config.config, remote);
        let (ch, conn) = self.quic.connect(now, dial, remote, server_name)?;
        let handle = self.new_session_handle();
        let mut session = SessionState::new(Side::Client, 0, config.config.clone(), remote);
        session.label_span(handle);
        let span = path_span(
            Some(&session.span),
            Some(PathId::PRIMARY),
            remote,
            "primary",
        );
        session.paths.insert(PathId::PRIMARY, ch.0);
        session.dial = Some(config.quic.clone());
        session.metas.insert(
            PathId::PRIMARY,
            PathMeta::new(remote, server_name.to_owned(), PathState::Connecting),
        );
        self.sessions.insert(handle, session);
        self.paths.insert(
            ch.0,
            PathSlot {
                path: Path::new(
                    conn,
                    PathId::PRIMARY,
                    config.config.max_control_messages_per_sec,
                ),
                session: Some(handle),
                remote,
                side: Side::Client,
                span,
            },
        );
        self.qlog_bind(ch.0, token);
        self.dirty.insert(ch.0);
        Ok(handle)
    }

    fn new_session_handle(&mut self) -> SessionHandle {
        let h = SessionHandle(self.next_session);
        self.next_session += 1;
        h
    }

    /// Feeds one received UDP datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += data.len() as u64;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self.quic.handle(now, remote, local_ip, ecn, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(slot) = self.paths.get_mut(&ch.0) {
                    slot.path.conn.handle_event(event);
                    self.dirty.insert(ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.on_incoming(now, incoming, &mut buf)
            }
            Some(DatagramEvent::Response(t)) => self.queue_response(t, &buf),
            None => {}
        }
        self.buf = buf;
        self.last_now = Some(now);
    }

    fn queue_response(&mut self, t: quinn_proto::Transmit, buf: &[u8]) {
        self.responses.push_back((
            Transmit {
                session: None,
                path: None,
                destination: t.destination,
                src_ip: t.src_ip,
                ecn: t.ecn,
                size: t.size,
                segment_size: t.segment_size,
            },
            Bytes::copy_from_slice(&buf[..t.size]),
        ));
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Datagrams handed in since the last drive are proof of life: a loop that wakes
        // late reads its backlog before its timers, and health must see that backlog.
        self.flush(now);
        for (key, slot) in self.paths.iter_mut() {
            if slot.path.conn.poll_timeout().is_some_and(|t| t <= now) {
                slot.path.conn.handle_timeout(now);
                self.dirty.insert(*key);
            }
        }
        self.check_health(now);
        self.update_degraded(now);
        self.retry_paths(now);
        self.expire_joins(now);
        self.sample_rates(now);
        self.refresh_credentials(now);
        self.check_stalls(now);
        let metrics_due: Vec<SessionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.next_metrics.is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in metrics_due {
            let stats = self.session_stats(h);
            if let Some(s) = self.sessions.get_mut(&h) {
                s.next_metrics = Some(now + s.config.metrics_interval);
            }
            if let Some(stats) = stats {
                self.events.push_back(Event::Metrics {
                    session: h,
                    stats: Box::new(stats),
                });
            }
        }
        self.last_now = Some(now);
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        self.flush(now);
        if let Some((t, data)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&data);
            count_sent(&mut self.stats, &t);
            return Some(t);
        }
        // Round-robin over paths, starting after the one that sent last.
        let cursor = self.transmit_cursor;
        let Self {
            paths, quic, stats, ..
        } = self;
        let mut sent = None;
        for (&key, slot) in paths.range_mut(cursor..) {
            if let Some(t) = drive::transmit_from(quic, key, slot, now, max_datagrams, buf) {
                sent = Some((key, t));
                break;
            }
        }
        if sent.is_none() {
            for (&key, slot) in paths.range_mut(..cursor) {
                if let Some(t) = drive::transmit_from(quic, key, slot, now, max_datagrams, buf) {
                    sent = Some((key, t));
                    break;
                }
            }
        }
        let (key, t) = sent?;
        count_sent(stats, &t);
        self.transmit_cursor = key + 1;
        // QUIC frees datagram room as it sends; drive the path so that a blocked sender
        // hears of it now, not at the next acknowledgement.
        if self.paths.get(&key).is_some_and(|s| s.path.raw_blocked) {
            self.dirty.insert(key);
        }
        Some(t)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(now) = self.last_now {
            self.flush(now);
        }
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        self.flush(now);
        let conns = self
            .paths
            .values_mut()
            .filter_map(|s| s.path.conn.poll_timeout());
        let conns: Option<Instant> = conns.min();
        let health = self
            .paths
            .values()
            .filter_map(|s| s.path.health.deadline(s.path.conn.rtt()));
        let metrics = self.sessions.values().filter_map(|s| s.next_metrics);
        conns
            .into_iter()
            .chain(health)
            .chain(metrics)
            .chain(self.retry_deadline())
            .chain(self.refresh_deadline())
            .chain(self.stripe_deadline())
            .min()
    }

    /// A borrowed handle to command one session; `None` once it is gone.
    pub fn session(&mut self, handle: SessionHandle) -> Option<Session<'_>> {
        if !self.sessions.contains_key(&handle) {
            return None;
        }
        Some(Session {
            endpoint: self,
            handle,
        })
    }

    /// Sessions currently held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The handles of every session held, in order.
    pub fn session_handles(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.sessions.keys().copied()
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats;
        s.sessions = self.sessions.len() as u64;
        s.connections = self.paths.len() as u64;
        s
    }

    /// Whether commands left paths to drive: an event loop that did not wake for
    /// anything else need only call [`Endpoint::poll_transmit`] when this is true.
    pub fn needs_drive(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Whether no connection remains (every one closed and drained).
    pub fn is_idle(&self) -> bool {
        self.paths.is_empty()
    }

    /// Sends due health probes and fails paths that went silent.
    fn check_health(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for (key, slot) in self.paths.iter_mut() {
            let rtt = slot.path.conn.rtt();
            if slot.path.health.deadline(rtt).is_none_or(|t| t > now) {
                continue;
            }
            let verdict = slot.path.health.on_timeout(now, rtt);
            if let Some(seq) = verdict.ping {
                slot.path.send_control(Kind::Ping(kwik_proto::Ping { seq }));
                self.dirty.insert(*key);
            }
            if verdict.failed {
                failed.push(*key);
            }
        }
        for key in failed {
            let Some(slot) = self.paths.get_mut(&key) else {
                continue;
            };
            let path = slot.path.id;
            tracing::warn!(parent: &slot.span, "path stopped answering health checks");
            slot.path.close_with(
                now,
                &ProtocolError::new(ErrorCode::PathUnresponsive, "no answer to health checks"),
            );
            self.dirty.insert(key);
            if let Some(h) = slot.session {
                let role = self.sessions.get(&h).map(|s| s.role);
                if role == Some(Role::Client) && path != PathId::PRIMARY {
                    self.secondary_failed(now, h, path, PathError::Unresponsive);
                } else if role == Some(Role::Primary) && path != PathId::PRIMARY {
                    // A same-peer path: the session lives on over the others.
                    self.peer_path_lost(now, h, path);
                } else {
                    self.close_session(h, SessionError::PathUnresponsive { path });
                    self.close_remaining_paths(now, h);
                }
            }
        }
    }

    fn session_paths(&self, h: SessionHandle) -> Vec<usize> {
        self.sessions
            .get(&h)
            .map(|s| s.paths.values().copied().collect())
            .unwrap_or_default()
    }

    /// The peer on path `key` broke the protocol: close what it belongs to.
    fn violation(&mut self, now: Instant, key: usize, error: ProtocolError) {
        match self.paths.get(&key) {
            Some(slot) => tracing::warn!(
                parent: &slot.span,
                code = ?error.code,
                reason = %error.reason,
                "protocol violation"
            ),
            None => {
                tracing::warn!(code = ?error.code, reason = %error.reason, "protocol violation")
            }
        }
        self.stats.count_violation(error.code);
        let session = self.paths.get(&key).and_then(|s| s.session);
        let path = self.paths.get(&key).map_or(PathId::PRIMARY, |s| s.path.id);
        if let Some(h) = session
            && path != PathId::PRIMARY
            && self
                .sessions
                .get(&h)
                .is_some_and(|s| s.role == Role::Client)
        {
            // A secondary misbehaved: only its path closes.
            if let Some(slot) = self.paths.get_mut(&key) {
                slot.path.close_with(now, &error);
                self.dirty.insert(key);
            }
            self.secondary_failed(now, h, path, PathError::Protocol(error));
            return;
        }
        let keys = match session {
            Some(h) => self.session_paths(h),
            None => vec![key],
        };
        for k in keys {
            if let Some(slot) = self.paths.get_mut(&k) {
                slot.path.close_with(now, &error);
                self.dirty.insert(k);
            }
        }
        if let Some(h) = session {
            self.close_session(h, SessionError::ProtocolViolation(error));
        }
    }

    /// Records the session's sticky error and tells the application, once.
    fn close_session(&mut self, h: SessionHandle, error: SessionError) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.error.is_some() {
            return;
        }
        s.phase = Phase::Closed;
        tracing::info!(parent: &s.span, %error, "session closed");
        s.error = Some(error.clone());
        s.next_metrics = None;
        self.events.push_back(Event::Closed { session: h, error });
    }

    fn mark_dirty_except(&mut self, h: SessionHandle, key: usize) {
        if let Some(s) = self.sessions.get(&h) {
            self.dirty
                .extend(s.paths.values().copied().filter(|k| *k != key));
        }
    }

    fn mark_dirty(&mut self, h: SessionHandle) {
        if let Some(s) = self.sessions.get(&h) {
            self.dirty.extend(s.paths.values().copied());
        }
    }
}

fn count_sent(stats: &mut EndpointStats, t: &Transmit) {
    let n = match t.segment_size {
        Some(seg) if seg > 0 => t.size.div_ceil(seg),
        _ => 1,
    };
    stats.datagrams_sent += n as u64;
    stats.bytes_sent += t.size as u64;
}
