//! A secondary admits a join only on a valid proof. Each forgery below is refused with the
//! close code `JoinRefused`, and no byte from that path reaches a stream: the secondary
//! holds no session (`session_count() == 0`), even when the peer also opens a carrier and
//! writes stream frames on it.
//!
//! - a secondary whose group key differs from the primary's (full KWIK client): the
//!   client's path fails, and its session and the stripe over the primary go on unharmed;
//! - raw peers against a KWIK secondary that holds the deployment's group key: random
//!   bytes as the proof, a valid proof whose expiry has passed, a proof made for another
//!   session id, and a valid proof replayed on another connection.
//!
//! A positive control shows a raw peer with a correct proof is admitted (one session, a
//! `JoinResult { accepted: true }`), so the refusals cannot pass vacuously.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::frame::Frame;
use kwik_core::join::{path_secret, proof};
use kwik_core::{
    Config, Dir, ErrorCode, Event, GroupKey, PathError, PathId, SessionError, StreamId,
};
use kwik_proto::control_frame::Kind;
use kwik_proto::{Join, JoinResult};
use kwik_tests::app::{payload, sha256};
use kwik_tests::cluster::{Cluster, GROUP_KEY};
use kwik_tests::failover::links;
use kwik_tests::raw::{control_frame, frames};
use kwik_tests::raw_session::RawSession;
use kwik_tests::sim::WALL_CLOCK_START;
use quinn_proto::Side;
use rand::{RngCore, SeedableRng};

/// Unix seconds at the start of every simulation.
const NOW_UNIX: u64 = WALL_CLOCK_START.as_secs();
/// An expiry a minute ahead, as a primary would issue.
const EXPIRY: u64 = NOW_UNIX + 60;
const SESSION_A: u64 = 0x0a0a_0a0a;
const SESSION_B: u64 = 0x0b0b_0b0b;
const PATH: u32 = 1;

fn key() -> GroupKey {
    GroupKey::new(GROUP_KEY)
}

/// A Join control frame.
fn join_frame(session_id: u64, expiry: u64, proof: Vec<u8>) -> Vec<u8> {
    control_frame(Some(Kind::Join(Join {
        session_id,
        path_id: PATH,
        expiry,
        proof,
        key_id: 0,
    })))
}

/// The proof a client holding the path secret of (`session_id`, [`PATH`], `expiry`) makes
/// on the connection of raw peer `peer`.
fn valid_proof(s: &mut RawSession, peer: usize, session_id: u64, expiry: u64) -> Vec<u8> {
    let exporter = s.sim.hosts.raw[peer]
        .exporter()
        .expect("handshake complete");
    proof(&path_secret(&key(), session_id, PATH, expiry), &exporter)
}

/// Writes `join` as raw peer `peer`'s first control frame, then smuggles a stream frame on
/// a carrier right behind it.
fn send_join_and_carrier(s: &mut RawSession, peer: usize, join: Vec<u8>) {
    let p = &mut s.sim.hosts.raw[peer];
    p.open_control();
    p.write_control(join);
    p.carrier(frames(&[Frame::Stream {
        id: StreamId::new(Side::Client, Dir::Uni, 0),
        offset: 0,
        fin: true,
        data: Bytes::from_static(b"smuggled before any session"),
    }]));
}

/// Asserts raw peer `peer` was refused with `JoinRefused`, got no JoinResult, and the
/// secondary holds no session and reported none.
fn assert_refused(s: &mut RawSession, peer: usize, case: &str) {
    let closed = s.run_until(Duration::from_secs(5), |s| {
        s.server_endpoint().session_count() != 0 || s.sim.hosts.raw[peer].lost.is_some()
    });
    assert!(closed, "{case}: the secondary did not close the connection");
    let p = &s.sim.hosts.raw[peer];
    println!(
        "{case}: closed with {:?}, peer saw {:?}",
        p.close_code()
            .and_then(|c| ErrorCode::from_wire(c.into_inner())),
        p.lost
    );
    assert_eq!(
        p.close_code(),
        Some(ErrorCode::JoinRefused.to_wire()),
        "{case}: peer saw {:?}",
        p.lost
    );
    assert!(
        !p.control_messages
            .iter()
            .any(|k| matches!(k, Kind::JoinResult(_))),
        "{case}: got {:?}",
        p.control_messages
    );
    assert_eq!(s.server_endpoint().session_count(), 0, "{case}: a session");
    assert!(
        !s.server_events
            .iter()
            .any(|e| matches!(e, Event::Incoming(_) | Event::StreamOpened { .. })),
        "{case}: {:?}",
        s.server_events
    );
    let stats = s.server_endpoint().stats();
    assert_eq!(stats.protocol_violations, 1, "{case}");
    assert_eq!(
        stats.protocol_violations_of(ErrorCode::JoinRefused),
        1,
        "{case}"
    );
}

