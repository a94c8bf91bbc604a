//! Multi-server sessions: which control message each role accepts from which peer, and the
//! helpers the path (`paths.rs`) and delegation (`delegations.rs`) logic share.
//!
//! Who may send what (anything else is `UnexpectedControlMessage`):
//! - primary -> client: `AddPath`, `RefreshPath`, `RemovePath`, `Delegate` (a signed
//!   ticket, or a fresher copy of one);
//! - client -> primary: `PathStatus`, `DelegationUpdate`;
//! - client -> any server (the primary on path 0 included): `Pull` (a range under a
//!   ticket), `PullCancel` (another copy delivered it: stop writing it);
//! - any server -> client: `PullRefused` (with a typed code);
//! - client -> secondary: `Join` (first); secondary -> client: `JoinResult`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_proto::PathStatus;
use kwik_proto::control_frame::Kind;
use quinn_proto::VarInt;

use super::{Endpoint, Event};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::ids::{PathId, SessionHandle};
use crate::session::{PathState, Role};

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

pub(super) fn refusal(reason: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::JoinRefused, reason)
}

pub(super) fn unexpected(kind: &Kind) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::UnexpectedControlMessage,
        format!(
            "unexpected control message {}",
            crate::session::kind_name(kind)
        ),
    )
}

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
        let Some(key) = self
            .sessions
            .get(&h)
            .and_then(|s| s.paths.get(&PathId::PRIMARY).copied())
        else {
            return;
        };
        if let Some(slot) = self.paths.get_mut(&key) {
            slot.path.send_control(kind);
            self.dirty.insert(key);
        }
    }

    pub(super) fn send_on(&mut self, h: SessionHandle, path: PathId, kind: Kind) -> bool {
        let Some(key) = self
            .sessions
            .get(&h)
            .and_then(|s| s.paths.get(&path).copied())
        else {
            return false;
        };
        let Some(slot) = self.paths.get_mut(&key) else {
            return false;
        };
        if slot.path.closing {
            return false;
        }
        slot.path.send_control(kind);
        self.dirty.insert(key);
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
            .and_then(|s| s.metas.get(&path))
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
        let key = self.sessions.get(&h)?.paths.get(&path)?;
        Some(self.paths.get(key)?.path.conn.rtt())
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

    /// Handles the control messages of multi-server sessions; returns the others.
    pub(super) fn on_multi_control(
        &mut self,
        now: Instant,
        key: usize,
        h: SessionHandle,
        kind: Kind,
    ) -> Result<Option<Kind>, ProtocolError> {
        let Some(slot) = self.paths.get(&key) else {
            return Ok(None);
        };
        let path = slot.path.id;
        let Some(role) = self.sessions.get(&h).map(|s| s.role) else {
            return Ok(None);
        };
        let primary = path == PathId::PRIMARY;
        match (role, kind) {
            (Role::Client, Kind::AddPath(add)) if primary => self.on_add_path(now, h, add),
            (Role::Client, Kind::RemovePath(r)) if primary => {
                self.remove_path(now, h, PathId(r.path_id));
            }
            (Role::Client, Kind::Delegate(d)) if primary => self.on_delegate_client(now, h, d)?,
            (Role::Client, Kind::RefreshPath(r)) if primary => self.on_refresh_path(h, r),
            (Role::Client, Kind::PullRefused(r)) => self.on_pull_refused(now, h, path, r),
            (Role::Client, Kind::JoinResult(r)) if !primary => {
                self.on_join_result(now, h, path, r)?
            }
            (Role::Client, Kind::Close(close)) if !primary => {
                let error = SessionError::ApplicationClosed {
                    code: VarInt::from_u64(close.code).unwrap_or(VarInt::MAX),
                    reason: Bytes::from(close.reason),
                };
                self.secondary_failed(now, h, path, PathError::Connection(error));
            }
            (Role::Primary, Kind::PathStatus(st)) => self.on_path_status(now, h, st)?,
            (Role::Primary, Kind::DelegationUpdate(u)) => self.on_delegation_update(now, h, u),
            (Role::Primary | Role::Secondary, Kind::Pull(p)) => self.on_pull(now, h, path, p)?,
            (Role::Primary | Role::Secondary, Kind::PullCancel(c)) => self.on_pull_cancel(h, c.id),
            (
                _,
                kind @ (Kind::AddPath(_)
                | Kind::RemovePath(_)
                | Kind::Delegate(_)
                | Kind::DelegationUpdate(_)
                | Kind::Pull(_)
                | Kind::PullCancel(_)
                | Kind::PullRefused(_)
                | Kind::RefreshPath(_)
                | Kind::PathStatus(_)
                | Kind::Join(_)
                | Kind::JoinResult(_)),
            ) => return Err(unexpected(&kind)),
            (Role::Secondary, kind @ Kind::Welcome(_)) => return Err(unexpected(&kind)),
            (_, kind) => return Ok(Some(kind)),
        }
        Ok(None)
    }

    /// The session ended: every path still open is closed with it.
    pub(super) fn close_remaining_paths(&mut self, now: Instant, h: SessionHandle) {
        for k in self.session_paths(h) {
            if let Some(slot) = self.paths.get_mut(&k)
                && !slot.path.closing
            {
                slot.path.close_app(
                    now,
                    VarInt::from_u32(0),
                    Bytes::from_static(b"session ended"),
                );
                self.dirty.insert(k);
            }
        }
    }
}
