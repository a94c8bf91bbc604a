//! Rotating the group keys of a live server: [`Endpoint::set_group_keys`].

use std::time::Instant;

use super::Endpoint;
use crate::ids::SessionHandle;
use crate::join::GroupKeys;
use crate::session::{Mode, Role};
use crate::ticket::TicketKeys;

impl Endpoint {
    /// Replaces the group keys of this server while it runs, as
    /// [`Endpoint::set_server_config`] replaces the rest of its configuration; a client
    /// endpoint (no server config) ignores it.
    ///
    /// Anything signed under a key still held keeps verifying: tickets under the key their
    /// `key_id` names, joins under the key their `Join` names. A ticket or join under a key
    /// no longer held is refused with a typed error (`TicketError::UnknownKey`,
    /// `ErrorCode::UnknownKey`). When the current key changes, every session this server is
    /// the primary of re-issues its live tickets and path secrets under the new key at
    /// once. See [`GroupKeys`] for the order a fleet rotates in. Logs key ids, never keys.
    pub fn set_group_keys(&mut self, now: Instant, keys: GroupKeys) {
        let Some(server) = self.server.as_mut() else {
            tracing::warn!("group keys set on an endpoint that is not a server: ignored");
            return;
        };
        let before = server
            .group_key
            .as_ref()
            .map(|k| (k.current().0, k.current().1.clone()));
        let current = keys.current().0;
        tracing::info!(
            current,
            earlier = ?keys.ids().skip(1).collect::<Vec<_>>(),
            "group keys set"
        );
        self.ticket_key = TicketKeys::derive(&keys);
        server.group_key = Some(keys.clone());
        // The same key under the same id: nothing to re-issue. (A new key under an old
        // id is a switch too.)
        if before.is_some_and(|(id, key)| id == current && &key == keys.current().1) {
            return;
        }
        let primaries: Vec<SessionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.role == Role::Primary && s.mode == Mode::Kwik && s.error.is_none())
            .map(|(h, _)| *h)
            .collect();
        let group = keys.current();
        for h in primaries {
            self.with_session(now, h, |s, cx| s.refresh_credentials(cx, Some(group), true));
        }
        self.last_now = Some(now);
    }
}
