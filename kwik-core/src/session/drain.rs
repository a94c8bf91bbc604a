//! Draining: a server taken out of service without a stall.
//!
//! The server ([`crate::Endpoint::drain`]) tells the client of each session it serves
//! (`Drain`), serves what it accepted before, and refuses what comes after: a secondary
//! refuses new pulls (`TicketError::Draining`), a primary resets the streams the client
//! opens after the notice and takes no new ones of its own, while its stripes and
//! delegations in flight complete. A primary's session closes with the `Drained` code once
//! it writes no open stream and owes no pull or delegation; the deadline closes the rest.
//!
//! The client stops pulling from a draining secondary at once (its ranges not yet pulled go
//! to the other servers, and a pull the server refused is pulled elsewhere: neither is a
//! copy, the draining server never sent those bytes), and once the pulls that server owes
//! are in, closes its path with the `Drained` code and reports it removed to the primary.

use std::time::Instant;

use kwik_proto::control_frame::Kind;

use super::effects::{Cx, Effect};
use super::{Mode, PathState, Phase, Role, SessionState};
use crate::error::{ErrorCode, ProtocolError, SessionError};
use crate::event::Event;
use crate::ids::PathId;

/// Why a connection a drain ended was closed.
pub(crate) fn drained_error(reason: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::Drained, reason)
}

impl SessionState {
    /// Server: begins draining this session, until `deadline`. The client hears of it on
    /// every path this side holds; a primary refuses the streams it opens from now on.
    pub(crate) fn start_drain(&mut self, cx: &mut Cx<'_>, deadline: Instant) {
        if self.role == Role::Client || self.draining.is_some() || self.phase == Phase::Closed {
            return;
        }
        self.draining = Some(deadline);
        tracing::info!(parent: &self.span, "draining");
        if self.mode == Mode::Kwik {
            if self.role == Role::Primary {
                self.streams.refuse_new_remote();
            }
            let deadline_ms = deadline.saturating_duration_since(cx.now).as_millis() as u64;
            let paths: Vec<PathId> = self.conns().map(|p| p.id).collect();
            for path in paths {
                self.send_on(cx, path, Kind::Drain(kwik_proto::Drain { deadline_ms }));
            }
        }
        self.check_drained(cx);
    }

    /// Server: whether the session is being drained.
    pub(crate) fn is_draining(&self) -> bool {
        self.role != Role::Client && self.draining.is_some()
    }

    /// Server: a draining primary's session whose work is done closes with the `Drained`
    /// code: it writes no open stream (no stream of its own with bytes unacknowledged, no
    /// answer to a client's stream unfinished; see `Streams::writes_open_stream`), serves
    /// no pull and has no stripe or delegation unsettled. A secondary's session
    /// ends when the client closes its path (once the pulls it owes are in), a plain
    /// session when the application closes it (HTTP/3 after its GOAWAY); the deadline
    /// ends what is left.
    pub(crate) fn check_drained(&mut self, cx: &mut Cx<'_>) {
        if !self.is_draining() || self.phase == Phase::Closed {
            return;
        }
        let done = self.role == Role::Primary
            && self.mode == Mode::Kwik
            && !self.streams.writes_open_stream()
            && self.serving.outgoing.is_empty()
            && self.serving.incoming.is_empty()
            && self.primary.issued.is_empty();
        if done {
            cx.stats.sessions_drained += 1;
            self.end_drained(cx, "drained");
        }
    }

    /// Server: the drain's deadline passed with the session's work not done.
    pub(crate) fn drain_deadline(&mut self, cx: &mut Cx<'_>) {
        if self.phase == Phase::Closed {
            return;
        }
        cx.stats.drain_deadline_closes += 1;
        self.end_drained(cx, "drain deadline");
    }

    /// Closes every connection of the session with the `Drained` code.
    fn end_drained(&mut self, cx: &mut Cx<'_>, reason: &str) {
        tracing::info!(parent: &self.span, reason, "drained");
        self.close(cx, SessionError::LocallyClosed);
        let error = drained_error(reason);
        let now = cx.now;
        for p in self.conns_mut() {
            if !p.closing {
                p.close_with(now, &error);
                cx.drive(p.key);
            }
        }
    }

    /// Client: the server on `path` announced its drain.
    pub(crate) fn on_drain_notice(&mut self, cx: &mut Cx<'_>, path: PathId) {
        let Some(m) = self.paths.get_mut(&path) else {
            return;
        };
        if m.draining {
            return;
        }
        m.draining = true;
        cx.stats.drain_notices += 1;
        tracing::info!(parent: &self.span, %path, "server draining");
        cx.event(Event::PathDraining {
            session: cx.handle,
            path,
        });
        if path == PathId::PRIMARY || self.is_peer_path(path) {
            // The primary itself: what is in flight completes; nothing new starts.
            self.draining.get_or_insert(cx.now);
            return;
        }
        self.pull_stripes(cx);
        self.close_drained_paths(cx);
    }

    /// Client: whether `path` leads to a draining secondary.
    pub(crate) fn is_draining_path(&self, path: PathId) -> bool {
        path != PathId::PRIMARY && self.paths.get(&path).is_some_and(|m| m.draining)
    }

    /// Client: closes, with the `Drained` code, the paths of draining secondaries that owe
    /// no pull any more, and reports each removed to the primary.
    pub(crate) fn close_drained_paths(&mut self, cx: &mut Cx<'_>) {
        if self.role != Role::Client || self.phase != Phase::Established {
            return;
        }
        let draining: Vec<PathId> = self
            .paths
            .iter()
            .filter(|(path, m)| {
                m.draining && m.state.is_usable() && !m.same_peer && **path != PathId::PRIMARY
            })
            .map(|(path, _)| *path)
            .collect();
        if draining.is_empty() {
            return;
        }
        let owing: std::collections::BTreeSet<PathId> = self
            .client
            .owed
            .values()
            .filter(|o| !o.reported)
            .map(|o| o.path)
            .collect();
        let done: Vec<PathId> = draining
            .into_iter()
            .filter(|p| !owing.contains(p))
            .collect();
        for path in done {
            tracing::info!(parent: &self.span, %path, "drained path closed");
            cx.stats.paths_drained += 1;
            self.report_status(cx, path, PathState::Removed, "draining");
            self.set_state(path, PathState::Removed);
            // Pulls settled but not yet passed by the reader: nothing more comes on it.
            self.fail_delegations(cx, path);
            if let Some(mut p) = self.paths.get_mut(&path).and_then(|m| m.conn.take()) {
                if !p.closing {
                    p.close_with(cx.now, &drained_error("drained"));
                }
                cx.drive(p.key);
                cx.effects.push(Effect::LetGo(p));
            }
            self.purge_removed();
            self.path_event(cx, path, PathState::Removed, "");
        }
    }
}
