//! Paths of multi-server sessions: adding, joining, failing, retrying and removing them,
//! and how the paths to one peer share its stream data (same-peer multipath).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_proto::control_frame::Kind;
use kwik_proto::{JoinResult, PathStatus};
use quinn_proto::Side;

use super::Endpoint;
use super::Event;
use super::accept::refusal;
use super::multi::{AddPathError, PathKind};
use crate::config::LoadBalancing;
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::join;
use crate::path::{Allowance, Path};
use crate::scheduler;
use crate::session::{PathInfo, PathRecord, PathState, Phase, Role, unexpected};

/// What [`Endpoint::schedule`] allows one path.
#[derive(Debug)]
pub(super) struct Schedule {
    pub(super) allowance: Allowance,
    /// Paths that get a copy of every frame this one takes.
    pub(super) copy_to: Vec<ConnKey>,
    /// The session has several usable paths to the peer.
    pub(super) multipath: bool,
}

impl Schedule {
    /// All of the session's stream data: the path is its only one to the peer.
    pub(super) fn everything() -> Self {
        Self {
            allowance: Allowance::Frames(usize::MAX),
            copy_to: Vec::new(),
            multipath: false,
        }
    }
}

impl Endpoint {
    pub(super) fn add_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        address: SocketAddr,
        server_name: &str,
        kind: PathKind,
    ) -> Result<PathId, AddPathError> {
        let key = self
            .server
            .as_ref()
            .and_then(|s| s.group_key.clone())
            .ok_or(AddPathError::NoGroupKey)?;
        let unix = self.unix_secs(now);
        let s = self
            .sessions
            .get_mut(&h)
            .ok_or(AddPathError::SessionLost(SessionError::LocallyClosed))?;
        if s.role != Role::Primary {
            return Err(AddPathError::NotPrimary);
        }
        if let Some(e) = &s.error {
            return Err(AddPathError::SessionLost(e.clone()));
        }
        if s.at_path_limit() {
            return Err(AddPathError::TooManyPaths);
        }
        let id = PathId(s.primary.next_path_id);
        s.primary.next_path_id += 1;
        let expiry = unix + s.config.join_proof_lifetime.as_secs().max(1);
        let secret = join::path_secret(&key, s.id, id.0, expiry);
        let mut meta = PathRecord::new(address, server_name.to_owned(), PathState::Connecting);
        meta.same_peer = kind != PathKind::Secondary;
        meta.backup = kind == PathKind::Backup;
        if meta.same_peer {
            s.streams.set_retain(true);
        }
        s.paths.insert(id, meta);
        if s.primary.next_refresh.is_none() {
            s.primary.next_refresh = Some(now + super::delegations::refresh_interval(&s.config));
        }
        self.send_primary(
            h,
            Kind::AddPath(kwik_proto::AddPath {
                path_id: id.0,
                addr: address.to_string(),
                server_name: server_name.to_owned(),
                expiry,
                path_secret: secret.to_vec(),
                same_peer: kind != PathKind::Secondary,
                backup: kind == PathKind::Backup,
            }),
        );
        self.path_event(h, id, PathState::Connecting, "");
        Ok(id)
    }

    pub(super) fn remove_path(&mut self, now: Instant, h: SessionHandle, path: PathId) -> bool {
        let Some(s) = self.sessions.get_mut(&h) else {
            return false;
        };
        if path == PathId::PRIMARY || !s.set_state(path, PathState::Removed) {
            return false;
        }
        match s.role {
            Role::Primary => {
                self.send_primary(
                    h,
                    Kind::RemovePath(kwik_proto::RemovePath { path_id: path.0 }),
                );
            }
            Role::Client => {
                self.fail_delegations(now, h, path);
                self.close_path(now, h, path, "removed");
                self.report_status(h, path, PathState::Removed, "removed");
            }
            Role::Secondary => return false,
        }
        if let Some(s) = self.sessions.get_mut(&h) {
            s.purge_removed();
        }
        self.path_event(h, path, PathState::Removed, "");
        true
    }

    pub(super) fn paths_of(&self, h: SessionHandle) -> Vec<PathInfo> {
        let Some(s) = self.sessions.get(&h) else {
            return Vec::new();
        };
        s.paths
            .iter()
            .map(|(id, m)| {
                let conn = self
                    .path_conn(h, *id)
                    .map(|p| (p.conn.rtt(), p.conn.stats()));
                // What the path's earlier connections carried (a failed path that
                // reconnects keeps it).
                let (sent_before, received_before) = m
                    .last
                    .as_deref()
                    .map_or((0, 0), |l| (l.bytes_sent, l.bytes_received));
                let (rtt, sent, received) = match (conn, m.last.as_deref()) {
                    // A connection still being set up has only QUIC's initial guess.
                    (Some((rtt, q)), _) if m.state.is_usable() => (
                        Some(rtt),
                        q.udp_tx.bytes + sent_before,
                        q.udp_rx.bytes + received_before,
                    ),
                    (Some((_, q)), _) => (
                        m.reported_rtt,
                        q.udp_tx.bytes + sent_before,
                        q.udp_rx.bytes + received_before,
                    ),
                    (None, Some(last)) => (m.reported_rtt, last.bytes_sent, last.bytes_received),
                    (None, None) => (m.reported_rtt, m.delivered, 0),
                };
                PathInfo {
                    id: *id,
                    address: m.address,
                    is_primary: *id == PathId::PRIMARY,
                    same_peer: m.same_peer,
                    state: m.state,
                    rtt,
                    bytes_sent: sent,
                    bytes_received: received,
                    delivery_rate: m.delivery_rate,
                }
            })
            .collect()
    }

    pub(super) fn on_path_status(
        &mut self,
        now: Instant,
        h: SessionHandle,
        status: PathStatus,
    ) -> Result<(), ProtocolError> {
        let path = PathId(status.path_id);
        let state = PathState::from_wire(status.state).ok_or_else(|| {
            ProtocolError::new(ErrorCode::ControlDecode, "path status without a state")
        })?;
        let Some(s) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        if path != PathId::PRIMARY
            && path.0 < s.primary.next_path_id
            && !s.paths.contains_key(&path)
        {
            // A path removed long ago and forgotten (`purge_removed`): a late report.
            return Ok(());
        }
        if path == PathId::PRIMARY || !s.paths.contains_key(&path) {
            return Err(ProtocolError::new(
                ErrorCode::UnexpectedControlMessage,
                format!("status of unknown {path}"),
            ));
        }
        if let Some(m) = s.paths.get_mut(&path) {
            if status.rtt_us > 0 {
                m.reported_rtt = Some(Duration::from_micros(status.rtt_us));
            }
            m.delivery_rate = status.delivery_rate;
        }
        let same_peer = s.paths.get(&path).is_some_and(|m| m.same_peer);
        if s.set_state(path, state) {
            if same_peer && matches!(state, PathState::Failed | PathState::Removed) {
                // The client lost a path to this server: what it carried is sent again
                // on the others, and this side's end of it is closed.
                if let Some(key) = self.detach(h, path) {
                    self.close_conn(now, key, Bytes::from_static(b"failed"));
                }
                self.reinject(now, h);
            }
            self.path_event(h, path, state, &status.reason);
            if let Some(s) = self.sessions.get_mut(&h) {
                s.purge_removed();
            }
        }
        Ok(())
    }

    pub(super) fn on_add_path(&mut self, now: Instant, h: SessionHandle, add: kwik_proto::AddPath) {
        let path = PathId(add.path_id);
        let refused = match self.try_add_path(now, h, &add) {
            Ok(()) => return,
            Err(reason) => reason,
        };
        tracing::debug!(%path, reason = refused, "refused AddPath");
        self.send_primary(
            h,
            Kind::PathStatus(PathStatus {
                path_id: add.path_id,
                state: kwik_proto::PathState::Failed as i32,
                rtt_us: 0,
                delivery_rate: 0,
                reason: refused.to_owned(),
            }),
        );
    }

    pub(super) fn try_add_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        add: &kwik_proto::AddPath,
    ) -> Result<(), &'static str> {
        let s = self.sessions.get_mut(&h).ok_or("no session")?;
        let path = PathId(add.path_id);
        if path == PathId::PRIMARY || s.paths.contains_key(&path) {
            return Err("path id in use");
        }
        if !s.client.add_path_budget.try_take(now) {
            return Err("AddPath rate limit");
        }
        if s.at_path_limit() {
            return Err("path limit");
        }
        let address: SocketAddr = add.addr.parse().map_err(|_| "bad address")?;
        if !s.config.allow_scope_escalation && !join::scope_allows(s.remote.ip(), address.ip()) {
            return Err("address scope narrower than the primary's");
        }
        let mut meta = PathRecord::new(address, add.server_name.clone(), PathState::Connecting);
        meta.secret = add.path_secret.clone();
        meta.expiry = add.expiry;
        meta.same_peer = add.same_peer;
        meta.backup = add.backup && add.same_peer;
        if meta.same_peer {
            s.streams.set_retain(true);
        }
        s.paths.insert(path, meta);
        if let Err(reason) = self.dial_path(now, h, path) {
            if let Some(s) = self.sessions.get_mut(&h) {
                s.paths.remove(&path);
            }
            return Err(reason);
        }
        self.path_event(h, path, PathState::Connecting, "");
        Ok(())
    }

    /// Connects (or reconnects) the client to a secondary.
    pub(super) fn dial_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
    ) -> Result<(), &'static str> {
        let s = self.sessions.get(&h).ok_or("no session")?;
        let meta = s.paths.get(&path).ok_or("unknown path")?;
        let dial = s.client.dial.clone().ok_or("no client config")?;
        let rate = s.config.max_control_messages_per_sec;
        let (address, name) = (meta.address, meta.server_name.clone());
        let kind = if meta.same_peer {
            "same-peer"
        } else {
            "secondary"
        };
        let span = super::path_span(Some(&s.span), Some(path), address, kind);
        let (dial, token) = self.dial_config(&dial, &s.config, address);
        let (ch, conn) = self
            .quic
            .connect(now, dial, address, &name)
            .map_err(|_| "cannot connect")?;
        let key = ConnKey::from(ch);
        self.qlog_bind(key, token);
        self.qlog_label(key, h, path, kind);
        self.attach(h, Path::new(key, conn, path, Side::Client, span, rate));
        if let Some(s) = self.sessions.get_mut(&h) {
            let deadline = now + s.config.idle_timeout;
            if let Some(m) = s.paths.get_mut(&path) {
                m.join_deadline = Some(deadline);
            }
        }
        self.dirty.insert(key);
        Ok(())
    }

    /// The client's Join for a secondary path whose handshake completed.
    pub(super) fn join_message(&self, key: ConnKey) -> Option<Kind> {
        let p = self.conn(key)?;
        let s = self.sessions.get(&self.session_of(key)?)?;
        let meta = s.paths.get(&p.id)?;
        let exporter = p.exporter()?;
        Some(Kind::Join(kwik_proto::Join {
            session_id: s.id,
            path_id: p.id.0,
            expiry: meta.expiry,
            proof: join::proof(&meta.secret, &exporter),
        }))
    }

    pub(super) fn on_join_result(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
        result: JoinResult,
    ) -> Result<(), ProtocolError> {
        if !result.accepted {
            return Err(refusal("join refused"));
        }
        let Some(s) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        let interval = s.config.path_health_check_interval;
        let threshold = s.config.path_failure_threshold;
        if s.paths
            .get(&path)
            .is_none_or(|m| m.state == PathState::Active)
        {
            return Err(unexpected(&Kind::JoinResult(result)));
        }
        s.set_state(path, PathState::Active);
        if let Some(m) = s.paths.get_mut(&path) {
            m.retry_until = None;
            m.next_retry = None;
            m.join_deadline = None;
        }
        if let Some(p) = s.conn_mut(path) {
            p.health.start(now, interval, threshold);
        }
        self.report_status(h, path, PathState::Active, "");
        self.path_event(h, path, PathState::Active, "");
        self.pull_stripes(now, h);
        Ok(())
    }

    /// Client: the primary sent a fresh secret for a path, so it can rejoin later.
    pub(super) fn on_refresh_path(&mut self, h: SessionHandle, refresh: kwik_proto::RefreshPath) {
        let Some(m) = self
            .sessions
            .get_mut(&h)
            .and_then(|s| s.paths.get_mut(&PathId(refresh.path_id)))
        else {
            return;
        };
        if m.state != PathState::Removed && refresh.expiry > m.expiry {
            m.secret = refresh.path_secret;
            m.expiry = refresh.expiry;
        }
    }

    pub(super) fn close_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
        reason: &str,
    ) {
        let Some(key) = self.detach(h, path) else {
            return;
        };
        self.close_conn(now, key, Bytes::copy_from_slice(reason.as_bytes()));
        self.dirty.insert(key);
    }

    /// A client's secondary path failed: its ranges go back to the primary, and it is
    /// retried until `path_recovery_timeout`.
    pub(super) fn secondary_failed(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
        error: PathError,
    ) {
        let reason = error.to_string();
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if let Some(m) = s.paths.get_mut(&path) {
            m.join_deadline = None;
        }
        if s.phase == Phase::Closed
            || s.paths
                .get(&path)
                .is_none_or(|m| matches!(m.state, PathState::Failed | PathState::Removed))
        {
            // Already failed; a retry that failed again just waits for the next.
            if let Some(key) = self.detach(h, path) {
                self.close_conn(now, key, Bytes::new());
            }
            return;
        }
        let recovery = s.config.path_recovery_timeout;
        let retry = s.config.path_health_check_interval * 4;
        let unix = self.unix_secs(now);
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.set_state(path, PathState::Failed);
        if let Some(m) = s.paths.get_mut(&path) {
            if m.expiry > unix {
                m.retry_until = Some(now + recovery);
                m.next_retry = Some(now + retry);
            } else {
                m.retry_until = Some(now);
                m.next_retry = Some(now);
            }
        }
        tracing::info!(
            parent: &s.span,
            %path,
            %reason,
            "secondary path failed: what it owed goes to the other paths"
        );
        if self.sessions.get(&h).is_some_and(|s| s.is_peer_path(path)) {
            // A path to the primary itself: its frames in flight are sent again.
            self.reinject(now, h);
        }
        self.close_path(now, h, path, &reason);
        self.fail_delegations(now, h, path);
        self.report_status(h, path, PathState::Failed, &reason);
        self.events.push_back(Event::PathFailed {
            session: h,
            path,
            error,
        });
    }

    /// Retries failed secondary paths, and removes those past their recovery deadline.
    pub(super) fn retry_paths(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (h, s) in &self.sessions {
            if s.role != Role::Client || s.phase != Phase::Established {
                continue;
            }
            for (path, m) in &s.paths {
                if m.state == PathState::Failed && m.next_retry.is_some_and(|t| t <= now) {
                    due.push((*h, *path));
                }
            }
        }
        let unix = self.unix_secs(now);
        for (h, path) in due {
            let Some(s) = self.sessions.get_mut(&h) else {
                continue;
            };
            let retry = s.config.path_health_check_interval * 4;
            let Some(m) = s.paths.get_mut(&path) else {
                continue;
            };
            if m.retry_until.is_none_or(|t| t <= now) || m.expiry <= unix {
                m.state = PathState::Removed;
                m.next_retry = None;
                self.close_path(now, h, path, "not recovered");
                self.report_status(h, path, PathState::Removed, "not recovered");
                self.path_event(h, path, PathState::Removed, "");
                if let Some(s) = self.sessions.get_mut(&h) {
                    s.purge_removed();
                }
                continue;
            }
            m.next_retry = Some(now + retry);
            if m.conn.is_none() {
                let _ = self.dial_path(now, h, path);
            }
        }
    }

    /// Fails connecting paths that did not join by their deadline; their retry follows.
    pub(super) fn expire_joins(&mut self, now: Instant) {
        let mut late = Vec::new();
        for (h, s) in &self.sessions {
            if s.role != Role::Client {
                continue;
            }
            for (path, m) in &s.paths {
                if m.join_deadline.is_some_and(|t| t <= now) {
                    late.push((*h, *path));
                }
            }
        }
        for (h, path) in late {
            if let Some(m) = self
                .sessions
                .get_mut(&h)
                .and_then(|s| s.paths.get_mut(&path))
            {
                m.join_deadline = None;
            }
            let error = PathError::Connection(SessionError::TimedOut);
            if self.sessions.get(&h).is_some_and(|s| {
                s.paths
                    .get(&path)
                    .is_some_and(|m| m.state == PathState::Failed)
            }) {
                // A retry that did not join: close it and wait for the next.
                self.close_path(now, h, path, "join timed out");
            } else {
                self.secondary_failed(now, h, path, error);
            }
        }
    }

    /// When [`Endpoint::retry_paths`] must next run.
    pub(super) fn retry_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .flat_map(|s| s.paths.values())
            .flat_map(|m| [m.next_retry, m.join_deadline])
            .flatten()
            .min()
    }

    /// Primary: a same-peer path's connection is gone. The session lives on over its other
    /// paths; the client reports what becomes of the path.
    pub(super) fn peer_path_lost(&mut self, now: Instant, h: SessionHandle, path: PathId) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if let Some(p) = s.paths.get_mut(&path).and_then(|r| r.conn.take()) {
            // Lost: it only drains now, loose.
            self.let_go(h, p);
        }
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.set_state(path, PathState::Failed) {
            self.events.push_back(Event::PathFailed {
                session: h,
                path,
                error: PathError::Reported("connection lost".to_owned()),
            });
        }
        self.reinject(now, h);
    }

    /// Re-sends what a dead path to the peer may have taken with it.
    pub(super) fn reinject(&mut self, _now: Instant, h: SessionHandle) {
        if let Some(s) = self.sessions.get_mut(&h) {
            s.streams.reinject();
        }
        self.mark_dirty(h);
    }

    /// How much of the session's stream data path `me` may take now, and where copies of
    /// what it takes go (redundant scheduling). With one path to the peer, all of it.
    ///
    /// Several paths to the peer rank by `Config::load_balancing`; a path takes data only
    /// when every path ranked before it is backlogged (QUIC refused more: its send window,
    /// kept near its congestion window, is full). Backup paths take part only when no
    /// other path is usable.
    pub(super) fn schedule(&mut self, h: SessionHandle, me: PathId) -> Schedule {
        let all = Schedule::everything();
        let Some(s) = self.sessions.get(&h) else {
            return all;
        };
        // One path (the common case) needs no ranking: it takes everything.
        if s.conns().nth(1).is_none() || !s.is_peer_path(me) || s.role == Role::Secondary {
            return all;
        }
        let mut peers: Vec<(PathId, &Path, bool)> = s
            .paths
            .iter()
            .filter(|(id, m)| s.is_peer_path(**id) && m.state.is_usable())
            .filter_map(|(id, m)| Some((*id, m.conn.as_ref()?, m.backup)))
            .filter(|(_, p, _)| !p.closing)
            .collect();
        if peers.len() <= 1 {
            return all;
        }
        if peers.iter().any(|p| !p.2) {
            peers.retain(|p| !p.2);
        }
        let multipath = Schedule {
            allowance: Allowance::None,
            copy_to: Vec::new(),
            multipath: true,
        };
        if !peers.iter().any(|p| p.0 == me) {
            return multipath;
        }
        let strategy = s.config.load_balancing;
        if strategy == LoadBalancing::Redundant {
            // The first path takes every frame; the others carry copies.
            return match peers.iter().map(|p| p.0).min() {
                Some(first) if first == me => Schedule {
                    allowance: Allowance::Frames(usize::MAX),
                    copy_to: peers
                        .iter()
                        .filter(|p| p.0 != me)
                        .map(|p| p.1.key)
                        .collect(),
                    multipath: true,
                },
                _ => multipath,
            };
        }
        let facts: Vec<scheduler::PathFacts> = peers
            .iter()
            .map(|(id, p, _)| scheduler::PathFacts {
                id: *id,
                rtt: p.conn.rtt(),
                cwnd: p.conn.congestion_state().window(),
                frames_sent: p.counters.frames_sent,
                bytes_sent: p.counters.stream_bytes_sent,
                backlogged: p.is_backlogged(),
            })
            .collect();
        let (go, limit) = scheduler::allowance(strategy, &facts, me);
        Schedule {
            allowance: if go {
                Allowance::Frames(limit)
            } else {
                Allowance::None
            },
            copy_to: Vec::new(),
            multipath: true,
        }
    }

    /// Marks a client's path degraded or active again from its health.
    pub(super) fn update_degraded(&mut self, now: Instant) {
        let mut changes = Vec::new();
        for (session, p) in self.each_conn() {
            let Some(h) = session else { continue };
            let Some(s) = self.sessions.get(&h) else {
                continue;
            };
            if s.role != Role::Client || p.closing {
                continue;
            }
            let Some(silent) = p.health.silent_for(now) else {
                continue;
            };
            let rtt = p.conn.rtt();
            let limit = (p.health.window(rtt) / 2).max(s.config.path_health_check_interval + rtt);
            let want = if silent > limit {
                PathState::Degraded
            } else {
                PathState::Active
            };
            let current = s.paths.get(&p.id).map(|m| m.state);
            if current.is_some_and(|c| c.is_usable() && c != want) {
                changes.push((h, p.id, want));
            }
        }
        for (h, path, state) in changes {
            if let Some(s) = self.sessions.get_mut(&h) {
                s.set_state(path, state);
            }
            if path != PathId::PRIMARY {
                self.report_status(h, path, state, "");
            }
            self.path_event(h, path, state, "");
        }
    }

    /// Measures the stream bytes each of a client's paths delivers per second.
    pub(super) fn sample_rates(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.role != Role::Client {
                continue;
            }
            for m in s.paths.values_mut() {
                let Some(p) = &m.conn else {
                    continue;
                };
                let bytes = p.counters.stream_bytes_received;
                match m.rate_mark {
                    Some((at, before)) if now >= at + Duration::from_millis(250) => {
                        let secs = (now - at).as_secs_f64();
                        m.delivery_rate = (bytes.saturating_sub(before) as f64 / secs) as u64;
                        m.rate_mark = Some((now, bytes));
                    }
                    Some(_) => {}
                    None => m.rate_mark = Some((now, bytes)),
                }
            }
        }
    }
}
