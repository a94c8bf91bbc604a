//! Draining a secondary in the middle of a stripe, in virtual time: three servers (40, 20
//! and 10 Mbit/s, RTTs of 20, 60 and 120 ms) stripe a 32 MiB body, and server 1 is drained
//! once half of it was read. Against the same seed without a drain: the reader's longest
//! gap from that moment on is no longer than the healthy run's over the same interval plus
//! one chunk time, the drain costs no copied byte (the paths receive no more beyond the
//! body than the healthy run's), the body is exact, the client closes the path with the
//! `Drained` code and reports it removed (never failed), and the secondary's endpoint
//! reports `Drained`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, CopyBytes, ErrorCode, Event, PathId, SessionError};
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::Cluster;
use kwik_tests::failover::links;

const LEN: usize = 32 << 20;
/// The drained server.
const DRAINED: usize = 1;

#[derive(Debug)]
struct Outcome {
    /// When half the body was read (the drain, in the run that drains), from the start
    /// of the stripe.
    half: Duration,
    /// The reader's longest gap from `half` on.
    gap_after: Duration,
    /// Paths' stream bytes beyond the body, and the copies by reason.
    extra: u64,
    copies: CopyBytes,
    /// The client's events about the drained path, and its stats.
    path_events: Vec<Event>,
    paths_drained: u64,
    /// The drained server's endpoint reported `Drained`, and how its session ended.
    server_drained: bool,
    server_closed: Vec<SessionError>,
    elapsed: Duration,
}

fn config() -> Config {
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    config
}

fn run(seed: u64, drain: bool) -> Outcome {
    let body = payload(seed, LEN);
    let want = sha256(&body);
    let mut c = Cluster::new(seed, &links(), config(), config(), body);
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    c.reader.record();
    let start = c.sim.now();
    c.start_stripe();
    let mut half = None;
    let done = c.run_until(Duration::from_secs(120), |c| {
        if half.is_none() && c.reader.bytes >= LEN as u64 / 2 {
            let now = c.sim.now();
            half = Some(now);
            if drain {
                let node = c.servers[DRAINED];
                c.sim.nodes[node]
                    .endpoint
                    .drain(now, now + Duration::from_secs(30));
            }
        }
        c.reader.finished || c.reader.closed.is_some()
    });
    assert!(
        done && c.reader.finished,
        "drain {drain}: body not delivered ({} bytes, {:?})",
        c.reader.bytes,
        c.reader.closed
    );
    assert_eq!(c.reader.digest(), want, "drain {drain}: body exact");
    let elapsed = c.sim.now() - start;
    let half = half.unwrap();
    // Let the drained path's close reach the server.
    c.run_until(Duration::from_secs(5), |c| {
        !drain || c.apps[DRAINED].events.contains(&Event::Drained)
    });
    let trace = c.reader.trace.clone().unwrap();
    let gap_after = trace
        .windows(2)
        .filter(|w| w[1].0 > half)
        .map(|w| w[1].0 - w[0].0.max(half))
        .max()
        .unwrap_or_default();
    let h = c.session;
    let stats = c.client_endpoint().session(h).unwrap().stats();
    let paths_drained = c.client_endpoint().stats().paths_drained;
    let path = c.path_ids[&DRAINED];
    let path_events = c
        .reader
        .events
        .iter()
        .filter(|e| match e {
            Event::PathDraining { path: p, .. }
            | Event::PathRemoved { path: p, .. }
            | Event::PathFailed { path: p, .. } => *p == path,
            _ => false,
        })
        .cloned()
        .collect();
    let app = &c.apps[DRAINED];
    Outcome {
        half: half - start,
        gap_after,
        extra: stats.stream_bytes_received() - LEN as u64,
        copies: stats.stripe_copy_bytes,
        path_events,
        paths_drained,
        server_drained: app.events.contains(&Event::Drained),
        server_closed: app.closed.iter().map(|(_, e)| e.clone()).collect(),
        elapsed,
    }
}

