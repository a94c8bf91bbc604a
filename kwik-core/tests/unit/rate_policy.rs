//! Table tests of the token bucket that bounds peer-triggered work (`kwik_core::rate`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kwik_core::rate::*;

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
