//! `metrics_enabled` makes the engine emit a metrics event every `metrics_interval`, in
//! virtual time, with counters that follow the traffic; disabled, it emits none.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir, Event, SessionStats};
use kwik_tests::app::{App, payload};
use kwik_tests::certs::TestCert;
use kwik_tests::net::LinkConfig;
use kwik_tests::sim::{Sim, addr};

fn run(metrics: bool) -> Vec<(Duration, SessionStats)> {
    let cert = TestCert::localhost();
    let mut sim = Sim::new(3);
    let server_addr = addr([10, 0, 0, 1], 4433);
    let client_addr = addr([10, 0, 0, 2], 5000);
    sim.net.link(
        server_addr.ip(),
        client_addr.ip(),
        LinkConfig::default().rate_mbit(50).delay_ms(10),
    );
    let server = sim.add_node(server_addr, Some(cert.server(Config::default())));
    let client = sim.add_node(client_addr, None);
    let mut config = Config::default();
    config.metrics_enabled = metrics;
    config.metrics_interval = Duration::from_millis(100);
    let start = sim.now();
    let h = sim.nodes[client]
        .endpoint
        .connect(start, &cert.client(config), server_addr, "localhost")
        .unwrap();
    let mut server_app = App::default();
    let mut client_app = App::default();
    let mut samples = Vec::new();
    let mut sent = false;
    sim.run_until(Duration::from_millis(1050), |sim| {
        let events = sim.take_events(server);
        server_app.poll(&mut sim.nodes[server].endpoint, events);
        let events = sim.take_events(client);
        for e in &events {
            if let Event::Metrics { session, stats } = e {
                assert_eq!(*session, h);
                samples.push((sim.now() - start, (**stats).clone()));
            }
        }
        client_app.poll(&mut sim.nodes[client].endpoint, events);
        if !sent && client_app.sessions.contains(&h) {
            let ep = &mut sim.nodes[client].endpoint;
            let id = ep.session(h).unwrap().open(Dir::Uni).unwrap();
            client_app.send(ep, h, id, payload(1, 2 << 20), true);
            sent = true;
        }
        false
    });
    assert!(sent, "session never established");
    samples
}

#[test]
fn metrics_arrive_every_interval_and_follow_the_traffic() {
    let samples = run(true);
    // The first comes one interval after setup (about 2 RTT = 40 ms), the rest every 100 ms;
    // the run may overshoot its 1.05 s limit by one step.
    let first = samples[0].0;
    assert!(
        first > Duration::from_millis(100) && first < Duration::from_millis(200),
        "{first:?}"
    );
    let in_limit = samples
        .iter()
        .filter(|(t, _)| *t <= Duration::from_millis(1050))
        .count();
    assert_eq!(
        in_limit,
        10,
        "{:?}",
        samples.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    for pair in samples.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, Duration::from_millis(100));
    }
    let written: Vec<u64> = samples
        .iter()
        .map(|(_, s)| s.stream_bytes_written)
        .collect();
    assert_eq!(*written.last().unwrap(), 2 << 20);
    let sent: Vec<u64> = samples.iter().map(|(_, s)| s.paths[0].bytes_sent).collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    // 2 MiB at 50 Mbit/s takes about 340 ms: UDP bytes grow past the payload.
    assert!(*sent.last().unwrap() > 2 << 20, "{sent:?}");
}

#[test]
fn no_metrics_when_disabled() {
    assert!(run(false).is_empty());
}
