//! Driving one of the session's connections: QUIC's events, the session's first message
//! on a client's new path, control messages, carriers in, stream data and delegated ranges
//! out.

use kwik_proto::control_frame::Kind;
use quinn_proto::Side;

use super::effects::Cx;
use super::schedule::Schedule;
use super::{Mode, Phase, Role, SessionState, limits_to_wire, local_limits};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::event::{Event, stream_event};
use crate::frame::Frame;
use crate::ids::PathId;
use crate::path::Polled;

impl SessionState {
    /// Starts driving the connection of `path`: QUIC's events, the session's first message
    /// if its handshake just completed, and the control messages that arrived, which the
    /// caller hands to [`Self::on_control`] one by one before [`Self::drive_data`]. `None`
    /// when nothing more is to be done (the connection is closing, or was lost). The share
    /// of stream data the path may take is decided now, before its control messages are
    /// handled.
    pub(crate) fn start_drive(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
    ) -> Result<Option<(Schedule, Vec<Kind>)>, ProtocolError> {
        let schedule = self.schedule(path);
        let now = cx.now;
        let Some(p) = self.paths.get_mut(&path).and_then(|r| r.conn.as_mut()) else {
            return Ok(None);
        };
        let Polled {
            connected,
            negotiated,
            lost,
            raw_writable,
        } = p.poll_quic(now)?;
        let plain = p.plain;
        if raw_writable {
            cx.event(Event::RawWritable {
                session: cx.handle,
                path,
            });
        }
        if negotiated {
            p.set_stream_limits(&self.config);
        }
        if negotiated && plain && path != PathId::PRIMARY {
            // Other paths offer `kwik/1` alone: a server cannot have chosen anything else.
            return Err(ProtocolError::new(
                ErrorCode::Handshake,
                "a secondary path negotiated an application protocol",
            ));
        }
        if connected && self.side == Side::Client {
            if plain {
                self.fall_back(cx);
            } else {
                self.start_path(path)?;
            }
        }
        if let Some(reason) = lost {
            let error = SessionError::from(reason);
            self.path_down(cx, path, PathError::Connection(error.clone()), error);
            return Ok(None);
        }
        let Some(p) = self.conn_mut(path) else {
            return Ok(None);
        };
        if p.closing || p.conn.is_closed() {
            // Closed by this side, or lost: only the connection's own shutdown remains.
            return Ok(None);
        }
        if p.plain {
            return Ok(Some((schedule, Vec::new())));
        }
        let messages = p.read_control(now)?;
        Ok(Some((schedule, messages)))
    }

    /// Client: the QUIC handshake of `path` completed; the session's first message goes
    /// out on it (Hello on the primary path, Join elsewhere).
    #[cold]
    fn start_path(&mut self, path: PathId) -> Result<(), ProtocolError> {
        if let Some(p) = self.conn_mut(path) {
            p.open_control()?;
        }
        let first = if path == PathId::PRIMARY {
            Some(Kind::Hello(kwik_proto::Hello {
                version: kwik_proto::VERSION,
                limits: Some(limits_to_wire(local_limits(&self.config), &self.config)),
                app_protocols: self.config.app_protocols.clone(),
            }))
        } else {
            self.join_message(path)
        };
        let Some(kind) = first else {
            return Err(ProtocolError::new(
                ErrorCode::Handshake,
                "cannot start the session on this path",
            ));
        };
        if let Some(p) = self.conn_mut(path) {
            p.send_control(kind);
        }
        Ok(())
    }

