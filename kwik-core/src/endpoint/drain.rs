//! Taking a server out of service without a stall: [`Endpoint::drain`].

use std::time::Instant;

use super::Endpoint;
use crate::event::Event;
use crate::ids::SessionHandle;
use crate::session::Role;

/// A drain under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    /// When whatever is left is closed.
    pub(super) deadline: Instant,
    /// [`Event::Drained`] was handed out.
    pub(super) done: bool,
}

impl Endpoint {
    /// Takes this server out of service gracefully, by `deadline`.
    ///
    /// From now on it takes no new session or join: a connection is closed with the
    /// `Draining` code when its `Hello` or `Join` arrives (a typed refusal: the client's
    /// session ends with it, a joining path is removed rather than retried). The client of every session it serves hears of the drain (a `Drain` control
    /// message; [`Event::PathDraining`] on its side):
    /// - as a secondary, it serves the pulls it accepted before and refuses later ones
    ///   ([`TicketError::Draining`](crate::TicketError::Draining)); the client pulls those
    ///   ranges elsewhere at once and closes the path with the `Drained` code once the
    ///   pulls it owes are in;
    /// - as a primary, it resets the streams the client opens from now on (those it opened
    ///   while the notice was on its way included) with the `Draining` code, grants no
    ///   further stream credit and opens no stream of its own
    ///   ([`Session::open`](crate::Session::open) returns `None`,
    ///   [`Session::is_draining`](crate::Session::is_draining) says why), while its stripes
    ///   and delegations in flight complete; the session closes with
    ///   the `Drained` code once it writes no open stream (every answer to a client's
    ///   stream finished and acknowledged, or reset; no stream of its own with bytes
    ///   unacknowledged) and owes no pull or delegation;
    /// - a plain session (a peer that does not speak KWIK) is left to the application
    ///   (HTTP/3 sends GOAWAY and closes once its requests are done).
    ///
    /// At `deadline`, every session still served is closed with the `Drained` code.
    /// [`Event::Drained`] follows once the last session this server served is gone. Sessions
    /// this endpoint dialed are not affected. A second call can only bring the deadline
    /// forward.
    pub fn drain(&mut self, now: Instant, deadline: Instant) {
        let deadline = match self.drain {
            Some(d) => d.deadline.min(deadline),
            None => deadline,
        };
        tracing::info!(
            in_ms = deadline.saturating_duration_since(now).as_millis() as u64,
            "draining"
        );
        self.drain = Some(Drain {
            deadline,
            done: self.drain.is_some_and(|d| d.done),
        });
        let served: Vec<SessionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.role != Role::Client)
            .map(|(h, _)| *h)
            .collect();
        for h in served {
            self.with_session(now, h, |s, cx| {
                if s.draining.is_some_and(|d| d > deadline) {
                    s.draining = Some(deadline);
                }
                s.start_drain(cx, deadline);
            });
        }
        self.check_drain_complete();
        self.last_now = Some(now);
    }

    /// Whether [`Endpoint::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.drain.is_some()
    }

    /// Closes served session `h` if its drain deadline passed.
    pub(super) fn drain_deadline(&mut self, now: Instant, h: SessionHandle) {
        let due = self.sessions.get(&h).is_some_and(|s| {
            s.is_draining() && s.error.is_none() && s.draining.is_some_and(|t| t <= now)
        });
        if due {
            self.with_session(now, h, |s, cx| s.drain_deadline(cx));
        }
    }

    /// A draining session's work may be done.
    pub(super) fn check_session_drained(&mut self, now: Instant, h: SessionHandle) {
        if self.sessions.get(&h).is_some_and(|s| s.is_draining()) {
            self.with_session(now, h, |s, cx| s.check_drained(cx));
        }
    }

    /// Hands out [`Event::Drained`] once no served session is left.
    pub(super) fn check_drain_complete(&mut self) {
        let Some(d) = &mut self.drain else {
            return;
        };
        if d.done || self.sessions.values().any(|s| s.role != Role::Client) {
            return;
        }
        d.done = true;
        tracing::info!("drained");
        self.events.push_back(Event::Drained);
    }
}
