//! A plain QUIC peer (it negotiated an application protocol instead of `kwik/1`) that
//! floods a KWIK server with streams and datagrams, while the server's application reads
//! nothing: the peer gets exactly the stream counts the config allows (raised from KWIK's
//! own transport parameters when the protocol was known), its stream data stops at QUIC's
//! connection window, its datagrams beyond the session's queue are dropped and counted,
//! and the live heap stays within what those limits allow, at two stream limits (n and
//! 10 n).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Config, Dir};
use kwik_tests::raw_session::RawSession;
use stats_alloc::Region;

use super::{GLOBAL, SERIAL, live};

const ALPN: &[u8] = b"flood";

/// Zeros the peer writes: a static buffer, so that the peer's queues cost no heap.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

struct Flooded {
    bidi: u64,
    uni: u64,
    live: i64,
    stream_bytes: u64,
    raw_queued: usize,
    raw_dropped: u64,
}

fn flood(limit: u64, datagrams: usize) -> Flooded {
    let mut config = Config::default();
    config.app_protocols = vec![ALPN.to_vec()];
    config.max_concurrent_bidi_streams = limit;
    config.max_concurrent_uni_streams = limit;
    config.raw_receive_queue = 64;
    config.receive_window = 1 << 20;
    config.stream_receive_window = 1 << 20;
    let mut s = RawSession::connect_plain(41, config, ALPN);
    s.run_for(Duration::from_millis(200));
    let region = Region::new(GLOBAL);
    let (mut bidi, mut uni) = (0, 0);
    // Every stream the server allows, and then some: QUIC refuses the rest on the
    // peer's side.
    for _ in 0..limit * 2 {
        for (dir, n) in [(Dir::Bi, &mut bidi), (Dir::Uni, &mut uni)] {
            let Some(id) = s.peer().open(dir) else {
                continue;
            };
            *n += 1;
            for _ in 0..64 {
                s.peer().write(id, Bytes::from_static(&ZEROS));
            }
        }
    }
    for i in 0..datagrams {
        let d = Bytes::from_static(&ZEROS[..1000 + i % 100]);
        let _ = s.peer().conn().unwrap().datagrams().send(d, true);
        if i % 100 == 99 {
            s.run_for(Duration::from_millis(10));
        }
    }
    s.run_for(Duration::from_secs(10));
    s.assert_alive();
    let growth = live(&region);
    let h = s.session.unwrap();
    let server = s.server_endpoint();
    let mut session = server.session(h).unwrap();
    assert_eq!(session.mode(), kwik_core::Mode::Plain);
    let stats = session.stats();
    let mut raw_queued = 0;
    while session.read_raw().is_some() {
        raw_queued += 1;
    }
    Flooded {
        bidi,
        uni,
        live: growth,
        stream_bytes: stats.paths[0].bytes_received,
        raw_queued,
        raw_dropped: stats.raw_dropped,
    }
}

#[test]
fn a_flooding_plain_peer_is_held_at_the_plain_sessions_limits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (limit, datagrams) in [(8, 1_000), (80, 10_000)] {
        let f = flood(limit, datagrams);
        println!(
            "limit {limit}: opened {} bidi and {} uni, {} bytes received, {} live, \
             {} datagrams queued, {} dropped",
            f.bidi, f.uni, f.stream_bytes, f.live, f.raw_queued, f.raw_dropped
        );
        assert_eq!(f.bidi, limit, "bidirectional streams at the config's limit");
        assert_eq!(f.uni, limit, "unidirectional streams at the config's limit");
        // QUIC's connection window of a plain session: twice max(receive_window, 16 MiB).
        let window: i64 = 32 << 20;
        let payload = f.stream_bytes - f.raw_queued as u64 * 1200 - f.raw_dropped * 1200;
        assert!(
            payload >= (window as u64) * 9 / 10,
            "the peer used its whole window: {payload} bytes"
        );
        assert!(
            f.stream_bytes <= (window as u64) * 11 / 10 + (datagrams as u64) * 1200,
            "the peer sent {} bytes past QUIC's window",
            f.stream_bytes
        );
        assert_eq!(
            f.raw_queued, 64,
            "the session's datagram queue is full, no more"
        );
        assert!(
            f.raw_dropped as usize >= datagrams / 2,
            "{} of {datagrams} datagrams dropped",
            f.raw_dropped
        );
        // What the windows allow, plus QUIC's datagram buffer (1 MiB) and per-stream state.
        assert!(
            f.live <= window * 2 + (4 << 20),
            "{} bytes live for a {window}-byte window",
            f.live
        );
    }
}
