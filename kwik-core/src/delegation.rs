//! Delegation: byte ranges of a primary's stream written by another server.
//!
//! Four views of one delegation:
//! - the primary's [`Issued`] record: the signed ticket it handed the client;
//! - the client's [`Held`] ticket: for a stripe, the schedule of its pulls;
//! - the client's [`Owed`] record of each pull: it checks every byte a secondary sends
//!   against it, and settles the pull when every byte arrived or its path failed;
//! - the writer's [`Outgoing`] queue, on the server that serves a pull (a secondary, or
//!   the primary itself).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::ids::{DelegationId, PathId, StreamId};

/// Most delegations a client tracks, and a server serves, at once per session.
pub const MAX_DELEGATIONS: usize = 4096;

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
    /// The session is plain (its peer does not speak KWIK): no other server can serve
    /// it, only a delegation to path 0 (or a stripe), which this server writes itself.
    #[error("a plain session has no other servers")]
    PlainSession,
    /// The session is gone or closed, with the error that ended it.
    #[error("session lost: {0}")]
    SessionLost(crate::error::SessionError),
}

/// What a delegation became, reported to the primary's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationOutcome {
    /// Every byte reached the client.
    Done,
    /// The path failed or refused; the bytes from `first_missing` on were handed to the
    /// primary itself (its application serves them as a new delegation on path 0).
    Failed {
        /// The first byte that had not arrived.
        first_missing: u64,
    },
}

/// Primary: a delegation or stripe it issued, with the ticket the client holds.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) ticket: kwik_proto::Ticket,
    /// The client was told that the ticket's stream ends with its range.
    pub(crate) ends_stream: bool,
}

impl Issued {
    pub(crate) fn is_stripe(&self) -> bool {
        self.ticket.any_path
    }
}

/// Client: a pull some path owes, made under ticket `ticket`.
#[derive(Debug, Clone)]
pub(crate) struct Owed {
    pub(crate) path: PathId,
    pub(crate) ticket: u64,
    pub(crate) stream: StreamId,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Settled (every byte arrived, or reported failed); kept so that late duplicate bytes
    /// are recognised as owed until the reader passed them.
    pub(crate) reported: bool,
    /// Why the range was pulled twice, if it was: this pull's own reason if it is a copy or
    /// a re-pull, its copy's if one was made of it.
    pub(crate) reason: Option<crate::stripe::CopyReason>,
    /// This pull is the copy (or the re-pull) of a range pulled before.
    pub(crate) copy: bool,
}

/// Client: a ticket the primary issued, and what the client does with it.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) ticket: kwik_proto::Ticket,
    /// The pull schedule of a stripe; `None` for a plain delegation.
    pub(crate) stripe: Option<Box<crate::stripe::Stripe>>,
    /// Paths that refused a pull under this ticket: they get no more.
    pub(crate) refused: Vec<PathId>,
    /// The primary said the ticket's stream ends with its range.
    pub(crate) ends_stream: bool,
}

impl Held {
    pub(crate) fn stream(&self) -> StreamId {
        StreamId(self.ticket.stream)
    }
}

/// Bytes the application may queue on one delegation ahead of what the path takes.
pub(crate) const OUTGOING_BUFFER: u64 = 1 << 20;

/// Writer: a range this side serves.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The ticket the pull was made under, for refunds of what is never sent.
    pub(crate) ticket: u64,
    pub(crate) stream: StreamId,
    /// The first offset of the range.
    pub(crate) start: u64,
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
    pub(crate) fn new(ticket: u64, stream: StreamId, start: u64, end: u64) -> Self {
        Self {
            ticket,
            stream,
            start,
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
