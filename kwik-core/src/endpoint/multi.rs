//! Multi-server sessions: the public types of adding paths, and the helpers the path
//! (`paths.rs`) and delegation (`delegations.rs`) logic share. Which control message each
//! role accepts from which peer is the control table's ([`crate::session::control`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_proto::PathStatus;
use kwik_proto::control_frame::Kind;

use super::{Endpoint, Event};
use crate::error::{PathError, SessionError};
use crate::ids::{PathId, SessionHandle};
use crate::session::PathState;

/// Why [`Session::add_path`](crate::Session::add_path) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPathError {
    /// Only a primary server adds paths.
    #[error("only the primary adds paths")]
    NotPrimary,
    /// The server config has no group key, so no secondary would admit the client.
    #[error("no group key configured")]
    NoGroupKey,
    /// The session holds `max_paths_per_session` paths already.
    #[error("path limit reached")]
    TooManyPaths,
    /// The session is gone or closed, with the error that ended it.
    #[error("session lost: {0}")]
    SessionLost(SessionError),
}

/// What a path added by the primary leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Another server, which serves delegated ranges.
    Secondary,
    /// This server at another address: the path carries the session's streams, spread
    /// over every such path by `Config::load_balancing` (same-peer multipath).
    SamePeer,
    /// Like `SamePeer`, but used only when no other path to this server is left.
    Backup,
}

/// Most delegations a client tracks, and a server serves, at once per session.
pub const MAX_DELEGATIONS: usize = 4096;

impl Endpoint {
    /// Unix time at `now`, from the anchor given to [`Endpoint::set_wall_clock`].
    pub(super) fn unix_secs(&self, now: Instant) -> u64 {
        match self.wall {
            Some((at, since_epoch)) => (since_epoch + now.saturating_duration_since(at)).as_secs(),
            None => 0,
        }
    }

    /// Queues a control message on the session's primary path.
    pub(super) fn send_primary(&mut self, h: SessionHandle, kind: Kind) {
        let Some(p) = self
            .sessions
            .get_mut(&h)
            .and_then(|s| s.conn_mut(PathId::PRIMARY))
        else {
            return;
        };
        p.send_control(kind);
        self.dirty.insert(p.key);
    }

    pub(super) fn send_on(&mut self, h: SessionHandle, path: PathId, kind: Kind) -> bool {
        let Some(p) = self.sessions.get_mut(&h).and_then(|s| s.conn_mut(path)) else {
            return false;
        };
        if p.closing {
            return false;
        }
        p.send_control(kind);
        self.dirty.insert(p.key);
        true
    }

    pub(super) fn report_status(
        &mut self,
        h: SessionHandle,
        path: PathId,
        state: PathState,
        reason: &str,
    ) {
        let rtt = self.path_rtt(h, path).map_or(0, |r| r.as_micros() as u64);
        let rate = self
            .sessions
            .get(&h)
            .and_then(|s| s.paths.get(&path))
            .map_or(0, |m| m.delivery_rate);
        self.send_primary(
            h,
            Kind::PathStatus(PathStatus {
                path_id: path.0,
                state: state.to_wire() as i32,
                rtt_us: rtt,
                delivery_rate: rate,
                reason: reason.to_owned(),
            }),
        );
    }

    pub(super) fn path_rtt(&self, h: SessionHandle, path: PathId) -> Option<Duration> {
        Some(self.sessions.get(&h)?.conn(path)?.conn.rtt())
    }

    pub(super) fn path_event(
        &mut self,
        h: SessionHandle,
        path: PathId,
        state: PathState,
        reason: &str,
    ) {
        if let Some(s) = self.sessions.get(&h) {
            match state {
                PathState::Failed => {
                    tracing::warn!(parent: &s.span, %path, ?state, reason, "path state")
                }
                _ => tracing::info!(parent: &s.span, %path, ?state, "path state"),
            }
        }
        self.events.push_back(match state {
            PathState::Connecting => Event::PathAdded { session: h, path },
            PathState::Active => Event::PathActive { session: h, path },
            PathState::Degraded => Event::PathDegraded { session: h, path },
            PathState::Failed => Event::PathFailed {
                session: h,
                path,
                error: PathError::Reported(reason.to_owned()),
            },
            PathState::Removed => Event::PathRemoved { session: h, path },
        });
    }

    /// The session ended: every path still open is closed with it.
    pub(super) fn close_remaining_paths(&mut self, now: Instant, h: SessionHandle) {
        for k in self.session_paths(h) {
            self.close_conn(now, k, Bytes::from_static(b"session ended"));
        }
    }
}
