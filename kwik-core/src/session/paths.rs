//! A session's paths through their life: added (by the primary), dialed and joined (by
//! the client), reported, failed, retried, removed, and the end of a path's connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kwik_proto::control_frame::Kind;
use kwik_proto::{JoinResult, PathStatus};
use quinn_proto::VarInt;

use super::effects::{Cx, Effect};
use super::primary::refresh_interval;
use super::{PathRecord, PathState, Phase, Role, SessionState, unexpected};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::event::Event;
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::join;

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
    /// The session is plain (its peer does not speak KWIK): it has one path only.
    #[error("a plain session has no other paths")]
    PlainSession,
    /// The session is gone or closed, with the error that ended it.
    #[error("session lost: {0}")]
    SessionLost(SessionError),
}

/// Why [`Session::remove_path`](crate::Session::remove_path) removed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemovePathError {
    /// No path this side may remove: unknown, already removed, the primary path (close
    /// the session instead), or this side is a secondary.
    #[error("{0} cannot be removed")]
    NoSuchPath(PathId),
    /// The session is plain (its peer does not speak KWIK): it has one path only.
    #[error("a plain session has no other paths")]
    PlainSession,
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

/// The event that tells the application a path reached `state`, logged in `span`.
pub(crate) fn state_event(
    span: &tracing::Span,
    session: SessionHandle,
    path: PathId,
    state: PathState,
    reason: &str,
) -> Event {
    match state {
        PathState::Failed => tracing::warn!(parent: span, %path, ?state, reason, "path state"),
        _ => tracing::info!(parent: span, %path, ?state, "path state"),
    }
    match state {
        PathState::Connecting => Event::PathAdded { session, path },
        PathState::Active => Event::PathActive { session, path },
        PathState::Degraded => Event::PathDegraded { session, path },
        PathState::Failed => Event::PathFailed {
            session,
            path,
            error: PathError::Reported(reason.to_owned()),
        },
        PathState::Removed => Event::PathRemoved { session, path },
    }
}

/// A client's report that `path` failed for `reason` (a refused `AddPath` among others).
pub(crate) fn failed_status(path: PathId, reason: &str) -> Kind {
    Kind::PathStatus(PathStatus {
        path_id: path.0,
        state: kwik_proto::PathState::Failed as i32,
        rtt_us: 0,
        delivery_rate: 0,
        reason: reason.to_owned(),
    })
}

impl SessionState {
    /// Queues a control message on the session's primary path.
    pub(crate) fn send_primary(&mut self, cx: &mut Cx<'_>, kind: Kind) {
        if let Some(p) = self.conn_mut(PathId::PRIMARY) {
            p.send_control(kind);
            cx.drive(p.key);
        }
    }

    /// Queues a control message on `path`; returns whether it has a connection that is
    /// not closing.
    pub(crate) fn send_on(&mut self, cx: &mut Cx<'_>, path: PathId, kind: Kind) -> bool {
        let Some(p) = self.conn_mut(path) else {
            return false;
        };
        if p.closing {
            return false;
        }
        p.send_control(kind);
        cx.drive(p.key);
        true
    }

    /// Client: tells the primary what became of `path`.
    pub(crate) fn report_status(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        state: PathState,
        reason: &str,
    ) {
        let rtt = self
            .conn(path)
            .map_or(0, |p| p.conn.rtt().as_micros() as u64);
        let rate = self.paths.get(&path).map_or(0, |m| m.delivery_rate);
        self.send_primary(
            cx,
            Kind::PathStatus(PathStatus {
                path_id: path.0,
                state: state.to_wire() as i32,
                rtt_us: rtt,
                delivery_rate: rate,
                reason: reason.to_owned(),
            }),
        );
    }

    /// Tells the application that `path` reached `state`.
    pub(crate) fn path_event(&self, cx: &mut Cx<'_>, path: PathId, state: PathState, reason: &str) {
        cx.event(state_event(&self.span, cx.handle, path, state, reason));
    }

