//! A set of connection keys, for the connections with work to do and those that may send.
//! quinn-proto's connection handles are small indices, reused once a connection drains, so
//! a bitmap indexed by them holds each connection in one bit and lists them in key order,
//! as an ordered set would, for a few instructions per operation: the endpoint marks and
//! takes connections at every input and output.

use crate::ids::ConnKey;

/// Connection keys in key order.
#[derive(Debug, Default)]
pub(super) struct ConnSet {
    /// Bit `k % 64` of word `k / 64` is set when key `k` is in the set.
    words: Vec<u64>,
    /// Bit `w % 64` of summary word `w / 64` is set when word `w` is not zero, so that the
    /// next key is found in one summary word per 4,096 keys at worst.
    summary: Vec<u64>,
    len: usize,
}

impl ConnSet {
    /// Adds `key`; returns whether it was not there.
    pub(super) fn insert(&mut self, key: ConnKey) -> bool {
        let (w, bit) = (key.0 / 64, 1u64 << (key.0 % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
            self.summary.resize(w / 64 + 1, 0);
        }
        if self.words[w] & bit != 0 {
            return false;
        }
        self.words[w] |= bit;
        self.summary[w / 64] |= 1 << (w % 64);
        self.len += 1;
        true
    }

    /// Removes `key`; returns whether it was there.
    pub(super) fn remove(&mut self, key: ConnKey) -> bool {
        let (w, bit) = (key.0 / 64, 1u64 << (key.0 % 64));
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        if *word == 0 {
            self.summary[w / 64] &= !(1 << (w % 64));
        }
        self.len -= 1;
        true
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The smallest key in the set that is `from` or larger.
    pub(super) fn next_from(&self, from: ConnKey) -> Option<ConnKey> {
        let w = from.0 / 64;
        let here = self.words.get(w)? & (!0u64 << (from.0 % 64));
        if here != 0 {
            return Some(ConnKey(w * 64 + here.trailing_zeros() as usize));
        }
        // The next word that is not zero, from the summary.
        let next = w + 1;
        let mut s = next / 64;
        let mut bits = self.summary.get(s)? & (!0u64 << (next % 64));
        while bits == 0 {
            s += 1;
            bits = *self.summary.get(s)?;
        }
        let w = s * 64 + bits.trailing_zeros() as usize;
        Some(ConnKey(w * 64 + self.words[w].trailing_zeros() as usize))
    }

    /// Removes and returns the smallest key.
    pub(super) fn pop_first(&mut self) -> Option<ConnKey> {
        if self.is_empty() {
            return None;
        }
        let key = self.next_from(ConnKey(0))?;
        self.remove(key);
        Some(key)
    }
}

impl Extend<ConnKey> for ConnSet {
    fn extend<I: IntoIterator<Item = ConnKey>>(&mut self, keys: I) {
        for key in keys {
            self.insert(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every operation answers as an ordered set does, over keys that cross words and
    /// summary words, with runs of inserts and removes drawn from a fixed sequence.
    #[test]
    fn answers_as_an_ordered_set() {
        let mut set = ConnSet::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Sparse and dense phases: a few keys spread over 10,000, then many over 300.
            let span = if (step / 5_000) % 2 == 0 { 10_000 } else { 300 };
            let key = ConnKey((x % span) as usize);
            match x >> 60 {
                0..=6 => assert_eq!(set.insert(key), model.insert(key)),
                7..=11 => assert_eq!(set.remove(key), model.remove(&key)),
                12 | 13 => assert_eq!(set.pop_first(), model.pop_first()),
                _ => {
                    let from = ConnKey(((x >> 20) % (span + 70)) as usize);
                    assert_eq!(set.next_from(from), model.range(from..).next().copied());
                }
            }
            assert_eq!(set.is_empty(), model.is_empty());
        }
    }

    #[test]
    fn finds_keys_far_apart() {
        let mut set = ConnSet::default();
        set.extend([ConnKey(3), ConnKey(64 * 64 * 3 + 5), ConnKey(64 * 64 * 9)]);
        assert_eq!(set.next_from(ConnKey(4)), Some(ConnKey(64 * 64 * 3 + 5)));
        assert_eq!(
            set.next_from(ConnKey(64 * 64 * 3 + 6)),
            Some(ConnKey(64 * 64 * 9))
        );
        assert_eq!(set.next_from(ConnKey(64 * 64 * 9 + 1)), None);
        assert_eq!(set.next_from(ConnKey(1 << 30)), None);
        assert_eq!(set.pop_first(), Some(ConnKey(3)));
        assert!(!set.remove(ConnKey(3)));
        assert!(!set.remove(ConnKey(1 << 30)));
    }
}
