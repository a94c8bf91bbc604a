//! Driving the connections marked with work: each goes to the session that holds it
//! (`session/drive.rs`); a connection no session holds is set up (a server's first
//! `Hello` or `Join`) or left to close here. Also the end of a connection, and the
//! datagrams connections send.

use std::time::Instant;

use kwik_proto::control_frame::Kind;

use super::{Endpoint, Route, stats};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::event::{Event, Transmit};
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::path::{Path, Polled};
use crate::session::{Cause, Effect, Flow, Schedule};

impl Endpoint {
    /// Drives every path that has work: QUIC events, reads, writes, endpoint events.
    /// Every output asks, and mostly nothing has: that answer costs no call.
    #[inline(always)]
    pub(super) fn flush(&mut self, now: Instant) {
        if !self.dirty.is_empty() || !self.written.is_empty() {
            self.flush_dirty(now);
        }
    }

    // Out of line: the drive it holds would make every caller save registers for it.
    #[inline(never)]
    fn flush_dirty(&mut self, now: Instant) {
        loop {
            if let Some(key) = self.dirty.pop_first() {
                self.written.remove(key);
                self.drive(now, key, Cause::Any);
            } else if let Some(key) = self.written.pop_first() {
                self.drive(now, key, Cause::Written);
            } else {
                return;
            }
        }
    }

