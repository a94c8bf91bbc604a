//! A peer may send control messages only at `max_control_messages_per_sec` (in bursts of
//! as many): beyond it the session is closed with `ControlRate`; below it, every message is
//! answered.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, ErrorCode};
use kwik_proto::control_frame::Kind;
use kwik_proto::{Ping, Pong};
use kwik_tests::raw::control_frame;
use kwik_tests::raw_session::RawSession;

fn pings(first: u64, count: u64) -> Vec<u8> {
    (first..first + count)
        .flat_map(|seq| control_frame(Some(Kind::Ping(Ping { seq }))))
        .collect()
}

fn pongs(s: &mut RawSession) -> usize {
    s.peer()
        .control_messages
        .iter()
        .filter(|k| matches!(k, Kind::Pong(Pong { .. })))
        .count()
}

#[test]
fn a_burst_above_the_limit_closes_with_control_rate() {
    let mut s = RawSession::establish(71, Config::default());
    s.peer().write_control(pings(1, 1500));
    s.assert_violation(ErrorCode::ControlRate);
}

#[test]
fn a_burst_of_unknown_kinds_above_the_limit_closes_with_control_rate() {
    let mut s = RawSession::establish(76, Config::default());
    // Ignored messages of kinds a later version adds spend the rate budget all the same.
    s.peer().write_control(control_frame(None).repeat(1500));
    s.assert_violation(ErrorCode::ControlRate);
}

#[test]
fn a_burst_within_the_limit_is_answered_in_full() {
    let mut s = RawSession::establish(72, Config::default());
    s.peer().write_control(pings(1, 900));
    let all = s.run_until(Duration::from_secs(5), |s| pongs(s) == 900);
    assert!(all, "{} of 900 answered", pongs(&mut s));
    s.assert_alive();
}

#[test]
fn the_sustained_rate_is_what_counts() {
    let mut config = Config::default();
    config.max_control_messages_per_sec = 100;
    // 80 per second for 5 s: 400 messages, more than the burst of 100, all answered.
    let mut s = RawSession::establish(73, config.clone());
    for i in 0..50 {
        s.peer().write_control(pings(1 + i * 8, 8));
        s.run_for(Duration::from_millis(100));
    }
    s.run_for(Duration::from_millis(500));
    assert_eq!(pongs(&mut s), 400);
    s.assert_alive();
    // 200 per second: refused once the burst is spent.
    let mut s = RawSession::establish(74, config);
    for i in 0..30 {
        s.peer().write_control(pings(1 + i * 20, 20));
        s.run_for(Duration::from_millis(100));
        if s.server_closed().is_some() {
            break;
        }
    }
    s.assert_violation(ErrorCode::ControlRate);
}

#[test]
fn a_peer_that_stops_reading_its_answers_is_closed() {
    let mut config = Config::default();
    config.max_control_messages_per_sec = 1_000_000;
    // The peer grants 1 KiB per stream and then stops reading: the server's Pongs pile up.
    let mut s = RawSession::establish_with_window(75, config, Some(1024));
    s.peer().read_control = false;
    for i in 0..40 {
        s.peer().write_control(pings(1 + i * 1000, 1000));
        s.run_for(Duration::from_millis(50));
        if s.server_closed().is_some() {
            break;
        }
    }
    s.assert_violation(ErrorCode::ControlRate);
}
