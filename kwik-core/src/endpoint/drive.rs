//! Driving one path's connection: QUIC events, control messages, carriers in and out, and
//! the end of a connection.

use std::time::Instant;

use kwik_proto::control_frame::Kind;
use quinn_proto::{ConnectionHandle, Side};

use super::event::stream_event;
use super::{Endpoint, Event, PathSlot, Transmit, stats};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::ids::{PathId, SessionHandle};
use crate::session::{Phase, Role, limits_to_wire, local_limits};

impl Endpoint {
    /// Drives every path that has work: QUIC events, reads, writes, endpoint events.
    pub(super) fn flush(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop_first() {
            self.drive(now, key);
        }
    }

    pub(super) fn drive(&mut self, now: Instant, key: usize) {
        let Some(slot) = self.paths.get_mut(&key) else {
            return;
        };
        let span = slot.span.clone();
        let _entered = span.enter();
        let ch = ConnectionHandle(key);
        while let Some(event) = slot.path.conn.poll_endpoint_events() {
            if let Some(reply) = self.quic.handle_event(ch, event) {
                slot.path.conn.handle_event(reply);
            }
        }
        if let Err(error) = self.drive_path(now, key) {
            self.violation(now, key, error);
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return;
        };
        while let Some(event) = slot.path.conn.poll_endpoint_events() {
            if let Some(reply) = self.quic.handle_event(ch, event) {
                slot.path.conn.handle_event(reply);
            }
        }
        if slot.path.conn.is_drained() {
            let Some(slot) = self.paths.remove(&key) else {
                return;
            };
            self.qlog_forget(key);
            if let Some(h) = slot.session {
                if let Some(m) = self
                    .sessions
                    .get_mut(&h)
                    .and_then(|s| s.metas.get_mut(&slot.path.id))
                {
                    let all = stats::slot_stats(&slot).with_earlier(m.last.as_deref());
                    m.last = Some(Box::new(all));
                }
                self.path_gone(h, key);
            }
        }
    }

