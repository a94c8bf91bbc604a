//! Tickets expire, and the primary keeps the tickets of unfinished stripes fresh: a stripe
//! that lasts several ticket lifetimes completes with no pull refused. A secondary whose
//! clock runs ten minutes ahead sees every ticket expired: it refuses each pull with
//! `Expired`, the client's application sees the typed refusal, the secondary's application
//! hears of nothing, and the body completes from the other servers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Event, PathId, TicketError};
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::Cluster;
use kwik_tests::failover::links;
use kwik_tests::sim::WALL_CLOCK_START;

fn config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 16 << 20;
    c.receive_window = 64 << 20;
    c
}

#[test]
fn a_stripe_outlives_its_ticket_lifetime() {
    let mut server = config();
    server.ticket_lifetime = Duration::from_secs(2);
    // 48 MiB at 70 Mbit/s: about 6 s, three ticket lifetimes.
    let len = 48 << 20;
    let body = payload(41, len);
    let want = sha256(&body);
    let mut c = Cluster::new(41, &links(), server, config(), body);
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    let start = c.sim.now();
    c.start_stripe();
    assert!(c.run_to_end(Duration::from_secs(60)), "the body completed");
    let took = c.sim.now() - start;
    println!("{len} bytes striped in {took:?} under a 2 s ticket lifetime");
    assert!(
        took > Duration::from_secs(4),
        "the stripe outlived its first ticket"
    );
    assert_eq!(c.reader.digest(), want);
    let refused: u64 = c
        .servers
        .iter()
        .map(|n| c.sim.nodes[*n].endpoint.stats().pulls_refused)
        .sum();
    assert_eq!(refused, 0, "no pull was refused");
    assert!(
        !c.reader
            .events
            .iter()
            .any(|e| matches!(e, Event::PullRefused { .. }))
    );
    // Every server served its share.
    let per_path = c.received_per_path();
    assert!(per_path.values().all(|b| *b > 0), "{per_path:?}");
}

#[test]
fn a_secondary_with_a_clock_ahead_refuses_every_pull_and_the_body_completes() {
    let mut server = config();
    // Join proofs outlive the skew; tickets do not.
    server.join_proof_lifetime = Duration::from_secs(3600);
    let len = 16 << 20;
    let body = payload(42, len);
    let want = sha256(&body);
    let mut c = Cluster::new(42, &links(), server, config(), body);
    let now = c.sim.now();
    let skewed = c.servers[1];
    c.sim.nodes[skewed]
        .endpoint
        .set_wall_clock(now, WALL_CLOCK_START + Duration::from_secs(600));
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    c.start_stripe();
    assert!(c.run_to_end(Duration::from_secs(60)), "the body completed");
    assert_eq!(c.reader.digest(), want);
    let path = c.path_ids[&1];
    let refusals: Vec<TicketError> = c
        .reader
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PullRefused { path: p, error, .. } if *p == path => Some(*error),
            _ => None,
        })
        .collect();
    println!("the skewed secondary refused {refusals:?}");
    assert!(!refusals.is_empty(), "the client saw the refusal");
    assert!(refusals.iter().all(|e| *e == TicketError::Expired));
    assert_eq!(c.apps[1].delegations, 0, "its application heard of nothing");
    let per_path = c.received_per_path();
    assert_eq!(per_path.get(&path).copied().unwrap_or(0), 0, "{per_path:?}");
    assert!(per_path.get(&PathId::PRIMARY).copied().unwrap_or(0) > 0);
}
