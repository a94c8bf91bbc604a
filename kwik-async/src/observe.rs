//! What an application can watch on a session besides its streams: the periodic metrics
//! snapshot and the end of the delegations and stripes it issued.

use std::future::poll_fn;
use std::task::{Context, Poll};

use kwik_core::SessionStats;

use crate::driver::{Backlog, SessionWaiters};
use crate::error::SessionError;
use crate::event::TransferEvent;
use crate::session::Session;

impl Session {
    /// The next periodic metrics snapshot of this session and each of its paths (with
    /// `Config::metrics_enabled`, one every `Config::metrics_interval`). Latest wins: a
    /// snapshot nobody took is replaced by the next one, so a slow consumer sees fresh
    /// figures rather than a backlog. Once the session has ended it yields its error.
    /// Without `metrics_enabled` it waits until the session closes; [`Session::stats`] answers on demand either way.
    pub async fn metrics(&self) -> Result<SessionStats, SessionError> {
        // A snapshot taken before the session ended is stale once it has.
        let stats = poll_fn(|cx| self.poll_backlog(cx, true, |w| &mut w.metrics)).await?;
        Ok(*stats)
    }

    /// Primary: the next delegation or stripe of this session that ended.
    pub async fn transfer_event(&self) -> Result<TransferEvent, SessionError> {
        poll_fn(|cx| self.poll_backlog(cx, false, |w| &mut w.transfer_events)).await
    }

    /// The oldest item of one of the session's backlogs, or the session's error: before
    /// any item if `error_first` (the items are stale once the session ended), else once
    /// the backlog is empty.
    pub(crate) fn poll_backlog<T>(
        &self,
        cx: &mut Context<'_>,
        error_first: bool,
        backlog: impl Fn(&mut SessionWaiters) -> &mut Backlog<T>,
    ) -> Poll<Result<T, SessionError>> {
        let mut state = self.shared().lock();
        let error = |state: &mut crate::driver::State| state.session_error(self.handle());
        if error_first && let Some(e) = error(&mut state) {
            return Poll::Ready(Err(e));
        }
        if let Some(item) = backlog(state.waiters(self.handle())).items.pop_front() {
            return Poll::Ready(Ok(item));
        }
        if let Some(e) = error(&mut state) {
            return Poll::Ready(Err(e));
        }
        crate::driver::register(&mut backlog(state.waiters(self.handle())).waiters, cx);
        Poll::Pending
    }
}