/// One raw peer sends `join` (and a carrier) to a fresh secondary; it must be refused.
fn refused_case(seed: u64, case: &str, join: impl FnOnce(&mut RawSession) -> Vec<u8>) {
    let mut s = RawSession::connect_secondary(seed, Config::default(), key());
    let frame = join(&mut s);
    let peer = s.peer;
    send_join_and_carrier(&mut s, peer, frame);
    assert_refused(&mut s, peer, case);
    s.assert_server_forgets();
}

#[test]
fn a_correct_proof_is_admitted() {
    let mut s = RawSession::connect_secondary(71, Config::default(), key());
    let peer = s.peer;
    let proof = valid_proof(&mut s, peer, SESSION_A, EXPIRY);
    s.peer().open_control();
    s.peer().write_control(join_frame(SESSION_A, EXPIRY, proof));
    let admitted = s.run_until(Duration::from_secs(5), |s| {
        s.peer()
            .control_messages
            .iter()
            .any(|k| matches!(k, Kind::JoinResult(_)))
            || s.peer().lost.is_some()
    });
    assert!(admitted, "no answer to a valid Join");
    let p = &s.sim.hosts.raw[peer];
    assert_eq!(
        p.control_messages.first(),
        Some(&Kind::JoinResult(JoinResult {
            accepted: true,
            code: 0,
            reason: String::new()
        })),
        "lost: {:?}",
        p.lost
    );
    assert_eq!(s.server_endpoint().session_count(), 1);
    assert!(s.session.is_some(), "the secondary reported the session");
    let h = s.session.unwrap();
    let stats = s.server_endpoint().session(h).unwrap().stats();
    assert_eq!(stats.session_id, SESSION_A);
    s.assert_alive();
}

#[test]
fn random_bytes_as_the_proof_are_refused() {
    refused_case(72, "random proof", |_| {
        let mut bytes = vec![0u8; 32];
        rand_chacha::ChaCha8Rng::seed_from_u64(72).fill_bytes(&mut bytes);
        join_frame(SESSION_A, EXPIRY, bytes)
    });
}

#[test]
fn an_expired_proof_is_refused() {
    refused_case(73, "expired proof", |s| {
        // Valid for its inputs, but it expired a second before the simulation started.
        let expiry = NOW_UNIX - 1;
        let peer = s.peer;
        let proof = valid_proof(s, peer, SESSION_A, expiry);
        join_frame(SESSION_A, expiry, proof)
    });
}

#[test]
fn a_proof_for_another_session_is_refused() {
    refused_case(74, "another session's proof", |s| {
        let peer = s.peer;
        let proof = valid_proof(s, peer, SESSION_A, EXPIRY);
        join_frame(SESSION_B, EXPIRY, proof)
    });
}

