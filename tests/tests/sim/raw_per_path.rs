//! Raw datagrams in a multi-server session travel only on the path they are sent on: the
//! client and a secondary exchange them on the secondary's path, the per-path counters of
//! the primary path stay at zero, and an oversize datagram is a typed error.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Bytes, Config, PathId, RawSendError};
use kwik_tests::app::payload;
use kwik_tests::cluster::Cluster;
use kwik_tests::net::LinkConfig;

#[test]
fn raw_datagrams_stay_on_their_path() {
    let links = vec![LinkConfig::default().rate_mbit(20).delay_ms(10); 2];
    let mut c = Cluster::new(
        71,
        &links,
        Config::default(),
        Config::default(),
        payload(1, 1),
    );
    assert!(c.join_all(Duration::from_secs(10)), "secondary joined");
    let path = c.path_ids[&1];
    let h = c.session;
    let now = c.sim.now();
    for i in 0..10u8 {
        c.client_endpoint()
            .session(h)
            .unwrap()
            .send_raw(path, Bytes::from(vec![i; 100]))
            .unwrap();
    }
    let oversize = c
        .client_endpoint()
        .session(h)
        .unwrap()
        .send_raw(path, Bytes::from(vec![0; 64 * 1024]));
    assert!(matches!(oversize, Err(RawSendError::TooLarge { .. })));
    assert_eq!(
        c.client_endpoint()
            .session(h)
            .unwrap()
            .send_raw(PathId(9), Bytes::from_static(b"x")),
        Err(RawSendError::UnknownPath(PathId(9)))
    );
    // The secondary receives them on its session, and answers on the same path.
    let secondary = c.servers[1];
    let mut got = Vec::new();
    c.run_until(Duration::from_secs(2), |c| {
        let handles: Vec<_> = c.apps[1].sessions.keys().copied().collect();
        for sh in handles {
            let ep = &mut c.sim.nodes[secondary].endpoint;
            if let Some(mut s) = ep.session(sh) {
                while let Some((p, d)) = s.read_raw() {
                    got.push((p, d.clone()));
                    s.send_raw(p, d).unwrap();
                }
            }
        }
        got.len() == 10
    });
    assert_eq!(got.len(), 10, "the secondary received every datagram");
    assert!(got.iter().all(|(p, _)| *p == path));
    let mut echoed = Vec::new();
    c.run_until(Duration::from_secs(2), |c| {
        while let Some(d) = c.client_endpoint().session(h).unwrap().read_raw() {
            echoed.push(d);
        }
        echoed.len() == 10
    });
    assert_eq!(echoed.len(), 10, "the echoes came back");
    assert!(echoed.iter().all(|(p, _)| *p == path));
    let stats = c.client_endpoint().session(h).unwrap().stats();
    for p in &stats.paths {
        let (sent, received) = if p.id == path { (10, 10) } else { (0, 0) };
        assert_eq!((p.raw_sent, p.raw_received), (sent, received), "{}", p.id);
    }
    println!(
        "10 raw datagrams each way on {path}, none on the primary path ({:?})",
        c.sim.now() - now
    );
}
