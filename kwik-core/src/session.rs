//! Session state shared by all paths of one session: setup, streams and the sticky error.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kwik_proto::control_frame::Kind;
use quinn_proto::Side;

use crate::config::Config;
use crate::error::{ErrorCode, ProtocolError, SessionError};
use crate::path::{Path, PathId};
use crate::streams::{Limits, Streams};

/// Identifies a session within its [`Endpoint`](crate::Endpoint). Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionHandle(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Client: waiting for Welcome.
    Handshaking,
    Established,
    Closed,
}

#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) side: Side,
    pub(crate) id: u64,
    pub(crate) phase: Phase,
    pub(crate) config: Arc<Config>,
    pub(crate) streams: Streams,
    /// Path id -> connection key in the endpoint.
    pub(crate) paths: BTreeMap<PathId, usize>,
    pub(crate) remote: SocketAddr,
    pub(crate) error: Option<SessionError>,
    pub(crate) next_metrics: Option<Instant>,
    /// Raw datagrams received and not yet read, with the path each came on.
    pub(crate) raw: VecDeque<(PathId, Bytes)>,
    /// Raw datagrams dropped because `raw` was full.
    pub(crate) raw_dropped: u64,
}

/// Most raw datagrams a session holds for the application; beyond, new ones are dropped, as
/// a full socket buffer would.
pub const RAW_QUEUE_LIMIT: usize = 1024;

/// What a control message asks the endpoint to do beyond the session's own state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ControlOutcome {
    Nothing,
    /// The client's session is now established.
    Established,
    /// Reply on the same path.
    Reply(Kind),
    /// The peer ended the session gracefully.
    PeerClosed {
        code: u64,
        reason: String,
    },
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
        Self {
            side,
            id,
            phase: Phase::Handshaking,
            config,
            streams,
            paths: BTreeMap::new(),
            remote,
            error: None,
            next_metrics: None,
            raw: VecDeque::new(),
            raw_dropped: 0,
        }
    }

    /// Moves the raw datagrams `path` received into the session's queue; returns whether any
    /// arrived.
    pub(crate) fn take_raw(&mut self, path: &mut Path) -> bool {
        let mut any = false;
        while let Some(data) = path.conn.datagrams().recv() {
            path.counters.raw_received += 1;
            if self.raw.len() >= RAW_QUEUE_LIMIT {
                self.raw_dropped += 1;
                continue;
            }
            self.raw.push_back((path.id, data));
            any = true;
        }
        any
    }

    /// Handles a control message received on an established session's path.
    pub(crate) fn on_control(&mut self, kind: Kind) -> Result<ControlOutcome, ProtocolError> {
        match kind {
            Kind::Welcome(welcome)
                if self.side == Side::Client && self.phase == Phase::Handshaking =>
            {
                if welcome.version != kwik_proto::VERSION {
                    return Err(ProtocolError::new(
                        ErrorCode::VersionMismatch,
                        format!("server speaks version {}", welcome.version),
                    ));
                }
                self.id = welcome.session_id;
                self.streams
                    .set_peer_limits(limits_from_wire(welcome.limits));
                self.phase = Phase::Established;
                Ok(ControlOutcome::Established)
            }
            Kind::Ping(ping) => Ok(ControlOutcome::Reply(Kind::Pong(kwik_proto::Pong {
                seq: ping.seq,
            }))),
            Kind::Pong(_) => Ok(ControlOutcome::Nothing),
            Kind::Close(close) => Ok(ControlOutcome::PeerClosed {
                code: close.code,
                reason: close.reason,
            }),
            other => Err(ProtocolError::new(
                ErrorCode::UnexpectedControlMessage,
                format!("unexpected control message {}", kind_name(&other)),
            )),
        }
    }
}

/// The message kind's name, for errors and logs.
pub(crate) fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Hello(_) => "Hello",
        Kind::Welcome(_) => "Welcome",
        Kind::Join(_) => "Join",
        Kind::JoinResult(_) => "JoinResult",
        Kind::AddPath(_) => "AddPath",
        Kind::PathStatus(_) => "PathStatus",
        Kind::RemovePath(_) => "RemovePath",
        Kind::Ping(_) => "Ping",
        Kind::Pong(_) => "Pong",
        Kind::Delegate(_) => "Delegate",
        Kind::DelegationUpdate(_) => "DelegationUpdate",
        Kind::Close(_) => "Close",
    }
}
