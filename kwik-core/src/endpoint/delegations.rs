//! Delegation on the servers: the primary issues signed tickets (plain delegations and
//! stripes) and keeps them fresh; every server, the primary included, serves the pulls a
//! client makes under them, after checking the ticket.

use std::time::Instant;

use bytes::Bytes;
use kwik_proto::DelegationOutcome as WireOutcome;
use kwik_proto::control_frame::Kind;
use quinn_proto::{Dir, Side};

use super::multi::MAX_DELEGATIONS;
use super::{Endpoint, Event};
use crate::delegation::{DelegateError, DelegationOutcome, IncomingDelegation, Issued, Outgoing};
use crate::error::{ProtocolError, SessionError};
use crate::ids::{DelegationId, PathId, SessionHandle, StreamId, StripeId};
use crate::session::{Phase, Role, SessionState};
use crate::ticket::{self, PullContext, TicketError};

/// A stripe ticket lets one server send this many times the body, duplicates included.
pub(super) const STRIPE_BUDGET_FACTOR: u64 = 2;

/// What a new ticket covers.
struct Grant {
    stream: StreamId,
    offset: u64,
    len: u64,
    request: Bytes,
    body_offset: u64,
    /// `None`: any server of the session (a stripe).
    path: Option<PathId>,
}

impl Endpoint {
    /// Reserves `len` bytes of `stream` and hands them to `path` under a ticket scoped to
    /// it.
    pub(super) fn delegate(
        &mut self,
        now: Instant,
        h: SessionHandle,
        stream: StreamId,
        path: PathId,
        request: Bytes,
        len: u64,
    ) -> Result<DelegationId, DelegateError> {
        let s = self
            .sessions
            .get_mut(&h)
            .ok_or(DelegateError::SessionLost(SessionError::LocallyClosed))?;
        check_can_delegate(s, len)?;
        if !s.usable_paths().contains(&path) || (path != PathId::PRIMARY && s.is_peer_path(path)) {
            return Err(DelegateError::PathNotActive(path));
        }
        let offset = s.streams.reserve(stream, len, false).map_err(|e| match e {
            crate::error::WriteError::Blocked => DelegateError::Blocked,
            _ => DelegateError::ClosedStream,
        })?;
        let grant = Grant {
            stream,
            offset,
            len,
            request,
            body_offset: 0,
            path: Some(path),
        };
        Ok(DelegationId(self.issue(now, h, grant)))
    }

