//! Credit for ranges other servers deliver: delegated and striped bytes land outside the
//! session's own flow-control window, within what the primary granted.

use super::{Streams, violation};
use crate::error::{ErrorCode, ProtocolError};
use crate::ids::StreamId;

impl Streams {
    /// Bytes `id` may still send under the peer's stream and session limits, ignoring any
    /// stripe lock.
    pub(crate) fn credit(&self, id: StreamId) -> u64 {
        let Some(s) = self.send.get(&id) else {
            return 0;
        };
        let stream = s.max_data.saturating_sub(s.written());
        let session = self.peer_max_data.saturating_sub(self.data_written);
        stream.min(session)
    }

    /// Checks a delegation the primary announced for a stream it sends on: the stream must
    /// be one the peer sends on, and the range inside the credit granted. Opens the stream
    /// if it is new.
    pub(crate) fn check_delegated(
        &mut self,
        id: StreamId,
        end: u64,
        stripe: bool,
    ) -> Result<(), ProtocolError> {
        self.check_receiver(id)?;
        self.ensure_stream(id)?;
        if let Some(r) = self.recv.get(&id)
            && end > r.max_data
            && !stripe
        {
            return Err(violation(
                ErrorCode::FlowControl,
                format!("{id}: delegation beyond the stream's credit"),
            ));
        }
        Ok(())
    }

    /// A stripe of `len` bytes was announced: the session window grows by its length, as
    /// the primary counted it against its session credit when it reserved the range.
    pub(crate) fn grant_stripe(&mut self, len: u64) {
        self.local_max_data = self.local_max_data.saturating_add(len);
        self.signals.max_data = true;
    }

    /// The end of the range of `id` the reader's window allows pulls up to: what was read
    /// plus the stream window. `None` when its receive half is gone.
    pub(crate) fn pull_limit(&self, id: StreamId) -> Option<u64> {
        let r = self.recv.get(&id)?;
        (!r.stopped && r.reset.is_none()).then_some(r.read + self.stream_window)
    }

    /// Grants the sender credit up to `end` of `id` (a pull is the credit for its bytes).
    pub(crate) fn grant(&mut self, id: StreamId, end: u64) {
        if let Some(r) = self.recv.get_mut(&id)
            && end > r.max_data
        {
            r.max_data = end;
            self.signals.max_stream_data.insert(id);
        }
    }
}
