//! A process that stalls (descheduled, or its event loop busy) reads the datagrams that
//! queued up meanwhile and handles its overdue timers at one instant when it wakes. Health
//! must judge the peer on what it just read: a client that kept answering is alive, even
//! though the stalled server did not look for longer than its window. A peer that really
//! went silent while the server stalled is still failed.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir};
use kwik_tests::app::{App, payload};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

/// A client whose health window is long (10 probes), a server with the default (3), an
/// echo under way; the server stalls for `stall`, with the client's link up or cut.
fn stall(seed: u64, stall: Duration, client_alive: bool) -> (Vec<String>, Vec<String>) {
    let mut client_config = Config::default();
    client_config.path_failure_threshold = 10;
    let link = LinkConfig::default().rate_mbit(100).delay_ms(10);
    let mut p = Pair::new(seed, link, Config::default(), client_config);
    let h = p.session;
    let mut server_app = App::echo();
    let mut client_app = App::default();
    let up = p.wait_established(&mut server_app, &mut client_app);
    assert!(up);
    p.open_and_send(&mut client_app, Dir::Bi, payload(seed, 256 << 10))
        .unwrap();
    p.run_until(
        Duration::from_millis(300),
        &mut server_app,
        &mut client_app,
        |_, _, _| false,
    );
    let (server, client) = (p.server, p.client);
    let rtt = p.client_endpoint().session(h).unwrap().stats().paths[0].rtt;
    println!("smoothed RTT {rtt:?} when the server stalls for {stall:?}");
    p.sim.freeze(server);
    if !client_alive {
        p.sim
            .net
            .set_up(p.client_addr.ip(), p.server_addr.ip(), false);
    }
    p.run_until(stall, &mut server_app, &mut client_app, |_, _, _| false);
    p.sim.thaw(server);
    p.run_until(
        Duration::from_millis(200),
        &mut server_app,
        &mut client_app,
        |_, _, _| false,
    );
    let _ = client;
    let errors = |a: &App| a.closed.iter().map(|(_, e)| e.to_string()).collect();
    (errors(&server_app), errors(&client_app))
}

#[test]
fn a_server_that_stalls_past_its_window_keeps_a_client_that_kept_talking() {
    // The server's window is 750 ms; it stalls for 1.5 s while the client keeps acking,
    // probing and sending.
    let (server, client) = stall(91, Duration::from_millis(1500), true);
    assert!(
        server.is_empty(),
        "the server failed a live client: {server:?}"
    );
    assert!(client.is_empty(), "the client closed: {client:?}");
}

#[test]
fn a_server_that_stalls_while_the_client_dies_still_fails_it() {
    let (server, _) = stall(92, Duration::from_millis(1500), false);
    assert!(
        server.iter().any(|e| e.contains("health")),
        "the server kept a dead client: {server:?}"
    );
}
