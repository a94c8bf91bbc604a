//! Three servers stripe one body; halfway through, the primary is lost: its link dies
//! silently in both directions, or its endpoint is gone (a fresh one answers at its
//! address, knowing nothing of the session). The client learns it within
//! `max(3 × RTT, interval × threshold) + RTT` of the loss (path 0 failed, no new stream
//! opens, `primary_lost` names the error), never hangs, and the secondaries finish the
//! stripe under the client's tickets: the body arrives whole and its stream ends normally
//! (the primary had finished the stream right after the stripe, so the client holds a
//! ticket saying where it ends), then the session closes with the primary's error, and
//! the secondaries with it. With tickets that expire before the rest can arrive, the reader
//! gets the primary's error instead. An application close by the primary still ends the
//! session at once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{
    Config, Dir, Endpoint, EndpointConfig, Event, GroupKey, PathError, PathId, SessionError, VarInt,
};
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::{Cluster, GROUP_KEY};
use kwik_tests::failover::links;

/// RTT of the primary's link (10 ms each way, see [`links`]).
const PRIMARY_RTT: Duration = Duration::from_millis(20);

/// How long after the client's session ended the secondaries may take to see their
/// sessions end: the close travels one way on the slowest secondary link (60 ms plus up
/// to 50 ms of queue), with room for one retransmission.
const SECONDARY_CLOSE: Duration = Duration::from_millis(500);

/// How long a closed connection may take to drain before its session is forgotten.
const FORGET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// The primary's link drops everything, both ways.
    Blackhole,
    /// The primary's endpoint is replaced by a fresh one, as a restarted process.
    EndpointGone,
    /// The primary's application closes the session.
    AppClose,
    /// As `Blackhole`, but the primary had not finished the stream after the stripe: the
    /// client holds no ticket saying where it ends.
    BlackholeUnfinished,
    /// As `Blackhole`, but the body was a plain delegation of the whole stream to
    /// secondary 1, not a stripe.
    BlackholeDelegated,
}

fn config(ticket_lifetime: Duration) -> Config {
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    config.ticket_lifetime = ticket_lifetime;
    config
}

/// What became of the client.
struct Outcome {
    cluster: Cluster,
    len: u64,
    /// From the loss: when path 0 was reported failed, when the reader read the stream's
    /// end, when the session closed.
    failed_after: Option<Duration>,
    finished_after: Option<Duration>,
    closed_after: Option<Duration>,
    /// Once path 0 failed: what `primary_lost` said, and whether a stream opened.
    lost_error: Option<SessionError>,
    opened: Option<bool>,
    digest_ok: bool,
}

