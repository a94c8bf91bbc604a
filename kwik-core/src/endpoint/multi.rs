//! Multi-server sessions: adding and joining paths, delegation, striping and the failure
//! of secondary paths.
//!
//! Who may send what (anything else is `UnexpectedControlMessage`):
//! - primary -> client: `AddPath`, `RemovePath`, `Delegate`;
//! - client -> primary: `PathStatus`, `DelegationUpdate`;
//! - client -> secondary: `Join` (first), `Delegate` (forwarded), `DelegationUpdate`
//!   (every byte of the range arrived, possibly from another copy: stop writing it);
//! - secondary -> client: `JoinResult`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_proto::control_frame::Kind;
use kwik_proto::{DelegationOutcome as WireOutcome, JoinResult, PathStatus};
use quinn_proto::{Dir, Side, VarInt};

use super::{Endpoint, Event, PathSlot};
use crate::config::LoadBalancing;
use crate::delegation::{
    DelegateError, DelegationId, DelegationOutcome, IncomingDelegation, Issued, Outgoing, Owed,
};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::frame::Frame;
use crate::join;
use crate::path::Pull;
use crate::path::{Path, PathId};
use crate::scheduler;
use crate::session::{
    PathInfo, PathMeta, PathState, Phase, Role, SessionHandle, SessionState, StripeState,
};
use crate::streams::{StreamId, Streams};
use crate::stripe::{MIN_CHUNK, Stripe};

/// What [`Endpoint::schedule`] allows one path.
#[derive(Debug)]
pub(super) struct Schedule {
    pub(super) pull: Pull,
    /// Paths that get a copy of every frame this one takes.
    pub(super) copy_to: Vec<usize>,
    /// The session has several usable paths to the peer.
    pub(super) multipath: bool,
}

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
    /// The session is gone or closed.
    #[error("session lost")]
    SessionLost,
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

/// Largest chunk a stripe cuts.
const MAX_CHUNK: u64 = 16 << 20;

fn refusal(reason: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::JoinRefused, reason)
}

