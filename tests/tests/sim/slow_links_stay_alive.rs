//! Health judges liveness, not queue delay. Echoes (both directions full) over links where
//! a `Pong` can wait behind a full queue or a long round trip complete with matching
//! checksums, and neither side closes the session or fails a path: 512 kbit/s and 1 Mbit/s
//! with a 50 ms and a one-second queue kept full, a 2 s RTT, and 10 % loss. Servers probe too: a client whose link dies
//! while data moves is noticed by the server within `max(3 × RTT, interval × threshold) +
//! RTT`; an idle one within three keep-alive intervals and an RTT.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir, SessionError};
use kwik_tests::app::{App, payload, sha256};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

/// Sends `len` bytes over `link` and has the server echo them, so that both directions
/// run full; asserts both checksums and that both sessions lived.
fn echo(seed: u64, link: LinkConfig, len: usize) {
    let mut p = Pair::new(seed, link, Config::default(), Config::default());
    let h = p.session;
    let data = payload(seed, len);
    let want = sha256(&data);
    let mut server_app = App::echo();
    let mut client_app = App::default();
    let mut stream = None;
    let start = p.sim.now();
    let done = p.run_until(
        Duration::from_secs(600),
        &mut server_app,
        &mut client_app,
        |p, server_app, client_app| {
            if stream.is_none() && client_app.sessions.contains(&h) {
                stream = Some(p.open_and_send(client_app, Dir::Bi, data.clone()).unwrap());
            }
            client_app.received.values().any(|r| r.finished)
                || !server_app.closed.is_empty()
                || !client_app.closed.is_empty()
        },
    );
    assert!(
        server_app.closed.is_empty() && client_app.closed.is_empty(),
        "a session ended: client {:?}, server {:?}",
        client_app.closed,
        server_app.closed
    );
    assert!(done, "the echo did not complete");
    for r in [
        server_app.received.values().next().unwrap(),
        client_app.received.values().next().unwrap(),
    ] {
        assert_eq!(r.bytes, len as u64);
        assert_eq!(r.digest(), want);
    }
    let rtt = p.client_endpoint().session(h).unwrap().stats().paths[0].rtt;
    println!(
        "{len} bytes in {:?} of virtual time, smoothed RTT {rtt:?} at the end",
        p.sim.now() - start
    );
}

#[test]
fn a_512_kbit_link_with_a_full_queue_stays_alive() {
    // A second of queue: every Ping waits behind up to a second of data.
    let link = LinkConfig::default()
        .rate_kbit(512)
        .delay_ms(20)
        .queue_ms(1000);
    echo(301, link, 512 * 1024);
}

#[test]
fn a_1_mbit_link_with_a_full_queue_stays_alive() {
    let link = LinkConfig::default()
        .rate_kbit(1000)
        .delay_ms(20)
        .queue_ms(1000);
    echo(302, link, 1 << 20);
}

#[test]
fn a_1_mbit_link_with_a_short_full_queue_stays_alive() {
    let link = LinkConfig::default()
        .rate_kbit(1000)
        .delay_ms(20)
        .queue_ms(50);
    echo(316, link, 1 << 20);
}

#[test]
fn a_512_kbit_link_with_a_short_full_queue_stays_alive() {
    let link = LinkConfig::default()
        .rate_kbit(512)
        .delay_ms(20)
        .queue_ms(50);
    echo(317, link, 512 * 1024);
}

#[test]
fn a_2_s_round_trip_stays_alive() {
    let link = LinkConfig::default()
        .rate_mbit(10)
        .delay_ms(1000)
        .queue_ms(100);
    echo(303, link, 4 << 20);
}

#[test]
fn ten_percent_loss_stays_alive() {
    // Five seeds: a live path falls silent by chance now and then at this loss rate.
    for seed in 304..309 {
        let link = LinkConfig::default()
            .rate_mbit(20)
            .delay_ms(20)
            .queue_ms(50)
            .loss(0.10);
        echo(seed, link, 2 << 20);
    }
}

/// A client and a server over a 20 Mbit/s link with a 40 ms RTT; the client's link dies
/// after `before` of either an upload the server echoes (`busy`) or silence. Returns how
/// long after the cut the server closed the session, with the error, and the path's RTT.
fn server_notices_dead_client(
    seed: u64,
    busy: bool,
    before: Duration,
) -> (Duration, SessionError, Duration) {
    let link = LinkConfig::default()
        .rate_mbit(20)
        .delay_ms(20)
        .queue_ms(50);
    let config = Config::default();
    let mut p = Pair::new(seed, link, config.clone(), config);
    let mut server_app = App::echo();
    let mut client_app = App::default();
    assert!(p.run_until(
        Duration::from_secs(5),
        &mut server_app,
        &mut client_app,
        |_, s, c| !s.sessions.is_empty() && !c.sessions.is_empty()
    ));
    if busy {
        // 40 MB each way: still under way when the link dies.
        p.open_and_send(&mut client_app, Dir::Bi, payload(seed, 40 << 20))
            .unwrap();
    }
    p.run_until(before, &mut server_app, &mut client_app, |_, _, _| false);
    let sh = server_app.sessions[0];
    let rtt = p.server_endpoint().session(sh).unwrap().stats().paths[0].rtt;
    let (a, b) = (p.server_addr.ip(), p.client_addr.ip());
    p.sim.net.set_up(a, b, false);
    let cut = p.sim.now();
    let closed = p.run_until(
        Duration::from_secs(60),
        &mut server_app,
        &mut client_app,
        |_, s, _| !s.closed.is_empty(),
    );
    assert!(closed, "the server never noticed");
    (p.sim.now() - cut, server_app.closed[0].1.clone(), rtt)
}

#[test]
fn a_server_notices_a_client_that_dies_mid_transfer_within_the_window() {
    let config = Config::default();
    let (after, error, rtt) = server_notices_dead_client(305, true, Duration::from_secs(2));
    let bound =
        (3 * rtt).max(config.path_health_check_interval * config.path_failure_threshold) + rtt;
    println!("the server closed {after:?} after the cut (bound {bound:?})");
    assert!(
        matches!(error, SessionError::PathUnresponsive { .. }),
        "{error:?}"
    );
    assert!(after <= bound, "{after:?} above {bound:?}");
}

#[test]
fn a_server_notices_an_idle_client_that_died_within_the_idle_window() {
    // Idle for 5 s (idle after two windows, 1.5 s): QUIC's keep-alive (10 s) is the only
    // probe, and silence fails the path after three of its intervals; QUIC's idle timeout
    // (30 s) may end it at the same moment.
    let config = Config::default();
    let (after, error, rtt) = server_notices_dead_client(306, false, Duration::from_secs(5));
    let keep_alive = config.keep_alive_interval.unwrap();
    let bound = keep_alive * config.path_failure_threshold + rtt;
    println!("the server closed {after:?} after the cut (bound {bound:?})");
    assert!(
        matches!(
            error,
            SessionError::PathUnresponsive { .. } | SessionError::TimedOut
        ),
        "{error:?}"
    );
    // Not at the busy cadence: the path was idle.
    assert!(after > Duration::from_secs(2), "{after:?}");
    assert!(after <= bound, "{after:?} above {bound:?}");
}
