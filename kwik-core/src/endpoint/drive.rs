//! Driving one path's connection: QUIC events, control messages, carriers in and out, and
//! the end of a connection.

use std::time::Instant;

use kwik_proto::control_frame::Kind;
use quinn_proto::Side;

use super::event::stream_event;
use super::paths::Schedule;
use super::{Endpoint, Event, Route, Transmit, route_mut, stats};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::path::Path;
use crate::session::{Phase, Role, limits_to_wire, local_limits};

impl Endpoint {
    /// Drives every path that has work: QUIC events, reads, writes, endpoint events.
    pub(super) fn flush(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop_first() {
            self.drive(now, key);
        }
    }

    pub(super) fn drive(&mut self, now: Instant, key: ConnKey) {
        let Some((quic, p)) = self.conn_and_quic(key) else {
            return;
        };
        let span = p.span.clone();
        let _entered = span.enter();
        endpoint_events(quic, p);
        if let Err(error) = self.drive_path(now, key) {
            self.violation(now, key, error);
        }
        let Some((quic, p)) = self.conn_and_quic(key) else {
            return;
        };
        endpoint_events(quic, p);
        if p.conn.is_drained() {
            self.drained(key);
        }
    }

    /// Connection `key` is drained: it goes, and what it carried stays in its path's
    /// figures.
    fn drained(&mut self, key: ConnKey) {
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
        }
        self.path_gone(h);
    }

    /// A connection of session `h` is gone for good: without connections left, so is the
    /// session.
    pub(super) fn path_gone(&mut self, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.conns().next().is_none() {
            if s.error.is_none() {
                self.close_session(h, SessionError::LocallyClosed);
            }
            self.sessions.remove(&h);
        }
    }

    pub(super) fn drive_path(&mut self, now: Instant, key: ConnKey) -> Result<(), ProtocolError> {
        let Some(route) = self.routes.get(key) else {
            return Ok(());
        };
        let schedule = match route {
            Route::Path(h, path) => self.schedule(h, path),
            // Nothing is written on a loose connection.
            Route::Loose => Schedule::everything(),
        };
        let Some((session_handle, p)) = route_mut(&mut self.sessions, &mut self.loose, key, route)
        else {
            return Ok(());
        };
        let server = p.side == Side::Server;
        let mut lost = None;
        let mut connected = false;
        let mut raw_writable = false;
        while let Some(event) = p.conn.poll() {
            match event {
                quinn_proto::Event::Connected => connected = !server,
                quinn_proto::Event::ConnectionLost { reason } => lost = Some(reason),
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Opened { .. }) => {
                    p.accept_streams(server)?;
                }
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Readable { id }) => {
                    p.mark_readable(id);
                }
                quinn_proto::Event::DatagramsUnblocked => {
                    p.raw_blocked = false;
                    raw_writable = true;
                }
                quinn_proto::Event::Stream(_)
                | quinn_proto::Event::HandshakeDataReady
                | quinn_proto::Event::DatagramReceived => {}
            }
        }
        p.note_progress(now);
        let path_id = p.id;
        if let (true, Some(session)) = (raw_writable, session_handle) {
            self.events.push_back(Event::RawWritable {
                session,
                path: path_id,
            });
        }
        let p = if connected {
            p.open_control()?;
            let first = if path_id == PathId::PRIMARY {
                session_handle.and_then(|h| self.sessions.get(&h)).map(|s| {
                    Kind::Hello(kwik_proto::Hello {
                        version: kwik_proto::VERSION,
                        limits: Some(limits_to_wire(local_limits(&s.config), &s.config)),
                        app_protocols: s.config.app_protocols.clone(),
                    })
                })
            } else {
                self.join_message(key)
            };
            let Some(kind) = first else {
                return Err(ProtocolError::new(
                    ErrorCode::Handshake,
                    "cannot start the session on this path",
                ));
            };
            let Some(p) = self.conn_mut(key) else {
                return Ok(());
            };
            p.send_control(kind);
            p
        } else {
            p
        };
        if let Some(reason) = lost {
            if let Some(h) = session_handle {
                self.path_lost(now, h, path_id, reason.into());
            }
            return Ok(());
        }
        if p.closing || p.conn.is_closed() {
            // Closed by this side, or lost: only the connection's own shutdown remains.
            return Ok(());
        }
        // Server paths accept no data before the client's Hello made them a session.
        let messages = p.read_control(now)?;
        for kind in messages {
            self.on_control(now, key, kind)?;
        }
        // Control may have closed this path, or made a server's connection a session's.
        let Some(route) = self.routes.get(key) else {
            return Ok(());
        };
        let Route::Path(h, path_id) = route else {
            let Some(l) = self.loose.get_mut(&key) else {
                return Ok(());
            };
            if l.path.closing {
                return Ok(());
            }
            l.path.flush_control()?;
            if l.session.is_some() {
                // Let go of by its session (and so closing): nothing more is read.
                return Ok(());
            }
            return l.path.read_carriers(|_| {
                Err(ProtocolError::new(
                    ErrorCode::Handshake,
                    "data before session setup",
                ))
            });
        };
        let Some(s) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        let secondary = s.role == Role::Client && !s.is_peer_path(path_id);
        let Some(p) = s.paths.get_mut(&path_id).and_then(|r| r.conn.as_mut()) else {
            return Ok(());
        };
        if p.closing {
            return Ok(());
        }
        p.flush_control()?;
        if s.phase == Phase::Closed {
            return Ok(());
        }
        let mut received = 0;
        if secondary {
            // Every frame of the batch is checked against what was owed before any is
            // applied: a batch with one frame that was not asked for applies none.
            let mut frames = Vec::new();
            let streams = &s.streams;
            let owed = &s.client.owed;
            p.read_carriers(|frame| {
                super::pulls::check_secondary_frame(owed, streams, path_id, &frame)?;
                frames.push(frame);
                Ok(())
            })?;
            for frame in frames {
                if let crate::frame::Frame::Stream { data, .. } = &frame {
                    received += data.len() as u64;
                }
                s.streams.on_frame(frame)?;
            }
        } else {
            let streams = &mut s.streams;
            p.read_carriers(|frame| {
                if let crate::frame::Frame::Stream { data, .. } = &frame {
                    received += data.len() as u64;
                }
                streams.on_frame(frame)
            })?;
        }
        p.counters.stream_bytes_received += received;
        if s.take_raw(path_id) {
            self.events.push_back(Event::RawDatagram { session: h });
        }
        let Some(p) = s.paths.get_mut(&path_id).and_then(|r| r.conn.as_mut()) else {
            return Ok(());
        };
        let mut copies = Vec::new();
        let mut pulled = false;
        if s.phase == Phase::Established && !secondary {
            if schedule.multipath {
                // A path takes no more than it can send soon: the rest is for the others.
                let cwnd = p.conn.congestion_state().window();
                p.conn.set_send_window((2 * cwnd).max(64 * 1024));
            }
            let copy = (!schedule.copy_to.is_empty()).then_some(&mut copies);
            let before = p.counters.frames_sent;
            p.write(
                &mut s.streams,
                s.config.streams_per_carrier as usize,
                s.config.max_carriers_per_path as usize,
                schedule.allowance,
                copy,
            )?;
            pulled = p.counters.frames_sent > before;
        }
        while let Some(event) = s.streams.poll_event() {
            self.events.push_back(stream_event(h, event));
        }
        let role = s.role;
        if !copies.is_empty() {
            for k in &schedule.copy_to {
                if let Some(other) = self.conn_mut(*k) {
                    other.push_copies(&copies);
                    self.dirty.insert(*k);
                }
            }
        }
        if schedule.multipath && pulled {
            // Another path to the peer may take what this one could not, or its turn.
            self.mark_dirty_except(h, key);
        }
        self.write_delegated(h, path_id)?;
        if role == Role::Client {
            self.settle_pulls(now, h);
        }
        Ok(())
    }

    /// A path's QUIC connection was lost (not by this side's own close).
    pub(super) fn path_lost(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
        error: SessionError,
    ) {
        let role = self.sessions.get(&h).map(|s| s.role);
        if role == Some(Role::Client) && path != PathId::PRIMARY {
            self.secondary_failed(now, h, path, PathError::Connection(error));
        } else if role == Some(Role::Primary) && path != PathId::PRIMARY {
            self.peer_path_lost(now, h, path);
        } else {
            self.close_session(h, error);
            self.close_remaining_paths(now, h);
        }
    }
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