    /// Lets go of the connection of `path`, closing it with `reason` unless it is closing
    /// already; returns its key.
    pub(crate) fn let_go(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        reason: Bytes,
    ) -> Option<ConnKey> {
        let mut p = self.paths.get_mut(&path)?.conn.take()?;
        let key = p.key;
        if !p.closing {
            p.close_app(cx.now, VarInt::from_u32(0), reason);
            cx.drive(key);
        }
        cx.effects.push(Effect::LetGo(p));
        Some(key)
    }

    /// Closes the connection of `path` with `reason` and lets go of it.
    pub(crate) fn close_path(&mut self, cx: &mut Cx<'_>, path: PathId, reason: &str) {
        if let Some(key) = self.let_go(cx, path, Bytes::copy_from_slice(reason.as_bytes())) {
            cx.drive(key);
        }
    }

    /// Every connection the session holds has work.
    pub(crate) fn drive_all(&self, cx: &mut Cx<'_>) {
        for p in self.conns() {
            cx.drive(p.key);
        }
    }

    /// Records the session's sticky error and tells the application, once.
    pub(crate) fn close(&mut self, cx: &mut Cx<'_>, error: SessionError) {
        if self.error.is_some() {
            return;
        }
        self.phase = Phase::Closed;
        tracing::info!(parent: &self.span, %error, "session closed");
        self.error = Some(error.clone());
        self.next_metrics = None;
        cx.event(Event::Closed {
            session: cx.handle,
            error,
        });
    }

    /// The session ended: every connection still open closes with `reason`.
    pub(crate) fn close_conns(&mut self, cx: &mut Cx<'_>, reason: &'static [u8]) {
        let now = cx.now;
        for p in self.conns_mut() {
            if !p.closing {
                p.close_app(now, VarInt::from_u32(0), Bytes::from_static(reason));
                cx.drive(p.key);
            }
        }
    }

    /// The connection of `path` went down (lost, or silent past the health window): a
    /// client's secondary path fails alone, a primary's same-peer path too; the session's
    /// own path ends the session.
    #[cold]
    pub(crate) fn path_down(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        as_path: PathError,
        as_session: SessionError,
    ) {
        if path != PathId::PRIMARY && self.role == Role::Client {
            self.secondary_failed(cx, path, as_path);
        } else if path != PathId::PRIMARY && self.role == Role::Primary {
            self.peer_path_lost(cx, path);
        } else if self.primary_lost(cx, &as_session) {
            // The secondaries finish what they owe; the session ends after.
        } else {
            self.close(cx, as_session);
            self.close_conns(cx, b"session ended");
        }
    }

    /// Primary: adds a path of `kind` to `address`, with join credentials from `group`
    /// valid until `expiry`, and asks the client to connect it.
    pub(crate) fn add_path(
        &mut self,
        cx: &mut Cx<'_>,
        (key_id, group): (u32, &join::GroupKey),
        address: SocketAddr,
        server_name: &str,
        kind: PathKind,
    ) -> Result<PathId, AddPathError> {
        if self.role != Role::Primary {
            return Err(AddPathError::NotPrimary);
        }
        if let Some(e) = &self.error {
            return Err(AddPathError::SessionLost(e.clone()));
        }
        if self.at_path_limit() {
            return Err(AddPathError::TooManyPaths);
        }
        let id = PathId(self.primary.next_path_id);
        self.primary.next_path_id += 1;
        let expiry = cx.unix + self.config.join_proof_lifetime.as_secs().max(1);
        let secret = join::path_secret(group, self.id, id.0, expiry);
        let mut meta = PathRecord::new(address, server_name.to_owned(), PathState::Connecting);
        meta.same_peer = kind != PathKind::Secondary;
        meta.backup = kind == PathKind::Backup;
        if meta.same_peer {
            self.streams.set_retain(true);
        }
        self.paths.insert(id, meta);
        if self.primary.next_refresh.is_none() {
            self.primary.next_refresh = Some(cx.now + refresh_interval(&self.config));
        }
        self.send_primary(
            cx,
            Kind::AddPath(kwik_proto::AddPath {
                path_id: id.0,
                addr: address.to_string(),
                server_name: server_name.to_owned(),
                expiry,
                path_secret: secret.to_vec(),
                same_peer: kind != PathKind::Secondary,
                backup: kind == PathKind::Backup,
                key_id,
            }),
        );
        self.path_event(cx, id, PathState::Connecting, "");
        Ok(id)
    }