#[test]
fn a_proof_replayed_on_another_connection_is_refused() {
    let mut s = RawSession::connect_secondary(75, Config::default(), key());
    let first = s.peer;
    let second = s.add_peer();
    // The proof is made on the first connection and sent on the second.
    let proof = valid_proof(&mut s, first, SESSION_A, EXPIRY);
    send_join_and_carrier(&mut s, second, join_frame(SESSION_A, EXPIRY, proof.clone()));
    assert_refused(&mut s, second, "replayed proof");
    // On its own connection the same proof is good: the refusal was the binding's doing.
    s.sim.hosts.raw[first].open_control();
    s.sim.hosts.raw[first].write_control(join_frame(SESSION_A, EXPIRY, proof));
    let admitted = s.run_until(Duration::from_secs(5), |s| {
        s.sim.hosts.raw[first]
            .control_messages
            .contains(&Kind::JoinResult(JoinResult {
                accepted: true,
                code: 0,
                reason: String::new(),
            }))
    });
    assert!(admitted, "the proof's own connection was not admitted");
    assert_eq!(s.server_endpoint().session_count(), 1);
}

#[test]
fn a_secondary_with_another_group_key_refuses_and_the_session_goes_on() {
    let mut config = Config::default();
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    let len = 4usize << 20;
    let body = payload(76, len);
    let want = sha256(&body);
    // The primary holds the deployment's key; one secondary another key, one none at all.
    let keys = [Some(key()), Some(GroupKey::new([0x99; 32])), None];
    let mut c = Cluster::with_group_keys(76, &links(), config.clone(), config, body, &keys);
    let secondaries_hold_nothing = |c: &mut Cluster| {
        c.servers[1..]
            .iter()
            .all(|n| c.sim.nodes[*n].endpoint.session_count() == 0)
    };
    assert!(c.run_until(Duration::from_secs(5), |c| {
        c.primary_session.is_some() && c.reader.connected
    }));
    let paths = c.add_paths();
    let failed_paths = |c: &Cluster| -> Vec<(PathId, PathError)> {
        c.reader
            .events
            .iter()
            .filter_map(|e| match e {
                Event::PathFailed { path, error, .. } => Some((*path, error.clone())),
                _ => None,
            })
            .collect()
    };
    let mut held = false;
    let both_failed = c.run_until(Duration::from_secs(5), |c| {
        held |= !secondaries_hold_nothing(c);
        failed_paths(c).len() >= 2
    });
    assert!(
        both_failed,
        "paths did not fail: {:?}",
        c.reader.events.iter().collect::<Vec<_>>()
    );
    // The body goes over the primary alone, while the client keeps retrying the paths.
    c.start_stripe();
    let finished = c.run_until(Duration::from_secs(30), |c| {
        held |= !secondaries_hold_nothing(c);
        c.reader.finished || c.reader.closed.is_some()
    });
    let per_path = c.received_per_path();
    let violations: Vec<u64> = c.servers[1..]
        .iter()
        .map(|n| c.sim.nodes[*n].endpoint.stats().protocol_violations)
        .collect();
    let primary_failed: Vec<_> = c.apps[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::PathFailed { .. }))
        .collect();
    println!(
        "client path failures {:?}; refusals at the secondaries {violations:?}; primary saw \
         {primary_failed:?}; body {} of {len} bytes over {per_path:?}",
        failed_paths(&c),
        c.reader.bytes
    );

    for (path, error) in failed_paths(&c) {
        assert!(paths.contains(&path), "{path} failed");
        match error {
            PathError::Connection(SessionError::PeerProtocolError { code, .. }) => {
                assert_eq!(code, ErrorCode::JoinRefused, "{path}")
            }
            other => panic!("{path} failed with {other:?}, expected a JoinRefused close"),
        }
    }
    assert_eq!(failed_paths(&c).len(), 2, "one failure per path");
    assert!(!held, "a secondary held a session");
    assert!(violations.iter().all(|v| *v >= 1), "{violations:?}");
    for i in 1..=2 {
        assert!(c.apps[i].events.is_empty(), "{:?}", c.apps[i].events);
        assert_eq!(c.apps[i].delegations, 0);
    }
    for path in &paths {
        assert_eq!(per_path.get(path).copied().unwrap_or(0), 0, "{path} bytes");
    }
    assert_eq!(
        primary_failed.len(),
        2,
        "the primary heard of both failures"
    );
    assert_eq!(c.reader.closed, None, "the client session survived");
    assert!(finished && c.reader.finished, "the body completed");
    assert_eq!(c.reader.bytes, len as u64);
    assert_eq!(c.reader.digest(), want);
}
