//! A failed secondary path is retried until `path_recovery_timeout`: a link that comes back
//! in time makes the path active again (both sides see it), and one that does not is
//! removed once the timeout passes. The primary refreshes path secrets, so a path that
//! fails long after its join proof would have expired recovers all the same.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Event, PathError, PathId, PathState};
use kwik_tests::app::payload;
use kwik_tests::cluster::Cluster;
use kwik_tests::net::LinkConfig;

fn links() -> Vec<LinkConfig> {
    vec![LinkConfig::default().rate_mbit(20).delay_ms(10); 2]
}

fn config() -> Config {
    let mut c = Config::default();
    c.path_recovery_timeout = Duration::from_secs(5);
    c
}

/// Joins the secondary, blackholes its link and waits until the client fails the path.
fn fail_secondary(seed: u64) -> (Cluster, PathId) {
    fail_secondary_after(seed, config(), Duration::ZERO)
}

/// [`fail_secondary`] with `config`, the link cut `age` after the join.
fn fail_secondary_after(seed: u64, config: Config, age: Duration) -> (Cluster, PathId) {
    let mut c = Cluster::new(seed, &links(), config.clone(), config, payload(1, 1024));
    assert!(c.join_all(Duration::from_secs(10)), "secondary joined");
    if !age.is_zero() {
        c.run_until(age, |_| false);
    }
    let path = c.path_ids[&1];
    let (a, b) = (c.addrs[1].ip(), c.sim.nodes[c.client].addr.ip());
    c.sim.net.set_up(a, b, false);
    // A path that carried nothing for a while is idle: QUIC's keep-alive probes it, and
    // its silence fails it after three keep-alive intervals (30 s).
    let failed = c.run_until(Duration::from_secs(35), |c| {
        c.reader.events.iter().any(|e| {
            matches!(e, Event::PathFailed { path: p, error: PathError::Unresponsive, .. } if *p == path)
        })
    });
    assert!(failed, "the client failed the silent path");
    (c, path)
}

fn client_state(c: &mut Cluster, path: PathId) -> Option<PathState> {
    let h = c.session;
    let s = c.client_endpoint().session(h)?;
    s.paths().iter().find(|p| p.id == path).map(|p| p.state)
}

#[test]
fn a_path_that_comes_back_in_time_is_active_again() {
    let (c, path) = fail_secondary(61);
    comes_back(c, path);
}

#[test]
fn a_path_that_fails_after_the_proof_lifetime_recovers() {
    let mut config = config();
    config.join_proof_lifetime = Duration::from_secs(10);
    config.ticket_lifetime = Duration::from_secs(10);
    // Three proof lifetimes after the join: the secret of AddPath expired long ago.
    let (c, path) = fail_secondary_after(63, config, Duration::from_secs(30));
    comes_back(c, path);
}

/// Heals the failed path's link 2 s after it failed; the path must be active again on
/// both sides.
fn comes_back(mut c: Cluster, path: PathId) {
    assert_eq!(client_state(&mut c, path), Some(PathState::Failed));
    c.sim.run_for(Duration::from_secs(2));
    let (a, b) = (c.addrs[1].ip(), c.sim.nodes[c.client].addr.ip());
    c.sim.net.set_up(a, b, true);
    let healed_at = c.sim.now();
    let back = c.run_until(Duration::from_secs(4), |c| {
        client_state(c, path) == Some(PathState::Active)
    });
    assert!(
        back,
        "the path was not re-established within the recovery timeout"
    );
    println!(
        "path active again {:?} after the link healed",
        c.sim.now() - healed_at
    );
    // The primary hears of it too.
    let primary_saw = c.run_until(Duration::from_secs(1), |c| {
        let active = c.apps[0]
            .events
            .iter()
            .filter(|e| matches!(e, Event::PathActive { path: p, .. } if *p == path))
            .count();
        active >= 2
    });
    assert!(primary_saw, "the primary saw the path active again");
}

#[test]
fn a_path_that_stays_dead_is_removed_after_the_timeout() {
    let (mut c, path) = fail_secondary(62);
    let failed_at = c.sim.now();
    let removed = c.run_until(Duration::from_secs(10), |c| {
        c.reader
            .events
            .iter()
            .any(|e| matches!(e, Event::PathRemoved { path: p, .. } if *p == path))
    });
    assert!(removed, "the dead path was never removed");
    let after = c.sim.now() - failed_at;
    println!("removed {after:?} after failing (recovery timeout 5 s)");
    assert!(after >= Duration::from_secs(5) && after <= Duration::from_secs(6));
    assert_eq!(client_state(&mut c, path), Some(PathState::Removed));
    // The session lives on over the primary path.
    assert_eq!(c.reader.closed, None);
}