fn run(seed: u64, len: u64, loss: Loss, ticket_lifetime: Duration) -> Outcome {
    let body = payload(seed, len as usize);
    let want = sha256(&body);
    let mut links = links();
    if loss == Loss::AppClose {
        // A queue that holds the close rather than dropping it behind the stripe's data (a
        // close that never arrives is the peer's silence, then a stateless reset: a loss).
        links[0] = links[0].queue_ms(1000);
    }
    let mut c = Cluster::new(
        seed,
        &links,
        config(ticket_lifetime),
        config(ticket_lifetime),
        body,
    );
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    match loss {
        Loss::BlackholeUnfinished => {
            let h = c.primary_session.unwrap();
            let now = c.sim.now();
            let mut s = c.primary().session(h).unwrap();
            let id = s.open(Dir::Uni).unwrap();
            s.send_stream(id)
                .stripe(now, bytes::Bytes::from_static(b"body"), len)
                .unwrap();
        }
        Loss::BlackholeDelegated => {
            let (h, path) = (c.primary_session.unwrap(), c.path_ids[&1]);
            let now = c.sim.now();
            let mut s = c.primary().session(h).unwrap();
            let id = s.open(Dir::Uni).unwrap();
            let mut send = s.send_stream(id);
            send.delegate(now, path, bytes::Bytes::from_static(b"body"), len)
                .unwrap();
            send.finish().unwrap();
        }
        _ => {
            c.start_stripe();
        }
    }
    assert!(
        c.run_until(Duration::from_secs(60), |c| c.reader.bytes >= len / 2),
        "half the body arrived: read {}, closed {:?}",
        c.reader.bytes,
        c.reader.closed
    );
    // Every server carries part of a stripe, so every path is live at the loss.
    let per_path = c.received_per_path();
    let carriers = match loss {
        Loss::BlackholeDelegated => vec![c.path_ids[&1]],
        _ => vec![PathId::PRIMARY, c.path_ids[&1], c.path_ids[&2]],
    };
    for path in carriers {
        assert!(
            per_path.get(&path).is_some_and(|b| *b > 0),
            "{path} carried nothing before the loss: {per_path:?}"
        );
    }
    let now = c.sim.now();
    match loss {
        Loss::Blackhole | Loss::BlackholeUnfinished | Loss::BlackholeDelegated => {
            let (primary, client) = (c.addrs[0].ip(), c.sim.nodes[c.client].addr.ip());
            c.sim.net.set_up(primary, client, false);
        }
        Loss::EndpointGone => {
            let mut server = c.cert.server(config(ticket_lifetime));
            server.group_key(GroupKey::new(GROUP_KEY));
            let config = EndpointConfig {
                seed: [0x77; 32],
                allow_mtud: false,
            };
            let node = c.servers[0];
            c.sim.nodes[node].endpoint = Endpoint::new(config, Some(server));
        }
        Loss::AppClose => {
            let h = c.primary_session.unwrap();
            c.primary()
                .session(h)
                .unwrap()
                .close(now, VarInt::from_u32(7), b"going away");
        }
    }
    let lost_at = now;
    let (mut failed_after, mut finished_after, mut closed_after) = (None, None, None);
    let (mut lost_error, mut opened) = (None, None);
    let primary_failed = |c: &Cluster| {
        c.reader
            .events
            .iter()
            .any(|e| matches!(e, Event::PathFailed { path, .. } if *path == PathId::PRIMARY))
    };
    c.run_until(Duration::from_secs(60), |c| {
        let since = c.sim.now() - lost_at;
        if failed_after.is_none() && primary_failed(c) {
            failed_after = Some(since);
            let h = c.session;
            if let Some(mut s) = c.client_endpoint().session(h) {
                lost_error = s.primary_lost();
                opened = Some(s.open(Dir::Bi).is_some());
            }
        }
        if finished_after.is_none() && c.reader.finished {
            finished_after = Some(since);
        }
        if closed_after.is_none() && c.reader.closed.is_some() {
            closed_after = Some(since);
        }
        closed_after.is_some()
    });
    let digest_ok = c.reader.finished && c.reader.digest() == want;
    Outcome {
        cluster: c,
        len,
        failed_after,
        finished_after,
        closed_after,
        lost_error,
        opened,
        digest_ok,
    }
}

/// The bound within which the client learns that the primary is gone.
fn bound() -> Duration {
    let config = Config::default();
    (PRIMARY_RTT * 3).max(config.path_health_check_interval * config.path_failure_threshold)
        + PRIMARY_RTT
}

/// The secondaries see their sessions end after the client's, and forget them; the client
/// ends up holding nothing.
fn secondaries_follow(c: &mut Cluster) {
    let ended = c.run_until(SECONDARY_CLOSE, |c| {
        (1..=2).all(|i| !c.apps[i].closed.is_empty())
    });
    assert!(ended, "a secondary did not see its session end");
    for i in 1..=2 {
        assert_eq!(c.apps[i].closed.len(), 1, "one Closed on secondary {i}");
    }
    let forgotten = c.run_until(FORGET, |c| {
        c.servers[1..]
            .iter()
            .all(|n| c.sim.nodes[*n].endpoint.session_count() == 0)
    });
    assert!(forgotten, "a secondary still holds a session");
    let client_idle = c.run_until(FORGET, |c| {
        let h = c.session;
        let ep = c.client_endpoint();
        ep.is_idle() && ep.session(h).is_none()
    });
    assert!(client_idle, "the client still holds connections");
}

fn the_body_survives(seed: u64, loss: Loss) {
    let mut out = run(seed, 16 << 20, loss, Duration::from_secs(60));
    let unresponsive = SessionError::PathUnresponsive {
        path: PathId::PRIMARY,
    };
    let per_path = out.cluster.received_per_path();
    println!(
        "{loss:?}: path 0 failed after {:?}, stream ended after {:?}, session closed after \
         {:?} with {:?}; received per path {per_path:?}",
        out.failed_after, out.finished_after, out.closed_after, out.cluster.reader.closed,
    );
    let failed = out.failed_after.expect("path 0 was reported failed");
    // Silence counts from the last datagram the primary sent: a blackhole drops what was
    // on the link, a gone endpoint's last datagrams still arrive (10 ms of delay and up to
    // 50 ms of queue).
    let last_heard = match loss {
        Loss::EndpointGone => Duration::from_millis(60),
        _ => Duration::ZERO,
    };
    assert!(
        failed <= bound() + last_heard,
        "{loss:?}: {failed:?} above {:?}",
        bound() + last_heard
    );
    assert_eq!(out.lost_error, Some(unresponsive.clone()), "{loss:?}");
    assert_eq!(out.opened, Some(false), "{loss:?}: a stream opened");
    assert!(out.digest_ok, "{loss:?}: the body is not whole");
    assert_eq!(out.cluster.reader.bytes, out.len);
    let (finished, closed) = (out.finished_after.unwrap(), out.closed_after.unwrap());
    assert!(
        finished <= closed,
        "{loss:?}: closed before the stream ended"
    );
    assert_eq!(out.cluster.reader.closed, Some(unresponsive), "{loss:?}");
    assert_eq!(out.cluster.reader.error, None, "{loss:?}");
    secondaries_follow(&mut out.cluster);
}