    /// A path's connection is gone for good.
    pub(super) fn path_gone(&mut self, h: SessionHandle, key: usize) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.paths.retain(|_, k| *k != key);
        if s.paths.is_empty() {
            if s.error.is_none() {
                self.close_session(h, SessionError::LocallyClosed);
            }
            self.sessions.remove(&h);
        }
    }

    pub(super) fn drive_path(&mut self, now: Instant, key: usize) -> Result<(), ProtocolError> {
        let schedule = self.schedule(key);
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        let server = slot.side == Side::Server;
        let mut lost = None;
        let mut connected = false;
        let mut raw_writable = false;
        while let Some(event) = slot.path.conn.poll() {
            match event {
                quinn_proto::Event::Connected => connected = !server,
                quinn_proto::Event::ConnectionLost { reason } => lost = Some(reason),
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Opened { .. }) => {
                    slot.path.accept_streams(server)?;
                }
                quinn_proto::Event::Stream(quinn_proto::StreamEvent::Readable { id }) => {
                    slot.path.mark_readable(id);
                }
                quinn_proto::Event::DatagramsUnblocked => {
                    slot.path.raw_blocked = false;
                    raw_writable = true;
                }
                quinn_proto::Event::Stream(_)
                | quinn_proto::Event::HandshakeDataReady
                | quinn_proto::Event::DatagramReceived => {}
            }
        }
        slot.path.note_progress(now);
        let path_id = slot.path.id;
        let session_handle = slot.session;
        if let (true, Some(session)) = (raw_writable, session_handle) {
            self.events.push_back(Event::RawWritable {
                session,
                path: path_id,
            });
        }
        if connected {
            slot.path.open_control()?;
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
            let Some(slot) = self.paths.get_mut(&key) else {
                return Ok(());
            };
            match first {
                Some(kind) => slot.path.send_control(kind),
                None => {
                    return Err(ProtocolError::new(
                        ErrorCode::Handshake,
                        "cannot start the session on this path",
                    ));
                }
            }
        }
        if let Some(reason) = lost {
            if let Some(h) = session_handle {
                self.path_lost(now, h, path_id, reason.into());
            }
            return Ok(());
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        if slot.path.closing || slot.path.conn.is_closed() {
            // Closed by this side, or lost: only the connection's own shutdown remains.
            return Ok(());
        }
        // Server paths accept no data before the client's Hello made them a session.
        let messages = slot.path.read_control(now)?;
        for kind in messages {
            self.on_control(now, key, kind)?;
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        if slot.path.closing {
            return Ok(());
        }
        slot.path.flush_control()?;
        let Some(h) = slot.session else {
            return slot.path.read_carriers(|_| {
                Err(ProtocolError::new(
                    ErrorCode::Handshake,
                    "data before session setup",
                ))
            });
        };
        let Some(session) = self.sessions.get_mut(&h) else {
            return Ok(());
        };
        if session.phase == Phase::Closed {
            return Ok(());
        }
        let secondary = session.role == Role::Client && !session.is_peer_path(path_id);
        let mut received = 0;
        if secondary {
            let mut frames = Vec::new();
            slot.path.read_carriers(|frame| {
                Self::check_secondary_frame(session, path_id, &frame)?;
                frames.push(frame);
                Ok(())
            })?;
            for frame in frames {
                if let crate::frame::Frame::Stream { data, .. } = &frame {
                    received += data.len() as u64;
                }
                session.streams.on_frame(frame)?;
            }
        } else {
            let streams = &mut session.streams;
            slot.path.read_carriers(|frame| {
                if let crate::frame::Frame::Stream { data, .. } = &frame {
                    received += data.len() as u64;
                }
                streams.on_frame(frame)
            })?;
        }
        slot.path.counters.stream_bytes_received += received;
        if session.take_raw(&mut slot.path) {
            self.events.push_back(Event::RawDatagram { session: h });
        }
        let mut copies = Vec::new();
        let mut pulled = false;
        if session.phase == Phase::Established && !secondary {
            if schedule.multipath {
                // A path takes no more than it can send soon: the rest is for the others.
                let cwnd = slot.path.conn.congestion_state().window();
                slot.path.conn.set_send_window((2 * cwnd).max(64 * 1024));
            }
            let copy = (!schedule.copy_to.is_empty()).then_some(&mut copies);
            let before = slot.path.counters.frames_sent;
            slot.path.write(
                &mut session.streams,
                session.config.streams_per_carrier as usize,
                session.config.max_carriers_per_path as usize,
                schedule.allowance,
                copy,
            )?;
            pulled = slot.path.counters.frames_sent > before;
        }
        while let Some(event) = session.streams.poll_event() {
            self.events.push_back(stream_event(h, event));
        }
        let role = session.role;
        if !copies.is_empty() {
            for k in &schedule.copy_to {
                if let Some(other) = self.paths.get_mut(k) {
                    other.path.push_copies(&copies);
                    self.dirty.insert(*k);
                }
            }
        }
        if schedule.multipath && pulled {
            // Another path to the peer may take what this one could not, or its turn.
            self.mark_dirty_except(h, key);
        }
        self.write_delegated(key, h)?;
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

/// One datagram from one path's connection, with the endpoint events sending produced.
pub(super) fn transmit_from(
    quic: &mut quinn_proto::Endpoint,
    key: usize,
    slot: &mut PathSlot,
    now: Instant,
    max_datagrams: usize,
    buf: &mut Vec<u8>,
) -> Option<Transmit> {
    buf.clear();
    let t = slot.path.conn.poll_transmit(now, max_datagrams, buf)?;
    // Sending may have produced endpoint events (new connection ids).
    let ch = ConnectionHandle(key);
    while let Some(event) = slot.path.conn.poll_endpoint_events() {
        if let Some(reply) = quic.handle_event(ch, event) {
            slot.path.conn.handle_event(reply);
        }
    }
    Some(Transmit {
        session: slot.session,
        path: slot.session.map(|_| slot.path.id),
        destination: t.destination,
        src_ip: t.src_ip,
        ecn: t.ecn,
        size: t.size,
        segment_size: t.segment_size,
    })
}
