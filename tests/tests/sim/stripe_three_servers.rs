//! Three servers stripe one 100 MiB body to a client: the SHA-256 matches, and each
//! server's share of the bytes is within ±15 % of its share of the link capacity. The
//! primary is out of the other servers' control loop: apart from the pulls for its own
//! share and the health checks (both ends probe every 250 ms), the stripe costs it two
//! control messages (the ticket and the final report), and all of them together stay under
//! four per striped MiB.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, PathId};
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::Cluster;
use kwik_tests::net::LinkConfig;

#[test]
fn three_servers_stripe_one_body_by_capacity() {
    let rates = [40u64, 20, 10];
    let links: Vec<LinkConfig> = [(40, 10), (20, 30), (10, 60)]
        .iter()
        .map(|&(mbit, delay)| {
            LinkConfig::default()
                .rate_mbit(mbit)
                .delay_ms(delay)
                .queue_ms(50)
        })
        .collect();
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    let len = 100 << 20;
    let body = payload(7, len);
    let want = sha256(&body);
    let mut c = Cluster::new(31, &links, config.clone(), config, body);
    assert!(c.join_all(Duration::from_secs(10)), "secondaries joined");
    let start = c.sim.now();
    let control_before = primary_control(&mut c);
    c.start_stripe();
    let mut next_print = start;
    c.run_until(Duration::from_secs(120), |c| {
        if std::env::var("TRACE").is_ok() && c.sim.now() >= next_print {
            next_print += Duration::from_millis(500);
            let per = c.received_per_path();
            println!(
                "{:?} read {} per path {:?}",
                c.sim.now() - start,
                c.reader.bytes,
                per
            );
        }
        c.reader.finished
    });
    assert!(
        c.run_to_end(Duration::from_secs(120)),
        "body not delivered: read {} bytes, closed {:?}, client events {:?}, primary events {:?}",
        c.reader.bytes,
        c.reader.closed,
        c.reader.events.iter().rev().take(10).collect::<Vec<_>>(),
        c.apps[0].events.iter().rev().take(10).collect::<Vec<_>>()
    );
    let elapsed = c.sim.now() - start;
    let control = primary_control(&mut c) - control_before;
    let per_mib = control as f64 / (len >> 20) as f64;
    let own = c.apps[0].delegations;
    let others: u64 = c.apps[1..].iter().map(|a| a.delegations).sum();
    println!(
        "control messages through the primary: {control} ({per_mib:.2} per striped MiB), of \
         which {own} pulls of its own share; the secondaries served {others} pulls"
    );
    assert!(per_mib < 4.0, "{per_mib:.2} control messages per MiB");
    assert_eq!(c.reader.bytes, len as u64);
    assert_eq!(c.reader.digest(), want);
    let per_path = c.received_per_path();
    let path_events: Vec<_> = c
        .reader
        .events
        .iter()
        .filter(|e| !matches!(e, kwik_core::Event::StreamReadable { .. }))
        .collect();
    println!("client events: {path_events:?}");
    let total: u64 = per_path.values().sum();
    let capacity: u64 = rates.iter().sum();
    let goodput = len as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    println!(
        "striped {} MiB in {elapsed:?}: {goodput:.1} Mbit/s of {capacity} ({:.3}); per path {per_path:?}",
        len >> 20,
        goodput / capacity as f64
    );
    assert!(
        goodput >= 0.90 * capacity as f64,
        "goodput {goodput:.1} Mbit/s below 0.90 of {capacity}"
    );
    for (i, rate) in rates.iter().enumerate() {
        let path = if i == 0 {
            PathId::PRIMARY
        } else {
            c.path_ids[&i]
        };
        let share = per_path.get(&path).copied().unwrap_or(0) as f64 / total as f64;
        let fair = *rate as f64 / capacity as f64;
        assert!(
            (share - fair).abs() <= 0.15 * fair,
            "{path}: share {share:.3}, capacity share {fair:.3}"
        );
    }
}

/// Control messages the primary sent and received on its path to the client so far.
fn primary_control(c: &mut Cluster) -> u64 {
    let h = c.primary_session.unwrap();
    let stats = c.primary().session(h).unwrap().stats();
    stats
        .paths
        .iter()
        .filter(|p| p.id == PathId::PRIMARY)
        .map(|p| p.control_sent + p.control_received)
        .sum()
}