    /// Removes a path (primary: tells the client to drop it; client: drops it); returns
    /// whether it was there.
    pub(crate) fn remove_path(&mut self, cx: &mut Cx<'_>, path: PathId) -> bool {
        if path == PathId::PRIMARY || !self.set_state(path, PathState::Removed) {
            return false;
        }
        match self.role {
            Role::Primary => {
                self.send_primary(
                    cx,
                    Kind::RemovePath(kwik_proto::RemovePath { path_id: path.0 }),
                );
            }
            Role::Client => {
                self.fail_delegations(cx, path);
                self.close_path(cx, path, "removed");
                self.report_status(cx, path, PathState::Removed, "removed");
            }
            Role::Secondary => return false,
        }
        self.purge_removed();
        self.path_event(cx, path, PathState::Removed, "");
        true
    }

    /// Primary: the client reports a path's state. Returns whether this side let go of
    /// the path's connection (a same-peer path the client lost).
    pub(crate) fn on_path_status(
        &mut self,
        cx: &mut Cx<'_>,
        status: PathStatus,
    ) -> Result<bool, ProtocolError> {
        let path = PathId(status.path_id);
        let state = PathState::from_wire(status.state).ok_or_else(|| {
            ProtocolError::new(ErrorCode::ControlDecode, "path status without a state")
        })?;
        if path != PathId::PRIMARY
            && path.0 < self.primary.next_path_id
            && !self.paths.contains_key(&path)
        {
            // A path removed long ago and forgotten (`purge_removed`): a late report.
            return Ok(false);
        }
        if path == PathId::PRIMARY || !self.paths.contains_key(&path) {
            return Err(ProtocolError::new(
                ErrorCode::UnexpectedControlMessage,
                format!("status of unknown {path}"),
            ));
        }
        if let Some(m) = self.paths.get_mut(&path) {
            if status.rtt_us > 0 {
                m.reported_rtt = Some(Duration::from_micros(status.rtt_us));
            }
            m.delivery_rate = status.delivery_rate;
        }
        let same_peer = self.paths.get(&path).is_some_and(|m| m.same_peer);
        let mut let_go = false;
        if self.set_state(path, state) {
            if same_peer && matches!(state, PathState::Failed | PathState::Removed) {
                // The client lost a path to this server: what it carried is sent again
                // on the others, and this side's end of it is closed.
                let_go = self
                    .let_go(cx, path, Bytes::from_static(b"failed"))
                    .is_some();
                self.reinject(cx);
            }
            self.path_event(cx, path, state, &status.reason);
            self.purge_removed();
        }
        Ok(let_go)
    }

    /// Client: the primary adds a path. A refusal goes back as a failed `PathStatus`.
    pub(crate) fn on_add_path(&mut self, cx: &mut Cx<'_>, add: kwik_proto::AddPath) {
        let path = PathId(add.path_id);
        if let Err(reason) = self.try_add_path(cx, &add) {
            tracing::debug!(%path, reason, "refused AddPath");
            self.send_primary(cx, failed_status(path, reason));
        }
    }

