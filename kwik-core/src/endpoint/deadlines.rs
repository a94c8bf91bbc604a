//! When each session and each loose connection next needs its timers run, earliest first.
//!
//! An endpoint holds thousands of sessions that are idle most of the time, so neither an
//! input nor a timer may cost time in proportion to them. A session's deadline is
//! computed again only after something touched it (an input for one of its connections,
//! a command, its own timers) and filed in a binary heap; a timer pops what is due.
//!
//! A deadline that moves later keeps its earlier entry: on a busy connection QUIC's
//! timers (loss detection, idle) move later with every packet, and refiling each time
//! would cost a heap entry, a stale pop and a new wake-up time per packet. The owner is
//! handed out at the earlier time and, its real deadline being later, the endpoint files
//! it again under that one without running anything. A deadline that moves earlier is
//! filed at once; the entry it replaces is recognised as stale when popped (it disagrees
//! with [`Deadlines::filed`]) and swept out when stale entries outnumber the live ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::ids::{ConnKey, SessionHandle};

/// What has timers of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Owner {
    /// A session: its connections' QUIC timers, their health, and the session's own.
    Session(SessionHandle),
    /// A connection no session holds.
    Loose(ConnKey),
}

/// Deadlines by owner, as instants (or, in tests, any ordered time).
#[derive(Debug)]
pub(super) struct Deadlines<T = Instant> {
    heap: BinaryHeap<Reverse<(T, Owner)>>,
    /// The deadline each owner is filed under now.
    filed: FxHashMap<Owner, T>,
    /// Owners whose deadline may have moved since it was filed, in the order touched (an
    /// owner touched again at once is listed once; [`Self::take_touched`] drops the
    /// rest of the repeats). Its allocation is kept from one filing to the next.
    touched: Vec<Owner>,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            filed: FxHashMap::default(),
            touched: Vec::new(),
        }
    }
}

impl<T: Ord + Copy> Deadlines<T> {
    /// Something happened to `owner`: its deadline is computed again before the next one
    /// is handed out.
    pub(super) fn touch(&mut self, owner: Owner) {
        if self.touched.last() != Some(&owner) {
            self.touched.push(owner);
        }
    }

    /// Whether `owner` is the last one touched (so its deadline is computed again before
    /// the next one is handed out).
    pub(super) fn touched_last(&self, owner: Owner) -> bool {
        self.touched.last() == Some(&owner)
    }

    /// Takes the owners touched since the last call, each once; hand the list back with
    /// [`Self::give_back`] so that its allocation serves the next call.
    pub(super) fn take_touched(&mut self) -> Vec<Owner> {
        let mut touched = std::mem::take(&mut self.touched);
        if touched.len() > 1 {
            touched.sort_unstable();
            touched.dedup();
        }
        touched
    }

    /// Returns a list [`Self::take_touched`] handed out.
    pub(super) fn give_back(&mut self, mut touched: Vec<Owner>) {
        if self.touched.is_empty() {
            touched.clear();
            self.touched = touched;
        }
    }

    /// Files `owner` under `deadline` (`None`: it has no timer, or is gone). An owner filed
    /// under an earlier deadline stays there (see the module's documentation).
    pub(super) fn file(&mut self, owner: Owner, deadline: Option<T>) {
        match deadline {
            Some(t) => match self.filed.get(&owner) {
                Some(&filed) if filed <= t => {}
                _ => {
                    self.filed.insert(owner, t);
                    self.heap.push(Reverse((t, owner)));
                }
            },
            None => {
                self.filed.remove(&owner);
            }
        }
        if self.heap.len() > 2 * self.filed.len() + 64 {
            self.compact();
        }
    }

    /// The earliest deadline filed.
    pub(super) fn next(&mut self) -> Option<T> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// An owner whose deadline is `now` or earlier, unfiled: its timers are run and it is
    /// filed again by the caller (as touched).
    pub(super) fn pop_due(&mut self, now: T) -> Option<Owner> {
        self.drop_stale();
        let Reverse((t, owner)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.filed.remove(&owner);
        Some(owner)
    }

    /// Pops the stale entries at the top of the heap.
    fn drop_stale(&mut self) {
        while let Some(Reverse((t, owner))) = self.heap.peek() {
            if self.filed.get(owner) == Some(t) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from what is filed, without the stale entries.
    fn compact(&mut self) {
        self.heap = self
            .filed
            .iter()
            .map(|(owner, t)| Reverse((*t, *owner)))
            .collect();
    }

    /// Owners filed, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.filed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_out_earliest_first_and_moved_ones_only_once() {
        let a = Owner::Session(SessionHandle(1));
        let b = Owner::Session(SessionHandle(2));
        let c = Owner::Loose(ConnKey(7));
        let mut d = Deadlines::<u64>::default();
        d.file(a, Some(30));
        d.file(b, Some(10));
        d.file(c, Some(20));
        // a moves earlier, b later; c goes away.
        d.file(a, Some(5));
        d.file(b, Some(40));
        d.file(c, None);
        assert_eq!(d.next(), Some(5));
        assert_eq!(d.pop_due(4), None);
        assert_eq!(d.pop_due(100), Some(a));
        assert_eq!(d.pop_due(100), Some(b));
        assert_eq!(d.pop_due(100), None);
        assert_eq!(d.next(), None);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_deadline_that_moves_later_is_handed_out_at_the_earlier_one() {
        let a = Owner::Session(SessionHandle(1));
        let mut d = Deadlines::<u64>::default();
        d.file(a, Some(10));
        // Later with every packet: no new entry, the earliest stands.
        for t in 11..1_000 {
            d.file(a, Some(t));
        }
        assert_eq!(d.heap.len(), 1);
        assert_eq!(d.next(), Some(10));
        assert_eq!(d.pop_due(10), Some(a));
        // The endpoint files it again under its real deadline.
        d.file(a, Some(999));
        assert_eq!(d.next(), Some(999));
        assert_eq!(d.pop_due(998), None);
        assert_eq!(d.pop_due(999), Some(a));
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let mut d = Deadlines::<u64>::default();
        let a = Owner::Session(SessionHandle(1));
        // Earlier every time: each is a new entry, the one before it stale.
        for t in (0..10_000).rev() {
            d.file(a, Some(t));
        }
        assert!(d.heap.len() <= 2 * d.filed.len() + 64 + 1);
        assert_eq!(d.pop_due(60_000), Some(a));
        assert_eq!(d.next(), None);
    }

    #[test]
    fn touched_owners_are_handed_out_once() {
        let mut d = Deadlines::<u64>::default();
        let a = Owner::Session(SessionHandle(1));
        let b = Owner::Loose(ConnKey(3));
        d.touch(a);
        d.touch(a);
        d.touch(b);
        d.touch(a);
        let touched = d.take_touched();
        assert_eq!(touched, [a, b]);
        d.give_back(touched);
        assert!(d.take_touched().is_empty());
    }
}
