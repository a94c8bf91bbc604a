//! The failover scenario shared by the blackhole and close tests: three servers stripe a
//! body, and one secondary dies when half of it was read.

use std::fmt;
use std::time::{Duration, Instant};

use kwik_core::{Config, Event, PathId, VarInt};

use crate::app::{payload, sha256};
use crate::cluster::Cluster;
use crate::net::LinkConfig;

/// How the secondary dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Its link drops everything, both ways, without a word.
    Blackhole,
    /// It closes its connection.
    Close,
}

/// Links of the scenario: primary 40 Mbit/s RTT 20 ms, secondaries 20 Mbit/s RTT 60 ms and
/// 10 Mbit/s RTT 120 ms.
pub fn links() -> Vec<LinkConfig> {
    [(40, 10), (20, 30), (10, 60)]
        .iter()
        .map(|&(mbit, delay)| {
            LinkConfig::default()
                .rate_mbit(mbit)
                .delay_ms(delay)
                .queue_ms(50)
        })
        .collect()
}

/// What a failover run measured.
#[derive(Debug)]
pub struct Outcome {
    /// How the secondary died.
    pub kill: Kill,
    /// Bytes of the body.
    pub len: u64,
    /// Bytes the client read.
    pub read: u64,
    /// The read bytes hash to the body's SHA-256.
    pub digest_matches: bool,
    /// The client read the fin.
    pub finished: bool,
    /// Longest time the reader saw no new byte.
    pub longest_stall: Duration,
    /// The stall bound for the killed path: chunk time + 2 x its smoothed RTT.
    pub bound: Duration,
    /// The killed path's smoothed RTT before the kill.
    pub rtt: Duration,
    /// The longest run of 100 ms windows (slid by 10 ms) under 5 Mbit/s, from the kill
    /// to the end of the body.
    pub slow_stretch: Duration,
    /// The client reported the path failed.
    pub path_failed: bool,
    /// The client session's error, if it ended.
    pub session_error: Option<String>,
    /// Virtual time from the kill to the end of the body.
    pub after_kill: Duration,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} at 50%: read {}/{} bytes, digest {}, longest stall {:?} (bound {:?}, RTT {:?}), \
             slow stretch {:?}, path failed {}, {:?} from kill to end",
            self.kill,
            self.read,
            self.len,
            if self.digest_matches {
                "matches"
            } else {
                "DIFFERS"
            },
            self.longest_stall,
            self.bound,
            self.rtt,
            self.slow_stretch,
            self.path_failed,
            self.after_kill
        )
    }
}

impl Outcome {
    /// Asserts the scenario's promises.
    pub fn check(&self) {
        assert_eq!(self.session_error, None, "the session survived");
        assert!(self.finished, "the body completed: {self}");
        assert_eq!(self.read, self.len, "every byte exactly once: {self}");
        assert!(self.digest_matches, "in order and intact: {self}");
        assert!(self.path_failed, "the client saw the path fail: {self}");
        assert!(
            self.longest_stall <= self.bound,
            "stall {:?} above the bound {:?}",
            self.longest_stall,
            self.bound
        );
    }
}

