//! The configuration of one link direction: rate, delay, jitter, loss, reordering, MTU,
//! queue and whether it is up.

use std::time::Duration;

/// Configuration of one link direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck rate in bits per second; 0 means unlimited.
    pub rate_bps: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Uniformly distributed extra delay in `[0, jitter]`, drawn per datagram.
    pub jitter: Duration,
    /// Probability (`0.0..=1.0`) that a datagram is lost.
    pub loss: f64,
    /// Probability (`0.0..=1.0`) that a datagram gets `reorder_delay` extra
    /// delay, so that later datagrams overtake it.
    pub reorder: f64,
    /// Extra delay applied to datagrams selected for reordering.
    pub reorder_delay: Duration,
    /// Datagrams with a payload larger than this many bytes are dropped.
    pub mtu: usize,
    /// Drop-tail bottleneck queue capacity in bytes; 0 means unlimited.
    /// Only meaningful when `rate_bps` is non-zero.
    pub queue_bytes: usize,
    /// Whether the link is up. A down link drops everything.
    pub up: bool,
}

impl Default for LinkConfig {
    /// Unlimited rate, 10 ms delay, no jitter/loss/reorder, MTU 1500,
    /// unlimited queue, up.
    fn default() -> Self {
        Self {
            rate_bps: 0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            mtu: 1500,
            queue_bytes: 0,
            up: true,
        }
    }
}

impl LinkConfig {
    /// Sets the bottleneck rate in bits per second (0 = unlimited).
    #[must_use]
    pub fn rate_bps(mut self, bps: u64) -> Self {
        self.rate_bps = bps;
        self
    }

    /// Sets the bottleneck rate in kbit/s (0 = unlimited).
    #[must_use]
    pub fn rate_kbit(self, kbit: u64) -> Self {
        self.rate_bps(kbit.saturating_mul(1_000))
    }

    /// Sets the bottleneck rate in Mbit/s (0 = unlimited).
    #[must_use]
    pub fn rate_mbit(self, mbit: u64) -> Self {
        self.rate_bps(mbit.saturating_mul(1_000_000))
    }

    /// Sets the one-way propagation delay.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the one-way propagation delay in milliseconds.
    #[must_use]
    pub fn delay_ms(self, ms: u64) -> Self {
        self.delay(Duration::from_millis(ms))
    }

    /// Sets the maximum uniform jitter.
    #[must_use]
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the maximum uniform jitter in milliseconds.
    #[must_use]
    pub fn jitter_ms(self, ms: u64) -> Self {
        self.jitter(Duration::from_millis(ms))
    }

    /// Sets the loss probability.
    #[must_use]
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Sets the reorder probability and the extra delay given to reordered
    /// datagrams.
    #[must_use]
    pub fn reorder(mut self, p: f64, extra_delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = extra_delay;
        self
    }

    /// Sets the MTU (maximum datagram payload size in bytes).
    #[must_use]
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Sets the drop-tail queue capacity in bytes (0 = unlimited).
    #[must_use]
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Sets the drop-tail queue capacity to the number of bytes the link
    /// serializes in `ms` milliseconds at its current rate (at least one MTU).
    /// Call after setting the rate. Has no effect on an unlimited-rate link
    /// other than setting an unlimited queue.
    #[must_use]
    pub fn queue_ms(mut self, ms: u64) -> Self {
        if self.rate_bps == 0 {
            self.queue_bytes = 0;
            return self;
        }
        let bytes = u128::from(self.rate_bps) * u128::from(ms) / 8_000;
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.queue_bytes = bytes.max(self.mtu).max(1);
        self
    }

    /// Sets whether the link is up.
    #[must_use]
    pub fn up(mut self, up: bool) -> Self {
        self.up = up;
        self
    }
}