#[test]
fn a_blackholed_primary_leaves_the_body_to_the_secondaries() {
    the_body_survives(51, Loss::Blackhole);
}

#[test]
fn a_plain_delegation_owed_by_a_live_secondary_finishes_like_a_stripe() {
    the_body_survives(56, Loss::BlackholeDelegated);
}

#[test]
fn a_primary_whose_endpoint_is_gone_leaves_the_body_to_the_secondaries() {
    the_body_survives(52, Loss::EndpointGone);
}

#[test]
fn without_the_stream_end_in_a_ticket_the_reader_gets_the_primary_error() {
    let mut out = run(
        55,
        16 << 20,
        Loss::BlackholeUnfinished,
        Duration::from_secs(60),
    );
    println!(
        "unfinished: read {} of {}, closed after {:?} with {:?}, read error {:?}",
        out.cluster.reader.bytes,
        out.len,
        out.closed_after,
        out.cluster.reader.closed,
        out.cluster.reader.error
    );
    // Every byte of the body arrived, but not the stream's end.
    assert_eq!(out.cluster.reader.bytes, out.len);
    assert!(!out.cluster.reader.finished);
    assert_eq!(
        out.lost_error,
        Some(SessionError::PathUnresponsive {
            path: PathId::PRIMARY
        })
    );
    assert_eq!(
        out.cluster.reader.closed,
        Some(SessionError::PathUnresponsive {
            path: PathId::PRIMARY
        })
    );
    // Once the secondaries owed nothing more: not at the tickets' expiry, a minute away.
    assert!(out.closed_after.unwrap() < Duration::from_secs(10));
    secondaries_follow(&mut out.cluster);
}

#[test]
fn tickets_that_expire_first_end_the_reader_with_the_primary_error() {
    // 16 MiB are left at the loss, 5 s of work for the secondaries' 30 Mbit/s; the
    // tickets were last refreshed at most a second before it and live 2 s.
    let lifetime = Duration::from_secs(2);
    let mut out = run(53, 32 << 20, Loss::Blackhole, lifetime);
    println!(
        "expiry: read {} of {}, closed after {:?} with {:?}",
        out.cluster.reader.bytes, out.len, out.closed_after, out.cluster.reader.closed
    );
    assert!(!out.cluster.reader.finished, "the body cannot complete");
    assert!(out.cluster.reader.bytes < out.len);
    assert_eq!(
        out.cluster.reader.closed,
        Some(SessionError::PathUnresponsive {
            path: PathId::PRIMARY
        })
    );
    let closed = out.closed_after.unwrap();
    // No later than the tickets' expiry (Unix seconds: up to a second of rounding).
    assert!(
        closed <= lifetime + Duration::from_secs(1),
        "closed {closed:?} after the loss"
    );
    secondaries_follow(&mut out.cluster);
}

#[test]
fn an_application_close_by_the_primary_still_ends_the_session_at_once() {
    let mut out = run(54, 16 << 20, Loss::AppClose, Duration::from_secs(60));
    assert_eq!(
        out.cluster.reader.closed,
        Some(SessionError::ApplicationClosed {
            code: VarInt::from_u32(7),
            reason: bytes::Bytes::from_static(b"going away"),
        })
    );
    // At once: what the close waited in the primary's queue, not the secondaries' work.
    let closed = out.closed_after.unwrap();
    assert!(
        closed <= Duration::from_millis(1100),
        "closed after {closed:?}"
    );
    assert!(!out.cluster.reader.finished);
    assert_eq!(out.lost_error, None);
    assert!(
        !out.cluster
            .reader
            .events
            .iter()
            .any(|e| matches!(e, Event::PathFailed { error: PathError::Connection(_), path, .. } if *path == PathId::PRIMARY))
    );
    secondaries_follow(&mut out.cluster);
}
