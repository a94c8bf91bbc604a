//! Delegation on the client: it holds the primary's tickets, pulls plain delegations from
//! their one path and stripes from every server of the session on its own schedule
//! ([`crate::stripe`]), checks every byte a secondary sends against what it pulled there,
//! re-pulls what a failed, stalled or refusing path owes from the others at once, and
//! tells the primary the outcome.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kwik_proto::DelegationOutcome as WireOutcome;
use kwik_proto::control_frame::Kind;

use super::effects::Cx;
use super::{Phase, Role, SessionState};
use crate::delegation::{Held, MAX_DELEGATIONS, Owed};
use crate::error::{ErrorCode, ProtocolError};
use crate::event::Event;
use crate::frame::Frame;
use crate::ids::{PathId, StreamId};
use crate::streams::Streams;
use crate::stripe::{CopyReason, MIN_CHUNK, Stripe};
use crate::ticket::TicketError;

/// Largest chunk a stripe cuts.
const MAX_CHUNK: u64 = 16 << 20;

/// Most pulls one call to [`SessionState::pull_stripes`] makes per stripe.
const MAX_PULLS_PER_ROUND: usize = 256;

fn delegation_error(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Delegation, reason)
}

impl SessionState {
    /// Client: the primary issued (or refreshed) a ticket.
    pub(crate) fn on_delegate(
        &mut self,
        cx: &mut Cx<'_>,
        delegate: kwik_proto::Delegate,
    ) -> Result<(), ProtocolError> {
        let s = self;
        let t = delegate
            .ticket
            .ok_or_else(|| delegation_error("delegation without a ticket"))?;
        let end = t
            .offset
            .checked_add(t.len)
            .filter(|e| *e <= crate::varint::MAX && t.len > 0)
            .ok_or_else(|| delegation_error("bad delegation range"))?;
        if t.session_id != s.id {
            return Err(delegation_error("ticket of another session"));
        }
        if delegate.refresh {
            if let Some(held) = s.client.held.get_mut(&t.id) {
                let h_t = &held.ticket;
                let same = (h_t.stream, h_t.offset, h_t.len, h_t.any_path, h_t.path_id)
                    == (t.stream, t.offset, t.len, t.any_path, t.path_id);
                if !same {
                    return Err(delegation_error("a refreshed ticket changed its range"));
                }
                held.ticket = t;
                held.ends_stream |= delegate.ends_stream;
            }
            return Ok(());
        }
        if s.client.last_ticket.is_some_and(|last| t.id <= last)
            || s.client.held.len() >= MAX_DELEGATIONS
            || s.client.owed.len() >= MAX_DELEGATIONS
        {
            return Err(delegation_error(
                "delegation id reused or too many delegations",
            ));
        }
        s.client.last_ticket = Some(t.id);
        let stream = StreamId(t.stream);
        s.streams.check_delegated(stream, end, t.any_path)?;
        let (id, offset, path) = (t.id, t.offset, PathId(t.path_id));
        if t.any_path {
            s.streams.grant_stripe(t.len);
            let stripe = Stripe::new(
                t.offset,
                t.len,
                s.config.stripe_chunk_time,
                s.config.stripe_depth as usize,
            );
            s.client.held.insert(
                id,
                Held {
                    ticket: t,
                    stripe: Some(Box::new(stripe)),
                    refused: Vec::new(),
                    ends_stream: delegate.ends_stream,
                },
            );
            s.pull_stripes(cx);
            return Ok(());
        }
        s.client.held.insert(
            id,
            Held {
                ticket: t,
                stripe: None,
                refused: Vec::new(),
                ends_stream: delegate.ends_stream,
            },
        );
        let usable = path == PathId::PRIMARY
            || s.paths
                .get(&path)
                .is_some_and(|m| m.state.is_usable() && !m.same_peer && !m.draining);
        let pull = s.client.next_pull;
        s.client.next_pull += 1;
        if !usable || !s.send_pull(cx, path, id, pull, (offset, end), None) {
            s.settle_plain(cx, id, Some(offset), offset);
        }
        Ok(())
    }