    fn drive(&mut self, now: Instant, key: ConnKey, cause: Cause) {
        let route = self.routes.get(key);
        let Some((quic, p)) = self.conn_and_quic(key) else {
            return;
        };
        // A span no subscriber records is not entered (nor cloned, which costs as much).
        let span = (!p.span.is_disabled()).then(|| p.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let driven = match (cause, route) {
            // Nothing arrived: nothing is polled or read, the data moves.
            (Cause::Written, Some(Route::Path(h, path))) => self
                .with_session(now, h, |s, cx| s.drive_written(cx, path))
                .unwrap_or(Ok(())),
            _ => {
                endpoint_events(quic, p);
                self.drive_path(now, key)
            }
        };
        // Its timers may have moved, and it may have datagrams to send (under the route it
        // has now: a message may have moved it into a session). A session's connection that
        // stayed where it was has been touched with its session.
        let touched = driven.is_ok()
            && matches!(route, Some(Route::Path(..)))
            && self.routes.get(key) == route;
        if let Err(error) = driven {
            self.violation(now, key, error);
        }
        if !touched {
            self.touch_conn(key);
        }
        let Some((quic, p)) = self.conn_and_quic(key) else {
            return;
        };
        endpoint_events(quic, p);
        p.note_use(now);
        if p.conn.is_drained() {
            self.drained(now, key);
        }
    }

    /// Connection `key` is drained: it goes, and what it carried stays in its path's
    /// figures.
    #[cold]
    fn drained(&mut self, now: Instant, key: ConnKey) {
        let (session, p) = match self.routes.remove(key) {
            Some(Route::Path(h, path)) => {
                let Some(p) = self
                    .sessions
                    .get_mut(&h)
                    .and_then(|s| s.paths.get_mut(&path))
                    .and_then(|r| r.conn.take())
                else {
                    return;
                };
                (Some(h), p)
            }
            Some(Route::Loose) => match self.loose.remove(&key) {
                Some(l) => (l.session, l.path),
                None => return,
            },
            None => return,
        };
        self.qlog_forget(key);
        let Some(h) = session else {
            return;
        };
        if let Some(m) = self
            .sessions
            .get_mut(&h)
            .and_then(|s| s.paths.get_mut(&p.id))
        {
            let all = stats::path_stats(&p).with_earlier(m.last.as_deref());
            m.last = Some(Box::new(all));
            if let Some(s) = self.sessions.get_mut(&h) {
                s.activity += 1;
            }
        }
        self.path_gone(now, h);
    }

    /// A connection of session `h` is gone for good: without connections left, so is the
    /// session.
    #[cold]
    fn path_gone(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.conns().next().is_none() {
            if s.error.is_none() {
                self.close_session(now, h, SessionError::LocallyClosed);
            }
            if let Some(s) = self.sessions.remove(&h)
                && self.primaries.get(&s.id) == Some(&h)
            {
                self.primaries.remove(&s.id);
            }
            self.check_drain_complete();
        }
    }

    fn drive_path(&mut self, now: Instant, key: ConnKey) -> Result<(), ProtocolError> {
        match self.routes.get(key) {
            Some(Route::Path(h, path)) => {
                let Some(started) = self.with_session(now, h, |s, cx| {
                    let Some((schedule, messages)) = s.start_drive(cx, path)? else {
                        return Ok(Started::Done);
                    };
                    if !messages.is_empty() || !cx.effects.iter().all(Effect::commutes) {
                        return Ok(Started::Messages(schedule, messages));
                    }
                    // Nothing to apply in between: the data moves in the same pass.
                    s.drive_data(cx, path, &schedule, Cause::Any)?;
                    Ok(Started::Moved {
                        draining: s.is_draining(),
                    })
                }) else {
                    return Ok(());
                };
                match started? {
                    Started::Done => Ok(()),
                    Started::Moved { draining } => {
                        if draining {
                            self.check_session_drained(now, h);
                        }
                        Ok(())
                    }
                    Started::Messages(schedule, messages) => {
                        self.drive_session(now, h, path, &schedule, messages)
                    }
                }
            }
            Some(Route::Loose) => self.drive_loose(now, key),
            None => Ok(()),
        }
    }

    /// Drives a connection no session holds: a server's before its Hello or Join (which
    /// may make it a session's, the rest of its messages then the session's), or one a
    /// session let go of, which only closes.
    #[cold]
    fn drive_loose(&mut self, now: Instant, key: ConnKey) -> Result<(), ProtocolError> {
        let Some(l) = self.loose.get_mut(&key) else {
            return Ok(());
        };
        let (session, p) = (l.session, &mut l.path);
        // A client's connection is loose only once let go of (closed or lost): only a
        // server's completes its handshake here.
        let Polled {
            connected,
            negotiated,
            lost,
            raw_writable,
        } = p.poll_quic(now)?;
        let path = p.id;
        if let (true, Some(session)) = (raw_writable, session) {
            self.events.push_back(Event::RawWritable { session, path });
        }
        if let Some(reason) = lost {
            if let Some(h) = session {
                let error = SessionError::from(reason);
                self.with_session(now, h, |s, cx| {
                    s.path_down(cx, path, PathError::Connection(error.clone()), error)
                });
            }
            return Ok(());
        }
        if p.closing || p.conn.is_closed() {
            // Closed by this side, or lost: only the connection's own shutdown remains.
            return Ok(());
        }
        if session.is_some() {
            // Let go of by its session: nothing more is read.
            return p.flush_control();
        }
        if let (true, Some(server)) = (negotiated, &self.server) {
            p.set_stream_limits(&server.config);
        }
        if p.plain {
            // A peer that does not speak KWIK: its streams are the session's, once the
            // handshake completes.
            if !connected {
                return Ok(());
            }
            let Some(h) = self.accept_plain(now, key) else {
                let refused = match self.drain {
                    Some(_) => ProtocolError::new(ErrorCode::Draining, "this server is draining"),
                    None => ProtocolError::new(
                        ErrorCode::Handshake,
                        "this server accepts no new sessions",
                    ),
                };
                if let Some(l) = self.loose.get_mut(&key) {
                    l.path.close_with(now, &refused);
                    self.dirty.insert(key);
                }
                return Ok(());
            };
            return self.drive_session(now, h, PathId::PRIMARY, &Schedule::everything(), []);
        }
        // Server paths accept no data before the client's Hello made them a session.
        let mut messages = p.read_control(now)?.into_iter();
        while let Some(Route::Loose) = self.routes.get(key) {
            let Some(kind) = messages.next() else {
                let Some(l) = self.loose.get_mut(&key).filter(|l| !l.path.closing) else {
                    return Ok(());
                };
                l.path.flush_control()?;
                return l.path.read_carriers(|_| {
                    Err(ProtocolError::new(
                        ErrorCode::Handshake,
                        "data before session setup",
                    ))
                });
            };
            self.on_setup(now, key, kind)?;
        }
        // Set up: the session takes the rest.
        let Some(Route::Path(h, path)) = self.routes.get(key) else {
            return Ok(());
        };
        self.drive_session(now, h, path, &Schedule::everything(), messages)
    }

    /// Session `h` handles the control `messages` that arrived on `path`, each applied
    /// before the next (a message's effects, a dial among them, are in place for the
    /// messages after it), then moves the path's data unless a message ended the path.
    fn drive_session(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
        schedule: &Schedule,
        messages: impl IntoIterator<Item = Kind>,
    ) -> Result<(), ProtocolError> {
        let mut flow = Flow::Goes;
        for kind in messages {
            let next = self
                .with_session(now, h, |s, cx| s.on_control(cx, path, kind))
                .unwrap_or(Ok(Flow::Ended))?;
            if next == Flow::Ended {
                flow = Flow::Ended;
            }
        }
        if flow == Flow::Ended {
            return Ok(());
        }
        self.with_session(now, h, |s, cx| s.drive_data(cx, path, schedule, Cause::Any))
            .unwrap_or(Ok(()))?;
        self.check_session_drained(now, h);
        Ok(())
    }
}

/// How far the first pass over a session's connection went.
enum Started {
    /// Nothing more to do: the connection is closing, or was lost.
    Done,
    /// Its data moved too: no control message arrived and nothing had to be applied first.
    Moved {
        /// Whether the session is draining (and may be done).
        draining: bool,
    },
    /// Control messages arrived (or effects wait to be applied): each is handled before
    /// the data moves under `Schedule`.
    Messages(Schedule, Vec<Kind>),
}

/// Hands the endpoint events of connection `p` to quinn-proto's endpoint, and its answers
/// back.
fn endpoint_events(quic: &mut quinn_proto::Endpoint, p: &mut Path) {
    let ch = p.key.into();
    while let Some(event) = p.conn.poll_endpoint_events() {
        if let Some(reply) = quic.handle_event(ch, event) {
            p.conn.handle_event(reply);
        }
    }
}

/// One datagram from one connection, with the endpoint events sending produced.
pub(super) fn transmit_from(
    quic: &mut quinn_proto::Endpoint,
    p: &mut Path,
    session: Option<SessionHandle>,
    now: Instant,
    max_datagrams: usize,
    buf: &mut Vec<u8>,
) -> Option<Transmit> {
    buf.clear();
    let t = p.conn.poll_transmit(now, max_datagrams, buf)?;
    p.last_sent = Some(now);
    // Sending may have produced endpoint events (new connection ids).
    endpoint_events(quic, p);
    Some(Transmit {
        session,
        path: session.map(|_| p.id),
        destination: t.destination,
        src_ip: t.src_ip,
        ecn: t.ecn,
        size: t.size,
        segment_size: t.segment_size,
    })
}
