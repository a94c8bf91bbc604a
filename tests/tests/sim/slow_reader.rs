//! Two logical streams share one carrier. The reader of stream A is paused, so A's window
//! fills; stream B must still complete a 16 MiB transfer on the same carrier. Then A's
//! reader resumes and A completes too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir, StreamId};
use kwik_tests::app::{App, payload, sha256};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;
use quinn_proto::Side;

const WINDOW: u64 = 64 * 1024;
const A_LEN: usize = 1 << 20;
const B_LEN: usize = 16 << 20;

#[test]
fn paused_stream_does_not_block_its_carrier_neighbour() {
    let link = LinkConfig::default()
        .rate_mbit(100)
        .delay_ms(5)
        .queue_ms(20);
    let mut server_config = Config::default();
    server_config.stream_receive_window = WINDOW;
    let mut p = Pair::new(3, link, server_config, Config::default());
    let h = p.session;

    let a = StreamId::new(Side::Client, Dir::Uni, 0);
    let b = StreamId::new(Side::Client, Dir::Uni, 1);
    let a_data = payload(0xa, A_LEN);
    let b_data = payload(0xb, B_LEN);
    let mut server_app = App::default();
    server_app.paused.insert(a);
    let mut client_app = App::default();
    let mut opened = false;
    let mut pump = |p: &mut Pair, server_app: &mut App, client_app: &mut App| {
        p.poll(server_app, client_app);
        if !opened && client_app.sessions.contains(&h) {
            opened = true;
            let ep = p.client_endpoint();
            // Opened one after the other on one path: both go on carrier 0
            // (streams_per_carrier is 4).
            assert_eq!(ep.session(h).unwrap().open(Dir::Uni), Some(a));
            assert_eq!(ep.session(h).unwrap().open(Dir::Uni), Some(b));
            client_app.send(ep, h, a, a_data.clone(), true);
            client_app.send(ep, h, b, b_data.clone(), true);
        }
    };

    let start = p.sim.now();
    let b_done = p.step_until(Duration::from_secs(60), |p| {
        pump(p, &mut server_app, &mut client_app);
        server_app
            .received
            .values()
            .any(|r| r.finished && r.bytes == B_LEN as u64)
    });
    let b_time = p.sim.now() - start;
    assert!(
        b_done,
        "B did not complete while A was paused; closed: {:?} {:?}",
        client_app.closed, server_app.closed
    );
    let sh = server_app.sessions[0];
    println!("B ({B_LEN} bytes) completed in {b_time:?} with A paused");
    let rb = &server_app.received[&(sh, b)];
    assert_eq!(rb.digest(), sha256(&b_data));
    // A was never read, and its sender holds exactly what the window refused.
    let ra = &server_app.received[&(sh, a)];
    assert_eq!((ra.bytes, ra.finished), (0, false));
    assert_eq!(client_app.unsent() as u64, A_LEN as u64 - WINDOW);
    // The two streams really shared one carrier.
    let stats = p.client_endpoint().session(h).unwrap().stats();
    assert_eq!(stats.paths[0].carriers, 1, "A and B on one carrier");

    // A stays stalled, at exactly the window, for as long as its reader is paused.
    p.sim.run_for(Duration::from_secs(2));
    pump(&mut p, &mut server_app, &mut client_app);
    assert_eq!(client_app.unsent() as u64, A_LEN as u64 - WINDOW);
    assert_eq!(server_app.received[&(sh, a)].bytes, 0);

    // Resume A.
    server_app.paused.remove(&a);
    server_app.read(p.server_endpoint(), sh, a);
    assert_eq!(
        server_app.received[&(sh, a)].bytes,
        WINDOW,
        "exactly one window was buffered for A"
    );
    let a_done = p.step_until(Duration::from_secs(30), |p| {
        pump(p, &mut server_app, &mut client_app);
        server_app.received[&(sh, a)].finished
    });
    assert!(a_done, "A did not complete after resuming");
    let ra = &server_app.received[&(sh, a)];
    assert_eq!(ra.bytes, A_LEN as u64);
    assert_eq!(ra.digest(), sha256(&a_data));
    let acked = p.step_until(Duration::from_secs(5), |p| {
        pump(p, &mut server_app, &mut client_app);
        client_app.finished.contains(&(h, a)) && client_app.finished.contains(&(h, b))
    });
    assert!(acked, "the client saw both streams finished");
    assert!(client_app.closed.is_empty() && server_app.closed.is_empty());
    assert!(client_app.write_errors.is_empty());
}
