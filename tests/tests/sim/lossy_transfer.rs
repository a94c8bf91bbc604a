//! 64 MiB from client to server on one stream over a 200 Mbit/s link with 2% loss and
//! reordering: every byte arrives intact (SHA-256 of received equals SHA-256 of sent).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kwik_core::{Config, Dir};
use kwik_tests::app::{App, payload, sha256};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

const LEN: usize = 64 << 20;

#[test]
fn sixty_four_mib_over_a_lossy_reordering_link() {
    let wall = Instant::now();
    // RTT 20 ms: the bandwidth-delay product is 500 kB; the queue holds 25 ms (625 kB).
    let link = LinkConfig::default()
        .rate_mbit(200)
        .delay_ms(10)
        .queue_ms(25)
        .loss(0.02)
        .reorder(0.01, Duration::from_millis(1));
    let mut p = Pair::new(64, link, Config::default(), Config::default());
    let h = p.session;
    let now = p.sim.now();

    let data = payload(64, LEN);
    let sent_digest = sha256(&data);
    let mut server_app = App::default();
    let mut client_app = App::default();
    let mut stream = None;
    let mut started = None;
    let done = p.run_until(
        Duration::from_secs(900),
        &mut server_app,
        &mut client_app,
        |p, server_app, client_app| {
            if stream.is_none() && client_app.sessions.contains(&h) {
                stream = Some(p.open_and_send(client_app, Dir::Uni, data.clone()).unwrap());
                started = Some(p.sim.now());
            }
            server_app.received.values().any(|r| r.finished)
        },
    );
    let received: u64 = server_app.received.values().map(|r| r.bytes).sum();
    assert!(
        done,
        "transfer incomplete: {received} of {LEN} bytes after {:?}; closed: {:?} {:?}",
        p.sim.now() - started.unwrap_or(now),
        client_app.closed,
        server_app.closed
    );
    let elapsed = p.sim.now() - started.unwrap();
    let sh = server_app.sessions[0];
    let r = &server_app.received[&(sh, stream.unwrap())];
    assert_eq!(r.bytes, LEN as u64);
    assert_eq!(
        r.digest(),
        sent_digest,
        "received bytes differ from sent bytes"
    );
    assert!(r.reset.is_none());
    assert!(client_app.closed.is_empty() && server_app.closed.is_empty());
    assert!(client_app.write_errors.is_empty());

    let net = p.sim.net.stats(p.client_addr.ip(), p.server_addr.ip());
    let path = &p.client_endpoint().session(h).unwrap().stats().paths[0];
    let goodput = LEN as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    println!(
        "64 MiB in {elapsed:.3?} of virtual time: goodput {goodput:.1} Mbit/s; \
         {} datagrams sent, {} lost at random, {} dropped by the queue; \
         {} packets declared lost; wall time {:.2?}",
        net.sent,
        net.dropped_loss,
        net.dropped_queue,
        path.lost_packets,
        wall.elapsed()
    );
    assert!(net.dropped_loss > 0, "the link did lose datagrams");
}
