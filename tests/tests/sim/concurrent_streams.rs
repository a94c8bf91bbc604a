//! 1,000 concurrent bidirectional streams from a client to an echo server, each with its
//! own payload of 4-16 KiB; every echo comes back intact (SHA-256 checked).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Config, Dir, StreamId};
use kwik_tests::app::{App, payload, sha256};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

const STREAMS: u64 = 1000;

fn message(i: u64) -> Bytes {
    let len = 4096 + (i as usize * 7919) % (12 * 1024 + 1);
    payload(0xc0_0000 + i, len)
}

#[test]
fn thousand_concurrent_echo_streams() {
    let link = LinkConfig::default()
        .rate_mbit(100)
        .delay_ms(10)
        .queue_ms(40);
    let mut config = Config::default();
    config.max_concurrent_bidi_streams = STREAMS;
    let mut p = Pair::new(1000, link, config.clone(), config.clone());
    let h = p.session;

    let mut server_app = App::echo();
    let mut client_app = App::default();
    let mut streams: Vec<(StreamId, Bytes)> = Vec::new();
    let start = p.sim.now();
    let done = p.run_until(
        Duration::from_secs(60),
        &mut server_app,
        &mut client_app,
        |p, _, client_app| {
            if streams.is_empty() && client_app.sessions.contains(&h) {
                for i in 0..STREAMS {
                    let data = message(i);
                    let id = p
                        .open_and_send(client_app, Dir::Bi, data.clone())
                        .unwrap_or_else(|| panic!("stream {i} refused"));
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
        },
    );
    let elapsed = p.sim.now() - start;
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
    p.sim.run_for(Duration::from_millis(500));
    let sh = server_app.sessions[0];
    let s = p.server_endpoint().session(sh).unwrap().stats();
    assert_eq!(s.streams_opened_remote, STREAMS);
    assert_eq!(s.streams_open, 0);
    assert_eq!(s.stream_bytes_read, total as u64);
    assert_eq!(s.stream_bytes_written, total as u64);
    let c = p.client_endpoint().session(h).unwrap().stats();
    assert_eq!(c.streams_opened_local, STREAMS);
    assert_eq!(c.streams_open, 0);
    // Streams were multiplexed on a bounded number of carriers: each is framed whole with
    // its fin, which frees its slot at once, so a round of them shares a carrier.
    let carriers = c.paths[0].carriers;
    println!("client carriers: {carriers}");
    assert!((1..=config.max_carriers_per_path as usize).contains(&carriers));
}
