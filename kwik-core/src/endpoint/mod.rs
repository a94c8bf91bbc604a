//! The engine: one QUIC endpoint, the sessions (each with its paths' connections), a route
//! per connection and the connections no session holds. The endpoint routes; sessions do
//! their own work and ask it for the rest (`apply.rs`).
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

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{DatagramEvent, EcnCodepoint, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::config::{ClientConfig, ServerConfig};
use crate::error::{PathError, ProtocolError, SessionError};
use crate::event::{Event, Transmit};
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::path::Path;
use crate::session::{Effect, PathRecord, PathState, Role, SessionState};
use crate::stats::EndpointStats;
use crate::ticket::{Budgets, TicketKey, TicketKeys};

mod accept;
mod apply;
mod connset;
mod deadlines;
mod drain;
mod drive;
mod handles;
mod keys;
mod qlog;
mod routes;
mod stats;
mod timers;

use connset::ConnSet;
use deadlines::{Deadlines, Owner};
use routes::{Route, Routes};

pub use handles::{Delegated, RecvStream, SendStream, Session};
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
    /// Where every QUIC connection lives, by quinn-proto's connection handle.
    routes: Routes,
    /// Sessions, each with its paths and their connections.
    sessions: BTreeMap<SessionHandle, SessionState>,
    /// This server's primary sessions by session id, for a `Join` that reaches the
    /// primary itself at another address (same-peer multipath).
    primaries: rustc_hash::FxHashMap<u64, SessionHandle>,
    /// Connections no session holds: a server's before its first control message, and
    /// those a session let go of (a failed, removed or replaced path's) while they close.
    loose: BTreeMap<ConnKey, Loose>,
    next_session: u64,
    events: VecDeque<Event>,
    /// Datagrams quinn-proto answered on its own (version negotiation, refusals).
    responses: VecDeque<(Transmit, Bytes)>,
    /// Paths with work to do before the next output.
    dirty: ConnSet,
    /// Paths whose session's application wrote since their last drive, and which are
    /// not `dirty`: they have data to send and nothing new to read.
    written: ConnSet,
    /// Connections that may have a datagram to send: driven, timed out or commanded since
    /// they last had none, and those sending (see `Path::is_sending`).
    sendable: ConnSet,
    /// When each session and loose connection next needs its timers run.
    deadlines: Deadlines,
    /// Where the next `poll_transmit` starts, for fairness between paths.
    transmit_cursor: ConnKey,
    rng: ChaCha20Rng,
    #[cfg(feature = "qlog")]
    qlog: qlog::Qlog,
    buf: Vec<u8>,
    stats: EndpointStats,
    /// The latest time an input carried, for work done while polling events.
    last_now: Option<Instant>,
    /// An instant and the Unix time at it, for join proof expiry.
    wall: Option<(Instant, std::time::Duration)>,
    /// Signs and checks delegation tickets: derived from the group keys, or drawn from
    /// the seed when there are none (then only this server's own tickets verify).
    ticket_key: TicketKeys,
    /// Bytes served under each ticket, for their budgets.
    budgets: Budgets,
    /// What the session being worked on asks of the endpoint (kept for its allocation).
    effects: Vec<Effect>,
    /// A drain under way (see [`Endpoint::drain`]).
    drain: Option<drain::Drain>,
}

/// The ticket keys of a server: from its group keys, else from `fallback` secret bytes.
fn ticket_key_of(server: Option<&ServerConfig>, fallback: [u8; 32]) -> TicketKeys {
    match server.and_then(|s| s.group_key.as_ref()) {
        Some(keys) => TicketKeys::derive(keys),
        None => TicketKeys::single(TicketKey::derive(&crate::join::GroupKey::new(fallback))),
    }
}

/// A connection no session holds.
#[derive(Debug)]
struct Loose {
    /// The session that let go of it, if any.
    session: Option<SessionHandle>,
    path: Box<Path>,
}

