//! The primary's part of delegation: it issues signed tickets (plain delegations and
//! stripes), keeps them and the path secrets fresh, and hears how each went.

use std::time::Duration;

use bytes::Bytes;
use kwik_proto::DelegationOutcome as WireOutcome;
use kwik_proto::control_frame::Kind;

use super::effects::Cx;
use super::{Mode, PathState, Role, SessionState};
use crate::config::Config;
use crate::delegation::{DelegateError, DelegationOutcome, Issued};
use crate::event::Event;
use crate::ids::{DelegationId, PathId, StreamId, StripeId};
use crate::join::GroupKey;

/// A stripe ticket lets one server send this many times the body, duplicates included.
pub(crate) const STRIPE_BUDGET_FACTOR: u64 = 2;

/// How often a primary refreshes tickets and path secrets: half the shorter lifetime.
pub(crate) fn refresh_interval(config: &Config) -> Duration {
    config.ticket_lifetime.min(config.join_proof_lifetime) / 2
}

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

impl SessionState {
    /// Reserves `len` bytes of `stream` and hands them to `path` under a ticket scoped to
    /// it.
    pub(crate) fn delegate(
        &mut self,
        cx: &mut Cx<'_>,
        stream: StreamId,
        path: PathId,
        request: Bytes,
        len: u64,
    ) -> Result<DelegationId, DelegateError> {
        self.check_can_delegate(len)?;
        if self.mode == Mode::Plain {
            if path != PathId::PRIMARY {
                return Err(DelegateError::PlainSession);
            }
            return self
                .plain_range(cx, stream, request, len, false)
                .map(DelegationId);
        }
        if !self.usable_paths().contains(&path)
            || (path != PathId::PRIMARY && self.is_peer_path(path))
        {
            return Err(DelegateError::PathNotActive(path));
        }
        let offset = self
            .streams
            .reserve(stream, len, false)
            .map_err(|e| match e {
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
        Ok(DelegationId(self.issue(cx, grant)))
    }

    /// Reserves `len` bytes of `stream` and issues one stripe ticket for them: the client
    /// pulls the body from every server of the session.
    pub(crate) fn stripe(
        &mut self,
        cx: &mut Cx<'_>,
        stream: StreamId,
        request: Bytes,
        len: u64,
    ) -> Result<StripeId, DelegateError> {
        self.check_can_delegate(len)?;
        if self.mode == Mode::Plain {
            return self
                .plain_range(cx, stream, request, len, true)
                .map(StripeId);
        }
        if !self.streams.is_sending(stream) {
            return Err(DelegateError::ClosedStream);
        }
        let offset = self
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
        Ok(StripeId(self.issue(cx, grant)))
    }

    fn check_can_delegate(&self, len: u64) -> Result<(), DelegateError> {
        if self.role != Role::Primary {
            return Err(DelegateError::NotPrimary);
        }
        if let Some(e) = &self.error {
            return Err(DelegateError::SessionLost(e.clone()));
        }
        // No stream offset may pass 2^62 (QUIC's varint limit).
        if len == 0 || len > crate::varint::MAX / 2 || !self.config.aggregation_enabled {
            return Err(DelegateError::Invalid);
        }
        Ok(())
    }

    /// Signs a ticket for `grant`, records it and sends it to the client; returns its id.
    fn issue(&mut self, cx: &mut Cx<'_>, grant: Grant) -> u64 {
        let id = self.new_delegation_id();
        let mut t = kwik_proto::Ticket {
            id,
            session_id: self.id,
            stream: grant.stream.0,
            offset: grant.offset,
            len: grant.len,
            request: grant.request.to_vec(),
            body_offset: grant.body_offset,
            any_path: grant.path.is_none(),
            path_id: grant.path.map_or(0, |p| p.0),
            expiry: cx.unix + self.config.ticket_lifetime.as_secs(),
            budget: match grant.path {
                None => grant.len.saturating_mul(STRIPE_BUDGET_FACTOR),
                Some(_) => grant.len,
            },
            mac: Vec::new(),
            key_id: 0,
        };
        cx.tickets.sign(&mut t);
        if self.primary.next_refresh.is_none() {
            self.primary.next_refresh = Some(cx.now + refresh_interval(&self.config));
        }
        tracing::debug!(
            ticket = id,
            stream = %grant.stream,
            offset = grant.offset,
            len = grant.len,
            stripe = grant.path.is_none(),
            "ticket issued"
        );
        self.primary.issued.insert(
            id,
            Issued {
                ticket: t.clone(),
                ends_stream: false,
            },
        );
        self.send_primary(
            cx,
            Kind::Delegate(kwik_proto::Delegate {
                ticket: Some(t),
                refresh: false,
                ends_stream: false,
            }),
        );
        id
    }

    /// Re-signs unfinished stripe tickets and, with the group key, live path secrets
    /// before they expire, so that a long stripe completes and a path can rejoin at any
    /// age. After a key switch (`rekey`), every unsettled ticket is re-signed under the
    /// new key, plain delegations' too.
    pub(crate) fn refresh_credentials(
        &mut self,
        cx: &mut Cx<'_>,
        group: Option<(u32, &GroupKey)>,
        rekey: bool,
    ) {
        self.primary.next_refresh = Some(cx.now + refresh_interval(&self.config));
        let ticket_expiry = cx.unix + self.config.ticket_lifetime.as_secs();
        let mut out = Vec::new();
        for issued in self
            .primary
            .issued
            .values_mut()
            .filter(|i| rekey || i.is_stripe())
        {
            issued.ticket.expiry = ticket_expiry;
            cx.tickets.sign(&mut issued.ticket);
            out.push(Kind::Delegate(kwik_proto::Delegate {
                ticket: Some(issued.ticket.clone()),
                refresh: true,
                ends_stream: issued.ends_stream,
            }));
        }
        if let Some((key_id, group)) = group {
            let expiry = cx.unix + self.config.join_proof_lifetime.as_secs().max(1);
            for (path, m) in self.paths.iter_mut() {
                if *path == PathId::PRIMARY || m.state == PathState::Removed {
                    continue;
                }
                m.expiry = expiry;
                let secret = crate::join::path_secret(group, self.id, path.0, expiry);
                out.push(Kind::RefreshPath(kwik_proto::RefreshPath {
                    path_id: path.0,
                    expiry,
                    path_secret: secret.to_vec(),
                    key_id,
                }));
            }
        }
        for kind in out {
            self.send_primary(cx, kind);
        }
    }

    /// Primary: stream `stream` was finished. If it ends where a range delegated to other
    /// servers ends, the client gets that range's ticket again, saying so (`Delegate`'s
    /// `ends_stream`, beside the unchanged ticket).
    pub(crate) fn mark_stream_end(&mut self, cx: &mut Cx<'_>, stream: StreamId) {
        if self.role != Role::Primary || self.mode != Mode::Kwik {
            return;
        }
        let Some(end) = self.streams.written(stream) else {
            return;
        };
        let Some(issued) = self.primary.issued.values_mut().find(|i| {
            let t = &i.ticket;
            t.stream == stream.0
                && t.offset + t.len == end
                && !i.ends_stream
                && (t.any_path || t.path_id != PathId::PRIMARY.0)
        }) else {
            return;
        };
        issued.ends_stream = true;
        let ticket = issued.ticket.clone();
        tracing::debug!(ticket = ticket.id, %stream, end, "the stream ends with its ticket");
        self.send_primary(
            cx,
            Kind::Delegate(kwik_proto::Delegate {
                ticket: Some(ticket),
                refresh: true,
                ends_stream: true,
            }),
        );
    }

    /// Primary: the client reports how a delegation went.
    pub(crate) fn on_delegation_update(
        &mut self,
        cx: &mut Cx<'_>,
        update: kwik_proto::DelegationUpdate,
    ) {
        // Updates for tickets already settled are ignored.
        let Some(issued) = self.primary.issued.remove(&update.id) else {
            return;
        };
        for share in &update.shares {
            if let Some(m) = self.paths.get_mut(&PathId(share.path_id)) {
                m.delivered = m.delivered.saturating_add(share.bytes);
            }
        }
        let t = issued.ticket;
        if t.any_path {
            tracing::debug!(ticket = t.id, "stripe finished");
            cx.event(Event::StripeFinished {
                session: cx.handle,
                stripe: StripeId(update.id),
            });
            return;
        }
        let end = t.offset + t.len;
        let failed = update.outcome == WireOutcome::Failed as i32;
        let first_missing = update.first_missing.clamp(t.offset, end);
        if !failed && let Some(m) = self.paths.get_mut(&PathId(t.path_id)) {
            m.delivered = m.delivered.saturating_add(t.len);
        }
        let outcome = if failed && first_missing < end {
            DelegationOutcome::Failed { first_missing }
        } else {
            DelegationOutcome::Done
        };
        cx.event(Event::DelegationFinished {
            session: cx.handle,
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
            self.issue(cx, rest);
        }
    }
}
