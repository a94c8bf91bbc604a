//! Table tests of the same-peer scheduler (`kwik_core::scheduler`): the ranking of each
//! strategy, and that a path takes frames only when every path ranked before it is
//! backlogged.

use std::time::Duration;

use kwik_core::LoadBalancing;
use kwik_core::PathId;
use kwik_core::scheduler::{PathFacts, TURN_FRAMES, allowance, rank};

fn path(id: u32, rtt_ms: u64, cwnd: u64, frames: u64, bytes: u64, backlogged: bool) -> PathFacts {
    PathFacts {
        id: PathId(id),
        rtt: Duration::from_millis(rtt_ms),
        cwnd,
        frames_sent: frames,
        bytes_sent: bytes,
        backlogged,
    }
}

#[test]
fn each_strategy_ranks_as_documented() {
    // Path 0: fast RTT, small window; path 1: slow RTT, large window, fewer frames sent.
    let paths = [
        path(0, 10, 100_000, 50, 800_000, false),
        path(1, 40, 1_000_000, 10, 160_000, false),
    ];
    let cases = [
        (LoadBalancing::MinRtt, [0, 1]),
        (LoadBalancing::RoundRobin, [1, 0]),
        // Rates: 10 MB/s and 25 MB/s; time-share sent: 0.08 s and 0.0064 s.
        (LoadBalancing::Weighted, [1, 0]),
        // Expected arrival: 5 ms + 1.6 ms against 20 ms + 0.7 ms.
        (LoadBalancing::Adaptive, [0, 1]),
    ];
    for (strategy, want) in cases {
        let got: Vec<u32> = rank(strategy, &paths).iter().map(|p| p.0).collect();
        assert_eq!(got, want, "{strategy:?}");
    }
}

#[test]
fn a_path_waits_until_every_better_path_is_backlogged() {
    let free = [
        path(0, 10, 100_000, 0, 0, false),
        path(1, 40, 100_000, 0, 0, false),
    ];
    assert_eq!(
        allowance(LoadBalancing::MinRtt, &free, PathId(0)),
        (true, usize::MAX)
    );
    assert_eq!(
        allowance(LoadBalancing::MinRtt, &free, PathId(1)),
        (false, 0)
    );
    let busy = [
        path(0, 10, 100_000, 0, 0, true),
        path(1, 40, 100_000, 0, 0, false),
    ];
    assert_eq!(
        allowance(LoadBalancing::MinRtt, &busy, PathId(1)),
        (true, usize::MAX)
    );
    // Alternating strategies take a few frames per turn.
    assert_eq!(
        allowance(LoadBalancing::RoundRobin, &free, PathId(0)),
        (true, TURN_FRAMES)
    );
    // A path that is not among the candidates takes nothing.
    assert_eq!(
        allowance(LoadBalancing::MinRtt, &free, PathId(7)),
        (false, 0)
    );
}
