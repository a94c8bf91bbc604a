//! Where each QUIC connection lives, by its key.

use crate::ids::{ConnKey, PathId, SessionHandle};

/// Where a connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// It carries this path of this session.
    Path(SessionHandle, PathId),
    /// In [`Endpoint::loose`](super::Endpoint).
    Loose,
}

/// The route of every connection. quinn-proto hands out connection handles as small
/// indices, reused once a connection is drained, so a vector indexed by them finds a
/// connection's route in one step for every datagram, and lists them in key order.
#[derive(Debug, Default)]
pub(super) struct Routes {
    slots: Vec<Option<Route>>,
    len: usize,
}

impl Routes {
    pub(super) fn get(&self, key: ConnKey) -> Option<Route> {
        *self.slots.get(key.0)?
    }

    pub(super) fn insert(&mut self, key: ConnKey, route: Route) {
        if key.0 >= self.slots.len() {
            self.slots.resize(key.0 + 1, None);
        }
        if self.slots[key.0].replace(route).is_none() {
            self.len += 1;
        }
    }

    pub(super) fn remove(&mut self, key: ConnKey) -> Option<Route> {
        let route = self.slots.get_mut(key.0)?.take()?;
        self.len -= 1;
        // Keep the vector no longer than the highest live key.
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        Some(route)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_find_what_was_inserted_until_removed() {
        let mut r = Routes::default();
        let route = Route::Loose;
        for k in [3, 0, 7] {
            r.insert(ConnKey(k), route);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.remove(ConnKey(7)), Some(route));
        assert_eq!(r.remove(ConnKey(7)), None);
        assert_eq!(r.slots.len(), 4);
        assert_eq!(r.get(ConnKey(3)), Some(route));
        assert_eq!(r.get(ConnKey(5)), None);
        assert_eq!(r.len(), 2);
    }
}
