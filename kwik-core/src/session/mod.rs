//! One session: its role and phase, its logical streams, its paths with the connections
//! that carry them, its side of delegation and its sticky error. The session does its own
//! work (control messages, driving its connections, its paths' lives, delegation) and asks
//! the endpoint, through [`Effect`]s, only for what the endpoint owns.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::Side;

use crate::config::Config;
use crate::delegation::{Held, IncomingDelegation, Issued, Outgoing, Owed};
use crate::error::{ErrorCode, ProtocolError, SessionError};
use crate::ids::{PathId, SessionHandle};
use crate::path::Path;
use crate::rate::TokenBucket;
use crate::streams::{Limits, Streams};

mod control;
mod drain;
mod drive;
mod effects;
mod lost;
mod paths;
mod plain;
mod primary;
mod pulls;
mod schedule;
mod serving;

pub(crate) use control::{Flow, kind_name, unexpected};
pub(crate) use drive::Cause;
pub(crate) use effects::{Cx, Effect};
pub use paths::{AddPathError, PathKind, RemovePathError};
pub(crate) use paths::{failed_status, state_event};
pub(crate) use schedule::Schedule;

/// The error for a Join the other side refused, or could not check.
pub(crate) fn refusal(reason: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::JoinRefused, reason)
}

/// What this side is in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Dialed the primary; reassembles what every server sends.
    Client,
    /// The server the client dialed: the session's authority.
    Primary,
    /// A server joined to another server's session; it serves delegated ranges.
    Secondary,
}

impl Role {
    /// `client`, `primary` or `secondary`, for logs, metric labels and file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
}

/// What a session speaks with its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// KWIK (ALPN `kwik/1`): a control stream, logical streams over carriers, paths to
    /// several servers, delegation and striping.
    #[default]
    Kwik,
    /// Plain QUIC: the peer negotiated one of `Config::app_protocols` by ALPN instead of
    /// `kwik/1` (a stock HTTP/3 client or a browser reaching a KWIK server, or a KWIK
    /// client that fell back). One path, no control stream, no carriers: logical stream
    /// ids are the QUIC stream ids, raw datagrams are QUIC datagrams on path 0, and flow
    /// control and liveness are QUIC's own (its stream and connection windows, idle
    /// timeout and keep-alive). What needs other servers degrades: `stripe`, and
    /// `delegate` to path 0, are served by this server alone through `accept_delegation`,
    /// one range after another onto the stream; `add_path`, `add_same_peer_path` and
    /// `delegate` to another path are refused with a typed error.
    Plain,
}

impl Mode {
    /// `kwik` or `plain`, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kwik => "kwik",
            Self::Plain => "plain",
        }
    }
}

/// Where a path is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathState {
    /// Being connected and joined.
    Connecting,
    /// Carrying the session.
    Active,
    /// Health probes go unanswered; not failed yet.
    Degraded,
    /// Failed; a client retries it until `path_recovery_timeout`.
    Failed,
    /// Gone for good.
    Removed,
}

impl PathState {
    pub(crate) fn to_wire(self) -> kwik_proto::PathState {
        match self {
            Self::Connecting => kwik_proto::PathState::Connecting,
            Self::Active => kwik_proto::PathState::Active,
            Self::Degraded => kwik_proto::PathState::Degraded,
            Self::Failed => kwik_proto::PathState::Failed,
            Self::Removed => kwik_proto::PathState::Removed,
        }
    }

    pub(crate) fn from_wire(state: i32) -> Option<Self> {
        match kwik_proto::PathState::try_from(state).ok()? {
            kwik_proto::PathState::Connecting => Some(Self::Connecting),
            kwik_proto::PathState::Active => Some(Self::Active),
            kwik_proto::PathState::Degraded => Some(Self::Degraded),
            kwik_proto::PathState::Failed => Some(Self::Failed),
            kwik_proto::PathState::Removed => Some(Self::Removed),
            kwik_proto::PathState::Unspecified => None,
        }
    }

    /// Whether the path carries data now.
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Active | Self::Degraded)
    }
}