    /// Sends pull `pull` of `[start, end)` under ticket `ticket` on `path`, recording what
    /// the path owes and granting its credit; `again` says why the range is pulled a
    /// second time, if it is. Returns whether it went out.
    fn send_pull(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        ticket: u64,
        pull: u64,
        (start, end): (u64, u64),
        again: Option<CopyReason>,
    ) -> bool {
        let s = &mut *self;
        let Some(held) = s.client.held.get(&ticket) else {
            return false;
        };
        let stream = held.stream();
        let message = Kind::Pull(kwik_proto::Pull {
            id: pull,
            ticket: Some(held.ticket.clone()),
            offset: start,
            len: end - start,
        });
        s.streams.grant(stream, end);
        s.client.owed.insert(
            pull,
            Owed {
                path,
                ticket,
                stream,
                start,
                end,
                reported: false,
                reason: again,
                copy: again.is_some(),
            },
        );
        if self.send_on(cx, path, message) {
            return true;
        }
        self.client.owed.remove(&pull);
        false
    }

    /// Reports a plain delegation to the primary (done, or failed from `missing`) and
    /// forgets its ticket.
    fn settle_plain(&mut self, cx: &mut Cx<'_>, ticket: u64, missing: Option<u64>, end: u64) {
        if let Some(held) = self.client.held.remove(&ticket)
            && missing.is_none()
        {
            self.remember_end(&held);
        }
        self.send_primary(cx, update(ticket, missing, missing.unwrap_or(end)));
    }

    /// Makes the pulls every stripe of a client session wants now: fresh chunks up to the
    /// reader's window, requeued ranges of failed paths, copies of the chunk at the start of
    /// a full window and end-game copies. Finished stripes are reported to the primary.
    pub(crate) fn pull_stripes(&mut self, cx: &mut Cx<'_>) {
        self.pull(cx, false);
    }

    /// [`Self::pull_stripes`], first copying the chunk of a path that stalled: run when a
    /// stall deadline passes, after every datagram that arrived by then was taken in.
    pub(crate) fn pull_stalled(&mut self, cx: &mut Cx<'_>) {
        self.pull(cx, true);
    }

