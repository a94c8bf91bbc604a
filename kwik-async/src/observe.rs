//! What an application can watch on a session besides its streams: the periodic metrics
//! snapshot and the end of the delegations and stripes it issued.

use std::future::poll_fn;
use std::task::Poll;

use kwik_core::{DelegationId, DelegationOutcome, Event, SessionStats};

use crate::error::ConnectionError;
use crate::session::Session;

/// Transfer events a session keeps for [`Session::transfer_event`]; older ones are dropped
/// first.
pub(crate) const TRANSFER_EVENT_BACKLOG: usize = 1024;

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
        stripe: u64,
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

impl Session {
    /// The next periodic metrics snapshot of this session and each of its paths (with
    /// `Config::metrics_enabled`, one every `Config::metrics_interval`). Latest wins: a
    /// snapshot nobody took is replaced by the next one, so a slow consumer sees fresh
    /// figures rather than a backlog. Once the session has ended it yields its error. Without `metrics_enabled` it waits until the session
    /// closes; [`Session::stats`] answers on demand either way.
    pub async fn metrics(&self) -> Result<SessionStats, ConnectionError> {
        poll_fn(|cx| {
            let mut state = self.shared().lock();
            // A snapshot taken before the session ended is stale once it has.
            if let Some(e) = state.session_error(self.handle()) {
                return Poll::Ready(Err(e));
            }
            if let Some(stats) = state.waiters(self.handle()).metrics.take() {
                return Poll::Ready(Ok(*stats));
            }
            state
                .waiters(self.handle())
                .metrics_waiters
                .push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Primary: the next delegation or stripe of this session that ended.
    pub async fn transfer_event(&self) -> Result<TransferEvent, ConnectionError> {
        poll_fn(|cx| {
            let mut state = self.shared().lock();
            if let Some(e) = state.waiters(self.handle()).transfer_events.pop_front() {
                return Poll::Ready(Ok(e));
            }
            if let Some(e) = state.session_error(self.handle()) {
                return Poll::Ready(Err(e));
            }
            state
                .waiters(self.handle())
                .transfer_waiters
                .push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
