//! A token bucket: how the engine bounds the rate of peer-triggered work.

use std::time::{Duration, Instant};

/// Allows `per_sec` events per second on average, in bursts of up to `per_sec` (or the
/// burst given to [`TokenBucket::with_burst`]).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: u64,
    burst: u64,
    /// Tokens in thousandths, so that refills below one token are kept.
    milli: u64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: u32) -> Self {
        Self::with_burst(per_sec, per_sec)
    }

    /// A full bucket of `burst` tokens refilled at `per_sec`.
    pub fn with_burst(per_sec: u32, burst: u32) -> Self {
        let per_sec = u64::from(per_sec.max(1));
        let burst = u64::from(burst.max(1));
        Self {
            per_sec,
            burst,
            milli: burst * 1000,
            last: None,
        }
    }

    /// Takes one token at `now`; false if none is left.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let capacity = self.burst * 1000;
        if let Some(last) = self.last {
            let elapsed = now
                .saturating_duration_since(last)
                .min(Duration::from_secs(3600));
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
