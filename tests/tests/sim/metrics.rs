//! `metrics_enabled` makes the engine emit a metrics event every `metrics_interval`, in
//! virtual time, with counters that follow the traffic; disabled, it emits none.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir, Event, SessionStats};
use kwik_tests::app::{App, payload};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

fn run(metrics: bool) -> Vec<(Duration, SessionStats)> {
    let link = LinkConfig::default().rate_mbit(50).delay_ms(10);
    let mut config = Config::default();
    config.metrics_enabled = metrics;
    config.metrics_interval = Duration::from_millis(100);
    let mut p = Pair::new(3, link, Config::default(), config);
    let h = p.session;
    let start = p.sim.now();
    let mut server_app = App::default();
    let mut client_app = App::default();
    let mut samples = Vec::new();
    let mut sent = false;
    p.step_until(Duration::from_millis(1050), |p| {
        let at = p.sim.now() - start;
        p.poll_watching(&mut server_app, &mut client_app, |e, _| {
            if let Event::Metrics { session, stats } = e {
                assert_eq!(*session, h);
                samples.push((at, (**stats).clone()));
            }
        });
        if !sent && client_app.sessions.contains(&h) {
            p.open_and_send(&mut client_app, Dir::Uni, payload(1, 2 << 20))
                .unwrap();
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
