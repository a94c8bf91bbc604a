//! Any server's part of delegation: it serves the pulls a client makes under the
//! primary's tickets, after checking the ticket, and writes the ranges it accepted.

use bytes::Bytes;
use kwik_proto::control_frame::Kind;
use quinn_proto::{Dir, Side};

use super::effects::Cx;
use super::{Phase, SessionState};
use crate::delegation::{IncomingDelegation, MAX_DELEGATIONS, Outgoing};
use crate::error::ProtocolError;
use crate::event::Event;
use crate::ids::{DelegationId, PathId, StreamId};
use crate::ticket::{self, PullContext, TicketError};

impl SessionState {
    /// Any server: the client pulls a range under a ticket. Served only if the ticket
    /// verifies, names this session (and this path, for a plain delegation), has not
    /// expired, holds the range and has budget left; otherwise refused with a typed
    /// `PullRefused`, and the application never hears of it.
    pub(crate) fn on_pull(&mut self, cx: &mut Cx<'_>, path: PathId, pull: kwik_proto::Pull) {
        let id = pull.id;
        let t = match self.serve_check(cx, path, &pull) {
            Ok(t) => t,
            Err(error) => {
                tracing::debug!(%path, pull = id, %error, "pull refused");
                self.refuse_pull(cx, path, id, error);
                return;
            }
        };
        let stream = StreamId(t.stream);
        let end = pull.offset + pull.len;
        self.serving
            .outgoing
            .insert(id, Outgoing::new(t.id, stream, pull.offset, end));
        self.serving.incoming.push_back(IncomingDelegation {
            id: DelegationId(id),
            stream,
            offset: pull.offset,
            len: pull.len,
            request: Bytes::from(t.request),
            body_offset: t.body_offset + (pull.offset - t.offset),
        });
        cx.event(Event::DelegationReceived { session: cx.handle });
    }

    /// Checks one pull against its ticket, this session and path, the server's limits
    /// and the ticket's budget (charged on success).
    fn serve_check(
        &self,
        cx: &mut Cx<'_>,
        path: PathId,
        pull: &kwik_proto::Pull,
    ) -> Result<kwik_proto::Ticket, TicketError> {
        if self.role == super::Role::Secondary && self.is_draining() {
            // The pulls accepted before the drain are served; none after it.
            return Err(TicketError::Draining);
        }
        let t = pull.ticket.as_ref().ok_or(TicketError::BadMac)?;
        let context = PullContext {
            session_id: self.id,
            path: path.0,
            unix_now: cx.unix,
        };
        ticket::check(cx.tickets, t, context, pull.offset, pull.len)?;
        let stream = StreamId(t.stream);
        if !(stream.initiator() == Side::Server || stream.dir() == Dir::Bi) {
            return Err(TicketError::BadStream);
        }
        if self.phase != Phase::Established
            || self.serving.outgoing.len() + self.serving.incoming.len() >= MAX_DELEGATIONS
            || self.serving.outgoing.contains_key(&pull.id)
        {
            return Err(TicketError::Limit);
        }
        cx.budgets.charge(t, pull.len, cx.unix)?;
        Ok(t.clone())
    }

    /// Any server: the application refuses delegation `id` before writing any of it; the
    /// client hears `PullRefused` (`TicketError::Content`) and pulls the range elsewhere.
    pub(crate) fn refuse_outgoing(&mut self, cx: &mut Cx<'_>, id: u64) -> bool {
        let Some(out) = self.serving.outgoing.get(&id) else {
            return false;
        };
        if out.written != out.start {
            return false;
        }
        if self.mode == super::Mode::Plain {
            let stream = out.stream;
            self.plain_refuse(cx, stream);
            return true;
        }
        let (ticket, unsent, path) = (out.ticket, out.end - out.start, self.serving.writer_path);
        cx.budgets.refund(self.id, ticket, unsent);
        self.cancel_outgoing(cx, id);
        self.refuse_pull(cx, path, id, TicketError::Content);
        true
    }

    /// Tells the client on `path` that pull `id` is refused, and why.
    fn refuse_pull(&mut self, cx: &mut Cx<'_>, path: PathId, id: u64, error: TicketError) {
        cx.stats.pulls_refused += 1;
        self.send_on(
            cx,
            path,
            Kind::PullRefused(kwik_proto::PullRefused {
                id,
                code: error.to_wire() as i32,
            }),
        );
    }

    /// Any server: the client no longer needs pull `id`; what was not sent is refunded.
    pub(crate) fn on_pull_cancel(&mut self, cx: &mut Cx<'_>, id: u64) {
        if let Some(out) = self.serving.outgoing.get(&id) {
            let (ticket, unsent) = (out.ticket, out.end - out.framed);
            cx.budgets.refund(self.id, ticket, unsent);
        }
        self.cancel_outgoing(cx, id);
    }

    /// Stops serving delegation `id`: queued bytes are dropped and its carrier abandoned;
    /// later writes to it fail with `ClosedStream`.
    fn cancel_outgoing(&mut self, cx: &mut Cx<'_>, id: u64) {
        self.serving.outgoing.remove(&id);
        self.serving.incoming.retain(|d| d.id.0 != id);
        let writer = self.serving.writer_path;
        if let Some(p) = self.conn_mut(writer) {
            p.cancel_delegated(id);
            cx.drive(p.key);
        }
    }

    /// Writes the delegated ranges of the session when `path` is its writer path.
    pub(crate) fn write_delegated(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
    ) -> Result<(), ProtocolError> {
        if self.serving.outgoing.is_empty() || path != self.serving.writer_path {
            return Ok(());
        }
        let Some(p) = self.paths.get_mut(&path).and_then(|r| r.conn.as_mut()) else {
            return Ok(());
        };
        let mut writable = Vec::new();
        p.write_delegated(&mut self.serving.outgoing, &mut writable)?;
        for id in writable {
            cx.event(Event::DelegationWritable {
                session: cx.handle,
                delegation: DelegationId(id),
            });
        }
        Ok(())
    }
}
