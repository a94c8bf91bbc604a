//! Memory a hostile peer can make an engine hold, measured with a counting global
//! allocator: each scenario drives one hostile pattern at two sizes (n and 10 n) and
//! asserts the live heap it leaves behind against the bound the configuration promises.
//!
//! The allocator's counters are global, so the scenarios take turns. The counts cover the
//! whole simulated world (both engines, the raw peer, the network), measured after it
//! settled.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::frame::Frame;
use kwik_core::{Config, Dir, StreamId};
use kwik_tests::raw::frames;
use kwik_tests::raw_session::RawSession;
use quinn_proto::Side;
use stats_alloc::Region;

use super::{GLOBAL, SERIAL, live};

/// Live heap growth while a session is attacked with one-byte frames after a withheld
/// first byte, filling a stream window of `window` bytes.
fn tiny_frames_growth(window: u64) -> i64 {
    let mut config = Config::default();
    config.stream_receive_window = window;
    config.receive_window = 2 * window;
    config.max_reassembly_gaps = 1024;
    let mut s = RawSession::establish(31, config);
    s.run_for(Duration::from_millis(200));
    let region = Region::new(GLOBAL);
    let id = StreamId::new(Side::Client, Dir::Uni, 0);
    let carrier = s.peer().carrier(Bytes::new());
    // One-byte frames at every offset but the first: one segment each until compaction
    // merges runs; 1,000 frames per write.
    for first in (1..window).step_by(1000) {
        let batch: Vec<Frame> = (first..window.min(first + 1000))
            .map(|offset| Frame::Stream {
                id,
                offset,
                fin: false,
                data: Bytes::from_static(b"x"),
            })
            .collect();
        s.peer().write(carrier, frames(&batch));
        s.run_for(Duration::from_millis(20));
    }
    s.run_for(Duration::from_secs(1));
    s.assert_alive();
    live(&region)
}

#[test]
fn one_byte_frames_after_a_withheld_byte_hold_memory_linear_in_the_window() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let small = tiny_frames_growth(64 * 1024);
    let large = tiny_frames_growth(640 * 1024);
    println!("one-byte frames: 64 KiB window: {small} bytes live; 640 KiB: {large}");
    // The held bytes, merged by compaction, plus the world's fixed costs: at most twice
    // the window and 128 KiB, and ten times the window costs at most ten times as much.
    for (window, growth) in [(64 * 1024, small), (640 * 1024, large)] {
        assert!(
            growth <= 2 * window + 128 * 1024,
            "{growth} bytes for a {window}-byte window"
        );
    }
    assert!(large <= 10 * small, "{small} -> {large}");
}

/// Live heap growth after one frame names the last stream a limit of `limit` allows.
fn skip_ahead_growth(limit: u64) -> i64 {
    let mut config = Config::default();
    config.max_concurrent_bidi_streams = limit;
    let mut s = RawSession::establish(32, config);
    s.run_for(Duration::from_millis(200));
    let region = Region::new(GLOBAL);
    let id = StreamId::new(Side::Client, Dir::Bi, limit - 1);
    s.peer().carrier(frames(&[Frame::Stream {
        id,
        offset: 0,
        fin: false,
        data: Bytes::from_static(b"skip"),
    }]));
    s.run_for(Duration::from_millis(500));
    s.assert_alive();
    live(&region)
}

#[test]
fn a_frame_that_skips_to_the_stream_limit_holds_the_same_memory_at_any_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let small = skip_ahead_growth(1_000);
    let large = skip_ahead_growth(10_000);
    println!("skip-ahead frame: limit 1,000: {small} bytes live; 10,000: {large}");
    assert!(
        small <= 64 * 1024,
        "{small} bytes for one frame at limit 1,000"
    );
    assert!(
        (large - small).abs() <= 4 * 1024,
        "{small} -> {large} bytes: the limit costs memory"
    );
}

/// Live heap growth of a client whose primary sends `cycles` pairs of `AddPath` (for an
/// address nobody answers) and `RemovePath`.
fn add_remove_growth(cycles: u32) -> i64 {
    use kwik_proto::control_frame::Kind;
    use kwik_proto::{AddPath, RemovePath};
    use kwik_tests::certs::TestCert;
    use kwik_tests::net::LinkConfig;
    use kwik_tests::raw::server_config;
    use kwik_tests::sim::{Sim, WALL_CLOCK_START, addr};

    let cert = TestCert::localhost();
    let mut sim = Sim::new(33);
    let client_addr = addr([10, 0, 0, 2], 5000);
    let primary_addr = addr([10, 0, 0, 1], 4433);
    let target = addr([10, 0, 0, 9], 4433);
    let link = LinkConfig::default().rate_mbit(50).delay_ms(10);
    sim.net.link(client_addr.ip(), primary_addr.ip(), link);
    sim.net.link(client_addr.ip(), target.ip(), link);
    let primary = sim.hosts.add_raw_server(primary_addr, server_config(&cert));
    let client = sim.add_node(client_addr, None);
    let now = sim.now();
    sim.nodes[client]
        .endpoint
        .connect(
            now,
            &cert.client(Config::default()),
            primary_addr,
            "localhost",
        )
        .unwrap();
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.hosts.raw_servers[primary].welcomed,
        "the session came up"
    );
    // Warm up: one cycle, so that first-use allocations are not counted.
    let cycle = |sim: &mut Sim, path_id: u32| {
        let s = &mut sim.hosts.raw_servers[primary];
        s.send_control(Kind::AddPath(AddPath {
            path_id,
            addr: target.to_string(),
            server_name: "localhost".to_owned(),
            expiry: WALL_CLOCK_START.as_secs() + 3600,
            path_secret: vec![0x42; 32],
            ..Default::default()
        }));
        s.send_control(Kind::RemovePath(RemovePath { path_id }));
        // Within the client's control-message rate.
        sim.run_for(Duration::from_millis(25));
    };
    cycle(&mut sim, 1);
    sim.run_for(Duration::from_secs(1));
    let region = Region::new(GLOBAL);
    for i in 0..cycles {
        cycle(&mut sim, 2 + i);
    }
    sim.run_for(Duration::from_secs(2));
    let _ = sim.take_events(client);
    // The raw primary records every control frame the client sent: not the client's.
    let recorded = std::mem::take(&mut sim.hosts.raw_servers[primary].received);
    let closed = sim.nodes[client].endpoint.session_count() == 0;
    assert!(!closed, "the client kept the session");
    let answers = recorded
        .iter()
        .filter(|k| matches!(k, Kind::PathStatus(_)))
        .count();
    assert!(
        answers >= cycles as usize,
        "{answers} path statuses for {cycles} AddPath: the pattern was not driven"
    );
    drop(recorded);
    live(&region)
}

#[test]
fn add_and_remove_path_cycles_hold_no_memory_per_cycle() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let small = add_remove_growth(100);
    let large = add_remove_growth(1_000);
    println!("AddPath/RemovePath: 100 cycles: {small} bytes live; 1,000: {large}");
    // Removed paths beyond `max_paths_per_session` are forgotten: the client's memory
    // does not grow with the cycles (a little noise from maps resizing is allowed).
    assert!(
        large - small <= 32 * 1024,
        "{small} -> {large} bytes: memory grows with the cycles"
    );
}
