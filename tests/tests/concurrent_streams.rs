//! 1,000 concurrent bidirectional streams from a client to an echo server, each with its
//! own payload of 4-16 KiB; every echo comes back intact (SHA-256 checked).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Config, Dir, StreamId};
use kwik_tests::app::{App, payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::net::LinkConfig;
use kwik_tests::sim::{Sim, addr};

const STREAMS: u64 = 1000;

fn message(i: u64) -> Bytes {
    let len = 4096 + (i as usize * 7919) % (12 * 1024 + 1);
    payload(0xc0_0000 + i, len)
}

#[test]
fn thousand_concurrent_echo_streams() {
    let cert = TestCert::localhost();
    let mut sim = Sim::new(1000);
    let server_addr = addr([10, 0, 0, 1], 4433);
    let client_addr = addr([10, 0, 0, 2], 5000);
    sim.net.link(
        server_addr.ip(),
        client_addr.ip(),
        LinkConfig::default()
            .rate_mbit(100)
            .delay_ms(10)
            .queue_ms(40),
    );
    let mut config = Config::default();
    config.max_concurrent_bidi_streams = STREAMS;
    let server = sim.add_node(server_addr, Some(cert.server(config.clone())));
    let client = sim.add_node(client_addr, None);
    let now = sim.now();
    let h = sim.nodes[client]
        .endpoint
        .connect(now, &cert.client(config.clone()), server_addr, "localhost")
        .unwrap();

    let mut server_app = App::echo();
    let mut client_app = App::default();
    let mut streams: Vec<(StreamId, Bytes)> = Vec::new();
    let start = sim.now();
    let done = sim.run_until(Duration::from_secs(60), |sim| {
        let events = sim.take_events(server);
        server_app.poll(&mut sim.nodes[server].endpoint, events);
        let events = sim.take_events(client);
        client_app.poll(&mut sim.nodes[client].endpoint, events);
        if streams.is_empty() && client_app.sessions.contains(&h) {
            let ep = &mut sim.nodes[client].endpoint;
            for i in 0..STREAMS {
                let id = ep
                    .session(h)
                    .unwrap()
                    .open(Dir::Bi)
                    .unwrap_or_else(|| panic!("stream {i} refused"));
                let data = message(i);
                client_app.send(ep, h, id, data.clone(), true);
                streams.push((id, data));
            }
        }
        !streams.is_empty()
            && streams.iter().all(|(id, _)| {
                client_app
                    .received
                    .get(&(h, *id))
                    .is_some_and(|r| r.finished)
            })
    });
    let elapsed = sim.now() - start;
    let finished = client_app.received.values().filter(|r| r.finished).count();
    assert!(
        done,
        "{finished} of {STREAMS} echoes complete after {elapsed:?}; closed: {:?} {:?}",
        client_app.closed, server_app.closed
    );

    let total: usize = streams.iter().map(|(_, d)| d.len()).sum();
    println!("{STREAMS} streams, {total} bytes each way, echoed in {elapsed:?} of virtual time");
    for (id, data) in &streams {
        let r = &client_app.received[&(h, *id)];
        assert_eq!(r.bytes, data.len() as u64, "{id} echo length");
        assert_eq!(r.digest(), sha256(data), "{id} echo differs");
        assert!(r.reset.is_none());
    }
    assert_eq!(client_app.received.len() as u64, STREAMS);
    assert!(client_app.closed.is_empty() && server_app.closed.is_empty());
    assert!(client_app.write_errors.is_empty() && server_app.write_errors.is_empty());
    // The server saw every stream; each of its echoes is complete too.
    let server_streams = server_app.received.len() as u64;
    assert_eq!(server_streams, STREAMS);
    assert!(server_app.received.values().all(|r| r.finished));

    // Every stream is freed on both sides once the last acknowledgements land.
    sim.run_for(Duration::from_millis(500));
    let sh = server_app.sessions[0];
    let s = sim.nodes[server].endpoint.session(sh).unwrap().stats();
    assert_eq!(s.streams_opened_remote, STREAMS);
    assert_eq!(s.streams_open, 0);
    assert_eq!(s.stream_bytes_read, total as u64);
    assert_eq!(s.stream_bytes_written, total as u64);
    let c = sim.nodes[client].endpoint.session(h).unwrap().stats();
    assert_eq!(c.streams_opened_local, STREAMS);
    assert_eq!(c.streams_open, 0);
    // Streams were multiplexed on a bounded number of carriers.
    let carriers = c.paths[0].carriers;
    println!("client carriers: {carriers}");
    assert!(carriers > 1 && carriers <= config.max_carriers_per_path as usize);
}
