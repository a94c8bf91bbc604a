//! A hostile peer breaks the control-stream protocol: each violation closes the session
//! with its own typed error, seen by the server as a `ProtocolViolation` and by the peer
//! as the connection's application close code.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::control::MAX_CONTROL_FRAME;
use kwik_core::{Config, ErrorCode};
use kwik_proto::control_frame::Kind;
use kwik_proto::{ControlFrame, Hello, Ping, Pong};
use kwik_tests::raw::{control_frame, default_limits};
use kwik_tests::raw_session::RawSession;
use prost::Message;

/// A protobuf varint.
fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(v, &mut out);
    out
}

/// Sends a Ping and waits for the matching Pong: the control stream works.
fn ping_pong(s: &mut RawSession, seq: u64) {
    s.peer()
        .write_control(control_frame(Some(Kind::Ping(Ping { seq }))));
    let pong = s.run_until(Duration::from_secs(2), |s| {
        s.peer()
            .control_messages
            .contains(&Kind::Pong(Pong { seq }))
    });
    assert!(pong, "no Pong {seq}: {:?}", s.peer().control_messages);
    s.assert_alive();
}

#[test]
fn oversized_control_frame_closes_with_control_frame_too_large() {
    let mut s = RawSession::establish(21, Config::default());
    // Announce one byte more than allowed; the server refuses before the body arrives.
    let mut bytes = varint(MAX_CONTROL_FRAME as u64 + 1);
    bytes.extend_from_slice(&[0; 64]);
    s.peer().write_control(bytes);
    s.assert_violation(ErrorCode::ControlFrameTooLarge);
}

#[test]
fn control_frame_of_exactly_the_limit_is_accepted() {
    let mut s = RawSession::establish(22, Config::default());
    // A Ping padded with an unknown length-delimited field (number 31, tag 0xfa 0x01) to exactly
    // MAX_CONTROL_FRAME bytes: valid, so it is answered and the unknown field skipped.
    let mut body = ControlFrame {
        kind: Some(Kind::Ping(Ping { seq: 42 })),
    }
    .encode_to_vec();
    let room = MAX_CONTROL_FRAME - body.len();
    let mut pad_len = room - 1;
    while 2 + varint(pad_len as u64).len() + pad_len > room {
        pad_len -= 1;
    }
    body.extend([0xfa, 0x01]);
    body.extend(varint(pad_len as u64));
    body.resize(body.len() + pad_len, 0xab);
    assert_eq!(body.len(), MAX_CONTROL_FRAME);
    let mut frame = varint(body.len() as u64);
    frame.extend(body);
    s.peer().write_control(frame);
    let pong = s.run_until(Duration::from_secs(2), |s| {
        s.peer()
            .control_messages
            .contains(&Kind::Pong(Pong { seq: 42 }))
    });
    assert!(pong, "no Pong: {:?}", s.peer().control_messages);
    s.assert_alive();
}

#[test]
fn control_messages_of_unknown_kinds_are_counted_and_ignored() {
    let mut s = RawSession::establish(23, Config::default());
    ping_pong(&mut s, 7);
    // A ControlFrame without a kind: how a message kind unknown to this version decodes.
    let empty = control_frame(None);
    assert_eq!(empty, [0]);
    s.peer().write_control(empty);
    // Field 18 would be the next kind a later version adds: an empty message in it.
    s.peer().write_control(vec![3, 0x92, 0x01, 0x00]);
    // The session goes on: the next Ping is answered.
    ping_pong(&mut s, 8);
    let h = s.session.expect("the server's session");
    let stats = s.server_endpoint().session(h).unwrap().stats();
    assert_eq!(stats.paths[0].control_unknown, 2);
}

#[test]
fn malformed_control_frame_closes_with_control_decode() {
    let mut s = RawSession::establish(25, Config::default());
    s.peer().write_control(vec![3, 0xff, 0xff, 0xff]);
    s.assert_violation(ErrorCode::ControlDecode);
}

#[test]
fn second_hello_closes_with_unexpected_control_message() {
    let mut s = RawSession::establish(26, Config::default());
    s.peer()
        .write_control(control_frame(Some(Kind::Hello(Hello {
            version: kwik_proto::VERSION,
            limits: Some(default_limits()),
            ..Hello::default()
        }))));
    s.assert_violation(ErrorCode::UnexpectedControlMessage);
}

#[test]
fn ping_before_hello_closes_with_unexpected_control_message() {
    let mut s = RawSession::connect(27, Config::default());
    s.peer().open_control();
    s.peer()
        .write_control(control_frame(Some(Kind::Ping(Ping { seq: 1 }))));
    assert_eq!(
        s.run_until_peer_closed(),
        Some(ErrorCode::UnexpectedControlMessage.to_wire())
    );
    assert!(s.server_events.is_empty(), "{:?}", s.server_events);
    s.assert_server_forgets();
}

#[test]
fn hello_of_another_version_closes_with_version_mismatch() {
    let mut s = RawSession::connect(28, Config::default());
    s.peer().open_control();
    s.peer()
        .write_control(control_frame(Some(Kind::Hello(Hello {
            version: kwik_proto::VERSION + 1,
            limits: Some(default_limits()),
            ..Hello::default()
        }))));
    assert_eq!(
        s.run_until_peer_closed(),
        Some(ErrorCode::VersionMismatch.to_wire())
    );
    assert!(s.peer().welcome().is_none());
    assert!(s.server_events.is_empty(), "{:?}", s.server_events);
    s.assert_server_forgets();
}
