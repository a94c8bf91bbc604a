//! A client whose primary is lost while other servers still owe it a body.
//!
//! When the primary's connection is lost (silence past the health window, a stateless
//! reset, a transport error: its endpoint is gone) while the client holds tickets with
//! work left on live secondaries, the session does not end at once. It enters a phase of
//! its own, *primary lost*, with the primary's error pending:
//! - the stripes and plain delegations owed by secondaries go on under the tickets the
//!   client holds (the primary's own share is pulled from the secondaries; nothing can be
//!   refreshed any more, so the tickets' expiry bounds the phase);
//! - a stream whose ticket said it ends with its range (the refreshed copy a primary sends
//!   when the stream is finished right after the range) ends normally once every byte of
//!   it, from offset 0, arrived;
//! - other streams stay open and idle, new streams cannot be opened (the primary's error),
//!   and path 0 is reported failed;
//! - once nothing is owed and every stream ended this way was read to its end, or when the
//!   first ticket expires, or when no secondary is left, the session closes with the
//!   primary's error.
//!
//! An application close by the primary (or a KWIK protocol error) still ends the session
//! at once, as does the loss of a primary that owed nothing through other servers.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::effects::Cx;
use super::{PathState, Phase, Role, SessionState};
use crate::error::{PathError, SessionError};
use crate::event::Event;
use crate::frame::Frame;
use crate::ids::{PathId, StreamId};

/// Most stream ends a client remembers from its tickets.
const MAX_ENDS: usize = crate::delegation::MAX_DELEGATIONS;

/// The phase of a client session whose primary is lost.
#[derive(Debug, Clone)]
pub(crate) struct Lost {
    /// What ends the session when the phase does.
    pub(crate) error: SessionError,
    /// The first expiry of the tickets held when the primary was lost.
    pub(crate) until: Instant,
}

impl SessionState {
    /// Client: whether the loss of the primary's connection with `error` leaves the
    /// session alive on its secondaries (see the module's description). Lets go of the
    /// primary's connection and hands its ranges to the secondaries when it does.
    pub(crate) fn primary_lost(&mut self, cx: &mut Cx<'_>, error: &SessionError) -> bool {
        let gone = matches!(
            error,
            SessionError::PathUnresponsive { .. }
                | SessionError::TimedOut
                | SessionError::Reset
                | SessionError::Transport(_)
        );
        let secondaries = self
            .paths
            .iter()
            .any(|(path, m)| *path != PathId::PRIMARY && !m.same_peer && m.state.is_usable());
        let same_peer = self.paths.values().any(|m| m.same_peer);
        if self.role != Role::Client
            || self.phase != Phase::Established
            || self.client.lost.is_some()
            || !gone
            || !secondaries
            || same_peer
            || self.client.held.is_empty()
        {
            return false;
        }
        // A stripe needs new pulls under its ticket until it is done: the first to expire
        // ends the phase. A plain delegation's one pull was accepted already, and a server
        // serves an accepted pull past its ticket's expiry: a ticket lifetime bounds it.
        let left = self
            .client
            .held
            .values()
            .filter(|h| h.stripe.is_some())
            .map(|h| h.ticket.expiry.saturating_sub(cx.unix))
            .min()
            .map_or(self.config.ticket_lifetime, Duration::from_secs);
        let until = cx.now + left;
        tracing::warn!(
            parent: &self.span,
            %error,
            ends_in_s = left.as_secs(),
            "primary lost: the secondaries finish what they owe"
        );
        self.client.lost = Some(Lost {
            error: error.clone(),
            until,
        });
        self.set_state(PathId::PRIMARY, PathState::Failed);
        self.let_go(cx, PathId::PRIMARY, Bytes::from_static(b"primary lost"));
        // What the primary owed itself: a stripe's share goes to the secondaries, a plain
        // delegation of its own is reported (to nobody) and stays missing.
        self.fail_delegations(cx, PathId::PRIMARY);
        cx.event(Event::PathFailed {
            session: cx.handle,
            path: PathId::PRIMARY,
            error: PathError::Connection(error.clone()),
        });
        self.check_lost(cx);
        true
    }

    /// Client: remembers that ticket `held`'s stream ends with its range (the primary said
    /// so), once the ticket is settled, for a lost primary's streams.
    pub(crate) fn remember_end(&mut self, held: &crate::delegation::Held) {
        if !held.ends_stream {
            return;
        }
        let t = &held.ticket;
        let ends = &mut self.client.ends;
        if ends.len() == MAX_ENDS {
            ends.pop_front();
        }
        ends.push_back((StreamId(t.stream), t.offset + t.len));
    }

    /// Client, primary lost: ends the streams whose every byte arrived, and closes the
    /// session once nothing more can come or the first ticket expired.
    pub(crate) fn check_lost(&mut self, cx: &mut Cx<'_>) {
        let Some(lost) = self.client.lost.clone() else {
            return;
        };
        if self.phase != Phase::Established {
            return;
        }
        let ends: Vec<(StreamId, u64)> = self.client.ends.iter().copied().collect();
        for (stream, end) in ends {
            // Only a stream still being received, whose every byte up to its end arrived.
            if self.client.fins.contains(&(stream, end))
                || self.streams.read_offset(stream).is_none()
                || self.streams.recv_finished(stream)
                || self.streams.first_missing(stream, 0, end).is_some()
            {
                continue;
            }
            let fin = Frame::Stream {
                id: stream,
                offset: end,
                fin: true,
                data: Bytes::new(),
            };
            match self.streams.on_frame(fin) {
                Ok(()) => {
                    tracing::info!(parent: &self.span, %stream, end, "stream ended by its ticket");
                    self.client.fins.push((stream, end));
                }
                Err(e) => tracing::debug!(%stream, %e, "ticket's stream end not applied"),
            }
        }
        while let Some(event) = self.streams.poll_event() {
            cx.event(crate::event::stream_event(cx.handle, event));
        }
        let streams = &self.streams;
        let unread = self
            .client
            .fins
            .iter()
            .any(|(s, end)| streams.read_offset(*s).is_some_and(|r| r < *end));
        let secondaries = self
            .paths
            .iter()
            .any(|(path, m)| *path != PathId::PRIMARY && !m.same_peer && m.state.is_usable());
        let owed = !self.client.held.is_empty() && secondaries;
        if cx.now < lost.until && (owed || unread) {
            return;
        }
        tracing::info!(
            parent: &self.span,
            expired = cx.now >= lost.until,
            "primary lost: the session ends"
        );
        self.close(cx, lost.error);
        self.close_conns(cx, b"primary lost");
    }

    /// Client: the primary's error, while the session lives on without it.
    pub(crate) fn lost_error(&self) -> Option<SessionError> {
        self.client.lost.as_ref().map(|l| l.error.clone())
    }
}
