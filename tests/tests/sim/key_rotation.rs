//! Rotating the group key of a fleet during a transfer, in virtual time, by the documented
//! procedure: three servers share key A (id 1) and stripe a 64 MiB body; once 8 MiB were
//! read, key B (id 2) is added everywhere as an earlier key, then made current on every
//! server (the primary re-issues its tickets and path secrets under it at once), and A is
//! removed `max(ticket_lifetime, join_proof_lifetime)` (plus a second of Unix-time
//! rounding) after the last switch. The body arrives exact with no refused pull and no
//! failed path, and the secondaries keep serving after A is gone. Separately, a secondary
//! that holds only B refuses a join under A with the `UnknownKey` code.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, ErrorCode, Event, GroupKey, GroupKeys, PathError, SessionError};
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::Cluster;
use kwik_tests::failover::links;

const LEN: usize = 64 << 20;

fn config() -> Config {
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    config.ticket_lifetime = Duration::from_secs(3);
    config.join_proof_lifetime = Duration::from_secs(3);
    config
}

fn key_a() -> GroupKey {
    GroupKey::new([0xa1; 32])
}

fn key_b() -> GroupKey {
    GroupKey::new([0xb2; 32])
}

/// Gives every server of `c` the keys `keys`.
fn set_all(c: &mut Cluster, keys: &GroupKeys) {
    let now = c.sim.now();
    for &node in &c.servers {
        c.sim.nodes[node].endpoint.set_group_keys(now, keys.clone());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    OnlyA,
    BAdded,
    Switched,
    ARemoved,
}

#[test]
fn sessions_live_through_a_key_rotation() {
    let body = payload(91, LEN);
    let want = sha256(&body);
    let mut c = Cluster::new(91, &links(), config(), config(), body);
    set_all(&mut c, &GroupKeys::new(1, key_a()));
    assert!(
        c.join_all(Duration::from_secs(10)),
        "secondaries joined under A"
    );
    c.start_stripe();
    let wait = config().ticket_lifetime.max(config().join_proof_lifetime) + Duration::from_secs(1);
    let mut step = Step::OnlyA;
    let mut switched_at = None;
    let mut at_removal = None;
    let done = c.run_until(Duration::from_secs(120), |c| {
        let now = c.sim.now();
        match step {
            Step::OnlyA if c.reader.bytes >= 8 << 20 => {
                set_all(
                    c,
                    &GroupKeys::new(1, key_a()).with_earlier(2, key_b()).unwrap(),
                );
                step = Step::BAdded;
            }
            Step::BAdded => {
                set_all(
                    c,
                    &GroupKeys::new(2, key_b()).with_earlier(1, key_a()).unwrap(),
                );
                switched_at = Some(now);
                step = Step::Switched;
            }
            Step::Switched if switched_at.is_some_and(|t| now >= t + wait) => {
                set_all(c, &GroupKeys::new(2, key_b()));
                at_removal = Some((c.reader.bytes, c.received_per_path()));
                step = Step::ARemoved;
            }
            _ => {}
        }
        c.reader.finished || c.reader.closed.is_some()
    });
    assert!(
        done && c.reader.finished,
        "body not delivered: {:?}",
        c.reader.closed
    );
    assert_eq!(step, Step::ARemoved, "the body outlasted the rotation");
    assert_eq!(c.reader.digest(), want);
    let troubles: Vec<_> = c
        .reader
        .events
        .iter()
        .filter(|e| matches!(e, Event::PullRefused { .. } | Event::PathFailed { .. }))
        .collect();
    assert!(troubles.is_empty(), "{troubles:?}");
    let (read, before) = at_removal.unwrap();
    assert!(
        read < LEN as u64 * 3 / 4,
        "A was removed with {read} bytes read"
    );
    let after = c.received_per_path();
    for (path, bytes) in &before {
        let more = after[path] - bytes;
        println!("{path}: {more} bytes after A was removed");
        assert!(more > 0, "{path} served nothing under B alone");
    }
}

#[test]
fn a_join_under_a_key_the_secondary_does_not_hold_is_refused() {
    let mut c = Cluster::new(92, &links(), config(), config(), payload(92, 1 << 20));
    set_all(&mut c, &GroupKeys::new(1, key_a()));
    // Server 2 already switched to B and dropped A; the primary still adds paths under A.
    let now = c.sim.now();
    let node = c.servers[2];
    c.sim.nodes[node]
        .endpoint
        .set_group_keys(now, GroupKeys::new(2, key_b()));
    assert!(!c.join_all(Duration::from_secs(5)), "server 2 cannot join");
    let refused = c.path_ids[&2];
    let error = c.reader.events.iter().find_map(|e| match e {
        Event::PathFailed { path, error, .. } if *path == refused => Some(error.clone()),
        _ => None,
    });
    assert_eq!(
        error,
        Some(PathError::Connection(SessionError::PeerProtocolError {
            code: ErrorCode::UnknownKey,
            reason: "no group key 1".into()
        }))
    );
    // Each retry of the path (the primary may yet refresh its secret under a key the
    // secondary holds) is refused alike.
    assert!(
        c.sim.nodes[node]
            .endpoint
            .stats()
            .protocol_violations_of(ErrorCode::UnknownKey)
            >= 1
    );
    // Server 1, under A, joined.
    assert!(c.reader.events.contains(&Event::PathActive {
        session: c.session,
        path: c.path_ids[&1]
    }));
}