fn unexpected(kind: &Kind) -> ProtocolError {
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

    fn send_on(&mut self, h: SessionHandle, path: PathId, kind: Kind) -> bool {
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

    fn report_status(&mut self, h: SessionHandle, path: PathId, state: PathState, reason: &str) {
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

    fn path_rtt(&self, h: SessionHandle, path: PathId) -> Option<Duration> {
        let key = self.sessions.get(&h)?.paths.get(&path)?;
        Some(self.paths.get(key)?.path.conn.rtt())
    }

    fn path_event(&mut self, h: SessionHandle, path: PathId, state: PathState, reason: &str) {
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

    // ---- primary --------------------------------------------------------------------

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
        let s = self.sessions.get_mut(&h).ok_or(AddPathError::SessionLost)?;
        if s.role != Role::Primary {
            return Err(AddPathError::NotPrimary);
        }
        if s.error.is_some() {
            return Err(AddPathError::SessionLost);
        }
        let live = s
            .metas
            .values()
            .filter(|m| m.state != PathState::Removed)
            .count();
        if live >= s.config.max_paths_per_session as usize {
            return Err(AddPathError::TooManyPaths);
        }
        let id = PathId(s.next_path_id);
        s.next_path_id += 1;
        let expiry = unix + s.config.join_proof_lifetime.as_secs().max(1);
        let secret = join::path_secret(&key, s.id, id.0, expiry);
        let mut meta = PathMeta::new(address, server_name.to_owned(), PathState::Connecting);
        meta.same_peer = kind != PathKind::Secondary;
        meta.backup = kind == PathKind::Backup;
        if meta.same_peer {
            s.streams.set_retain(true);
        }
        s.metas.insert(id, meta);
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
                self.schedule_stripes(now, h);
            }
            Role::Client => {
                self.fail_delegations(h, path);
                self.close_path(now, h, path, "removed");
                self.report_status(h, path, PathState::Removed, "removed");
            }
            Role::Secondary => return false,
        }
        self.path_event(h, path, PathState::Removed, "");
        true
    }

    pub(super) fn paths_of(&self, h: SessionHandle) -> Vec<PathInfo> {
        let Some(s) = self.sessions.get(&h) else {
            return Vec::new();
        };
        s.metas
            .iter()
            .map(|(id, m)| {
                let conn = s
                    .paths
                    .get(id)
                    .and_then(|k| self.paths.get(k))
                    .map(|slot| (slot.path.conn.rtt(), slot.path.conn.stats()));
                let (rtt, sent, received) = match conn {
                    Some((rtt, q)) => (Some(rtt), q.udp_tx.bytes, q.udp_rx.bytes),
                    None => (m.reported_rtt, m.delivered, 0),
                };
                PathInfo {
                    id: *id,
                    address: m.address,
                    is_primary: *id == PathId::PRIMARY,
                    state: m.state,
                    rtt,
                    bytes_sent: sent,
                    bytes_received: received,
                    delivery_rate: m.delivery_rate,
                }
            })
            .collect()
    }

    /// Reserves `len` bytes of `stream` and hands them to `path`.
    pub(super) fn delegate(
        &mut self,
        h: SessionHandle,
        stream: StreamId,
        path: PathId,
        request: Bytes,
        len: u64,
    ) -> Result<DelegationId, DelegateError> {
        let s = self
            .sessions
            .get_mut(&h)
            .ok_or(DelegateError::SessionLost)?;
        check_can_delegate(s, len)?;
        if !s.usable_paths().contains(&path) || (path != PathId::PRIMARY && s.is_peer_path(path)) {
            return Err(DelegateError::PathNotActive(path));
        }
        let start = s.streams.reserve(stream, len, false).map_err(|e| match e {
            crate::error::WriteError::Blocked => DelegateError::Blocked,
            _ => DelegateError::ClosedStream,
        })?;
        let id = s.next_delegation;
        s.next_delegation += 1;
        let issued = Issued {
            path,
            stream,
            start,
            end: start + len,
            request,
            body_offset: 0,
            stripe: None,
        };
        self.issue(h, id, issued);
        Ok(DelegationId(id))
    }

    /// Serves `len` bytes of `stream` from every active path, the primary included.
    pub(super) fn stripe(
        &mut self,
        now: Instant,
        h: SessionHandle,
        stream: StreamId,
        request: Bytes,
        len: u64,
    ) -> Result<u64, DelegateError> {
        let s = self
            .sessions
            .get_mut(&h)
            .ok_or(DelegateError::SessionLost)?;
        check_can_delegate(s, len)?;
        if s.stripes.values().any(|st| st.stream == stream) {
            return Err(DelegateError::ClosedStream);
        }
        let base = s
            .streams
            .write_offset(stream)
            .filter(|_| s.streams.is_sending(stream))
            .ok_or(DelegateError::ClosedStream)?;
        if s.streams.reserve(stream, 0, false).is_err() {
            return Err(DelegateError::ClosedStream);
        }
        s.streams.set_locked(stream, true);
        let id = s.next_stripe;
        s.next_stripe += 1;
        let stripe = Stripe::new(
            base,
            len,
            s.config.stripe_chunk_time,
            s.config.stripe_depth as usize,
        );
        s.stripes.insert(
            id,
            StripeState {
                stream,
                request,
                stripe,
            },
        );
        self.schedule_stripes(now, h);
        Ok(id)
    }

    /// Hands out the next chunks of every stripe of a primary session.
    pub(super) fn schedule_stripes(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.role != Role::Primary || s.stripes.is_empty() || s.phase != Phase::Established {
            return;
        }
        // Same-peer paths are not lanes: they carry this server's own chunks (path 0),
        // spread by the same-peer scheduler.
        let usable: Vec<PathId> = s
            .usable_paths()
            .into_iter()
            .filter(|p| *p == PathId::PRIMARY || !s.is_peer_path(*p))
            .collect();
        let primary_rtt = s
            .paths
            .get(&PathId::PRIMARY)
            .and_then(|k| self.paths.get(k))
            .map_or(Duration::ZERO, |slot| slot.path.conn.rtt());
        let delays: Vec<(PathId, Duration)> = usable
            .iter()
            .map(|p| {
                let own = match *p {
                    PathId::PRIMARY => Duration::ZERO,
                    _ => s
                        .metas
                        .get(p)
                        .and_then(|m| m.reported_rtt)
                        .unwrap_or(primary_rtt),
                };
                (*p, primary_rtt + own)
            })
            .collect();
        let mut issue = Vec::new();
        let mut finished = Vec::new();
        let lanes = usable.len().max(1) as u64;
        let depth = u64::from(s.config.stripe_depth);
        let max_chunk =
            (s.streams.peer_stream_window() / (2 * depth * lanes)).clamp(MIN_CHUNK, MAX_CHUNK);
        for (sid, st) in s.stripes.iter_mut() {
            st.stripe.set_paths(&usable);
            for (p, d) in &delays {
                st.stripe.set_delay(*p, *d);
            }
            if !s.streams.is_sending(st.stream) {
                finished.push(*sid);
                continue;
            }
            while let Some(plan) = st.stripe.plan(now, s.streams.credit(st.stream), max_chunk) {
                if plan.fresh {
                    match s.streams.reserve(st.stream, plan.end - plan.start, true) {
                        Ok(offset) if offset == plan.start => {}
                        _ => break,
                    }
                }
                let id = s.next_delegation;
                s.next_delegation += 1;
                st.stripe.assigned(plan, id, now);
                issue.push((
                    id,
                    Issued {
                        path: plan.path,
                        stream: st.stream,
                        start: plan.start,
                        end: plan.end,
                        request: st.request.clone(),
                        body_offset: plan.start - st.stripe.base(),
                        stripe: Some(*sid),
                    },
                ));
                if st.stripe.all_assigned() {
                    s.streams.set_locked(st.stream, false);
                }
            }
            if st.stripe.is_complete() {
                finished.push(*sid);
            }
        }
        for sid in finished {
            if let Some(st) = s.stripes.remove(&sid) {
                s.streams.set_locked(st.stream, false);
                self.events.push_back(Event::StripeFinished {
                    session: h,
                    stripe: sid,
                });
            }
        }
        for (id, issued) in issue {
            self.issue(h, id, issued);
        }
    }

    /// Records a delegation and sends it; a delegation to the primary itself is also
    /// queued for the local application.
    fn issue(&mut self, h: SessionHandle, id: u64, issued: Issued) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if issued.path == PathId::PRIMARY {
            s.outgoing
                .insert(id, Outgoing::new(issued.stream, issued.start, issued.end));
            s.incoming.push_back(incoming(id, &issued));
            self.events
                .push_back(Event::DelegationReceived { session: h });
        }
        let delegate = Kind::Delegate(kwik_proto::Delegate {
            id,
            stream: issued.stream.0,
            offset: issued.start,
            len: issued.end - issued.start,
            request: issued.request.to_vec(),
            path_id: issued.path.0,
            body_offset: issued.body_offset,
        });
        s.issued.insert(id, issued);
        self.send_primary(h, delegate);
    }

    fn on_path_status(
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
        if path == PathId::PRIMARY || !s.metas.contains_key(&path) {
            return Err(ProtocolError::new(
                ErrorCode::UnexpectedControlMessage,
                format!("status of unknown {path}"),
            ));
        }
        if let Some(m) = s.metas.get_mut(&path) {
            if status.rtt_us > 0 {
                m.reported_rtt = Some(Duration::from_micros(status.rtt_us));
            }
            m.delivery_rate = status.delivery_rate;
        }
        let same_peer = s.metas.get(&path).is_some_and(|m| m.same_peer);
        if s.set_state(path, state) {
            if same_peer && matches!(state, PathState::Failed | PathState::Removed) {
                // The client lost a path to this server: what it carried is sent again
                // on the others, and this side's end of it is closed.
                if let Some(key) = s.paths.remove(&path)
                    && let Some(slot) = self.paths.get_mut(&key)
                    && !slot.path.closing
                {
                    slot.path
                        .close_app(now, VarInt::from_u32(0), Bytes::from_static(b"failed"));
                    self.dirty.insert(key);
                }
                self.reinject(now, h);
            }
            self.path_event(h, path, state, &status.reason);
            self.schedule_stripes(now, h);
        }
        Ok(())
    }

    fn on_delegation_update(
        &mut self,
        now: Instant,
        h: SessionHandle,
        update: kwik_proto::DelegationUpdate,
    ) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        // Updates for delegations already settled (an end-game twin) are expected.
        let Some(issued) = s.issued.remove(&update.id) else {
            return;
        };
        let failed = update.outcome == WireOutcome::Failed as i32;
        let first_missing = update.first_missing.clamp(issued.start, issued.end);
        if !failed {
            if let Some(m) = s.metas.get_mut(&issued.path) {
                m.delivered += issued.end - issued.start;
            }
        }
        match issued.stripe.and_then(|sid| s.stripes.get_mut(&sid)) {
            Some(st) => {
                if failed {
                    st.stripe.on_failed(update.id, first_missing);
                } else if let Some(twin) = st.stripe.on_done(update.id, now)
                    && let Some(copy) = s.issued.remove(&twin)
                    && copy.path == PathId::PRIMARY
                {
                    // The other copy won: stop writing this one (a secondary's copy is
                    // stopped by the client, which saw the range complete).
                    self.cancel_outgoing(h, twin);
                }
                self.schedule_stripes(now, h);
            }
            None if issued.stripe.is_some() => {}
            None => {
                let outcome = if failed && first_missing < issued.end {
                    DelegationOutcome::Failed { first_missing }
                } else {
                    DelegationOutcome::Done
                };
                self.events.push_back(Event::DelegationFinished {
                    session: h,
                    delegation: DelegationId(update.id),
                    outcome,
                });
                if let DelegationOutcome::Failed { first_missing } = outcome {
                    // The primary serves the rest itself.
                    let id = s.next_delegation;
                    s.next_delegation += 1;
                    let rest = Issued {
                        path: PathId::PRIMARY,
                        body_offset: issued.body_offset + (first_missing - issued.start),
                        start: first_missing,
                        stripe: None,
                        ..issued
                    };
                    self.issue(h, id, rest);
                }
            }
        }
    }

    // ---- client ---------------------------------------------------------------------

    fn on_add_path(&mut self, now: Instant, h: SessionHandle, add: kwik_proto::AddPath) {
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

    fn try_add_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        add: &kwik_proto::AddPath,
    ) -> Result<(), &'static str> {
        let s = self.sessions.get_mut(&h).ok_or("no session")?;
        let path = PathId(add.path_id);
        if path == PathId::PRIMARY || s.metas.contains_key(&path) {
            return Err("path id in use");
        }
        if !s.add_path_budget.try_take(now) {
            return Err("AddPath rate limit");
        }
        let live = s
            .metas
            .values()
            .filter(|m| m.state != PathState::Removed)
            .count();
        if live >= s.config.max_paths_per_session as usize {
            return Err("path limit");
        }
        let address: SocketAddr = add.addr.parse().map_err(|_| "bad address")?;
        if !s.config.allow_scope_escalation && !join::scope_allows(s.remote.ip(), address.ip()) {
            return Err("address scope narrower than the primary's");
        }
        let mut meta = PathMeta::new(address, add.server_name.clone(), PathState::Connecting);
        meta.secret = add.path_secret.clone();
        meta.expiry = add.expiry;
        meta.same_peer = add.same_peer;
        meta.backup = add.backup && add.same_peer;
        if meta.same_peer {
            s.streams.set_retain(true);
        }
        s.metas.insert(path, meta);
        if let Err(reason) = self.dial_path(now, h, path) {
            if let Some(s) = self.sessions.get_mut(&h) {
                s.metas.remove(&path);
            }
            return Err(reason);
        }
        self.path_event(h, path, PathState::Connecting, "");
        Ok(())
    }

    /// Connects (or reconnects) the client to a secondary.
    fn dial_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
    ) -> Result<(), &'static str> {
        let s = self.sessions.get(&h).ok_or("no session")?;
        let meta = s.metas.get(&path).ok_or("unknown path")?;
        let dial = s.dial.clone().ok_or("no client config")?;
        let rate = s.config.max_control_messages_per_sec;
        let (address, name) = (meta.address, meta.server_name.clone());
        let (ch, conn) = self
            .quic
            .connect(now, dial, address, &name)
            .map_err(|_| "cannot connect")?;
        self.paths.insert(
            ch.0,
            PathSlot {
                path: Path::new(conn, path, rate),
                session: Some(h),
                remote: address,
                side: Side::Client,
            },
        );
        if let Some(s) = self.sessions.get_mut(&h) {
            s.paths.insert(path, ch.0);
            let deadline = now + s.config.idle_timeout;
            if let Some(m) = s.metas.get_mut(&path) {
                m.join_deadline = Some(deadline);
            }
        }
        self.dirty.insert(ch.0);
        Ok(())
    }

    /// The client's Join for a secondary path whose handshake completed.
    pub(super) fn join_message(&self, key: usize) -> Option<Kind> {
        let slot = self.paths.get(&key)?;
        let s = self.sessions.get(&slot.session?)?;
        let meta = s.metas.get(&slot.path.id)?;
        let exporter = slot.path.exporter()?;
        Some(Kind::Join(kwik_proto::Join {
            session_id: s.id,
            path_id: slot.path.id.0,
            expiry: meta.expiry,
            proof: join::proof(&meta.secret, &exporter),
        }))
    }

    fn on_join_result(
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
        if s.metas
            .get(&path)
            .is_none_or(|m| m.state == PathState::Active)
        {
            return Err(unexpected(&Kind::JoinResult(result)));
        }
        s.set_state(path, PathState::Active);
        if let Some(m) = s.metas.get_mut(&path) {
            m.retry_until = None;
            m.next_retry = None;
            m.join_deadline = None;
        }
        if let Some(slot) = s.paths.get(&path).and_then(|k| self.paths.get_mut(k)) {
            slot.path.health.start(now, interval, threshold);
        }
        self.report_status(h, path, PathState::Active, "");
        self.path_event(h, path, PathState::Active, "");
        Ok(())
    }

    fn on_delegate_client(
        &mut self,
        h: SessionHandle,
        delegate: kwik_proto::Delegate,
    ) -> Result<(), ProtocolError> {
        let Some(s) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        let stream = StreamId(delegate.stream);
        let end = delegate
            .offset
            .checked_add(delegate.len)
            .filter(|e| *e <= crate::varint::MAX && delegate.len > 0)
            .ok_or_else(|| ProtocolError::new(ErrorCode::Delegation, "bad delegation range"))?;
        let unreported = s.owed.values().filter(|o| !o.reported).count();
        if s.owed.contains_key(&delegate.id) || unreported >= MAX_DELEGATIONS {
            return Err(ProtocolError::new(
                ErrorCode::Delegation,
                "delegation id reused or too many delegations",
            ));
        }
        s.streams.check_delegated(stream, end)?;
        let path = PathId(delegate.path_id);
        s.owed.insert(
            delegate.id,
            Owed {
                path,
                stream,
                start: delegate.offset,
                end,
                reported: false,
            },
        );
        if path == PathId::PRIMARY {
            return Ok(());
        }
        let active = s.metas.get(&path).is_some_and(|m| m.state.is_usable());
        let (id, start) = (delegate.id, delegate.offset);
        if !active || !self.send_on(h, path, Kind::Delegate(delegate)) {
            if let Some(o) = self.sessions.get_mut(&h).and_then(|s| s.owed.get_mut(&id)) {
                o.reported = true;
            }
            self.send_primary(h, update(id, Some(start), start));
        }
        Ok(())
    }

    /// Reports delegations whose bytes all arrived, and forgets those the reader passed.
    pub(super) fn check_owed(&mut self, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.owed.is_empty() {
            return;
        }
        let mut done = Vec::new();
        let streams = &s.streams;
        s.owed.retain(|id, o| {
            if !o.reported && streams.first_missing(o.stream, o.start, o.end).is_none() {
                o.reported = true;
                done.push((*id, o.path, o.end));
            }
            !(o.reported && streams.read_offset(o.stream).is_none_or(|r| r >= o.end))
        });
        for (id, path, end) in done {
            self.send_primary(h, update(id, None, end));
            if path != PathId::PRIMARY {
                // Every byte is here (maybe from another copy): the owner may stop. A
                // secondary that already finished ignores this.
                self.send_on(h, path, update(id, None, end));
            }
        }
    }

    /// Reports every unsettled delegation of `path` as failed (or done, if its bytes came
    /// anyway) and forgets them.
    fn fail_delegations(&mut self, h: SessionHandle, path: PathId) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        let mut reports = Vec::new();
        let streams = &s.streams;
        s.owed.retain(|id, o| {
            if o.path != path {
                return true;
            }
            if !o.reported {
                let missing = streams.first_missing(o.stream, o.start, o.end);
                reports.push(update(*id, missing, missing.unwrap_or(o.end)));
            }
            false
        });
        for r in reports {
            self.send_primary(h, r);
        }
    }

    fn close_path(&mut self, now: Instant, h: SessionHandle, path: PathId, reason: &str) {
        let Some(key) = self
            .sessions
            .get_mut(&h)
            .and_then(|s| s.paths.remove(&path))
        else {
            return;
        };
        if let Some(slot) = self.paths.get_mut(&key) {
            if !slot.path.closing {
                slot.path.close_app(
                    now,
                    VarInt::from_u32(0),
                    Bytes::copy_from_slice(reason.as_bytes()),
                );
            }
            self.dirty.insert(key);
        }
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
        if let Some(m) = s.metas.get_mut(&path) {
            m.join_deadline = None;
        }
        if s.phase == Phase::Closed
            || s.metas
                .get(&path)
                .is_none_or(|m| matches!(m.state, PathState::Failed | PathState::Removed))
        {
            // Already failed; a retry that failed again just waits for the next.
            if let Some(key) = s.paths.remove(&path)
                && let Some(slot) = self.paths.get_mut(&key)
                && !slot.path.closing
            {
                slot.path.close_app(now, VarInt::from_u32(0), Bytes::new());
                self.dirty.insert(key);
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
        if let Some(m) = s.metas.get_mut(&path) {
            if m.expiry > unix {
                m.retry_until = Some(now + recovery);
                m.next_retry = Some(now + retry);
            } else {
                m.retry_until = Some(now);
                m.next_retry = Some(now);
            }
        }
        tracing::debug!(%path, %reason, "secondary path failed");
        if self.sessions.get(&h).is_some_and(|s| s.is_peer_path(path)) {
            // A path to the primary itself: its frames in flight are sent again.
            self.reinject(now, h);
        }
        self.fail_delegations(h, path);
        self.close_path(now, h, path, &reason);
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
            for (path, m) in &s.metas {
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
            let Some(m) = s.metas.get_mut(&path) else {
                continue;
            };
            if m.retry_until.is_none_or(|t| t <= now) || m.expiry <= unix {
                m.state = PathState::Removed;
                m.next_retry = None;
                self.close_path(now, h, path, "not recovered");
                self.report_status(h, path, PathState::Removed, "not recovered");
                self.path_event(h, path, PathState::Removed, "");
                continue;
            }
            m.next_retry = Some(now + retry);
            if !s.paths.contains_key(&path) {
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
            for (path, m) in &s.metas {
                if m.join_deadline.is_some_and(|t| t <= now) {
                    late.push((*h, *path));
                }
            }
        }
        for (h, path) in late {
            if let Some(m) = self
                .sessions
                .get_mut(&h)
                .and_then(|s| s.metas.get_mut(&path))
            {
                m.join_deadline = None;
            }
            let error = PathError::Connection(SessionError::TimedOut);
            if self.sessions.get(&h).is_some_and(|s| {
                s.metas
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
            .flat_map(|s| s.metas.values())
            .flat_map(|m| [m.next_retry, m.join_deadline])
            .flatten()
            .min()
    }

    // ---- secondary ------------------------------------------------------------------

    /// The first control message of a server path was a Join.
    pub(super) fn on_join(
        &mut self,
        now: Instant,
        key: usize,
        join: kwik_proto::Join,
    ) -> Result<(), ProtocolError> {
        let Some(server) = &self.server else {
            return Err(refusal("not a server"));
        };
        let group = server
            .group_key
            .clone()
            .ok_or_else(|| refusal("this server admits no joins"))?;
        let config = server.config.clone();
        if join.path_id == 0 {
            return Err(refusal("path 0 is the primary path"));
        }
        if join.expiry <= self.unix_secs(now) {
            return Err(refusal("join proof expired"));
        }
        let slot = self
            .paths
            .get_mut(&key)
            .ok_or_else(|| ProtocolError::new(ErrorCode::Internal, "no path"))?;
        let exporter = slot
            .path
            .exporter()
            .ok_or_else(|| refusal("no keying material"))?;
        let secret = join::path_secret(&group, join.session_id, join.path_id, join.expiry);
        if !join::verify(&secret, &exporter, &join.proof) {
            return Err(refusal("join proof does not verify"));
        }
        let path = PathId(join.path_id);
        let own = self.sessions.iter().find_map(|(h, s)| {
            let m = s.metas.get(&path)?;
            (s.role == Role::Primary
                && s.id == join.session_id
                && m.same_peer
                && m.state != PathState::Removed)
                .then_some(*h)
        });
        if let Some(h) = own {
            // This server at another address: the path joins the session itself.
            let Some(s) = self.sessions.get_mut(&h) else {
                return Ok(());
            };
            if let Some(old) = s.paths.insert(path, key)
                && let Some(slot) = self.paths.get_mut(&old)
                && !slot.path.closing
            {
                slot.path
                    .close_app(now, VarInt::from_u32(0), Bytes::from_static(b"replaced"));
                self.dirty.insert(old);
            }
            if let Some(slot) = self.paths.get_mut(&key) {
                slot.path.id = path;
                slot.session = Some(h);
                slot.path.send_control(Kind::JoinResult(JoinResult {
                    accepted: true,
                    code: 0,
                    reason: String::new(),
                }));
            }
            return Ok(());
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        let h = SessionHandle(self.next_session);
        self.next_session += 1;
        let mut session = SessionState::new(Side::Server, join.session_id, config, slot.remote);
        // A secondary serves delegated ranges only: the client opens no streams on it.
        session.streams = Streams::new(
            Side::Server,
            crate::streams::Limits {
                max_data: 0,
                max_stream_data: 0,
                max_bidi: 0,
                max_uni: 0,
            },
            1,
        );
        session.role = Role::Secondary;
        session.phase = Phase::Established;
        session.writer_path = path;
        session.paths.insert(path, key);
        session.metas.insert(
            path,
            PathMeta::new(slot.remote, String::new(), PathState::Active),
        );
        slot.path.id = path;
        slot.session = Some(h);
        slot.path.send_control(Kind::JoinResult(JoinResult {
            accepted: true,
            code: 0,
            reason: String::new(),
        }));
        self.sessions.insert(h, session);
        self.events.push_back(Event::Incoming(h));
        Ok(())
    }

    fn on_delegate_server(
        &mut self,
        h: SessionHandle,
        path: PathId,
        delegate: kwik_proto::Delegate,
    ) -> Result<(), ProtocolError> {
        let Some(s) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        let stream = StreamId(delegate.stream);
        let end = delegate
            .offset
            .checked_add(delegate.len)
            .filter(|e| *e <= crate::varint::MAX && delegate.len > 0);
        let sendable = stream.initiator() == Side::Server || stream.dir() == Dir::Bi;
        let (Some(end), true, true) = (end, sendable, delegate.path_id == path.0) else {
            return Err(ProtocolError::new(
                ErrorCode::Delegation,
                "delegation this server cannot serve",
            ));
        };
        if s.outgoing.len() + s.incoming.len() >= MAX_DELEGATIONS
            || s.outgoing.contains_key(&delegate.id)
        {
            return Err(ProtocolError::new(
                ErrorCode::Delegation,
                "delegation id reused or too many delegations",
            ));
        }
        let issued = Issued {
            path,
            stream,
            start: delegate.offset,
            end,
            request: Bytes::from(delegate.request),
            body_offset: delegate.body_offset,
            stripe: None,
        };
        s.outgoing
            .insert(delegate.id, Outgoing::new(stream, delegate.offset, end));
        s.incoming.push_back(incoming(delegate.id, &issued));
        self.events
            .push_back(Event::DelegationReceived { session: h });
        Ok(())
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
            (Role::Client, Kind::Delegate(d)) if primary => self.on_delegate_client(h, d)?,
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
            (Role::Secondary, Kind::Delegate(d)) => self.on_delegate_server(h, path, d)?,
            (Role::Secondary, Kind::DelegationUpdate(u)) => self.cancel_outgoing(h, u.id),
            (
                _,
                kind @ (Kind::AddPath(_)
                | Kind::RemovePath(_)
                | Kind::Delegate(_)
                | Kind::DelegationUpdate(_)
                | Kind::PathStatus(_)
                | Kind::Join(_)
                | Kind::JoinResult(_)),
            ) => return Err(unexpected(&kind)),
            (Role::Secondary, kind @ Kind::Welcome(_)) => return Err(unexpected(&kind)),
            (_, kind) => return Ok(Some(kind)),
        }
        Ok(None)
    }

    /// Checks a frame that arrived on a client's secondary path: only stream bytes inside
    /// ranges that path owes (or bytes the reader already passed) are accepted.
    pub(super) fn check_secondary_frame(
        s: &SessionState,
        path: PathId,
        frame: &Frame,
    ) -> Result<(), ProtocolError> {
        let Frame::Stream {
            id,
            offset,
            fin,
            data,
        } = frame
        else {
            return Err(ProtocolError::new(
                ErrorCode::Delegation,
                "a secondary sent a frame other than STREAM",
            ));
        };
        let end = offset + data.len() as u64;
        let owed = s
            .owed
            .values()
            .any(|o| o.path == path && o.stream == *id && o.start <= *offset && end <= o.end);
        if owed && !fin {
            return Ok(());
        }
        if !fin && s.streams.read_offset(*id).is_some_and(|r| end <= r) {
            return Ok(());
        }
        Err(ProtocolError::new(
            ErrorCode::Delegation,
            format!("{path} sent bytes of {id} it was not delegated"),
        ))
    }

    /// Stops serving delegation `id`: queued bytes are dropped and its carrier abandoned;
    /// later writes to it fail with `ClosedStream`.
    pub(super) fn cancel_outgoing(&mut self, h: SessionHandle, id: u64) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.outgoing.remove(&id);
        s.incoming.retain(|d| d.id.0 != id);
        let Some(key) = s.paths.get(&s.writer_path).copied() else {
            return;
        };
        if let Some(slot) = self.paths.get_mut(&key) {
            slot.path.cancel_delegated(id);
            self.dirty.insert(key);
        }
    }

    /// Writes the delegated ranges of the session on its writer path.
    pub(super) fn write_delegated(
        &mut self,
        key: usize,
        h: SessionHandle,
    ) -> Result<(), ProtocolError> {
        let (Some(slot), Some(s)) = (self.paths.get_mut(&key), self.sessions.get_mut(&h)) else {
            return Ok(());
        };
        if s.outgoing.is_empty() || slot.path.id != s.writer_path {
            return Ok(());
        }
        let mut writable = Vec::new();
        slot.path.write_delegated(&mut s.outgoing, &mut writable)?;
        for id in writable {
            self.events.push_back(Event::DelegationWritable {
                session: h,
                delegation: DelegationId(id),
            });
        }
        Ok(())
    }

    /// Primary: a same-peer path's connection is gone. The session lives on over its other
    /// paths; the client reports what becomes of the path.
    pub(super) fn peer_path_lost(&mut self, now: Instant, h: SessionHandle, path: PathId) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.paths.remove(&path);
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

    /// How much of the session's stream data path `key` may take now, and where copies of
    /// what it takes go (redundant scheduling). With one path to the peer, all of it.
    ///
    /// Several paths to the peer rank by `Config::load_balancing`; a path takes data only
    /// when every path ranked before it is backlogged (QUIC refused more: its send window,
    /// kept near its congestion window, is full). Backup paths take part only when no
    /// other path is usable.
    pub(super) fn schedule(&mut self, key: usize) -> Schedule {
        let all = Schedule {
            pull: Pull::Frames(usize::MAX),
            copy_to: Vec::new(),
            multipath: false,
        };
        let Some(slot) = self.paths.get(&key) else {
            return all;
        };
        let (Some(h), me) = (slot.session, slot.path.id) else {
            return all;
        };
        let Some(s) = self.sessions.get(&h) else {
            return all;
        };
        if !s.is_peer_path(me) || s.role == Role::Secondary {
            return all;
        }
        let mut peers: Vec<(PathId, usize, bool)> = s
            .paths
            .iter()
            .filter(|(id, k)| {
                s.is_peer_path(**id)
                    && s.metas.get(id).is_some_and(|m| m.state.is_usable())
                    && self.paths.get(k).is_some_and(|sl| !sl.path.closing)
            })
            .map(|(id, k)| (*id, *k, s.metas.get(id).is_some_and(|m| m.backup)))
            .collect();
        if peers.len() <= 1 {
            return all;
        }
        if peers.iter().any(|p| !p.2) {
            peers.retain(|p| !p.2);
        }
        let multipath = Schedule {
            pull: Pull::None,
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
                    pull: Pull::Frames(usize::MAX),
                    copy_to: peers.iter().filter(|p| p.0 != me).map(|p| p.1).collect(),
                    multipath: true,
                },
                _ => multipath,
            };
        }
        let facts: Vec<scheduler::PathFacts> = peers
            .iter()
            .filter_map(|(id, k, _)| {
                let sl = self.paths.get(k)?;
                Some(scheduler::PathFacts {
                    id: *id,
                    rtt: sl.path.conn.rtt(),
                    cwnd: sl.path.conn.congestion_state().window(),
                    frames_sent: sl.path.counters.frames_sent,
                    bytes_sent: sl.path.counters.stream_bytes_sent,
                    backlogged: sl.path.is_backlogged(),
                })
            })
            .collect();
        let (go, limit) = scheduler::may_pull(strategy, &facts, me);
        Schedule {
            pull: if go { Pull::Frames(limit) } else { Pull::None },
            copy_to: Vec::new(),
            multipath: true,
        }
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

    /// Marks a client's path degraded or active again from its health.
    pub(super) fn update_degraded(&mut self, now: Instant) {
        let mut changes = Vec::new();
        for slot in self.paths.values() {
            let Some(h) = slot.session else { continue };
            let Some(s) = self.sessions.get(&h) else {
                continue;
            };
            if s.role != Role::Client || slot.path.closing {
                continue;
            }
            let Some(silent) = slot.path.health.silent_for(now) else {
                continue;
            };
            let rtt = slot.path.conn.rtt();
            let limit =
                (slot.path.health.window(rtt) / 2).max(s.config.path_health_check_interval + rtt);
            let want = if silent > limit {
                PathState::Degraded
            } else {
                PathState::Active
            };
            let current = s.metas.get(&slot.path.id).map(|m| m.state);
            if current.is_some_and(|c| c.is_usable() && c != want) {
                changes.push((h, slot.path.id, want));
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
            for (path, key) in &s.paths {
                let Some(slot) = self.paths.get(key) else {
                    continue;
                };
                let Some(m) = s.metas.get_mut(path) else {
                    continue;
                };
                let bytes = slot.path.counters.stream_bytes_received;
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

fn check_can_delegate(s: &SessionState, len: u64) -> Result<(), DelegateError> {
    if s.role != Role::Primary {
        return Err(DelegateError::NotPrimary);
    }
    if s.error.is_some() {
        return Err(DelegateError::SessionLost);
    }
    if len == 0 || !s.config.aggregation_enabled {
        return Err(DelegateError::Invalid);
    }
    Ok(())
}

fn incoming(id: u64, issued: &Issued) -> IncomingDelegation {
    IncomingDelegation {
        id: DelegationId(id),
        stream: issued.stream,
        offset: issued.start,
        len: issued.end - issued.start,
        request: issued.request.clone(),
        body_offset: issued.body_offset,
    }
}

/// A client's report on a delegation: done, or failed from `missing`.
fn update(id: u64, missing: Option<u64>, first_missing: u64) -> Kind {
    Kind::DelegationUpdate(kwik_proto::DelegationUpdate {
        id,
        outcome: match missing {
            Some(_) => WireOutcome::Failed,
            None => WireOutcome::Done,
        } as i32,
        first_missing,
    })
}

impl From<SessionError> for DelegateError {
    fn from(_: SessionError) -> Self {
        Self::SessionLost
    }
}
