//! Delegation: byte ranges of a primary's stream written by another server.
//!
//! Three views of one delegation:
//! - the primary's [`Issued`] record: which path owes `[start, end)` of which stream;
//! - the client's [`Owed`] record: it checks every byte a secondary sends against it and
//!   reports completion or failure back to the primary;
//! - the writer's [`Outgoing`] queue, on the server that serves the range (a secondary, or
//!   the primary itself for path 0).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::path::PathId;
use crate::streams::StreamId;

/// Identifies a delegation within its session; assigned by the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelegationId(pub u64);

impl std::fmt::Display for DelegationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "delegation {}", self.0)
    }
}

/// A range this server was asked to write, as [`Session::accept_delegation`] returns it.
///
/// [`Session::accept_delegation`]: crate::Session::accept_delegation
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingDelegation {
    /// Its id: write the bytes through [`Session::delegated`](crate::Session::delegated).
    pub id: DelegationId,
    /// The logical stream the bytes belong to.
    pub stream: StreamId,
    /// Offset of the first byte owed.
    pub offset: u64,
    /// Bytes owed: exactly this many must be written.
    pub len: u64,
    /// The application's description of the content (what the primary passed to
    /// `delegate` or `stripe`), for example a file name and the range's position in it.
    pub request: Bytes,
    /// Where the range starts within the body the request describes: for a stripe, the
    /// offset of this range from the stripe's start; for a plain delegation, 0.
    pub body_offset: u64,
}

/// Why a delegation or stripe could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegateError {
    /// This side is not the primary of the session.
    #[error("only the primary delegates")]
    NotPrimary,
    /// The path is not an active path of the session.
    #[error("{0} is not active")]
    PathNotActive(PathId),
    /// The stream is not one this side writes, or it is finished or reset.
    #[error("stream not writable")]
    ClosedStream,
    /// The peer's flow-control credit does not cover the range yet.
    #[error("not enough credit for the range")]
    Blocked,
    /// Zero bytes, or aggregation is disabled in the config.
    #[error("invalid delegation")]
    Invalid,
    /// The session is gone.
    #[error("session lost")]
    SessionLost,
}

/// What a delegation became, reported to the primary's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationOutcome {
    /// Every byte reached the client.
    Done,
    /// The path failed; the bytes from `first_missing` on were handed to the primary
    /// itself (its application serves them as a new delegation on path 0).
    Failed {
        /// The first byte that had not arrived.
        first_missing: u64,
    },
}

/// Primary: a range it delegated.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) path: PathId,
    pub(crate) stream: StreamId,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) request: Bytes,
    /// The offset of `start` within the request's body.
    pub(crate) body_offset: u64,
    /// The stripe it belongs to, if any.
    pub(crate) stripe: Option<u64>,
}

/// Client: a range some path owes.
#[derive(Debug, Clone)]
pub(crate) struct Owed {
    pub(crate) path: PathId,
    pub(crate) stream: StreamId,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Completion was reported to the primary; kept so that late duplicate bytes are
    /// recognised as owed until the reader passed them.
    pub(crate) reported: bool,
}

/// Bytes the application may queue on one delegation ahead of what the path takes.
pub(crate) const OUTGOING_BUFFER: u64 = 1 << 20;

/// Writer: a range this side serves.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) stream: StreamId,
    pub(crate) end: u64,
    /// Next offset the application writes.
    pub(crate) written: u64,
    /// Next offset to frame.
    pub(crate) framed: u64,
    pub(crate) queue: VecDeque<Bytes>,
    /// A write was refused: report writability when the queue drains.
    pub(crate) blocked: bool,
}

impl Outgoing {
    pub(crate) fn new(stream: StreamId, start: u64, end: u64) -> Self {
        Self {
            stream,
            end,
            written: start,
            framed: start,
            queue: VecDeque::new(),
            blocked: false,
        }
    }

    /// Bytes queued and not framed.
    pub(crate) fn queued(&self) -> u64 {
        self.written - self.framed
    }

    /// How many more bytes the application may write now.
    pub(crate) fn room(&self) -> u64 {
        (self.end - self.written).min(OUTGOING_BUFFER.saturating_sub(self.queued()))
    }

    /// Takes up to `max` queued bytes for one frame: the offset and the pieces.
    pub(crate) fn take(&mut self, max: usize) -> Option<(u64, Vec<Bytes>)> {
        if self.queue.is_empty() {
            return None;
        }
        let offset = self.framed;
        let mut pieces = Vec::new();
        let mut room = max;
        while room > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if front.len() <= room {
                room -= front.len();
                if let Some(piece) = self.queue.pop_front() {
                    pieces.push(piece);
                }
            } else {
                pieces.push(front.split_to(room));
                room = 0;
            }
        }
        self.framed += (max - room) as u64;
        Some((offset, pieces))
    }

    /// Every byte was framed.
    pub(crate) fn is_complete(&self) -> bool {
        self.framed == self.end
    }
}