/// One path of a session, as [`Session::paths`](crate::Session::paths) lists it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PathInfo {
    /// The path.
    pub id: PathId,
    /// The server's address.
    pub address: SocketAddr,
    /// Whether it is the primary path.
    pub is_primary: bool,
    /// Whether it leads to the primary server at another address (same-peer multipath).
    pub same_peer: bool,
    /// Its state.
    pub state: PathState,
    /// Smoothed RTT: measured on this side's own connections, as the client reported it
    /// for a primary's secondary paths.
    pub rtt: Option<Duration>,
    /// UDP bytes sent on the path by this side; on a primary, for secondary paths, the
    /// delegated bytes the client confirmed.
    pub bytes_sent: u64,
    /// UDP bytes received on the path by this side.
    pub bytes_received: u64,
    /// Stream bytes per second the path delivered recently.
    pub delivery_rate: u64,
}

/// One path of a session: what this side knows of it, and the connection that carries it
/// now. A connection the session lets go of (a failed, removed or replaced path's) closes
/// under the endpoint until it drains.
#[derive(Debug)]
pub(crate) struct PathRecord {
    pub(crate) address: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) state: PathState,
    /// Client: the join credentials, for the Join and for reconnecting.
    pub(crate) secret: Vec<u8>,
    pub(crate) expiry: u64,
    /// Client: the group key id the secret is under (what the Join names).
    pub(crate) key_id: u32,
    /// Client: when a failed path stops being retried, and when the next try is due.
    pub(crate) retry_until: Option<Instant>,
    pub(crate) next_retry: Option<Instant>,
    /// Primary: what the client reported.
    pub(crate) reported_rtt: Option<Duration>,
    pub(crate) delivery_rate: u64,
    /// Primary: delegated bytes the client confirmed.
    pub(crate) delivered: u64,
    /// Client: stream bytes received at the last rate sample, and when.
    pub(crate) rate_mark: Option<(Instant, u64)>,
    /// The path reaches the primary itself (same-peer multipath).
    pub(crate) same_peer: bool,
    /// A same-peer path kept for when no other path to the primary is left.
    pub(crate) backup: bool,
    /// Client: the path's server is draining: no new pulls go to it, and it is closed
    /// once it owes none.
    pub(crate) draining: bool,
    /// Client: a connecting path that has not joined by then fails (QUIC's own handshake
    /// can outlast the idle timeout, its timer restarting with every packet).
    pub(crate) join_deadline: Option<Instant>,
    /// This side's figures for the path when its connection went away: what a failed or
    /// removed path carried stays in the session's stats.
    pub(crate) last: Option<Box<crate::stats::PathStats>>,
    /// This side's connection for the path; a primary has none for a secondary's.
    pub(crate) conn: Option<Box<Path>>,
}

