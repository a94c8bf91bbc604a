//! The server allows 10 concurrent bidirectional streams: a well-behaved client opens
//! exactly 10, the 11th `open` is refused without error, and once streams complete and are
//! freed a `StreamAvailable` event arrives and opening works again, up to the limit.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir, Event, SessionHandle, StreamId};
use kwik_tests::app::{App, payload, sha256};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

const LIMIT: u64 = 10;

fn message(id: StreamId) -> bytes::Bytes {
    payload(1000 + id.0, 20_000 + id.index() as usize * 100)
}

struct World {
    server_app: App,
    client_app: App,
    /// StreamAvailable(Bi) events of the client: when, and how many streams had completed.
    available: Vec<(Duration, usize)>,
    start: std::time::Instant,
}

impl World {
    fn pump(&mut self, p: &mut Pair) {
        let at = p.sim.now() - self.start;
        p.poll_watching(
            &mut self.server_app,
            &mut self.client_app,
            |e, client_app| {
                if matches!(e, Event::StreamAvailable { dir: Dir::Bi, .. }) {
                    let done = client_app.received.values().filter(|r| r.finished).count();
                    self.available.push((at, done));
                }
            },
        );
    }
}

#[test]
fn open_is_refused_at_the_limit_and_allowed_again_when_streams_are_freed() {
    let link = LinkConfig::default().rate_mbit(100).delay_ms(10);
    let mut server_config = Config::default();
    server_config.max_concurrent_bidi_streams = LIMIT;
    let mut p = Pair::new(5, link, server_config, Config::default());
    let h = p.session;

    let mut w = World {
        server_app: App::echo(),
        client_app: App::default(),
        available: Vec::new(),
        start: p.sim.now(),
    };
    let up = p.step_until(Duration::from_secs(5), |p| {
        w.pump(p);
        w.client_app.sessions.contains(&h)
    });
    assert!(up, "session not established: {:?}", w.client_app.closed);
    w.available.clear();

    // Round 1: exactly LIMIT streams open; the next is refused, cleanly.
    let ep = p.client_endpoint();
    let mut s = ep.session(h).unwrap();
    let round1: Vec<StreamId> = (0..LIMIT)
        .map(|i| {
            s.open(Dir::Bi)
                .unwrap_or_else(|| panic!("stream {i} refused"))
        })
        .collect();
    assert_eq!(s.open(Dir::Bi), None, "an 11th stream was allowed");
    assert_eq!(s.open(Dir::Bi), None, "refusal is stable");
    assert!(s.is_established());
    assert_eq!(s.error(), None);
    for &id in &round1 {
        w.client_app.send(ep, h, id, message(id), true);
    }

    // Completing streams frees them: credit comes back as a StreamAvailable event.
    let freed = p.step_until(Duration::from_secs(10), |p| {
        w.pump(p);
        !w.available.is_empty()
    });
    assert!(
        freed,
        "no StreamAvailable; closed: {:?}",
        w.client_app.closed
    );
    let (at, done_then) = w.available[0];
    println!("first StreamAvailable at {at:?}, {done_then} of {LIMIT} echoes complete");
    assert!(
        done_then >= 1,
        "StreamAvailable at {at:?} before any stream completed"
    );
    let ep = p.client_endpoint();
    let first = ep
        .session(h)
        .unwrap()
        .open(Dir::Bi)
        .expect("open works again after StreamAvailable");
    let mut round2 = vec![first];

    // Once every round-1 stream is done and freed, exactly LIMIT streams are open again.
    let all_done = p.step_until(Duration::from_secs(10), |p| {
        w.pump(p);
        round1.iter().all(|id| {
            w.client_app
                .received
                .get(&(h, *id))
                .is_some_and(|r| r.finished)
        })
    });
    assert!(all_done, "round 1 incomplete: {:?}", w.client_app.closed);
    p.sim.run_for(Duration::from_millis(500));
    w.pump(&mut p);
    let ep = p.client_endpoint();
    let mut s = ep.session(h).unwrap();
    while let Some(id) = s.open(Dir::Bi) {
        round2.push(id);
        assert!(round2.len() as u64 <= LIMIT, "more than {LIMIT} open");
    }
    assert_eq!(round2.len() as u64, LIMIT);
    assert_eq!(s.error(), None);
    for &id in &round2 {
        w.client_app.send(ep, h, id, message(id), true);
    }
    let all_done = p.step_until(Duration::from_secs(10), |p| {
        w.pump(p);
        round2.iter().all(|id| {
            w.client_app
                .received
                .get(&(h, *id))
                .is_some_and(|r| r.finished)
        })
    });
    assert!(all_done, "round 2 incomplete: {:?}", w.client_app.closed);

    for id in round1.iter().chain(&round2) {
        let r = &w.client_app.received[&(h, *id)];
        assert_eq!(r.digest(), sha256(&message(*id)), "{id} echo differs");
    }
    assert!(w.client_app.closed.is_empty() && w.server_app.closed.is_empty());
    assert!(w.client_app.write_errors.is_empty());
    p.sim.run_for(Duration::from_millis(500));
    let sh: SessionHandle = w.server_app.sessions[0];
    let stats = p.server_endpoint().session(sh).unwrap().stats();
    assert_eq!(stats.streams_opened_remote, 2 * LIMIT);
    assert_eq!(stats.streams_open, 0, "every stream freed on the server");
    let stats = p.client_endpoint().session(h).unwrap().stats();
    assert_eq!(stats.streams_opened_local, 2 * LIMIT);
    assert_eq!(stats.streams_open, 0, "every stream freed on the client");
}
