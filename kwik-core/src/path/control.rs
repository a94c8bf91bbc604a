//! A path's control stream: control messages queued, flushed and read (within the
//! peer's control-message rate and frame size).

use super::{MAX_CONTROL_BACKLOG, Path, PathResult};
use crate::control::MAX_CONTROL_FRAME;
use crate::error::{ErrorCode, ProtocolError};

impl Path {
    /// Queues one encoded control frame.
    pub(crate) fn send_control(&mut self, kind: kwik_proto::control_frame::Kind) {
        self.counters.control_sent += 1;
        self.probes += u64::from(is_probe(&kind));
        crate::control::encode(kind, &mut self.control_tx);
    }

    /// Reads the control stream: whole messages, in order.
    pub(crate) fn read_control(
        &mut self,
        now: std::time::Instant,
    ) -> PathResult<Vec<kwik_proto::control_frame::Kind>> {
        let mut out = Vec::new();
        let Some(id) = self.control else {
            return Ok(out);
        };
        if !std::mem::take(&mut self.control_readable) {
            return Ok(out);
        }
        let mut stream = self.conn.recv_stream(id);
        let Ok(mut chunks) = stream.read(true) else {
            return Ok(out);
        };
        let mut result = Ok(());
        loop {
            match chunks.next(MAX_CONTROL_FRAME) {
                Ok(Some(chunk)) => {
                    self.control_rx.push(&chunk.bytes);
                    loop {
                        let frame = self.control_rx.next_frame();
                        // Kinds a later version added are ignored, but they count, and
                        // they spend the same rate budget as any message.
                        let unknown = self.control_rx.take_unknown();
                        self.counters.control_unknown += unknown;
                        if (0..unknown).any(|_| !self.control_budget.try_take(now)) {
                            result = Err(ProtocolError::new(
                                ErrorCode::ControlRate,
                                "control messages above the allowed rate",
                            ));
                            break;
                        }
                        match frame {
                            Ok(Some(_)) if !self.control_budget.try_take(now) => {
                                result = Err(ProtocolError::new(
                                    ErrorCode::ControlRate,
                                    "control messages above the allowed rate",
                                ));
                                break;
                            }
                            Ok(Some(kind)) => {
                                self.counters.control_received += 1;
                                self.probes += u64::from(is_probe(&kind));
                                out.push(kind);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                result = Err(ProtocolError::new(e.code(), e.to_string()));
                                break;
                            }
                        }
                    }
                    if result.is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    result = Err(ProtocolError::new(
                        ErrorCode::UnexpectedStream,
                        "control stream finished",
                    ));
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(_)) => {
                    result = Err(ProtocolError::new(
                        ErrorCode::UnexpectedStream,
                        "control stream reset",
                    ));
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        result.map(|()| out)
    }

    /// Writes queued control frames into the control stream.
    pub(crate) fn flush_control(&mut self) -> PathResult<()> {
        let Some(id) = self.control else {
            return Ok(());
        };
        if self.control_tx.len() > MAX_CONTROL_BACKLOG {
            return Err(ProtocolError::new(
                ErrorCode::ControlRate,
                "peer does not read its control stream",
            ));
        }
        if self.control_tx.is_empty() {
            return Ok(());
        }
        match self.conn.send_stream(id).write(&self.control_tx) {
            Ok(n) => {
                self.control_tx.drain(..n);
                Ok(())
            }
            Err(quinn_proto::WriteError::Blocked) => Ok(()),
            Err(_) => Err(ProtocolError::new(
                ErrorCode::UnexpectedStream,
                "control stream stopped",
            )),
        }
    }
}

/// Whether `kind` is a health probe or its answer, which do not make a path busy.
fn is_probe(kind: &kwik_proto::control_frame::Kind) -> bool {
    use kwik_proto::control_frame::Kind;
    matches!(kind, Kind::Ping(_) | Kind::Pong(_))
}
