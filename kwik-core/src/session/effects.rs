//! What a session's work asks of the endpoint. A session changes its own state, paths and
//! connections directly (it sends control messages on its paths itself, and closes
//! them); what only the endpoint can do (dial, route a connection the session lets go of,
//! drive a connection, hand an event to the application) it asks for as an [`Effect`],
//! which the endpoint applies, in order, once the session's call returns. A session never
//! sees the endpoint.

use std::time::Instant;

use crate::event::Event;
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::path::Path;
use crate::stats::EndpointStats;
use crate::ticket::{Budgets, TicketKeys};

/// One thing a session asks the endpoint to do. The set is closed: the endpoint applies
/// each variant in one place (`endpoint/apply.rs`).
#[derive(Debug)]
pub(crate) enum Effect {
    /// Drive this connection before the next output: it has something to send or read.
    Drive(ConnKey),
    /// Hand this event to the application.
    Event(Event),
    /// Client: connect to the server of `path` (a secondary or a same-peer address), again
    /// if it failed. A `new` path announces itself once dialed (`PathAdded`), or is
    /// forgotten and refused to the primary if it cannot be.
    Dial {
        /// The path, whose record holds the address and credentials.
        path: PathId,
        /// Whether the primary just added it.
        new: bool,
    },
    /// The session let go of this connection (closed, or lost; a failed, removed or
    /// replaced path's): it drains under the endpoint.
    LetGo(Box<Path>),
    /// The connection of `path` now carries it as `kind`: its qlog trace gets its name.
    Label {
        /// The path.
        path: PathId,
        /// `primary`, `secondary` or `same-peer`.
        kind: &'static str,
    },
}

impl Effect {
    /// Whether applying this effect later, after more of the session's work, changes
    /// nothing: an event keeps its place among the others, and a connection to drive is
    /// driven after the session's call returns either way.
    pub(crate) fn commutes(&self) -> bool {
        matches!(self, Effect::Event(_) | Effect::Drive(_))
    }
}

/// What a session may use of the endpoint while it works: the time, where its effects go,
/// and the endpoint-wide state that is not any session's (counters, the ticket key and
/// the tickets' budgets).
pub(crate) struct Cx<'a> {
    pub(crate) now: Instant,
    /// Unix seconds at `now`, for ticket and join proof expiry.
    pub(crate) unix: u64,
    /// The session's handle, for the events it queues.
    pub(crate) handle: SessionHandle,
    pub(crate) effects: &'a mut Vec<Effect>,
    pub(crate) stats: &'a mut EndpointStats,
    pub(crate) tickets: &'a TicketKeys,
    pub(crate) budgets: &'a mut Budgets,
}

impl Cx<'_> {
    /// Queues `event` for the application.
    pub(crate) fn event(&mut self, event: Event) {
        self.effects.push(Effect::Event(event));
    }

    /// Asks for connection `key` to be driven.
    pub(crate) fn drive(&mut self, key: ConnKey) {
        self.effects.push(Effect::Drive(key));
    }
}
