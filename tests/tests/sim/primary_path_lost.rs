//! Losing the primary path mid-transfer ends the session with a typed error within
//! `max(3 × RTT, interval × threshold) + RTT`, never a hang; a live path with a long RTT,
//! or with loss, is not declared dead.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir, PathId, SessionError};
use kwik_tests::app::{App, payload};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

const RTT: Duration = Duration::from_millis(40);

#[test]
fn a_cut_primary_path_is_a_typed_error_within_the_bound() {
    let link = LinkConfig::default()
        .rate_mbit(50)
        .delay_ms(20)
        .queue_ms(10);
    let config = Config::default();
    let bound =
        (RTT * 3).max(config.path_health_check_interval * config.path_failure_threshold) + RTT;
    let mut p = Pair::new(21, link, config.clone(), config);
    let (mut server_app, mut client_app) = (App::default(), App::default());
    let h = p.session;
    assert!(p.run_until(
        Duration::from_secs(5),
        &mut server_app,
        &mut client_app,
        |_, _, c| { c.sessions.contains(&h) }
    ));
    p.open_and_send(&mut client_app, Dir::Uni, payload(3, 64 << 20))
        .unwrap();
    // Mid-transfer, the link dies silently in both directions.
    p.sim.run_for(Duration::from_millis(1500));
    p.poll(&mut server_app, &mut client_app);
    assert!(
        server_app.received.values().any(|r| r.bytes > 1 << 20),
        "transfer under way"
    );
    let (a, b) = (p.server_addr.ip(), p.client_addr.ip());
    p.sim.net.set_up(a, b, false);
    let cut = p.sim.now();
    let mut closed_at = None;
    p.step_until(Duration::from_secs(60), |p| {
        p.poll(&mut server_app, &mut client_app);
        if closed_at.is_none() && !client_app.closed.is_empty() {
            closed_at = Some(p.sim.now());
        }
        closed_at.is_some()
    });
    let closed_at = closed_at.expect("the client never saw the session end");
    let stall = closed_at - cut;
    println!(
        "session error {:?} after {stall:?} (bound {bound:?})",
        client_app.closed[0].1
    );
    assert_eq!(
        client_app.closed,
        vec![(
            h,
            SessionError::PathUnresponsive {
                path: PathId::PRIMARY
            }
        )]
    );
    assert!(stall <= bound, "stall {stall:?} > bound {bound:?}");
    // Every later operation reports the same error.
    let mut s = p.client_endpoint().session(h).unwrap();
    assert_eq!(
        s.error(),
        Some(SessionError::PathUnresponsive {
            path: PathId::PRIMARY
        })
    );
    assert_eq!(s.open(Dir::Bi), None);
}

/// Runs an idle-but-open session for `secs` over `link`; returns what closed.
fn survive(link: LinkConfig, secs: u64) -> (Vec<SessionError>, Vec<SessionError>) {
    let mut p = Pair::new(22, link, Config::default(), Config::default());
    let (mut server_app, mut client_app) = (App::default(), App::default());
    let h = p.session;
    assert!(p.run_until(
        Duration::from_secs(10),
        &mut server_app,
        &mut client_app,
        |_, _, c| { c.sessions.contains(&h) }
    ));
    p.open_and_send(&mut client_app, Dir::Uni, payload(4, 1 << 20))
        .unwrap();
    p.sim.run_for(Duration::from_secs(secs));
    p.poll(&mut server_app, &mut client_app);
    let errors = |app: &App| app.closed.iter().map(|(_, e)| e.clone()).collect();
    (errors(&server_app), errors(&client_app))
}

#[test]
fn a_long_rtt_path_is_not_declared_dead() {
    // RTT 600 ms: longer than the 250 ms probe interval, so probes overlap.
    let link = LinkConfig::default().rate_mbit(20).delay_ms(300);
    assert_eq!(survive(link, 40), (vec![], vec![]));
}

#[test]
fn a_lossy_path_is_not_declared_dead() {
    let link = LinkConfig::default().rate_mbit(20).delay_ms(20).loss(0.05);
    assert_eq!(survive(link, 40), (vec![], vec![]));
}