#[test]
fn a_secondary_drained_mid_stripe_costs_no_gap_and_no_copy() {
    let seed = 81;
    let healthy = run(seed, false);
    let drained = run(seed, true);
    println!("healthy: {healthy:?}\ndrained: {drained:?}");
    assert_eq!(drained.half, healthy.half, "the same run up to the drain");
    let chunk_time = config().stripe_chunk_time;
    assert!(
        drained.gap_after <= healthy.gap_after + chunk_time,
        "longest gap after the drain {:?}, healthy {:?} + chunk time {chunk_time:?}",
        drained.gap_after,
        healthy.gap_after
    );
    assert!(
        drained.extra <= healthy.extra,
        "the drain cost copies: {} bytes beyond the body ({:?}), healthy {} ({:?})",
        drained.extra,
        drained.copies,
        healthy.extra,
        healthy.copies
    );
    let path = match &drained.path_events[..] {
        [
            Event::PathDraining { path, .. },
            Event::PathRemoved { path: removed, .. },
        ] if path == removed => *path,
        other => panic!("drained path's events: {other:?}"),
    };
    assert_ne!(path, PathId::PRIMARY);
    assert_eq!(drained.paths_drained, 1);
    assert!(drained.server_drained, "the secondary reports Drained");
    // The client closed the path once it owed nothing: the server's session ended by
    // the client's `Drained` close, not by the deadline.
    assert_eq!(
        drained.server_closed,
        vec![SessionError::PeerProtocolError {
            code: ErrorCode::Drained,
            reason: "drained".into()
        }]
    );
    assert!(healthy.path_events.is_empty(), "{:?}", healthy.path_events);
    println!(
        "elapsed {:?} drained, {:?} healthy",
        drained.elapsed, healthy.elapsed
    );
}

/// The primary drained 30 % into a stripe over three servers: the stripe completes (the
/// body is exact and ends with its fin), a stream the client opened as the drain began is
/// reset with the `Draining` code, the client opens no stream once it heard of the drain,
/// and the primary closes the session with `Drained` once the stripe is settled, then
/// reports `Drained` itself.
#[test]
fn a_drained_primary_completes_its_stripe_then_closes() {
    use kwik_core::{Dir, ReadError};
    let seed = 82;
    let body = payload(seed, LEN);
    let want = sha256(&body);
    let mut c = Cluster::new(seed, &links(), config(), config(), body);
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    c.start_stripe();
    let h = c.session;
    let mut late = None;
    let mut refused_open = false;
    let done = c.run_until(Duration::from_secs(120), |c| {
        let now = c.sim.now();
        if late.is_none() && c.reader.bytes >= LEN as u64 * 3 / 10 {
            c.primary().drain(now, now + Duration::from_secs(30));
            // The client has not heard yet: it opens a stream, which reaches a draining
            // primary.
            let mut s = c.client_endpoint().session(h).unwrap();
            let id = s.open(Dir::Bi).expect("open before the notice");
            s.send_stream(id).write(b"GET /late").unwrap();
            s.send_stream(id).finish().unwrap();
            late = Some(id);
        }
        if let Some(mut s) = c.client_endpoint().session(h)
            && s.is_draining()
            && !refused_open
        {
            assert_eq!(
                s.open(Dir::Bi),
                None,
                "no stream opens once the primary drains"
            );
            assert_eq!(s.open(Dir::Uni), None);
            refused_open = true;
        }
        c.reader.closed.is_some()
    });
    assert!(done, "the session did not end");
    assert!(c.reader.finished, "the stripe completed with its fin");
    assert_eq!(c.reader.bytes, LEN as u64);
    assert_eq!(c.reader.digest(), want);
    assert!(refused_open, "the client heard of the drain");
    assert_eq!(
        c.reader.closed,
        Some(SessionError::PeerProtocolError {
            code: ErrorCode::Drained,
            reason: "drained".into()
        })
    );
    assert!(c.reader.events.contains(&Event::PathDraining {
        session: h,
        path: PathId::PRIMARY
    }));
    let reset = c.reader.events.iter().any(|e| {
        matches!(e, Event::StreamStopped { stream, code, .. }
            if Some(*stream) == late && *code == ErrorCode::Draining.to_wire())
    }) || c
        .client_endpoint()
        .session(h)
        .and_then(|mut s| s.recv_stream(late.unwrap()).read(usize::MAX).err())
        == Some(ReadError::Reset(ErrorCode::Draining.to_wire()));
    assert!(
        reset,
        "the stream opened after the drain was reset with Draining"
    );
    c.run_until(Duration::from_secs(5), |c| {
        c.apps[0].events.contains(&Event::Drained)
    });
    assert!(c.apps[0].events.contains(&Event::Drained));
    assert_eq!(c.primary().stats().sessions_drained, 1);
    assert_eq!(c.primary().stats().drain_deadline_closes, 0);
}

