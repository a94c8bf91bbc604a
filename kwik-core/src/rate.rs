//! A token bucket: how the engine bounds the rate of peer-triggered work.

use std::time::{Duration, Instant};

/// Allows `per_sec` events per second on average, in bursts of up to `per_sec`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_sec: u64,
    /// Tokens in thousandths, so that refills below one token are kept.
    milli: u64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(per_sec: u32) -> Self {
        let per_sec = u64::from(per_sec.max(1));
        Self {
            per_sec,
            milli: per_sec * 1000,
            last: None,
        }
    }

    /// Takes one token at `now`; false if none is left.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let capacity = self.per_sec * 1000;
        if let Some(last) = self.last {
            let elapsed = now
                .saturating_duration_since(last)
                .min(Duration::from_secs(1));
            let refill = elapsed.as_micros() as u64 * self.per_sec / 1000;
            self.milli = (self.milli + refill).min(capacity);
        }
        self.last = Some(now);
        if self.milli < 1000 {
            return false;
        }
        self.milli -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_up_to_the_rate_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100);
        assert_eq!((0..150).filter(|_| b.try_take(t0)).count(), 100);
        // 10 ms refill one token at 100/s.
        assert!(!b.try_take(t0 + Duration::from_millis(9)));
        assert!(b.try_take(t0 + Duration::from_millis(19)));
        assert!(!b.try_take(t0 + Duration::from_millis(19)));
        // A long pause refills to the burst, never beyond.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!((0..150).filter(|_| b.try_take(t1)).count(), 100);
    }

    #[test]
    fn a_steady_rate_at_the_limit_is_never_refused() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000);
        for i in 0..10_000u64 {
            assert!(
                b.try_take(t0 + Duration::from_micros(i * 1000)),
                "refused at {i}"
            );
        }
    }
}
