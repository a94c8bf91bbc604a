//! The events a session keeps for the application besides its streams: what happened to
//! its paths, and the end of the transfers it handed to other servers.

use kwik_core::{DelegationId, DelegationOutcome, Event, PathError, PathId, StripeId, TicketError};

/// Path events a session keeps for [`Session::path_event`]; older ones are dropped first.
pub(crate) const PATH_EVENT_BACKLOG: usize = 1024;

/// Transfer events a session keeps for [`Session::transfer_event`]; older ones are dropped
/// first.
pub(crate) const TRANSFER_EVENT_BACKLOG: usize = 1024;

/// Something that happened to one path of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathEvent {
    /// A path was added and is connecting.
    Added(PathId),
    /// A path carries the session.
    Active(PathId),
    /// A path's health probes go unanswered.
    Degraded(PathId),
    /// A path failed; what it owed was pulled elsewhere (a plain delegation: back to the
    /// primary).
    Failed(PathId, PathError),
    /// The server on a path is draining: a secondary's path gets no new pulls and is
    /// removed once the pulls it owes are in; on the primary path, the session opens no
    /// new stream and ends once the primary's work is done.
    Draining(PathId),
    /// A path is gone for good.
    Removed(PathId),
    /// Client: the server on a path refused a pull under the primary's ticket (the range
    /// went to the other servers, or back to the primary).
    PullRefused(PathId, TicketError),
}

impl PathEvent {
    /// The engine event as a path event, if it is one.
    pub(crate) fn from_event(event: &Event) -> Option<Self> {
        Some(match event {
            Event::PathAdded { path, .. } => Self::Added(*path),
            Event::PathActive { path, .. } => Self::Active(*path),
            Event::PathDegraded { path, .. } => Self::Degraded(*path),
            Event::PathFailed { path, error, .. } => Self::Failed(*path, error.clone()),
            Event::PathRemoved { path, .. } => Self::Removed(*path),
            Event::PathDraining { path, .. } => Self::Draining(*path),
            Event::PullRefused { path, error, .. } => Self::PullRefused(*path, *error),
            _ => return None,
        })
    }

    /// The path it concerns.
    pub fn path(&self) -> PathId {
        match self {
            Self::Added(p)
            | Self::Active(p)
            | Self::Degraded(p)
            | Self::Draining(p)
            | Self::Removed(p) => *p,
            Self::Failed(p, _) | Self::PullRefused(p, _) => *p,
        }
    }
}

/// The end of a transfer the primary handed to other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferEvent {
    /// A delegation made with `delegate` was settled: delivered, or failed with the bytes
    /// from `first_missing` on handed back to this side.
    DelegationFinished {
        /// The delegation, as `delegate` returned it.
        delegation: DelegationId,
        /// How it ended.
        outcome: DelegationOutcome,
    },
    /// Every byte of a stripe reached the client.
    StripeFinished {
        /// The stripe, as `stripe` returned it.
        stripe: StripeId,
    },
}

impl TransferEvent {
    /// The engine event as a transfer event, if it is one.
    pub(crate) fn from_event(event: &Event) -> Option<Self> {
        Some(match event {
            Event::DelegationFinished {
                delegation,
                outcome,
                ..
            } => Self::DelegationFinished {
                delegation: *delegation,
                outcome: *outcome,
            },
            Event::StripeFinished { stripe, .. } => Self::StripeFinished { stripe: *stripe },
            _ => return None,
        })
    }
}