/// Stripes 32 MiB over three servers and kills the 20 Mbit/s secondary at 50 %.
pub fn run_failover(seed: u64, kill: Kill) -> Outcome {
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    let len = 32u64 << 20;
    let body = payload(seed, len as usize);
    let want = sha256(&body);
    let mut c = Cluster::new(seed, &links(), config.clone(), config.clone(), body);
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    c.start_stripe();
    assert!(
        c.run_until(Duration::from_secs(60), |c| c.reader.bytes >= len / 2),
        "half the body arrived"
    );
    let victim = 1;
    let path = c.path_ids[&victim];
    let h = c.session;
    let rtt = c
        .client_endpoint()
        .session(h)
        .and_then(|s| s.paths().into_iter().find(|p| p.id == path))
        .and_then(|p| p.rtt)
        .expect("the victim's RTT");
    let bound = config.stripe_chunk_time + 2 * rtt;
    // Stalls before the kill do not count against the failover bound.
    c.reader.longest_stall = Duration::ZERO;
    c.reader.record();
    let killed_at = c.sim.now();
    match kill {
        Kill::Blackhole => {
            let (a, b) = (c.addrs[victim].ip(), c.sim.nodes[c.client].addr.ip());
            c.sim.net.set_up(a, b, false);
        }
        Kill::Close => {
            let node = c.servers[victim];
            let sessions: Vec<_> = c.apps[victim].sessions.keys().copied().collect();
            let now = c.sim.now();
            for h in sessions {
                if let Some(mut s) = c.sim.nodes[node].endpoint.session(h) {
                    s.close(now, VarInt::from_u32(0), b"shutting down");
                }
            }
        }
    }
    if std::env::var("TRACE").is_ok() {
        let mut next = c.sim.now();
        c.run_until(Duration::from_secs(2), |c| {
            if c.sim.now() >= next {
                next += Duration::from_millis(50);
                let per_path = c.received_per_path();
                println!(
                    "{:?} read {} per path {per_path:?}",
                    c.sim.now() - killed_at,
                    c.reader.bytes,
                );
            }
            false
        });
    }
    let finished = c.run_to_end(Duration::from_secs(120));
    let slow_stretch = c
        .reader
        .trace
        .as_deref()
        .zip(c.reader.last_progress)
        .map_or(Duration::ZERO, |(t, end)| slow_stretch(t, killed_at, end));
    let path_failed = path != PathId::PRIMARY
        && c.reader
            .events
            .iter()
            .any(|e| matches!(e, Event::PathFailed { path: p, .. } if *p == path));
    Outcome {
        kill,
        len,
        read: c.reader.bytes,
        digest_matches: c.reader.digest() == want,
        finished,
        longest_stall: c.reader.longest_stall,
        bound,
        rtt,
        slow_stretch,
        path_failed,
        session_error: c.reader.closed.as_ref().map(|e| e.to_string()),
        after_kill: c.sim.now() - killed_at,
    }
}

/// Rate threshold of a slow window.
const SLOW_BPS: f64 = 5e6;
const WINDOW: Duration = Duration::from_millis(100);
const SLIDE: Duration = Duration::from_millis(10);

/// The longest stretch covered by consecutive 100 ms windows (slid by 10 ms) that each
/// delivered under 5 Mbit/s, between `from` and `to`. `trace` holds (time, bytes read so
/// far) in time order.
pub fn slow_stretch(trace: &[(Instant, u64)], from: Instant, to: Instant) -> Duration {
    let read_by = |t: Instant| -> u64 {
        match trace.partition_point(|(at, _)| *at < t) {
            0 => trace
                .first()
                .map_or(0, |(at, b)| if *at <= t { *b } else { 0 }),
            i => trace[i - 1].1,
        }
    };
    let base = read_by(from);
    let bytes_at = |t: Instant| read_by(t).max(base);
    let mut longest = Duration::ZERO;
    let mut run_start: Option<Instant> = None;
    let mut t = from;
    while t + WINDOW <= to {
        let bits = (bytes_at(t + WINDOW) - bytes_at(t)) as f64 * 8.0;
        if bits / WINDOW.as_secs_f64() < SLOW_BPS {
            let start = *run_start.get_or_insert(t);
            longest = longest.max(t + WINDOW - start);
        } else {
            run_start = None;
        }
        t += SLIDE;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_stretch_spans_the_windows_under_5_mbit() {
        // 10 Mbit/s (1250 bytes a millisecond) for 2 s, but nothing from 1.0 s to 1.3 s.
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut trace = Vec::new();
        let mut bytes = 0;
        for k in (0..2000u32).filter(|k| !(1000..1300).contains(k)) {
            bytes += 1250;
            trace.push((t0 + k * ms, bytes));
        }
        // Windows starting 960..=1240 ms hold under 50 ms of delivery: 960 to 1340 ms.
        assert_eq!(
            slow_stretch(&trace, t0, t0 + 2000 * ms),
            Duration::from_millis(380)
        );
        assert_eq!(
            slow_stretch(&trace, t0, t0 + 900 * ms),
            Duration::ZERO,
            "a steady 10 Mbit/s is never slow"
        );
    }
}