    fn pull(&mut self, cx: &mut Cx<'_>, stalls: bool) {
        let now = cx.now;
        let s = &mut *self;
        if s.role != Role::Client
            || s.phase != Phase::Established
            || !s.client.held.values().any(|t| t.stripe.is_some())
        {
            return;
        }
        let lanes = s.lane_facts();
        let draining: Vec<PathId> = lanes
            .iter()
            .map(|l| l.0)
            .filter(|p| s.is_draining_path(*p))
            .collect();
        let window = s.streams.stream_window();
        let depth = u64::from(s.config.stripe_depth);
        let mut pulls = Vec::new();
        let mut finished = Vec::new();
        for (tid, held) in s.client.held.iter_mut() {
            let Some(stripe) = held.stripe.as_mut() else {
                continue;
            };
            let paths: Vec<PathId> = lanes
                .iter()
                .map(|l| l.0)
                .filter(|p| !held.refused.contains(p))
                .collect();
            stripe.set_paths(&paths);
            stripe.set_draining(&draining);
            stripe.set_window(2 * window);
            for &(path, rtt, bytes) in &lanes {
                stripe.set_delay(path, rtt);
                stripe.observe(path, bytes, now);
            }
            let stream = StreamId(held.ticket.stream);
            let assigned = stripe.next_fresh();
            stripe.set_front(
                s.streams
                    .first_missing(stream, stripe.base(), assigned)
                    .unwrap_or(assigned),
            );
            let Some(limit) = s.streams.pull_limit(stream) else {
                // The reader stopped or the stream was reset: nothing more to pull.
                finished.push(*tid);
                continue;
            };
            let max_chunk =
                (window / (2 * depth * paths.len().max(1) as u64)).clamp(MIN_CHUNK, MAX_CHUNK);
            let mut stall = stalls;
            for _ in 0..MAX_PULLS_PER_ROUND {
                // Pulls settled but not yet passed by the reader stay in `owed`: a reader
                // that stops reading stops the pulls at the cap.
                if s.client.owed.len() + pulls.len() >= MAX_DELEGATIONS {
                    break;
                }
                let credit = limit.saturating_sub(stripe.next_fresh());
                let stalled = if std::mem::take(&mut stall) {
                    stripe.plan_stall(now)
                } else {
                    None
                };
                let Some(plan) = stalled.or_else(|| stripe.plan(now, credit, max_chunk)) else {
                    break;
                };
                let id = s.client.next_pull;
                s.client.next_pull += 1;
                stripe.assigned(plan, id, now);
                cx.stats.stripe_chunks += 1;
                cx.stats.stripe_copies += u64::from(plan.twin_of.is_some());
                if plan.reason == Some(CopyReason::EndGame) {
                    s.client.end_game_pulled += plan.end - plan.start;
                }
                pulls.push((*tid, id, plan));
            }
            if stripe.is_complete() {
                finished.push(*tid);
            }
        }
        let mut unsent = Vec::new();
        for (tid, id, plan) in pulls {
            tracing::debug!(
                ticket = tid,
                pull = id,
                path = %plan.path,
                start = plan.start,
                end = plan.end,
                copy_of = plan.twin_of,
                "stripe chunk pulled"
            );
            if !self.send_pull(cx, plan.path, tid, id, (plan.start, plan.end), plan.reason) {
                unsent.push((tid, id, plan.start));
                continue;
            }
            // The original's late bytes count under its copy's reason too.
            if let Some(o) = plan.twin_of.and_then(|t| self.client.owed.get_mut(&t)) {
                o.reason = plan.reason;
            }
        }
        let s = &mut *self;
        let span = s.span.clone();
        for (tid, id, start) in unsent {
            if let Some(stripe) = s.client.held.get_mut(&tid).and_then(|t| t.stripe.as_mut()) {
                tracing::info!(parent: &span, ticket = tid, pull = id, start, "pull not sent: range handed to another path");
                stripe.on_failed(id, start);
                cx.stats.failovers += 1;
            }
        }
        for tid in finished {
            self.finish_stripe(cx, tid);
        }
    }

    /// Each stripe lane's path, round trip and progress (QUIC STREAM frames received):
    /// path 0 and every usable secondary path (same-peer paths carry path 0's bytes and
    /// count with it).
    fn lane_facts(&self) -> Vec<(PathId, Duration, u64)> {
        let s = self;
        let mut primary = (PathId::PRIMARY, Duration::ZERO, 0);
        let mut lanes = Vec::new();
        for path in s.usable_paths() {
            let Some(p) = s.conn(path).filter(|p| !p.closing) else {
                continue;
            };
            // Counted when the path was last driven: no second copy of QUIC's stats.
            let (rtt, bytes) = (p.conn.rtt(), p.stream_frames);
            if path == PathId::PRIMARY {
                primary.1 = rtt;
                primary.2 += bytes;
            } else if s.is_peer_path(path) {
                primary.2 += bytes;
            } else {
                lanes.push((path, rtt, bytes));
            }
        }
        if s.conn(PathId::PRIMARY).is_some() {
            lanes.insert(0, primary);
        }
        lanes
    }