/// The connection `key` routes to and the session it belongs (or belonged) to, borrowed
/// from the fields that hold connections so that the caller keeps the others.
fn route_mut<'a>(
    sessions: &'a mut BTreeMap<SessionHandle, SessionState>,
    loose: &'a mut BTreeMap<ConnKey, Loose>,
    key: ConnKey,
    route: Route,
) -> Option<(Option<SessionHandle>, &'a mut Path)> {
    match route {
        Route::Path(h, path) => Some((Some(h), sessions.get_mut(&h)?.conn_mut(path)?)),
        Route::Loose => loose.get_mut(&key).map(|l| (l.session, &mut *l.path)),
    }
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
            server.as_ref().map(|s| s.quic().clone()),
            config.allow_mtud,
            Some(quic_seed),
        );
        let fallback: [u8; 32] = rng.random();
        let ticket_key = ticket_key_of(server.as_ref(), fallback);
        Self {
            quic,
            server,
            routes: Routes::default(),
            sessions: BTreeMap::new(),
            primaries: rustc_hash::FxHashMap::default(),
            loose: BTreeMap::new(),
            next_session: 0,
            events: VecDeque::new(),
            responses: VecDeque::new(),
            dirty: ConnSet::default(),
            written: ConnSet::default(),
            sendable: ConnSet::default(),
            deadlines: Deadlines::default(),
            transmit_cursor: ConnKey(0),
            rng,
            #[cfg(feature = "qlog")]
            qlog: qlog::Qlog::default(),
            buf: Vec::new(),
            stats: EndpointStats::default(),
            last_now: None,
            wall: None,
            ticket_key,
            budgets: Budgets::default(),
            effects: Vec::new(),
            drain: None,
        }
    }

    /// Tells the engine the wall-clock time: at `now`, `since_epoch` had passed since the
    /// Unix epoch. Join proofs carry an expiry in Unix seconds, so servers that add or
    /// admit paths need it; the engine keeps time from `now` arguments afterwards.
    pub fn set_wall_clock(&mut self, now: Instant, since_epoch: std::time::Duration) {
        self.wall = Some((now, since_epoch));
    }

    /// Replaces the server configuration (or stops accepting with `None`). New group keys
    /// take effect as with [`Endpoint::set_group_keys`].
    pub fn set_server_config(&mut self, server: Option<ServerConfig>) {
        self.quic
            .set_server_config(server.as_ref().map(|s| s.quic().clone()));
        let Some(mut server) = server else {
            self.server = None;
            return;
        };
        let Some(keys) = server.group_key.take() else {
            // No group key: no joins, and tickets keep the key they had.
            self.server = Some(server);
            return;
        };
        // The keys held so far stay until the new ones are set, so that a switch re-issues.
        server.group_key = self.server.as_mut().and_then(|s| s.group_key.take());
        self.server = Some(server);
        match self.last_now {
            Some(now) => self.set_group_keys(now, keys),
            // Nothing happened yet: no session to re-issue anything to.
            None => {
                self.ticket_key = TicketKeys::derive(&keys);
                if let Some(s) = self.server.as_mut() {
                    s.group_key = Some(keys);
                }
            }
        }
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
        let key = ConnKey::from(ch);
        let handle = self.new_session_handle();
        let mut session = SessionState::new(Side::Client, 0, config.config.clone(), remote);
        session.label_span(handle);
        let span = path_span(
            Some(&session.span),
            Some(PathId::PRIMARY),
            remote,
            "primary",
        );
        session.client.dial = Some(config.paths.clone());
        let mut record = PathRecord::new(remote, server_name.to_owned(), PathState::Connecting);
        record.conn = Some(Path::new(
            key,
            conn,
            PathId::PRIMARY,
            Side::Client,
            span,
            config.config.max_control_messages_per_sec,
        ));
        session.paths.insert(PathId::PRIMARY, record);
        self.sessions.insert(handle, session);
        self.routes
            .insert(key, Route::Path(handle, PathId::PRIMARY));
        self.qlog_bind(key, token);
        self.dirty.insert(key);
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
                if let Some(p) = self.conn_mut(ch.into()) {
                    p.conn.handle_event(event);
                    self.dirty.insert(ch.into());
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

    /// Advances timers to `now`: runs those of every session and loose connection that
    /// are due, each found in a heap of deadlines (the others are not looked at).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Datagrams handed in since the last drive are proof of life: a loop that wakes
        // late reads its backlog before its timers, and health must see that backlog.
        self.flush(now);
        self.file_touched();
        while let Some(owner) = self.deadlines.pop_due(now) {
            // Filed under a deadline that has since moved later: filed again, nothing run.
            match self.deadline_of(owner) {
                Some(t) if t > now => self.deadlines.file(owner, Some(t)),
                _ => self.run_timers(now, owner),
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
        // Round-robin over the connections that may send, once around, starting after the
        // one that sent last.
        let mut at = self.transmit_cursor;
        let mut wrapped = false;
        loop {
            let key = match self.sendable.next_from(at) {
                Some(key) if !(wrapped && key >= self.transmit_cursor) => key,
                None if !wrapped => {
                    wrapped = true;
                    at = ConnKey(0);
                    continue;
                }
                _ => return None,
            };
            at = ConnKey(key.0 + 1);
            let Self {
                routes,
                sessions,
                loose,
                quic,
                stats,
                deadlines,
                ..
            } = self;
            let (mut sending, mut timer_moved) = (false, false);
            let sent = routes.get(key).and_then(|route| {
                // An owner whose deadline is about to be computed again anyway need not
                // be asked whether this moved its timers.
                let owner = match route {
                    Route::Path(h, _) => Owner::Session(h),
                    Route::Loose => Owner::Loose(key),
                };
                let touched = deadlines.touched_last(owner);
                let (session, p) = route_mut(sessions, loose, key, route)?;
                let timer = (!touched).then(|| p.conn.poll_timeout());
                let t = drive::transmit_from(quic, p, session, now, max_datagrams, buf);
                if t.is_none() {
                    sending = p.is_sending(now);
                    timer_moved = timer.is_some_and(|timer| p.conn.poll_timeout() != timer);
                }
                Some((t?, p.raw_blocked))
            });
            let Some((t, raw_blocked)) = sent else {
                // Nothing to send now. QUIC's pacing may have set a timer for its next
                // burst; a connection that is sending is asked again at every output
                // anyway, while one that is not costs nothing until something happens to
                // it.
                if !sending {
                    self.sendable.remove(key);
                }
                if timer_moved {
                    self.touch_conn_timers(key);
                }
                continue;
            };
            count_sent(stats, &t);
            self.transmit_cursor = at;
            // QUIC frees datagram room as it sends; drive the path so that a blocked
            // sender hears of it now, not at the next acknowledgement.
            if raw_blocked {
                self.dirty.insert(key);
            }
            // Sending moved the connection's timers (it stays sendable: it may have more).
            self.touch_conn_timers(key);
            return Some(t);
        }
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
        self.file_touched();
        self.deadlines.next()
    }

    /// Files again the deadlines of everything touched since they were filed.
    fn file_touched(&mut self) {
        let touched = self.deadlines.take_touched();
        for &owner in &touched {
            let deadline = self.deadline_of(owner);
            self.deadlines.file(owner, deadline);
        }
        self.deadlines.give_back(touched);
    }

    /// Something happened to `owner`: its timers may have moved.
    fn touch(&mut self, owner: Owner) {
        self.deadlines.touch(owner);
    }

    /// Something happened to connection `key`: its timers may have moved, and it may
    /// have datagrams to send.
    fn touch_conn(&mut self, key: ConnKey) {
        if self.touch_conn_timers(key) {
            self.sendable.insert(key);
        }
    }

    /// The timers of connection `key` may have moved; returns whether it is known.
    fn touch_conn_timers(&mut self, key: ConnKey) -> bool {
        match self.routes.get(key) {
            Some(Route::Path(h, _)) => {
                if let Some(s) = self.sessions.get_mut(&h) {
                    s.activity += 1;
                }
                self.deadlines.touch(Owner::Session(h));
            }
            Some(Route::Loose) => {
                // A connection a session let go of still counts in its figures.
                let session = self.loose.get(&key).and_then(|l| l.session);
                if let Some(s) = session.and_then(|h| self.sessions.get_mut(&h)) {
                    s.activity += 1;
                }
                self.deadlines.touch(Owner::Loose(key));
            }
            None => return false,
        }
        true
    }

    /// Something happened to session `h`: its timers may have moved, and its connections
    /// may have datagrams to send.
    fn touch_session(&mut self, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.activity += 1;
        self.sendable.extend(s.conns().map(|p| p.key));
        self.deadlines.touch(Owner::Session(h));
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
        s.plain_sessions = self
            .sessions
            .values()
            .filter(|s| s.mode == crate::Mode::Plain)
            .count() as u64;
        s.connections = self.routes.len() as u64;
        s
    }

    /// Whether commands left paths to drive: an event loop that did not wake for
    /// anything else need only call [`Endpoint::poll_transmit`] when this is true.
    pub fn needs_drive(&self) -> bool {
        !self.dirty.is_empty() || !self.written.is_empty()
    }

    /// Whether no connection remains (every one closed and drained).
    pub fn is_idle(&self) -> bool {
        self.routes.is_empty()
    }

    /// The connections session `h` holds, in path order.
    fn session_paths(&self, h: SessionHandle) -> Vec<ConnKey> {
        self.sessions
            .get(&h)
            .map(|s| s.conns().map(|p| p.key).collect())
            .unwrap_or_default()
    }

    /// The connection `key`, wherever it lives.
    fn conn(&self, key: ConnKey) -> Option<&Path> {
        match self.routes.get(key)? {
            Route::Path(h, path) => self.sessions.get(&h)?.conn(path),
            Route::Loose => self.loose.get(&key).map(|l| &*l.path),
        }
    }

    /// The connection `key`, wherever it lives.
    fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Path> {
        let route = self.routes.get(key)?;
        route_mut(&mut self.sessions, &mut self.loose, key, route).map(|(_, p)| p)
    }

    /// The connection `key` and quinn-proto's endpoint, for the events between them.
    fn conn_and_quic(&mut self, key: ConnKey) -> Option<(&mut quinn_proto::Endpoint, &mut Path)> {
        let route = self.routes.get(key)?;
        let (_, p) = route_mut(&mut self.sessions, &mut self.loose, key, route)?;
        Some((&mut self.quic, p))
    }

    /// The session connection `key` carries a path of, or last did.
    fn session_of(&self, key: ConnKey) -> Option<SessionHandle> {
        match self.routes.get(key)? {
            Route::Path(h, _) => Some(h),
            Route::Loose => self.loose.get(&key)?.session,
        }
    }

    /// Closes connection `key` with application code 0, unless it is closing already.
    fn close_conn(&mut self, now: Instant, key: ConnKey, reason: Bytes) {
        if let Some(p) = self.conn_mut(key)
            && !p.closing
        {
            p.close_app(now, quinn_proto::VarInt::from_u32(0), reason);
            self.dirty.insert(key);
        }
    }

    /// The peer on path `key` broke the protocol: close what it belongs to.
    #[cold]
    fn violation(&mut self, now: Instant, key: ConnKey, error: ProtocolError) {
        match self.conn(key) {
            Some(p) => tracing::warn!(
                parent: &p.span,
                code = ?error.code,
                reason = %error.reason,
                "protocol violation"
            ),
            None => {
                tracing::warn!(code = ?error.code, reason = %error.reason, "protocol violation")
            }
        }
        self.stats.count_violation(error.code);
        let session = self.session_of(key);
        let path = self.conn(key).map_or(PathId::PRIMARY, |p| p.id);
        if let Some(h) = session
            && path != PathId::PRIMARY
            && self
                .sessions
                .get(&h)
                .is_some_and(|s| s.role == Role::Client)
        {
            // A secondary misbehaved: only its path closes.
            if let Some(p) = self.conn_mut(key) {
                p.close_with(now, &error);
                self.dirty.insert(key);
            }
            self.with_session(now, h, |s, cx| {
                s.secondary_failed(cx, path, PathError::Protocol(error))
            });
            return;
        }
        let keys = match session {
            Some(h) => self.session_paths(h),
            None => vec![key],
        };
        for k in keys {
            if let Some(p) = self.conn_mut(k) {
                p.close_with(now, &error);
                self.dirty.insert(k);
            }
        }
        if let Some(h) = session {
            self.close_session(now, h, SessionError::ProtocolViolation(error));
        }
    }

    /// Records the session's sticky error and tells the application, once.
    fn close_session(&mut self, now: Instant, h: SessionHandle, error: SessionError) {
        self.with_session(now, h, |s, cx| s.close(cx, error));
    }

    pub(super) fn mark_dirty(&mut self, h: SessionHandle) {
        if let Some(s) = self.sessions.get(&h) {
            self.dirty.extend(s.conns().map(|p| p.key));
        }
    }

    /// The application wrote to session `h`'s streams: its connections have data to
    /// send (a plain session's are driven in full, as it reads and writes QUIC's streams
    /// in one pass).
    pub(super) fn mark_written(&mut self, h: SessionHandle) {
        match self.sessions.get(&h) {
            Some(s) if s.mode == crate::Mode::Kwik => {
                self.written.extend(s.conns().map(|p| p.key));
            }
            _ => self.mark_dirty(h),
        }
    }

    /// Unix time at `now`, from the anchor given to [`Endpoint::set_wall_clock`].
    fn unix_secs(&self, now: Instant) -> u64 {
        match self.wall {
            Some((at, since_epoch)) => (since_epoch + now.saturating_duration_since(at)).as_secs(),
            None => 0,
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