    /// Moves the data of `path` once its control messages are handled: frames in (unless
    /// only the application wrote, `Cause::Written`), the stream data `schedule` allows
    /// out, delegated ranges on the writer path.
    pub(crate) fn drive_data(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        schedule: &Schedule,
        cause: Cause,
    ) -> Result<(), ProtocolError> {
        if self.mode == Mode::Plain {
            return self.drive_plain(cx);
        }
        let secondary = self.role == Role::Client && !self.is_peer_path(path);
        let Some(p) = self.paths.get_mut(&path).and_then(|r| r.conn.as_mut()) else {
            return Ok(());
        };
        if p.closing {
            return Ok(());
        }
        p.flush_control()?;
        if self.phase == Phase::Closed {
            return Ok(());
        }
        if cause == Cause::Any {
            self.receive_data(cx, path, secondary)?;
        }
        let Some(p) = self.paths.get_mut(&path).and_then(|r| r.conn.as_mut()) else {
            return Ok(());
        };
        let mut copies = Vec::new();
        let mut pulled = false;
        if self.phase == Phase::Established && !secondary {
            if schedule.multipath {
                // A path takes no more than it can send soon: the rest is for the others.
                let cwnd = p.conn.congestion_state().window();
                p.conn.set_send_window((2 * cwnd).max(64 * 1024));
            }
            let copy = (!schedule.copy_to.is_empty()).then_some(&mut copies);
            let before = p.counters.frames_sent;
            p.write(
                &mut self.streams,
                self.config.streams_per_carrier as usize,
                self.config.max_carriers_per_path as usize,
                schedule.allowance,
                copy,
            )?;
            pulled = p.counters.frames_sent > before;
        }
        let key = p.key;
        while let Some(event) = self.streams.poll_event() {
            cx.event(stream_event(cx.handle, event));
        }
        if !copies.is_empty() {
            for other in &schedule.copy_to {
                if let Some(o) = self.conn_mut(*other) {
                    o.push_copies(&copies);
                    cx.drive(o.key);
                }
            }
        }
        if schedule.multipath && pulled {
            // Another path to the peer may take what this one could not, or its turn.
            for p in self.conns().filter(|p| p.key != key) {
                cx.drive(p.key);
            }
        }
        self.write_delegated(cx, path)?;
        if self.role == Role::Client {
            self.settle_pulls(cx);
        }
        Ok(())
    }

    /// The receiving half of [`Self::drive_data`]: the frames that arrived on `path`'s
    /// carriers (a secondary's checked against what was owed first), and its raw datagrams.
    fn receive_data(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        secondary: bool,
    ) -> Result<(), ProtocolError> {
        let Some(p) = self.paths.get_mut(&path).and_then(|r| r.conn.as_mut()) else {
            return Ok(());
        };
        let mut received = 0;
        // Stream bytes that had arrived before: (stream, offset, bytes).
        let mut twice = Vec::new();
        if secondary {
            // Every frame of the batch is checked against what was owed before any is
            // applied: a batch with one frame that was not asked for applies none.
            let mut frames = Vec::new();
            let streams = &self.streams;
            let owed = &self.client.owed;
            p.read_carriers(|frame| {
                super::pulls::check_secondary_frame(owed, streams, path, &frame)?;
                frames.push(frame);
                Ok(())
            })?;
            for frame in frames {
                apply_frame(&mut self.streams, frame, &mut received, &mut twice)?;
            }
        } else {
            let streams = &mut self.streams;
            p.read_carriers(|frame| apply_frame(streams, frame, &mut received, &mut twice))?;
        }
        p.counters.stream_bytes_received += received;
        let limit = self.config.raw_receive_queue;
        let raw = super::queue_raw(p, &mut self.raw, limit, &mut self.raw_dropped);
        for (id, offset, bytes) in twice {
            self.count_twice(cx, path, id, offset, bytes);
        }
        if raw {
            cx.event(Event::RawDatagram { session: cx.handle });
        }
        Ok(())
    }

    /// Drives `path` after the application only wrote to the session's streams since its
    /// last drive: nothing arrived on it, so nothing is read. A connection that is closed
    /// is left to its shutdown, as [`Self::start_drive`] leaves it.
    pub(crate) fn drive_written(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
    ) -> Result<(), ProtocolError> {
        if self.conn_mut(path).is_none_or(|p| p.conn.is_closed()) {
            return Ok(());
        }
        let schedule = self.schedule(path);
        self.drive_data(cx, path, &schedule, Cause::Written)
    }
}

/// Why a connection is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Something arrived or timed out, or a command changed it: everything is looked at.
    Any,
    /// Only its session's application wrote since it was last driven (a connection that
    /// something arrived on is driven for that): its data moves, nothing is read.
    Written,
}

/// Applies one frame from the peer, adding a `STREAM` frame's bytes to `received` and the
/// part of them that had arrived before to `twice`.
fn apply_frame(
    streams: &mut crate::streams::Streams,
    frame: Frame,
    received: &mut u64,
    twice: &mut Vec<(crate::ids::StreamId, u64, u64)>,
) -> Result<(), ProtocolError> {
    let at = match &frame {
        Frame::Stream {
            id, offset, data, ..
        } => {
            *received += data.len() as u64;
            Some((*id, *offset))
        }
        _ => None,
    };
    let before = streams.counters.duplicate_bytes;
    streams.on_frame(frame)?;
    let again = streams.counters.duplicate_bytes - before;
    if let Some((id, offset)) = at.filter(|_| again > 0) {
        twice.push((id, offset, again));
    }
    Ok(())
}
