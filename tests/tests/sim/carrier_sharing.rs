//! The price of sharing carriers under loss, in virtual time: 1 KiB request/response
//! streams over a 100 Mbit/s link with a 20 ms round trip, 16 in flight at a time on a
//! link that loses 1 % of its packets, and 256 in flight on one that loses 2 %. A carrier
//! is one ordered QUIC stream, so a lost packet holds back every logical stream framed
//! behind it on the same carrier; more streams per carrier mean fewer QUIC streams to
//! schedule and acknowledge, but more streams held back by each loss.
//!
//! The test prints the completion-time percentiles for 1, 4, 16 and 64 streams per
//! carrier and bounds what the default may cost against one stream per carrier (plain
//! QUIC's behaviour).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_core::{Config, Dir, StreamId};
use kwik_tests::app::App;
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

const STREAMS: usize = 3000;
const MSG: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Figures {
    p50: Duration,
    p99: Duration,
    total: Duration,
}

fn run(per_carrier: u32, in_flight: usize, loss: f64) -> Figures {
    let link = LinkConfig::default()
        .rate_mbit(100)
        .delay_ms(10)
        .queue_ms(40)
        .loss(loss);
    let mut config = Config::default();
    config.streams_per_carrier = per_carrier;
    config.max_concurrent_bidi_streams = 1024;
    let mut p = Pair::new(77, link, config.clone(), config);
    let h = p.session;
    let mut server_app = App::echo();
    let mut client_app = App::default();
    let mut opened: BTreeMap<StreamId, Instant> = BTreeMap::new();
    let mut took: Vec<Duration> = Vec::with_capacity(STREAMS);
    let mut started = None;
    let body = Bytes::from(vec![0x33u8; MSG]);
    let done = p.run_until(
        Duration::from_secs(600),
        &mut server_app,
        &mut client_app,
        |p, _, client_app| {
            if !client_app.sessions.contains(&h) {
                return false;
            }
            let now = p.sim.now();
            started.get_or_insert(now);
            let finished: Vec<StreamId> = opened
                .keys()
                .copied()
                .filter(|id| {
                    client_app
                        .received
                        .get(&(h, *id))
                        .is_some_and(|r| r.finished)
                })
                .collect();
            for id in finished {
                let r = client_app.received.remove(&(h, id)).unwrap();
                assert_eq!(r.bytes, MSG as u64, "{id} echo length");
                took.push(now - opened.remove(&id).unwrap());
            }
            while opened.len() < in_flight && took.len() + opened.len() < STREAMS {
                let Some(id) = p.open_and_send(client_app, Dir::Bi, body.clone()) else {
                    break;
                };
                opened.insert(id, now);
            }
            took.len() == STREAMS
        },
    );
    assert!(
        done,
        "{} of {STREAMS} streams done with {per_carrier} per carrier; closed: {:?} {:?}",
        took.len(),
        client_app.closed,
        server_app.closed
    );
    assert!(client_app.closed.is_empty() && server_app.closed.is_empty());
    took.sort();
    Figures {
        p50: took[took.len() / 2],
        p99: took[took.len() * 99 / 100],
        total: p.sim.now() - started.unwrap(),
    }
}

#[test]
fn sharing_carriers_costs_a_bounded_tail_under_loss() {
    for (in_flight, loss) in [(16, 0.01), (256, 0.02)] {
        let mut figures = BTreeMap::new();
        for per_carrier in [1, 4, 16, 64] {
            let f = run(per_carrier, in_flight, loss);
            println!(
                "{in_flight} in flight, loss {loss}, {per_carrier:>2} per carrier: p50 {:?}, \
                 p99 {:?}, {STREAMS} streams in {:?}",
                f.p50, f.p99, f.total
            );
            figures.insert(per_carrier, f);
        }
        let one = figures[&1];
        let default = figures[&Config::default().streams_per_carrier];
        // The default may hold the slowest streams back a little behind others' losses,
        // but no more than this against plain QUIC's one stream per carrier.
        assert!(
            default.p99.as_secs_f64() <= one.p99.as_secs_f64() * 1.25,
            "{in_flight} in flight: default p99 {:?} against {:?} with one per carrier",
            default.p99,
            one.p99
        );
        assert!(
            default.p50.as_secs_f64() <= one.p50.as_secs_f64() * 1.5,
            "{in_flight} in flight: default p50 {:?} against {:?} with one per carrier",
            default.p50,
            one.p50
        );
    }
}
