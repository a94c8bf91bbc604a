//! `max_sessions` counts sessions, not connections: a session with a second path to the
//! same server counts once, so with a limit of two a second client is admitted beside it
//! and a third is refused.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Event, GroupKey, PathKind, SessionHandle};
use kwik_tests::certs::TestCert;
use kwik_tests::cluster::GROUP_KEY;
use kwik_tests::net::LinkConfig;
use kwik_tests::sim::{Sim, addr};

#[test]
fn a_session_with_two_paths_counts_once() {
    let cert = TestCert::localhost();
    let mut sim = Sim::new(71);
    let a = addr([10, 0, 1, 1], 4433);
    let b = addr([10, 0, 2, 1], 4433);
    let clients = [
        addr([10, 0, 0, 2], 5000),
        addr([10, 0, 0, 3], 5000),
        addr([10, 0, 0, 4], 5000),
    ];
    let link = LinkConfig::default().rate_mbit(20).delay_ms(10);
    for c in &clients {
        sim.net.link(a.ip(), c.ip(), link);
        sim.net.link(b.ip(), c.ip(), link);
    }
    let config = Config::default();
    let mut server_config = cert.server(config.clone());
    server_config.group_key(GroupKey::new(GROUP_KEY));
    server_config.max_sessions(2);
    let server = sim.add_node(a, Some(server_config));
    sim.add_alias(server, b);
    let nodes: Vec<_> = clients.iter().map(|c| sim.add_node(*c, None)).collect();
    let connect = |sim: &mut Sim, i: usize| -> SessionHandle {
        let now = sim.now();
        sim.nodes[nodes[i]]
            .endpoint
            .connect(now, &cert.client(config.clone()), a, "localhost")
            .unwrap()
    };
    let connected = |events: &[Event]| events.iter().any(|e| matches!(e, Event::Connected(_)));

    // The first client's session, then a second path to the same server for it.
    connect(&mut sim, 0);
    let mut first = None;
    assert!(sim.run_until(Duration::from_secs(5), |sim| {
        for e in sim.take_events(server) {
            if let Event::Incoming(h) = e {
                first = Some(h);
            }
        }
        first.is_some()
    }));
    let now = sim.now();
    let path = sim.nodes[server]
        .endpoint
        .session(first.unwrap())
        .unwrap()
        .add_same_peer_path(now, b, "localhost", PathKind::SamePeer)
        .unwrap();
    assert!(sim.run_until(Duration::from_secs(5), |sim| {
        sim.take_events(server)
            .iter()
            .any(|e| matches!(e, Event::PathActive { path: p, .. } if *p == path))
    }));
    let stats = sim.nodes[server].endpoint.stats();
    assert_eq!((stats.sessions, stats.connections), (1, 2));

    // Two connections, one session: a second client is admitted.
    connect(&mut sim, 1);
    let mut second = Vec::new();
    sim.run_until(Duration::from_secs(5), |sim| {
        second.extend(sim.take_events(nodes[1]));
        connected(&second)
    });
    assert!(
        connected(&second),
        "the second client was refused: {second:?}"
    );

    // Two sessions: a third is refused.
    connect(&mut sim, 2);
    let mut third = Vec::new();
    sim.run_until(Duration::from_secs(5), |sim| {
        third.extend(sim.take_events(nodes[2]));
        third.iter().any(|e| matches!(e, Event::Closed { .. }))
    });
    println!("third client: {third:?}");
    assert!(!connected(&third), "the third client was admitted");
    assert!(third.iter().any(|e| matches!(e, Event::Closed { .. })));
    assert_eq!(sim.nodes[server].endpoint.session_count(), 2);
}