    /// A stripe is complete (or no longer wanted): the primary hears who delivered what,
    /// and every pull still out is cancelled.
    fn finish_stripe(&mut self, cx: &mut Cx<'_>, tid: u64) {
        let s = &mut *self;
        let Some(held) = s.client.held.remove(&tid) else {
            return;
        };
        s.remember_end(&held);
        let shares = held
            .stripe
            .as_ref()
            .map(|st| {
                st.delivered()
                    .map(|(p, bytes)| kwik_proto::PathShare {
                        path_id: p.0,
                        bytes,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut cancels = Vec::new();
        for (id, o) in s.client.owed.iter_mut() {
            if o.ticket == tid && !o.reported {
                o.reported = true;
                cancels.push((o.path, *id));
            }
        }
        tracing::debug!(ticket = tid, "stripe complete");
        for (path, id) in cancels {
            self.send_on(cx, path, Kind::PullCancel(kwik_proto::PullCancel { id }));
        }
        let end = held.ticket.offset + held.ticket.len;
        let Kind::DelegationUpdate(mut report) = update(tid, None, end) else {
            return;
        };
        report.shares = shares;
        self.send_primary(cx, Kind::DelegationUpdate(report));
    }

    /// Settles pulls whose bytes all arrived (from their path or from a copy), forgets
    /// those the reader passed, and makes the pulls the stripes want now (the reader may
    /// have opened its window).
    pub(crate) fn settle_pulls(&mut self, cx: &mut Cx<'_>) {
        self.check_owed(cx);
        self.pull_stripes(cx);
        if self.paths.values().any(|m| m.draining) {
            self.close_drained_paths(cx);
        }
        self.check_lost(cx);
    }

    /// Settles pulls whose bytes all arrived (from their path or from a copy), and
    /// forgets those the reader passed.
    pub(crate) fn check_owed(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        let s = &mut *self;
        if s.client.owed.is_empty() {
            return;
        }
        let mut done = Vec::new();
        let streams = &s.streams;
        let forgotten = &mut s.client.forgotten;
        s.client.owed.retain(|id, o| {
            if !o.reported && streams.first_missing(o.stream, o.start, o.end).is_none() {
                o.reported = true;
                done.push((*id, o.ticket, o.end, o.path));
            }
            let keep = !(o.reported && streams.read_offset(o.stream).is_none_or(|r| r >= o.end));
            if !keep {
                forget(forgotten, o);
            }
            keep
        });
        let mut cancels = Vec::new();
        let mut plain = Vec::new();
        for (id, tid, end, path) in done {
            let Some(held) = s.client.held.get_mut(&tid) else {
                continue;
            };
            let Some(stripe) = held.stripe.as_mut() else {
                plain.push((tid, end));
                continue;
            };
            // Its path may still be sending what the other half of the split delivered.
            if stripe.is_split(id) {
                cancels.push((path, id));
            }
            // The other copy of this chunk lost: its server may stop.
            if let Some(twin) = stripe.on_done(id, now)
                && let Some(o) = s.client.owed.get_mut(&twin)
                && !o.reported
            {
                o.reported = true;
                cancels.push((o.path, twin));
            }
        }
        for (path, id) in cancels {
            self.send_on(cx, path, Kind::PullCancel(kwik_proto::PullCancel { id }));
        }
        for (tid, end) in plain {
            self.settle_plain(cx, tid, None, end);
        }
    }

    /// A path failed: a stripe re-pulls what it owed from the other paths at once; a
    /// plain delegation is reported to the primary, which serves the rest itself.
    pub(crate) fn fail_delegations(&mut self, cx: &mut Cx<'_>, path: PathId) {
        let s = &mut *self;
        let mut failed = Vec::new();
        let streams = &s.streams;
        let forgotten = &mut s.client.forgotten;
        s.client.owed.retain(|id, o| {
            if o.path != path {
                return true;
            }
            if !o.reported {
                let missing = streams.first_missing(o.stream, o.start, o.end);
                failed.push((*id, o.ticket, missing, o.end));
            }
            forget(forgotten, o);
            false
        });
        self.requeue_or_settle(cx, failed);
    }

    fn requeue_or_settle(&mut self, cx: &mut Cx<'_>, failed: Vec<(u64, u64, Option<u64>, u64)>) {
        let now = cx.now;
        let s = &mut *self;
        let span = s.span.clone();
        let mut plain = Vec::new();
        for (id, tid, missing, end) in failed {
            match s.client.held.get_mut(&tid).map(|t| t.stripe.as_mut()) {
                Some(Some(stripe)) => match missing {
                    Some(first) => {
                        tracing::info!(
                            parent: &span,
                            ticket = tid,
                            pull = id,
                            first_missing = first,
                            "failover: the rest of a stripe chunk goes to another path"
                        );
                        stripe.on_failed(id, first);
                        cx.stats.failovers += 1;
                    }
                    None => {
                        stripe.on_done(id, now);
                    }
                },
                Some(None) => plain.push((tid, missing, end)),
                None => {}
            }
        }
        for (tid, missing, end) in plain {
            if let Some(first) = missing {
                tracing::info!(
                    parent: &span,
                    ticket = tid,
                    first_missing = first,
                    end,
                    "failover: the rest of a delegation goes back to the primary"
                );
            }
            cx.stats.failovers += u64::from(missing.is_some());
            self.settle_plain(cx, tid, missing, end);
        }
        self.pull_stripes(cx);
    }

    /// A server refused a pull: the client's application hears why, and the range goes
    /// elsewhere (the refusing path gets no more pulls under that ticket).
    pub(crate) fn on_pull_refused(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        refused: kwik_proto::PullRefused,
    ) {
        let s = &mut *self;
        let Some(o) = s
            .client
            .owed
            .get(&refused.id)
            .filter(|o| o.path == path && !o.reported)
            .cloned()
        else {
            return;
        };
        s.client.owed.remove(&refused.id);
        let error = TicketError::from_wire(refused.code);
        tracing::debug!(%path, pull = refused.id, %error, "pull refused");
        // A draining server still serves what it accepted before: only its new pulls are
        // refused, and it gets none once its notice is in.
        if let Some(held) = s.client.held.get_mut(&o.ticket)
            && error != TicketError::Draining
            && !held.refused.contains(&path)
        {
            held.refused.push(path);
        }
        let missing = s.streams.first_missing(o.stream, o.start, o.end);
        cx.event(Event::PullRefused {
            session: cx.handle,
            path,
            error,
        });
        self.requeue_or_settle(cx, vec![(refused.id, o.ticket, missing, o.end)]);
        self.close_drained_paths(cx);
    }

    /// Client: `bytes` of a frame on `path` at `offset` of stream `id` had arrived before:
    /// they count under the reason of the pull they came by.
    pub(crate) fn count_twice(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        id: StreamId,
        offset: u64,
        bytes: u64,
    ) {
        let client = &self.client;
        let pull = client
            .owed
            .values()
            .chain(client.forgotten.iter().rev())
            .find(|o| o.path == path && o.stream == id && o.start <= offset && offset < o.end);
        let reason = pull.and_then(|o| o.reason);
        if pull.is_some_and(|o| o.copy && o.reason == Some(CopyReason::EndGame)) {
            self.client.end_game_lost += bytes;
        }
        self.client.copy_bytes.add(reason, bytes);
        cx.stats.stripe_copy_bytes.add(reason, bytes);
    }

    /// When a stripe of this client session may find a stalled path.
    pub(crate) fn stripe_deadline(&self) -> Option<Instant> {
        if self.role != Role::Client || self.phase != Phase::Established {
            return None;
        }
        self.client
            .held
            .values()
            .filter_map(|t| t.stripe.as_ref()?.next_deadline())
            .min()
    }
}

/// Remembers pull `o`, which the client no longer owes anything for, among the last
/// [`FORGOTTEN_PULLS`].
fn forget(forgotten: &mut std::collections::VecDeque<Owed>, o: &Owed) {
    if forgotten.len() == super::FORGOTTEN_PULLS {
        forgotten.pop_front();
    }
    forgotten.push_back(o.clone());
}

/// A client's report on a delegation: done, or failed from `missing`.
pub(crate) fn update(id: u64, missing: Option<u64>, first_missing: u64) -> Kind {
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

/// Checks a frame that arrived on a client's secondary path against what the client
/// asked of it (`owed`) and what its reader has: only stream bytes inside ranges pulled
/// from that path (or bytes the reader already passed) are accepted.
pub(crate) fn check_secondary_frame(
    owed: &BTreeMap<u64, Owed>,
    streams: &Streams,
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
        return Err(delegation_error(
            "a secondary sent a frame other than STREAM",
        ));
    };
    let end = offset + data.len() as u64;
    let owed = owed
        .values()
        .any(|o| o.path == path && o.stream == *id && o.start <= *offset && end <= o.end);
    if owed && !fin {
        return Ok(());
    }
    if !fin && (streams.read_offset(*id).is_some_and(|r| end <= r) || streams.recv_finished(*id)) {
        return Ok(());
    }
    Err(delegation_error(format!(
        "{path} sent bytes of {id} it was not asked for"
    )))
}
