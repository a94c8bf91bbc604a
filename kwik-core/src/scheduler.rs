//! Same-peer multipath scheduling: which of several paths to one peer takes the next
//! stream frames.
//!
//! Every strategy ranks the usable paths; a path takes frames only when every path ranked
//! before it is backlogged (QUIC refused more bytes: the path's send window, kept near its
//! congestion window, is full). So the best path is always kept busy, and the others take
//! what it cannot send now.
//!
//! - `MinRtt`: lowest smoothed RTT first; a path fills its window before the next gets any.
//! - `RoundRobin`: fewest frames sent first, a few frames per turn, so paths alternate.
//! - `Weighted`: least stream bytes sent relative to the path's rate (congestion window
//!   over RTT) first, a few frames per turn, so bytes split in proportion to rate.
//! - `Adaptive`: earliest expected arrival of a new frame first (half an RTT plus the
//!   time to send a frame at the path's rate).
//! - `Redundant` is handled by the caller: one path takes every frame and the others carry
//!   copies.
//!
//! Pure functions of the facts given; table tests in `kwik-core/tests/unit/scheduler_policy.rs`.

use std::time::Duration;

use crate::config::LoadBalancing;
use crate::ids::PathId;

/// What the scheduler knows about one path to the peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathFacts {
    /// The path.
    pub id: PathId,
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Data-plane frames sent so far.
    pub frames_sent: u64,
    /// Stream bytes sent so far.
    pub bytes_sent: u64,
    /// QUIC refuses more bytes on this path now.
    pub backlogged: bool,
}

/// Frames a path takes per turn with the alternating strategies.
pub const TURN_FRAMES: usize = 4;

/// Bytes of one full frame, for expected-arrival estimates.
const FRAME_BYTES: f64 = 16.0 * 1024.0;

/// Paths in the order `strategy` serves them.
pub fn rank(strategy: LoadBalancing, paths: &[PathFacts]) -> Vec<PathId> {
    let mut keyed: Vec<(f64, PathId)> = paths
        .iter()
        .map(|p| {
            let rtt = p.rtt.as_secs_f64().max(1e-6);
            let rate = (p.cwnd.max(1) as f64) / rtt;
            let key = match strategy {
                LoadBalancing::RoundRobin => p.frames_sent as f64,
                LoadBalancing::Weighted => p.bytes_sent as f64 / rate,
                LoadBalancing::Adaptive => rtt / 2.0 + FRAME_BYTES / rate,
                LoadBalancing::MinRtt | LoadBalancing::Redundant => rtt,
            };
            (key, p.id)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// Whether path `me` may take frames now, and how many at most: its allowance.
pub fn allowance(strategy: LoadBalancing, paths: &[PathFacts], me: PathId) -> (bool, usize) {
    let limit = match strategy {
        LoadBalancing::RoundRobin | LoadBalancing::Weighted => TURN_FRAMES,
        _ => usize::MAX,
    };
    for id in rank(strategy, paths) {
        if id == me {
            return (true, limit);
        }
        let backlogged = paths.iter().any(|p| p.id == id && p.backlogged);
        if !backlogged {
            return (false, 0);
        }
    }
    (false, 0)
}