    fn try_add_path(
        &mut self,
        cx: &mut Cx<'_>,
        add: &kwik_proto::AddPath,
    ) -> Result<(), &'static str> {
        let path = PathId(add.path_id);
        if path == PathId::PRIMARY || self.paths.contains_key(&path) {
            return Err("path id in use");
        }
        if !self.client.add_path_budget.try_take(cx.now) {
            return Err("AddPath rate limit");
        }
        if self.at_path_limit() {
            return Err("path limit");
        }
        let address: SocketAddr = add.addr.parse().map_err(|_| "bad address")?;
        if !self.config.allow_scope_escalation
            && !join::scope_allows(self.remote.ip(), address.ip())
        {
            return Err("address scope narrower than the primary's");
        }
        let mut meta = PathRecord::new(address, add.server_name.clone(), PathState::Connecting);
        meta.secret = add.path_secret.clone();
        meta.expiry = add.expiry;
        meta.key_id = add.key_id;
        meta.same_peer = add.same_peer;
        meta.backup = add.backup && add.same_peer;
        if meta.same_peer {
            self.streams.set_retain(true);
        }
        if self.client.dial.is_none() {
            return Err("no client config");
        }
        self.paths.insert(path, meta);
        cx.effects.push(Effect::Dial { path, new: true });
        Ok(())
    }

    /// Client: the Join for secondary `path`, whose handshake completed.
    pub(crate) fn join_message(&self, path: PathId) -> Option<Kind> {
        let meta = self.paths.get(&path)?;
        let exporter = meta.conn.as_ref()?.exporter()?;
        Some(Kind::Join(kwik_proto::Join {
            session_id: self.id,
            path_id: path.0,
            expiry: meta.expiry,
            proof: join::proof(&meta.secret, &exporter),
            key_id: meta.key_id,
        }))
    }

    /// Client: a secondary answered the Join of `path`.
    pub(crate) fn on_join_result(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        result: JoinResult,
    ) -> Result<(), ProtocolError> {
        if !result.accepted {
            return Err(super::refusal("join refused"));
        }
        if self
            .paths
            .get(&path)
            .is_none_or(|m| m.state == PathState::Active)
        {
            return Err(unexpected(&Kind::JoinResult(result)));
        }
        self.set_state(path, PathState::Active);
        if let Some(m) = self.paths.get_mut(&path) {
            m.retry_until = None;
            m.next_retry = None;
            m.join_deadline = None;
        }
        let now = cx.now;
        let config = self.config.clone();
        if let Some(p) = self.conn_mut(path) {
            p.start_health(now, &config);
        }
        self.report_status(cx, path, PathState::Active, "");
        self.path_event(cx, path, PathState::Active, "");
        self.pull_stripes(cx);
        Ok(())
    }

    /// Client: the primary sent a fresh secret for a path, so it can rejoin later.
    pub(crate) fn on_refresh_path(&mut self, refresh: kwik_proto::RefreshPath) {
        let Some(m) = self.paths.get_mut(&PathId(refresh.path_id)) else {
            return;
        };
        // A secret under another key (a rotation) replaces the one held at once.
        if m.state != PathState::Removed
            && (refresh.expiry > m.expiry || refresh.key_id != m.key_id)
        {
            m.secret = refresh.path_secret;
            m.expiry = refresh.expiry;
            m.key_id = refresh.key_id;
        }
    }

    /// Client: a secondary path failed. Its ranges go to the other paths, and it is
    /// retried until `path_recovery_timeout`.
    pub(crate) fn secondary_failed(&mut self, cx: &mut Cx<'_>, path: PathId, error: PathError) {
        let reason = error.to_string();
        if let Some(m) = self.paths.get_mut(&path) {
            m.join_deadline = None;
        }
        if self.phase == Phase::Closed
            || self
                .paths
                .get(&path)
                .is_none_or(|m| matches!(m.state, PathState::Failed | PathState::Removed))
        {
            // Already failed; a retry that failed again just waits for the next.
            self.let_go(cx, path, Bytes::new());
            return;
        }
        let recovery = self.config.path_recovery_timeout;
        let retry = self.config.path_health_check_interval * 4;
        let (now, unix) = (cx.now, cx.unix);
        // A server that drains (it refused the join, closed the path at its deadline, or
        // announced its drain) will not take the path again.
        let draining = self.paths.get(&path).is_some_and(|m| m.draining)
            || matches!(
                &error,
                PathError::Connection(SessionError::PeerProtocolError {
                    code: ErrorCode::Draining | ErrorCode::Drained,
                    ..
                })
            );
        self.set_state(path, PathState::Failed);
        if let Some(m) = self.paths.get_mut(&path) {
            if m.expiry > unix && !draining {
                m.retry_until = Some(now + recovery);
                m.next_retry = Some(now + retry);
            } else {
                m.retry_until = Some(now);
                m.next_retry = Some(now);
            }
        }
        tracing::info!(
            parent: &self.span,
            %path,
            %reason,
            "secondary path failed: what it owed goes to the other paths"
        );
        if self.is_peer_path(path) {
            // A path to the primary itself: its frames in flight are sent again.
            self.reinject(cx);
        }
        self.close_path(cx, path, &reason);
        self.fail_delegations(cx, path);
        self.report_status(cx, path, PathState::Failed, &reason);
        cx.event(Event::PathFailed {
            session: cx.handle,
            path,
            error,
        });
        // Without its primary, the session may have lost the last server that owed it.
        self.check_lost(cx);
    }

    /// Client: retries failed path `path` when its turn came, or removes it once past its
    /// recovery deadline or its credentials' expiry.
    pub(crate) fn retry_path(&mut self, cx: &mut Cx<'_>, path: PathId) {
        let retry = self.config.path_health_check_interval * 4;
        let (now, unix) = (cx.now, cx.unix);
        let Some(m) = self.paths.get_mut(&path) else {
            return;
        };
        if m.retry_until.is_none_or(|t| t <= now) || m.expiry <= unix {
            m.state = PathState::Removed;
            m.next_retry = None;
            self.close_path(cx, path, "not recovered");
            self.report_status(cx, path, PathState::Removed, "not recovered");
            self.path_event(cx, path, PathState::Removed, "");
            self.purge_removed();
            return;
        }
        m.next_retry = Some(now + retry);
        if m.conn.is_none() {
            cx.effects.push(Effect::Dial { path, new: false });
        }
    }

    /// Client: connecting path `path` did not join by its deadline: it fails, and its
    /// retry follows (a retry that did not join closes and waits for the next).
    pub(crate) fn join_expired(&mut self, cx: &mut Cx<'_>, path: PathId) {
        let Some(m) = self.paths.get_mut(&path) else {
            return;
        };
        m.join_deadline = None;
        if m.state == PathState::Failed {
            self.close_path(cx, path, "join timed out");
        } else {
            self.secondary_failed(cx, path, PathError::Connection(SessionError::TimedOut));
        }
    }

    /// Primary: a same-peer path's connection is gone. The session lives on over its
    /// other paths; the client reports what becomes of the path.
    pub(crate) fn peer_path_lost(&mut self, cx: &mut Cx<'_>, path: PathId) {
        if let Some(p) = self.paths.get_mut(&path).and_then(|r| r.conn.take()) {
            // Lost: it only drains now, loose.
            cx.effects.push(Effect::LetGo(p));
        }
        if self.set_state(path, PathState::Failed) {
            cx.event(Event::PathFailed {
                session: cx.handle,
                path,
                error: PathError::Reported("connection lost".to_owned()),
            });
        }
        self.reinject(cx);
    }

    /// Re-sends what a dead path to the peer may have taken with it.
    pub(crate) fn reinject(&mut self, cx: &mut Cx<'_>) {
        self.streams.reinject();
        self.drive_all(cx);
    }

    /// Client: moves a usable path between active and degraded by its health; a
    /// secondary's change is reported to the primary.
    pub(crate) fn set_health_state(&mut self, cx: &mut Cx<'_>, path: PathId, state: PathState) {
        self.set_state(path, state);
        if path != PathId::PRIMARY {
            self.report_status(cx, path, state, "");
        }
        self.path_event(cx, path, state, "");
    }
}