    /// Reserves `len` bytes of `stream` and issues one stripe ticket for them: the client
    /// pulls the body from every server of the session.
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
            .ok_or(DelegateError::SessionLost(SessionError::LocallyClosed))?;
        check_can_delegate(s, len)?;
        if !s.streams.is_sending(stream) {
            return Err(DelegateError::ClosedStream);
        }
        let offset = s
            .streams
            .reserve(stream, len, true)
            .map_err(|_| DelegateError::ClosedStream)?;
        let grant = Grant {
            stream,
            offset,
            len,
            request,
            body_offset: 0,
            path: None,
        };
        Ok(self.issue(now, h, grant))
    }

    /// Signs a ticket for `grant`, records it and sends it to the client; returns its id.
    fn issue(&mut self, now: Instant, h: SessionHandle, grant: Grant) -> u64 {
        let unix = self.unix_secs(now);
        let Some(s) = self.sessions.get_mut(&h) else {
            return 0;
        };
        let id = s.new_delegation_id();
        let mut t = kwik_proto::Ticket {
            id,
            session_id: s.id,
            stream: grant.stream.0,
            offset: grant.offset,
            len: grant.len,
            request: grant.request.to_vec(),
            body_offset: grant.body_offset,
            any_path: grant.path.is_none(),
            path_id: grant.path.map_or(0, |p| p.0),
            expiry: unix + s.config.ticket_lifetime.as_secs(),
            budget: match grant.path {
                None => grant.len.saturating_mul(STRIPE_BUDGET_FACTOR),
                Some(_) => grant.len,
            },
            mac: Vec::new(),
        };
        self.ticket_key.sign(&mut t);
        if s.primary.next_refresh.is_none() {
            s.primary.next_refresh = Some(now + refresh_interval(&s.config));
        }
        tracing::debug!(
            ticket = id,
            stream = %grant.stream,
            offset = grant.offset,
            len = grant.len,
            stripe = grant.path.is_none(),
            "ticket issued"
        );
        s.primary.issued.insert(id, Issued { ticket: t.clone() });
        self.send_primary(
            h,
            Kind::Delegate(kwik_proto::Delegate {
                ticket: Some(t),
                refresh: false,
            }),
        );
        id
    }

    /// Primary: re-signs unfinished stripe tickets and live path secrets before they
    /// expire, so that a long stripe completes and a path can rejoin at any age.
    pub(super) fn refresh_credentials(&mut self, now: Instant) {
        let due: Vec<SessionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.role == Role::Primary && s.primary.next_refresh.is_some_and(|t| t <= now)
            })
            .map(|(h, _)| *h)
            .collect();
        let unix = self.unix_secs(now);
        let group = self.server.as_ref().and_then(|s| s.group_key.clone());
        for h in due {
            let Some(s) = self.sessions.get_mut(&h) else {
                continue;
            };
            s.primary.next_refresh = Some(now + refresh_interval(&s.config));
            let ticket_expiry = unix + s.config.ticket_lifetime.as_secs();
            let mut out = Vec::new();
            for issued in s.primary.issued.values_mut().filter(|i| i.is_stripe()) {
                issued.ticket.expiry = ticket_expiry;
                self.ticket_key.sign(&mut issued.ticket);
                out.push(Kind::Delegate(kwik_proto::Delegate {
                    ticket: Some(issued.ticket.clone()),
                    refresh: true,
                }));
            }
            if let Some(group) = &group {
                let expiry = unix + s.config.join_proof_lifetime.as_secs().max(1);
                for (path, m) in s.paths.iter_mut() {
                    if *path == PathId::PRIMARY || m.state == crate::session::PathState::Removed {
                        continue;
                    }
                    m.expiry = expiry;
                    let secret = crate::join::path_secret(group, s.id, path.0, expiry);
                    out.push(Kind::RefreshPath(kwik_proto::RefreshPath {
                        path_id: path.0,
                        expiry,
                        path_secret: secret.to_vec(),
                    }));
                }
            }
            for kind in out {
                self.send_primary(h, kind);
            }
        }
    }

    /// When [`Endpoint::refresh_credentials`] must next run.
    pub(super) fn refresh_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.primary.next_refresh)
            .min()
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
        // Updates for tickets already settled are ignored.
        let Some(issued) = s.primary.issued.remove(&update.id) else {
            return;
        };
        for share in &update.shares {
            if let Some(m) = s.paths.get_mut(&PathId(share.path_id)) {
                m.delivered = m.delivered.saturating_add(share.bytes);
            }
        }
        let t = issued.ticket;
        if t.any_path {
            tracing::debug!(ticket = t.id, "stripe finished");
            self.events.push_back(Event::StripeFinished {
                session: h,
                stripe: StripeId(update.id),
            });
            return;
        }
        let end = t.offset + t.len;
        let failed = update.outcome == WireOutcome::Failed as i32;
        let first_missing = update.first_missing.clamp(t.offset, end);
        if !failed && let Some(m) = s.paths.get_mut(&PathId(t.path_id)) {
            m.delivered = m.delivered.saturating_add(t.len);
        }
        let outcome = if failed && first_missing < end {
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
            // The primary serves the rest itself, under a ticket for its own path.
            let rest = Grant {
                stream: StreamId(t.stream),
                offset: first_missing,
                len: end - first_missing,
                request: Bytes::from(t.request),
                body_offset: t.body_offset + (first_missing - t.offset),
                path: Some(PathId::PRIMARY),
            };
            self.issue(now, h, rest);
        }
    }

    /// Any server: the client pulls a range under a ticket. Served only if the ticket
    /// verifies, names this session (and this path, for a plain delegation), has not
    /// expired, holds the range and has budget left; otherwise refused with a typed
    /// `PullRefused`, and the application never hears of it.
    pub(super) fn on_pull(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
        pull: kwik_proto::Pull,
    ) -> Result<(), ProtocolError> {
        let unix = self.unix_secs(now);
        let Some(s) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        let id = pull.id;
        let verdict = serve_check(&self.ticket_key, &mut self.budgets, s, path, &pull, unix);
        let t = match verdict {
            Ok(t) => t,
            Err(error) => {
                tracing::debug!(%path, pull = id, %error, "pull refused");
                self.stats.pulls_refused += 1;
                self.send_on(
                    h,
                    path,
                    Kind::PullRefused(kwik_proto::PullRefused {
                        id,
                        code: error.to_wire() as i32,
                    }),
                );
                return Ok(());
            }
        };
        let stream = StreamId(t.stream);
        let end = pull.offset + pull.len;
        s.serving
            .outgoing
            .insert(id, Outgoing::new(t.id, stream, pull.offset, end));
        s.serving.incoming.push_back(IncomingDelegation {
            id: DelegationId(id),
            stream,
            offset: pull.offset,
            len: pull.len,
            request: Bytes::from(t.request),
            body_offset: t.body_offset + (pull.offset - t.offset),
        });
        self.events
            .push_back(Event::DelegationReceived { session: h });
        Ok(())
    }

    /// Any server: the application refuses delegation `id` before writing any of it; the
    /// client hears `PullRefused` (`TicketError::Content`) and pulls the range elsewhere.
    pub(super) fn refuse_outgoing(&mut self, h: SessionHandle, id: u64) -> bool {
        let Some(s) = self.sessions.get(&h) else {
            return false;
        };
        let Some(out) = s.serving.outgoing.get(&id) else {
            return false;
        };
        if out.written != out.start {
            return false;
        }
        let (session_id, ticket, unsent, path) =
            (s.id, out.ticket, out.end - out.start, s.serving.writer_path);
        self.budgets.refund(session_id, ticket, unsent);
        self.cancel_outgoing(h, id);
        self.stats.pulls_refused += 1;
        self.send_on(
            h,
            path,
            Kind::PullRefused(kwik_proto::PullRefused {
                id,
                code: TicketError::Content.to_wire() as i32,
            }),
        );
        true
    }

    /// Any server: the client no longer needs pull `id`; what was not sent is refunded.
    pub(super) fn on_pull_cancel(&mut self, h: SessionHandle, id: u64) {
        let Some(s) = self.sessions.get(&h) else {
            return;
        };
        if let Some(out) = s.serving.outgoing.get(&id) {
            let (session_id, ticket, unsent) = (s.id, out.ticket, out.end - out.framed);
            self.budgets.refund(session_id, ticket, unsent);
        }
        self.cancel_outgoing(h, id);
    }

    /// Stops serving delegation `id`: queued bytes are dropped and its carrier abandoned;
    /// later writes to it fail with `ClosedStream`.
    pub(super) fn cancel_outgoing(&mut self, h: SessionHandle, id: u64) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.serving.outgoing.remove(&id);
        s.serving.incoming.retain(|d| d.id.0 != id);
        let writer = s.serving.writer_path;
        if let Some(p) = s.conn_mut(writer) {
            p.cancel_delegated(id);
            self.dirty.insert(p.key);
        }
    }

    /// Writes the delegated ranges of the session when `path` is its writer path.
    pub(super) fn write_delegated(
        &mut self,
        h: SessionHandle,
        path: PathId,
    ) -> Result<(), ProtocolError> {
        let Some(s) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        if s.serving.outgoing.is_empty() || path != s.serving.writer_path {
            return Ok(());
        }
        let Some(p) = s.paths.get_mut(&path).and_then(|r| r.conn.as_mut()) else {
            return Ok(());
        };
        let mut writable = Vec::new();
        p.write_delegated(&mut s.serving.outgoing, &mut writable)?;
        for id in writable {
            self.events.push_back(Event::DelegationWritable {
                session: h,
                delegation: DelegationId(id),
            });
        }
        Ok(())
    }
}

