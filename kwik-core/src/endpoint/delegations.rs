//! Delegation and striping: ranges of a primary's streams served by any path, the
//! client's ledger of who owes what, and the writer of delegated ranges.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_proto::DelegationOutcome as WireOutcome;
use kwik_proto::control_frame::Kind;
use quinn_proto::{Dir, Side};

use super::multi::MAX_DELEGATIONS;
use super::{Endpoint, Event};
use crate::delegation::{
    DelegateError, DelegationId, DelegationOutcome, IncomingDelegation, Issued, Outgoing, Owed,
};
use crate::error::{ErrorCode, ProtocolError, SessionError};
use crate::frame::Frame;
use crate::path::PathId;
use crate::session::{Phase, Role, SessionHandle, SessionState, StripeState};
use crate::streams::StreamId;
use crate::stripe::{MIN_CHUNK, Stripe};

/// Largest chunk a stripe cuts.
const MAX_CHUNK: u64 = 16 << 20;

impl Endpoint {
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
        let id = s.new_delegation_id();
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
            st.stripe.set_window(s.streams.peer_stream_window());
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
                // Field by field: the stripes are borrowed.
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
    pub(super) fn issue(&mut self, h: SessionHandle, id: u64, issued: Issued) {
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

    pub(super) fn on_delegation_update(
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
                    let id = s.new_delegation_id();
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

    pub(super) fn on_delegate_client(
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
    pub(super) fn fail_delegations(&mut self, h: SessionHandle, path: PathId) {
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

    pub(super) fn on_delegate_server(
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
        if !fin
            && (s.streams.read_offset(*id).is_some_and(|r| end <= r)
                || s.streams.recv_finished(*id))
        {
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
pub(super) fn update(id: u64, missing: Option<u64>, first_missing: u64) -> Kind {
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
