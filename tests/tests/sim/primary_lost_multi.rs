//! Three servers stripe one body; halfway through, the primary's link dies silently in both
//! directions. The client's session ends with `PathUnresponsive { path: PRIMARY }` within
//! `max(3 × RTT, interval × threshold) + RTT` of the cut (RTT of the primary link), never a
//! hang, and the secondary paths are closed with it: each secondary's session ends and the
//! secondaries hold no session soon after.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, PathId, SessionError};
use kwik_tests::app::payload;
use kwik_tests::cluster::Cluster;
use kwik_tests::failover::links;

/// RTT of the primary's link (10 ms each way, see [`links`]).
const PRIMARY_RTT: Duration = Duration::from_millis(20);

/// How long after the client's session ended the secondaries may take to see their
/// sessions end: the close travels one way on the slowest secondary link (60 ms plus up
/// to 50 ms of queue), with room for one retransmission.
const SECONDARY_CLOSE: Duration = Duration::from_millis(500);

/// How long a closed connection may take to drain before its session is forgotten.
const FORGET: Duration = Duration::from_secs(5);

#[test]
fn a_cut_primary_ends_the_session_and_closes_every_secondary() {
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    let bound = (PRIMARY_RTT * 3)
        .max(config.path_health_check_interval * config.path_failure_threshold)
        + PRIMARY_RTT;
    let len = 16u64 << 20;
    let body = payload(51, len as usize);
    let mut c = Cluster::new(51, &links(), config.clone(), config, body);
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    c.start_stripe();
    assert!(
        c.run_until(Duration::from_secs(60), |c| c.reader.bytes >= len / 2),
        "half the body arrived: read {}, closed {:?}",
        c.reader.bytes,
        c.reader.closed
    );
    // Every server carries part of the body, so every path is live at the cut.
    let per_path = c.received_per_path();
    let paths = [PathId::PRIMARY, c.path_ids[&1], c.path_ids[&2]];
    for path in paths {
        assert!(
            per_path.get(&path).is_some_and(|b| *b > 0),
            "{path} carried nothing before the cut: {per_path:?}"
        );
    }
    for (i, node) in c.servers.clone().into_iter().enumerate().skip(1) {
        assert_eq!(
            c.sim.nodes[node].endpoint.session_count(),
            1,
            "secondary {i} holds the session before the cut"
        );
    }

    let (primary, client) = (c.addrs[0].ip(), c.sim.nodes[c.client].addr.ip());
    c.sim.net.set_up(primary, client, false);
    let cut = c.sim.now();
    let read_at_cut = c.reader.bytes;
    let mut closed_at = None;
    c.run_until(Duration::from_secs(60), |c| {
        if closed_at.is_none() && c.reader.closed.is_some() {
            closed_at = Some(c.sim.now());
        }
        closed_at.is_some()
    });
    let closed_at = closed_at.expect("the client session never ended after the cut");
    let stall = closed_at - cut;

    // The secondaries learn of the end from the client's close on their paths.
    let mut secondary_closed = [None, None];
    c.run_until(SECONDARY_CLOSE, |c| {
        for i in 1..=2 {
            if secondary_closed[i - 1].is_none() && !c.apps[i].closed.is_empty() {
                secondary_closed[i - 1] = Some(c.sim.now() - closed_at);
            }
        }
        secondary_closed.iter().all(Option::is_some)
    });
    let forgotten = c.run_until(FORGET, |c| {
        c.servers[1..]
            .iter()
            .all(|n| c.sim.nodes[*n].endpoint.session_count() == 0)
    });
    let client_idle = c.run_until(FORGET, |c| {
        let h = c.session;
        let ep = c.client_endpoint();
        ep.is_idle() && ep.session(h).is_none()
    });
    let primary_sessions = c.primary().session_count();
    println!(
        "cut at {read_at_cut}/{len} bytes: client session error {:?} after {stall:?} \
         (bound {bound:?}); secondaries saw their sessions end after {:?} with {:?} / {:?}; \
         secondaries forgot {forgotten}, client idle {client_idle}; primary server still \
         holds {} session(s)",
        c.reader.closed,
        secondary_closed,
        c.apps[1].closed.first().map(|(_, e)| e),
        c.apps[2].closed.first().map(|(_, e)| e),
        primary_sessions,
    );

    assert_eq!(
        c.reader.closed,
        Some(SessionError::PathUnresponsive {
            path: PathId::PRIMARY
        })
    );
    assert!(stall <= bound, "stall {stall:?} above the bound {bound:?}");
    assert!(
        !c.reader.finished,
        "the body cannot complete without the primary"
    );
    // Every later operation on the client's session reports the same error.
    let h = c.session;
    if let Some(s) = c.client_endpoint().session(h) {
        assert_eq!(
            s.error(),
            Some(SessionError::PathUnresponsive {
                path: PathId::PRIMARY
            })
        );
    }
    for (i, at) in secondary_closed.iter().enumerate() {
        assert!(
            at.is_some(),
            "secondary {} did not see its session end within {SECONDARY_CLOSE:?}",
            i + 1
        );
        assert_eq!(
            c.apps[i + 1].closed.len(),
            1,
            "one Closed on secondary {}",
            i + 1
        );
    }
    assert!(
        forgotten,
        "a secondary still holds a session after {FORGET:?}"
    );
    assert!(
        client_idle,
        "the client still holds connections: {:?}",
        c.client_endpoint().stats()
    );
}
