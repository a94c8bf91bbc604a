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
use quinn_proto::{ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Side, VarInt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::config::{ClientConfig, ServerConfig};
use crate::delegation::DelegationOutcome;
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::ids::{DelegationId, PathId, SessionHandle, StreamId, StripeId};
use crate::path::Path;
use crate::session::{
    ControlOutcome, PathMeta, PathState, Phase, Role, SessionState, limits_from_wire,
    limits_to_wire, local_limits,
};
use crate::stats::{EndpointStats, SessionStats};
use crate::streams::StreamEvent;
use crate::ticket::{Budgets, TicketError, TicketKey};

mod delegations;
mod handles;
mod multi;
mod paths;
mod pulls;
mod qlog;
mod stats;

pub use handles::{Delegated, RecvStream, SendStream, Session};
pub use multi::{AddPathError, MAX_DELEGATIONS, PathKind};
#[cfg(feature = "qlog")]
pub use qlog::QlogFactory;

/// A datagram to send. The payload is in the buffer passed to [`Endpoint::poll_transmit`].
#[derive(Debug, Clone, Copy)]
pub struct Transmit {
    /// The session the datagram belongs to, if any (handshake refusals have none).
    pub session: Option<SessionHandle>,
    /// The path it travels on, if it belongs to a session's path.
    pub path: Option<PathId>,
    /// Where to send it.
    pub destination: SocketAddr,
    /// Source address to use, if the socket has several.
    pub src_ip: Option<IpAddr>,
    /// ECN codepoint to set.
    pub ecn: Option<EcnCodepoint>,
    /// Bytes of payload in the buffer.
    pub size: usize,
    /// With several datagrams in one transmit (GSO), the size of each but the last.
    pub segment_size: Option<usize>,
}

/// Something the application may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session this side dialed is established.
    Connected(SessionHandle),
    /// A client established a new session with this server.
    Incoming(SessionHandle),
    /// A session ended; the error is also what every later operation on it reports.
    Closed {
        /// The session.
        session: SessionHandle,
        /// Why.
        error: SessionError,
    },
    /// The peer opened logical streams of `dir`: call `accept`.
    StreamOpened {
        /// The session.
        session: SessionHandle,
        /// Their direction.
        dir: Dir,
    },
    /// A logical stream has data, a fin or a reset to read.
    StreamReadable {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
    },
    /// A logical stream that refused a write has credit again.
    StreamWritable {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
    },
    /// Every byte of a finished stream reached the peer.
    StreamFinished {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
    },
    /// The peer stopped a stream we were writing; it was reset.
    StreamStopped {
        /// The session.
        session: SessionHandle,
        /// The stream.
        stream: StreamId,
        /// The peer's code.
        code: VarInt,
    },
    /// More logical streams of `dir` may be opened.
    StreamAvailable {
        /// The session.
        session: SessionHandle,
        /// Their direction.
        dir: Dir,
    },
    /// Raw datagrams arrived: call [`Session::read_raw`].
    RawDatagram {
        /// The session.
        session: SessionHandle,
    },
    /// A path whose raw datagram buffer was full (a `try_send_raw` got its datagram back)
    /// has room again.
    RawWritable {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path was added to the session (primary: by `add_path`; client: at the primary's
    /// request); it is connecting.
    PathAdded {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path carries the session (joined, or recovered from degraded or failed).
    PathActive {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path's health probes go unanswered; it is not failed yet.
    PathDegraded {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// A path failed; a stripe's ranges it owed are pulled from the other servers, a plain
    /// delegation's rest goes back to the primary.
    PathFailed {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
        /// Why.
        error: PathError,
    },
    /// A path is gone for good.
    PathRemoved {
        /// The session.
        session: SessionHandle,
        /// The path.
        path: PathId,
    },
    /// This server was delegated a range: call [`Session::accept_delegation`].
    DelegationReceived {
        /// The session.
        session: SessionHandle,
    },
    /// A delegation that refused a write has room again.
    DelegationWritable {
        /// The session.
        session: SessionHandle,
        /// The delegation.
        delegation: DelegationId,
    },
    /// Primary: a delegation made with `delegate` was settled.
    DelegationFinished {
        /// The session.
        session: SessionHandle,
        /// The delegation.
        delegation: DelegationId,
        /// How it ended.
        outcome: DelegationOutcome,
    },
    /// Client: a server refused a pull under the primary's ticket; its range goes to
    /// the other paths (or, for a plain delegation, back to the primary).
    PullRefused {
        /// The session.
        session: SessionHandle,
        /// The path whose server refused.
        path: PathId,
        /// Why.
        error: TicketError,
    },
    /// Primary: every byte of a stripe reached the client.
    StripeFinished {
        /// The session.
        session: SessionHandle,
        /// The stripe, as `stripe` returned it.
        stripe: StripeId,
    },
    /// Periodic metrics (when `metrics_enabled`).
    Metrics {
        /// The session.
        session: SessionHandle,
        /// Its stats at this moment.
        stats: Box<SessionStats>,
    },
}

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

    fn on_incoming(&mut self, now: Instant, incoming: quinn_proto::Incoming, buf: &mut Vec<u8>) {
        let Some(server) = &self.server else {
            self.quic.ignore(incoming);
            return;
        };
        let remote = incoming.remote_address();
        // Sessions, not connections: a session with several paths counts once; a
        // connection that has no session yet (handshake, Hello or Join pending) counts as
        // one, so half-open connections cannot get around the limit.
        let pending = self.paths.values().filter(|s| s.session.is_none()).count();
        if self.sessions.len() + pending >= server.max_sessions {
            buf.clear();
            let t = self.quic.refuse(incoming, buf);
            self.queue_response(t, buf);
            return;
        }
        let control_rate = server.config.max_control_messages_per_sec;
        buf.clear();
        let (accept, token) = self.accept_config(remote);
        match self.quic.accept(incoming, now, buf, accept) {
            Ok((ch, conn)) => {
                self.qlog_bind(ch.0, token);
                self.paths.insert(
                    ch.0,
                    PathSlot {
                        path: Path::new(conn, PathId::PRIMARY, control_rate),
                        session: None,
                        remote,
                        side: Side::Server,
                        span: path_span(None, None, remote, ""),
                    },
                );
                self.dirty.insert(ch.0);
            }
            Err(e) => {
                tracing::debug!(cause = %e.cause, "refused incoming connection");
                if let Some(t) = e.response {
                    self.queue_response(t, buf);
                }
            }
        }
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
            if let Some(t) = transmit_from(quic, key, slot, now, max_datagrams, buf) {
                sent = Some((key, t));
                break;
            }
        }
        if sent.is_none() {
            for (&key, slot) in paths.range_mut(..cursor) {
                if let Some(t) = transmit_from(quic, key, slot, now, max_datagrams, buf) {
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

    /// Drives every path that has work: QUIC events, reads, writes, endpoint events.
    fn flush(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop_first() {
            self.drive(now, key);
        }
    }

    fn drive(&mut self, now: Instant, key: usize) {
        let Some(slot) = self.paths.get_mut(&key) else {
            return;
        };
        let span = slot.span.clone();
        let _entered = span.enter();
        let ch = ConnectionHandle(key);
        while let Some(event) = slot.path.conn.poll_endpoint_events() {
            if let Some(reply) = self.quic.handle_event(ch, event) {
                slot.path.conn.handle_event(reply);
            }
        }
        if let Err(error) = self.drive_path(now, key) {
            self.violation(now, key, error);
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return;
        };
        while let Some(event) = slot.path.conn.poll_endpoint_events() {
            if let Some(reply) = self.quic.handle_event(ch, event) {
                slot.path.conn.handle_event(reply);
            }
        }
        if slot.path.conn.is_drained() {
            let Some(slot) = self.paths.remove(&key) else {
                return;
            };
            self.qlog_forget(key);
            if let Some(h) = slot.session {
                if let Some(m) = self
                    .sessions
                    .get_mut(&h)
                    .and_then(|s| s.metas.get_mut(&slot.path.id))
                {
                    let all = stats::slot_stats(&slot).with_earlier(m.last.as_deref());
                    m.last = Some(Box::new(all));
                }
                self.path_gone(h, key);
            }
        }
    }

    /// A path's connection is gone for good.
    fn path_gone(&mut self, h: SessionHandle, key: usize) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.paths.retain(|_, k| *k != key);
        if s.paths.is_empty() {
            if s.error.is_none() {
                self.close_session(h, SessionError::LocallyClosed);
            }
            self.sessions.remove(&h);
        }
    }

    fn drive_path(&mut self, now: Instant, key: usize) -> Result<(), ProtocolError> {
        let schedule = self.schedule(key);
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        let server = slot.side == Side::Server;
        let mut lost = None;
        let mut connected = false;
        let mut raw_writable = false;
        while let Some(event) = slot.path.conn.poll() {
            match event {
                quinn_proto::Event::Connected => connected = !server,
                quinn_proto::Event::ConnectionLost { reason } => lost = Some(reason),
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Opened { .. }) => {
                    slot.path.accept_streams(server)?;
                }
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Readable { id }) => {
                    slot.path.mark_readable(id);
                }
                quinn_proto::Event::DatagramsUnblocked => {
                    slot.path.raw_blocked = false;
                    raw_writable = true;
                }
                quinn_proto::Event::Stream(_)
                | quinn_proto::Event::HandshakeDataReady
                | quinn_proto::Event::DatagramReceived => {}
            }
        }
        slot.path.note_progress(now);
        let path_id = slot.path.id;
        let session_handle = slot.session;
        if let (true, Some(session)) = (raw_writable, session_handle) {
            self.events.push_back(Event::RawWritable {
                session,
                path: path_id,
            });
        }
        if connected {
            slot.path.open_control()?;
            let first = if path_id == PathId::PRIMARY {
                session_handle.and_then(|h| self.sessions.get(&h)).map(|s| {
                    Kind::Hello(kwik_proto::Hello {
                        version: kwik_proto::VERSION,
                        limits: Some(limits_to_wire(local_limits(&s.config), &s.config)),
                        app_protocols: s.config.app_protocols.clone(),
                    })
                })
            } else {
                self.join_message(key)
            };
            let Some(slot) = self.paths.get_mut(&key) else {
                return Ok(());
            };
            match first {
                Some(kind) => slot.path.send_control(kind),
                None => {
                    return Err(ProtocolError::new(
                        ErrorCode::Handshake,
                        "cannot start the session on this path",
                    ));
                }
            }
        }
        if let Some(reason) = lost {
            if let Some(h) = session_handle {
                self.path_lost(now, h, path_id, reason.into());
            }
            return Ok(());
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        if slot.path.closing || slot.path.conn.is_closed() {
            // Closed by this side, or lost: only the connection's own shutdown remains.
            return Ok(());
        }
        // Server paths accept no data before the client's Hello made them a session.
        let messages = slot.path.read_control(now)?;
        for kind in messages {
            self.on_control(now, key, kind)?;
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        if slot.path.closing {
            return Ok(());
        }
        slot.path.flush_control()?;
        let Some(h) = slot.session else {
            return slot.path.read_carriers(|_| {
                Err(ProtocolError::new(
                    ErrorCode::Handshake,
                    "data before session setup",
                ))
            });
        };
        let Some(session) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        if session.phase == Phase::Closed {
            return Ok(());
        }
        let secondary = session.role == Role::Client && !session.is_peer_path(path_id);
        let mut received = 0;
        if secondary {
            let mut frames = Vec::new();
            slot.path.read_carriers(|frame| {
                Self::check_secondary_frame(session, path_id, &frame)?;
                frames.push(frame);
                Ok(())
            })?;
            for frame in frames {
                if let crate::frame::Frame::Stream { data, .. } = &frame {
                    received += data.len() as u64;
                }
                session.streams.on_frame(frame)?;
            }
        } else {
            let streams = &mut session.streams;
            slot.path.read_carriers(|frame| {
                if let crate::frame::Frame::Stream { data, .. } = &frame {
                    received += data.len() as u64;
                }
                streams.on_frame(frame)
            })?;
        }
        slot.path.counters.stream_bytes_received += received;
        if session.take_raw(&mut slot.path) {
            self.events.push_back(Event::RawDatagram { session: h });
        }
        let mut copies = Vec::new();
        let mut pulled = false;
        if session.phase == Phase::Established && !secondary {
            if schedule.multipath {
                // A path takes no more than it can send soon: the rest is for the others.
                let cwnd = slot.path.conn.congestion_state().window();
                slot.path.conn.set_send_window((2 * cwnd).max(64 * 1024));
            }
            let copy = (!schedule.copy_to.is_empty()).then_some(&mut copies);
            let before = slot.path.counters.frames_sent;
            slot.path.write(
                &mut session.streams,
                session.config.streams_per_carrier as usize,
                session.config.max_carriers_per_path as usize,
                schedule.allowance,
                copy,
            )?;
            pulled = slot.path.counters.frames_sent > before;
        }
        while let Some(event) = session.streams.poll_event() {
            self.events.push_back(stream_event(h, event));
        }
        let role = session.role;
        if !copies.is_empty() {
            for k in &schedule.copy_to {
                if let Some(other) = self.paths.get_mut(k) {
                    other.path.push_copies(&copies);
                    self.dirty.insert(*k);
                }
            }
        }
        if schedule.multipath && pulled {
            // Another path to the peer may take what this one could not, or its turn.
            self.mark_dirty_except(h, key);
        }
        self.write_delegated(key, h)?;
        if role == Role::Client {
            self.settle_pulls(now, h);
        }
        Ok(())
    }

    /// A path's QUIC connection was lost (not by this side's own close).
    fn path_lost(&mut self, now: Instant, h: SessionHandle, path: PathId, error: SessionError) {
        let role = self.sessions.get(&h).map(|s| s.role);
        if role == Some(Role::Client) && path != PathId::PRIMARY {
            self.secondary_failed(now, h, path, PathError::Connection(error));
        } else if role == Some(Role::Primary) && path != PathId::PRIMARY {
            self.peer_path_lost(now, h, path);
        } else {
            self.close_session(h, error);
            self.close_remaining_paths(now, h);
        }
    }

    fn on_control(&mut self, now: Instant, key: usize, kind: Kind) -> Result<(), ProtocolError> {
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        let Some(h) = slot.session else {
            return self.on_setup(now, key, kind);
        };
        if !self.sessions.contains_key(&h) {
            return Ok(());
        }
        if let Kind::Pong(pong) = &kind {
            slot.path.health.on_pong(now, pong.seq);
        }
        let Some(kind) = self.on_multi_control(now, key, h, kind)? else {
            return Ok(());
        };
        let (Some(slot), Some(session)) = (self.paths.get_mut(&key), self.sessions.get_mut(&h))
        else {
            return Ok(());
        };
        match session.on_control(kind)? {
            ControlOutcome::Nothing => {}
            ControlOutcome::Reply(reply) => slot.path.send_control(reply),
            ControlOutcome::Established => {
                session.set_state(PathId::PRIMARY, PathState::Active);
                slot.path.health.start(
                    now,
                    session.config.path_health_check_interval,
                    session.config.path_failure_threshold,
                );
                if session.config.metrics_enabled {
                    session.next_metrics = Some(now + session.config.metrics_interval);
                }
                session.record_id();
                tracing::info!(parent: &session.span, "session established");
                self.events.push_back(Event::Connected(h));
                self.qlog_label(key, h, PathId::PRIMARY, "primary");
            }
            ControlOutcome::PeerClosed { code, reason } => {
                let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
                self.close_session(
                    h,
                    SessionError::ApplicationClosed {
                        code,
                        reason: Bytes::from(reason),
                    },
                );
                for k in self.session_paths(h) {
                    if let Some(slot) = self.paths.get_mut(&k)
                        && !slot.path.closing
                    {
                        slot.path.close_app(now, code, Bytes::new());
                    }
                }
            }
        }
        Ok(())
    }

    /// The first control message of a server path: a Hello makes it a new session.
    fn on_setup(&mut self, now: Instant, key: usize, kind: Kind) -> Result<(), ProtocolError> {
        let Some(server) = &self.server else {
            // The server stopped accepting while this connection's handshake was under way.
            let code = match kind {
                Kind::Join(_) => ErrorCode::JoinRefused,
                _ => ErrorCode::Handshake,
            };
            return Err(ProtocolError::new(
                code,
                "this server accepts no new sessions",
            ));
        };
        let config = server.config.clone();
        let joins_only = server.joins_only;
        let hello = match kind {
            Kind::Hello(_) if joins_only => {
                return Err(ProtocolError::new(
                    ErrorCode::JoinsOnly,
                    "this server serves only as a secondary",
                ));
            }
            Kind::Hello(hello) => hello,
            Kind::Join(join) => return self.on_join(now, key, join),
            kind => {
                return Err(ProtocolError::new(
                    ErrorCode::UnexpectedControlMessage,
                    format!("expected Hello, got {}", crate::session::kind_name(&kind)),
                ));
            }
        };
        if hello.version != kwik_proto::VERSION {
            return Err(ProtocolError::new(
                ErrorCode::VersionMismatch,
                format!("client speaks version {}", hello.version),
            ));
        }
        let app_protocol =
            crate::config::choose_app_protocol(&config.app_protocols, &hello.app_protocols)?;
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        let h = SessionHandle(self.next_session);
        self.next_session += 1;
        let id: u64 = self.rng.random();
        let mut session = SessionState::new(Side::Server, id, config.clone(), slot.remote);
        session
            .streams
            .set_peer_limits(limits_from_wire(hello.limits));
        session.phase = Phase::Established;
        session.app_protocol = app_protocol.clone();
        if config.metrics_enabled {
            session.next_metrics = Some(now + config.metrics_interval);
        }
        session.paths.insert(PathId::PRIMARY, key);
        session.metas.insert(
            PathId::PRIMARY,
            PathMeta::new(slot.remote, String::new(), PathState::Active),
        );
        slot.session = Some(h);
        session.label_span(h);
        label_path_span(&slot.span, h, PathId::PRIMARY, "primary");
        tracing::info!(parent: &session.span, "session accepted");
        // Servers probe too: a dead client is noticed within the health window rather
        // than QUIC's idle timeout.
        slot.path.health.start(
            now,
            config.path_health_check_interval,
            config.path_failure_threshold,
        );
        slot.path.send_control(Kind::Welcome(kwik_proto::Welcome {
            version: kwik_proto::VERSION,
            session_id: id,
            limits: Some(limits_to_wire(local_limits(&config), &config)),
            app_protocol: app_protocol.map(Vec::from).unwrap_or_default(),
        }));
        self.sessions.insert(h, session);
        self.events.push_back(Event::Incoming(h));
        self.qlog_label(key, h, PathId::PRIMARY, "primary");
        Ok(())
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

/// One datagram from one path's connection, with the endpoint events sending produced.
fn transmit_from(
    quic: &mut quinn_proto::Endpoint,
    key: usize,
    slot: &mut PathSlot,
    now: Instant,
    max_datagrams: usize,
    buf: &mut Vec<u8>,
) -> Option<Transmit> {
    buf.clear();
    let t = slot.path.conn.poll_transmit(now, max_datagrams, buf)?;
    // Sending may have produced endpoint events (new connection ids).
    let ch = ConnectionHandle(key);
    while let Some(event) = slot.path.conn.poll_endpoint_events() {
        if let Some(reply) = quic.handle_event(ch, event) {
            slot.path.conn.handle_event(reply);
        }
    }
    Some(Transmit {
        session: slot.session,
        path: slot.session.map(|_| slot.path.id),
        destination: t.destination,
        src_ip: t.src_ip,
        ecn: t.ecn,
        size: t.size,
        segment_size: t.segment_size,
    })
}

fn count_sent(stats: &mut EndpointStats, t: &Transmit) {
    let n = match t.segment_size {
        Some(seg) if seg > 0 => t.size.div_ceil(seg),
        _ => 1,
    };
    stats.datagrams_sent += n as u64;
    stats.bytes_sent += t.size as u64;
}

fn stream_event(session: SessionHandle, e: StreamEvent) -> Event {
    match e {
        StreamEvent::Opened(dir) => Event::StreamOpened { session, dir },
        StreamEvent::Readable(stream) => Event::StreamReadable { session, stream },
        StreamEvent::Writable(stream) => Event::StreamWritable { session, stream },
        StreamEvent::Finished(stream) => Event::StreamFinished { session, stream },
        StreamEvent::Stopped(stream, code) => Event::StreamStopped {
            session,
            stream,
            code,
        },
        StreamEvent::Available(dir) => Event::StreamAvailable { session, dir },
    }
}