/// How often a primary refreshes tickets and path secrets: half the shorter lifetime.
pub(super) fn refresh_interval(config: &crate::config::Config) -> std::time::Duration {
    config.ticket_lifetime.min(config.join_proof_lifetime) / 2
}

/// Checks one pull against its ticket, this session and path, the server's limits and the
/// ticket's budget (charged on success).
fn serve_check(
    key: &ticket::TicketKey,
    budgets: &mut ticket::Budgets,
    s: &SessionState,
    path: PathId,
    pull: &kwik_proto::Pull,
    unix_now: u64,
) -> Result<kwik_proto::Ticket, TicketError> {
    let t = pull.ticket.as_ref().ok_or(TicketError::BadMac)?;
    let cx = PullContext {
        session_id: s.id,
        path: path.0,
        unix_now,
    };
    ticket::check(key, t, cx, pull.offset, pull.len)?;
    let stream = StreamId(t.stream);
    if !(stream.initiator() == Side::Server || stream.dir() == Dir::Bi) {
        return Err(TicketError::BadStream);
    }
    if s.phase != Phase::Established
        || s.serving.outgoing.len() + s.serving.incoming.len() >= MAX_DELEGATIONS
        || s.serving.outgoing.contains_key(&pull.id)
    {
        return Err(TicketError::Limit);
    }
    budgets.charge(t, pull.len, unix_now)?;
    Ok(t.clone())
}

fn check_can_delegate(s: &SessionState, len: u64) -> Result<(), DelegateError> {
    if s.role != Role::Primary {
        return Err(DelegateError::NotPrimary);
    }
    if let Some(e) = &s.error {
        return Err(DelegateError::SessionLost(e.clone()));
    }
    // No stream offset may pass 2^62 (QUIC's varint limit).
    if len == 0 || len > crate::varint::MAX / 2 || !s.config.aggregation_enabled {
        return Err(DelegateError::Invalid);
    }
    Ok(())
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
        shares: Vec::new(),
    })
}

impl From<SessionError> for DelegateError {
    fn from(e: SessionError) -> Self {
        Self::SessionLost(e)
    }
}