/// A draining server takes no new session and no join: a client dialing it is closed with
/// the `Draining` code, and a join to it fails with that code (the path is then removed,
/// not retried) while the other secondary joins. With nothing to serve, it reports
/// `Drained` at once.
#[test]
fn a_draining_server_takes_no_session_and_no_join() {
    use kwik_core::{PathError, Role};
    let mut c = Cluster::new(83, &links(), config(), config(), payload(83, 1 << 20));
    assert!(
        c.run_until(Duration::from_secs(10), |c| c.primary_session.is_some()
            && c.reader.connected)
    );
    let now = c.sim.now();
    let drained = c.servers[2];
    c.sim.nodes[drained]
        .endpoint
        .drain(now, now + Duration::from_secs(30));
    assert!(c.sim.nodes[drained].endpoint.is_draining());
    c.add_paths();
    let refused = c.path_ids[&2];
    let joined = c.path_ids[&1];
    let failed = |c: &Cluster| {
        c.reader.events.iter().find_map(|e| match e {
            Event::PathFailed { path, error, .. } if *path == refused => Some(error.clone()),
            _ => None,
        })
    };
    assert!(c.run_until(Duration::from_secs(10), |c| failed(c).is_some()
        && c.reader.events.contains(&Event::PathActive {
            session: c.session,
            path: joined
        })));
    assert_eq!(
        failed(&c),
        Some(PathError::Connection(SessionError::PeerProtocolError {
            code: ErrorCode::Draining,
            reason: "this server is draining".into()
        }))
    );
    // Nothing was served: drained at once.
    assert!(c.apps[2].events.contains(&Event::Drained));
    assert!(c.apps[2].sessions.values().all(|r| *r != Role::Secondary));
    // A client of its own is refused too.
    let node = c
        .sim
        .add_node(kwik_tests::sim::addr([10, 0, 0, 3], 5000), None);
    c.sim
        .net
        .link(c.addrs[2].ip(), c.sim.nodes[node].addr.ip(), links()[2]);
    let now = c.sim.now();
    let other = c.sim.nodes[node]
        .endpoint
        .connect(now, &c.cert.client(config()), c.addrs[2], "localhost")
        .unwrap();
    let closed = |c: &mut Cluster| {
        c.sim.take_events(node).into_iter().find_map(|e| match e {
            Event::Closed { session, error } if session == other => Some(error),
            _ => None,
        })
    };
    let mut error = None;
    c.run_until(Duration::from_secs(10), |c| {
        error = error.take().or_else(|| closed(c));
        error.is_some()
    });
    let error = error.expect("the dial to a draining server ends");
    assert_eq!(
        error,
        SessionError::PeerProtocolError {
            code: ErrorCode::Draining,
            reason: "this server is draining".into()
        }
    );
    // The refused path is removed at its first retry, not retried until it recovers.
    let removed = Event::PathRemoved {
        session: c.session,
        path: refused,
    };
    assert!(c.run_until(Duration::from_secs(5), |c| {
        c.reader.events.contains(&removed)
    }));
    assert!(
        !c.apps[2]
            .events
            .iter()
            .any(|e| matches!(e, Event::Incoming(_))),
        "the draining server took no session"
    );
}
