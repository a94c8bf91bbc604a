//! A plain delegation whose secondary dies: the primary's application hears that the
//! delegation failed at the first missing byte, the rest is delegated to the primary itself
//! (its own delegation handler serves it), and the client reads the whole body intact.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Config, DelegationOutcome, Dir, Event};
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::Cluster;
use kwik_tests::net::LinkConfig;

#[test]
fn a_failed_delegation_is_finished_by_the_primary() {
    let links = vec![
        LinkConfig::default().rate_mbit(40).delay_ms(10),
        LinkConfig::default().rate_mbit(10).delay_ms(20),
    ];
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    let len = 8 << 20;
    let body = payload(3, len);
    let want = sha256(&body);
    let mut c = Cluster::new(51, &links, config.clone(), config, body);
    assert!(c.join_all(Duration::from_secs(10)), "secondary joined");
    let path = c.path_ids[&1];
    let h = c.primary_session.unwrap();
    let now = c.sim.now();
    let delegation = {
        let mut s = c.primary().session(h).unwrap();
        let id = s.open(Dir::Uni).unwrap();
        let mut send = s.send_stream(id);
        let d = send
            .delegate(now, path, Bytes::from_static(b"body"), len as u64)
            .unwrap();
        send.finish().unwrap();
        d
    };
    // The secondary dies silently a quarter of the way in.
    assert!(c.run_until(Duration::from_secs(30), |c| c.reader.bytes
        >= len as u64 / 4));
    let (a, b) = (c.addrs[1].ip(), c.sim.nodes[c.client].addr.ip());
    c.sim.net.set_up(a, b, false);
    assert!(c.run_to_end(Duration::from_secs(60)), "the body completed");
    assert_eq!(c.reader.bytes, len as u64);
    assert_eq!(c.reader.digest(), want);
    let outcome = c.apps[0].events.iter().find_map(|e| match e {
        Event::DelegationFinished {
            delegation: d,
            outcome,
            ..
        } if *d == delegation => Some(*outcome),
        _ => None,
    });
    let Some(DelegationOutcome::Failed { first_missing }) = outcome else {
        panic!("the primary was not told the delegation failed: {outcome:?}");
    };
    println!(
        "delegation failed at byte {first_missing} of {len}; the primary served the rest ({} delegations on it)",
        c.apps[0].delegations
    );
    assert!(first_missing >= len as u64 / 4 && first_missing < len as u64);
    assert_eq!(
        c.apps[0].delegations, 1,
        "the rest went to the primary's own handler"
    );
}