impl PathRecord {
    pub(crate) fn new(address: SocketAddr, server_name: String, state: PathState) -> Self {
        Self {
            address,
            server_name,
            state,
            secret: Vec::new(),
            expiry: 0,
            key_id: 0,
            retry_until: None,
            next_retry: None,
            reported_rtt: None,
            delivery_rate: 0,
            delivered: 0,
            rate_mark: None,
            same_peer: false,
            backup: false,
            draining: false,
            join_deadline: None,
            last: None,
            conn: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Client: waiting for Welcome.
    Handshaking,
    Established,
    Closed,
}

#[derive(Debug)]
pub(crate) struct SessionState {
    /// `session{handle, id, role, peer}`: the parent of its paths' spans, entered around
    /// engine work for the session as a whole.
    pub(crate) span: tracing::Span,
    pub(crate) side: Side,
    pub(crate) id: u64,
    pub(crate) phase: Phase,
    /// KWIK, or plain QUIC with a peer that does not speak it.
    pub(crate) mode: Mode,
    /// A plain session's ranges served onto its QUIC streams.
    pub(crate) plain: plain::PlainState,
    pub(crate) config: Arc<Config>,
    pub(crate) streams: Streams,
    /// Every path this side knows of, connected or not.
    pub(crate) paths: BTreeMap<PathId, PathRecord>,
    pub(crate) remote: SocketAddr,
    pub(crate) error: Option<SessionError>,
    pub(crate) next_metrics: Option<Instant>,
    /// Raw datagrams received and not yet read, with the path each came on.
    pub(crate) raw: VecDeque<(PathId, Bytes)>,
    /// Raw datagrams dropped because `raw` was full.
    pub(crate) raw_dropped: u64,
    pub(crate) role: Role,
    /// What a primary keeps: path ids, tickets issued, credential refresh.
    pub(crate) primary: PrimaryState,
    /// What a client keeps: how to dial secondaries, tickets held, pulls owed.
    pub(crate) client: ClientState,
    /// What any server keeps: the delegated ranges it serves.
    pub(crate) serving: ServingState,
    /// The application protocol the server chose (see `Config::app_protocols`).
    pub(crate) app_protocol: Option<Bytes>,
    /// Grows whenever something happens to the session (see `Session::activity`).
    pub(crate) activity: u64,
    /// Server: the session is being drained, until this deadline. Client: the primary
    /// announced its drain (at this time): no new streams.
    pub(crate) draining: Option<std::time::Instant>,
}

/// A primary's part of a session.
#[derive(Debug)]
pub(crate) struct PrimaryState {
    /// The next path id to hand out.
    pub(crate) next_path_id: u32,
    /// Delegations and stripes not yet reported done, by ticket id.
    pub(crate) issued: BTreeMap<u64, Issued>,
    pub(crate) next_delegation: u64,
    /// When tickets and path secrets are next refreshed.
    pub(crate) next_refresh: Option<Instant>,
}

/// Forgotten pulls a client remembers for counting late copies.
pub(crate) const FORGOTTEN_PULLS: usize = 64;

/// A client's part of a session.
#[derive(Debug)]
pub(crate) struct ClientState {
    /// Bounds how fast the primary may make it dial.
    pub(crate) add_path_budget: TokenBucket,
    /// How to dial the secondaries.
    pub(crate) dial: Option<quinn_proto::ClientConfig>,
    /// The tickets the primary issued, by id.
    pub(crate) held: BTreeMap<u64, Held>,
    /// Who owes which pull, by pull id.
    pub(crate) owed: BTreeMap<u64, Owed>,
    pub(crate) next_pull: u64,
    /// The highest ticket id the primary issued so far (ids only grow).
    pub(crate) last_ticket: Option<u64>,
    /// The last pulls forgotten (settled and passed by the reader, or failed), so that the
    /// late bytes of a copy that lost still count under its reason; at most
    /// [`FORGOTTEN_PULLS`].
    pub(crate) forgotten: VecDeque<Owed>,
    /// Stream bytes received twice, by reason.
    pub(crate) copy_bytes: crate::stats::CopyBytes,
    /// Bytes pulled as end-game copies, and bytes of those copies that arrived second.
    pub(crate) end_game_pulled: u64,
    pub(crate) end_game_lost: u64,
    /// The primary is lost and the session lives on its secondaries (see `lost.rs`).
    pub(crate) lost: Option<lost::Lost>,
    /// Where settled tickets said their streams end, the latest last.
    pub(crate) ends: VecDeque<(crate::ids::StreamId, u64)>,
    /// Stream ends applied from tickets while the primary was lost.
    pub(crate) fins: Vec<(crate::ids::StreamId, u64)>,
}

/// A server's part of a session as the writer of delegated ranges (a primary serves its
/// own share, a secondary the ranges it is pulled for).
#[derive(Debug)]
pub(crate) struct ServingState {
    /// Ranges this side serves.
    pub(crate) outgoing: BTreeMap<u64, Outgoing>,
    /// Ranges the application has not taken yet.
    pub(crate) incoming: VecDeque<IncomingDelegation>,
    /// The path this side writes delegated ranges on.
    pub(crate) writer_path: PathId,
}

pub(crate) fn local_limits(config: &Config) -> Limits {
    Limits {
        max_data: config.receive_window,
        max_stream_data: config.stream_receive_window,
        max_bidi: config.max_concurrent_bidi_streams,
        max_uni: config.max_concurrent_uni_streams,
    }
}

pub(crate) fn limits_to_wire(l: Limits, config: &Config) -> kwik_proto::Limits {
    kwik_proto::Limits {
        max_data: l.max_data,
        max_stream_data: l.max_stream_data,
        max_bidi_streams: l.max_bidi,
        max_uni_streams: l.max_uni,
        max_paths: config.max_paths_per_session,
    }
}

pub(crate) fn limits_from_wire(l: Option<kwik_proto::Limits>) -> Limits {
    let l = l.unwrap_or_default();
    Limits {
        max_data: l.max_data,
        max_stream_data: l.max_stream_data,
        max_bidi: l.max_bidi_streams,
        max_uni: l.max_uni_streams,
    }
}

impl SessionState {
    pub(crate) fn new(side: Side, id: u64, config: Arc<Config>, remote: SocketAddr) -> Self {
        let streams = Streams::new(side, local_limits(&config), config.max_reassembly_gaps);
        let add_path_budget =
            TokenBucket::with_burst(config.add_path_rate, config.max_paths_per_session);
        // A root: a server's session starts while its first connection's span is entered.
        let span = tracing::info_span!(
            parent: None,
            "session",
            handle = tracing::field::Empty,
            id = tracing::field::Empty,
            role = tracing::field::Empty,
            mode = tracing::field::Empty,
            peer = %remote,
        );
        Self {
            span,
            side,
            id,
            phase: Phase::Handshaking,
            mode: Mode::Kwik,
            plain: plain::PlainState::default(),
            config,
            streams,
            paths: BTreeMap::new(),
            remote,
            error: None,
            next_metrics: None,
            raw: VecDeque::new(),
            raw_dropped: 0,
            role: match side {
                Side::Client => Role::Client,
                Side::Server => Role::Primary,
            },
            app_protocol: None,
            activity: 0,
            draining: None,
            primary: PrimaryState {
                next_path_id: 1,
                issued: BTreeMap::new(),
                next_delegation: 0,
                next_refresh: None,
            },
            client: ClientState {
                add_path_budget,
                dial: None,
                held: BTreeMap::new(),
                owed: BTreeMap::new(),
                next_pull: 0,
                last_ticket: None,
                forgotten: VecDeque::new(),
                copy_bytes: crate::stats::CopyBytes::default(),
                end_game_pulled: 0,
                end_game_lost: 0,
                lost: None,
                ends: VecDeque::new(),
                fins: Vec::new(),
            },
            serving: ServingState {
                outgoing: BTreeMap::new(),
                incoming: VecDeque::new(),
                writer_path: PathId::PRIMARY,
            },
        }
    }

    /// Records the session's handle and role in its span (once, when it is created).
    pub(crate) fn label_span(&self, h: SessionHandle) {
        self.span.record("handle", h.0);
        self.span.record("role", tracing::field::debug(self.role));
        self.span.record("mode", self.mode.name());
        self.record_id();
    }

    /// Records the session id in its span once it is known (a client learns it from the
    /// primary's Welcome).
    pub(crate) fn record_id(&self) {
        if self.id != 0 {
            let id = format_args!("{:#018x}", self.id);
            self.span.record("id", tracing::field::display(id));
        }
    }

    /// Paths that carry data now (on a primary, as the client reported them; elsewhere,
    /// with a connection of this side's own).
    pub(crate) fn usable_paths(&self) -> Vec<PathId> {
        self.paths
            .iter()
            .filter(|(_, m)| {
                m.state.is_usable() && (self.role == Role::Primary || m.conn.is_some())
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// A delegation id not used before in this session.
    pub(crate) fn new_delegation_id(&mut self) -> u64 {
        let id = self.primary.next_delegation;
        self.primary.next_delegation += 1;
        id
    }

    /// Whether the session holds `max_paths_per_session` paths that are not removed.
    pub(crate) fn at_path_limit(&self) -> bool {
        let live = self
            .paths
            .values()
            .filter(|m| m.state != PathState::Removed)
            .count();
        live >= self.config.max_paths_per_session as usize
    }

    /// Whether `path` reaches the session's peer directly: the primary path, or a
    /// same-peer path.
    pub(crate) fn is_peer_path(&self, path: PathId) -> bool {
        path == PathId::PRIMARY || self.paths.get(&path).is_some_and(|m| m.same_peer)
    }

    /// Forgets the oldest removed paths beyond `max_paths_per_session` of them, so that a
    /// primary cycling `AddPath` and `RemovePath` cannot grow the list (the newest removed
    /// ones stay visible in `paths()`). A removed path whose connection this side still
    /// holds (a primary's same-peer path, until the client closes it) stays until it drains.
    pub(crate) fn purge_removed(&mut self) {
        let removed: Vec<PathId> = self
            .paths
            .iter()
            .filter(|(_, m)| m.state == PathState::Removed && m.conn.is_none())
            .map(|(id, _)| *id)
            .collect();
        let excess = removed
            .len()
            .saturating_sub(self.config.max_paths_per_session as usize);
        for id in removed.into_iter().take(excess) {
            self.paths.remove(&id);
        }
    }

    /// Sets a path's state; returns whether it changed.
    pub(crate) fn set_state(&mut self, path: PathId, state: PathState) -> bool {
        match self.paths.get_mut(&path) {
            Some(m) if m.state != state && m.state != PathState::Removed => {
                m.state = state;
                true
            }
            _ => false,
        }
    }

    /// Moves the raw datagrams `path` received into the session's queue; returns whether any
    /// arrived.
    pub(crate) fn take_raw(&mut self, path: PathId) -> bool {
        let Some(path) = self.paths.get_mut(&path).and_then(|r| r.conn.as_mut()) else {
            return false;
        };
        let limit = self.config.raw_receive_queue;
        queue_raw(path, &mut self.raw, limit, &mut self.raw_dropped)
    }

    /// The connection that carries `path` now.
    pub(crate) fn conn(&self, path: PathId) -> Option<&Path> {
        self.paths.get(&path)?.conn.as_deref()
    }

    /// The connection that carries `path` now.
    pub(crate) fn conn_mut(&mut self, path: PathId) -> Option<&mut Path> {
        self.paths.get_mut(&path)?.conn.as_deref_mut()
    }

    /// The connections this side holds for the session's paths, in path order.
    pub(crate) fn conns(&self) -> impl Iterator<Item = &Path> {
        self.paths.values().filter_map(|r| r.conn.as_deref())
    }

    /// The connections this side holds for the session's paths, in path order.
    pub(crate) fn conns_mut(&mut self) -> impl Iterator<Item = &mut Path> {
        self.paths
            .values_mut()
            .filter_map(|r| r.conn.as_deref_mut())
    }

    /// Client: checks the primary's Welcome and takes the session's id and limits from it.
    pub(crate) fn accept_welcome(
        &mut self,
        welcome: kwik_proto::Welcome,
    ) -> Result<(), ProtocolError> {
        if welcome.version != kwik_proto::VERSION {
            return Err(ProtocolError::new(
                ErrorCode::VersionMismatch,
                format!("server speaks version {}", welcome.version),
            ));
        }
        if !welcome.app_protocol.is_empty()
            && !self
                .config
                .app_protocols
                .iter()
                .any(|p| p[..] == welcome.app_protocol[..])
        {
            return Err(ProtocolError::new(
                ErrorCode::NoApplicationProtocol,
                "server chose an application protocol this client did not offer",
            ));
        }
        self.app_protocol =
            (!welcome.app_protocol.is_empty()).then(|| Bytes::from(welcome.app_protocol));
        self.id = welcome.session_id;
        self.streams
            .set_peer_limits(limits_from_wire(welcome.limits));
        self.phase = Phase::Established;
        Ok(())
    }
}

/// Moves the raw datagrams connection `p` received into `queue`, up to `limit` queued (the
/// rest counted in `dropped`); returns whether any was queued.
pub(crate) fn queue_raw(
    p: &mut Path,
    queue: &mut VecDeque<(PathId, Bytes)>,
    limit: usize,
    dropped: &mut u64,
) -> bool {
    let mut any = false;
    while let Some(data) = p.conn.datagrams().recv() {
        p.counters.raw_received += 1;
        if queue.len() >= limit {
            *dropped += 1;
            continue;
        }
        queue.push_back((p.id, data));
        any = true;
    }
    any
}
