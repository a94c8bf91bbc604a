//! A hostile peer completes the KWIK setup and then writes data-plane bytes that are not
//! valid frames: the server closes the session with a typed `FrameEncoding` error, which
//! the peer sees as the connection's application close code.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::frame::{Frame, MAX_STREAM_FRAME_PAYLOAD};
use kwik_core::{Config, Dir, ErrorCode, Event, StreamId};
use kwik_tests::app::payload;
use kwik_tests::raw::frames;
use kwik_tests::raw_session::RawSession;
use quinn_proto::Side;

#[test]
fn garbage_on_a_carrier_closes_with_frame_encoding() {
    let mut s = RawSession::establish(11, Config::default());
    // 0x3f is a one-byte varint frame type (63) that KWIK does not define.
    let mut garbage = vec![0x3f, 0xde, 0xad, 0xbe, 0xef];
    garbage.extend_from_slice(&payload(99, 4096));
    s.peer().carrier(garbage);
    s.assert_violation(ErrorCode::FrameEncoding);
}

#[test]
fn garbage_after_valid_frames_closes_with_frame_encoding() {
    let mut s = RawSession::establish(12, Config::default());
    let id = StreamId::new(Side::Client, Dir::Uni, 0);
    let good = frames(&[Frame::Stream {
        id,
        offset: 0,
        fin: false,
        data: Bytes::from_static(b"hello"),
    }]);
    let carrier = s.peer().carrier(good);
    s.run_for(Duration::from_millis(100));
    s.assert_alive();
    assert!(
        s.server_events
            .iter()
            .any(|e| matches!(e, Event::StreamOpened { dir: Dir::Uni, .. })),
        "the valid frame opened a stream: {:?}",
        s.server_events
    );
    // Same carrier, now a frame type that does not exist (two-byte varint 0x1234).
    s.peer().write(carrier, vec![0x52, 0x34, 1, 2, 3]);
    s.assert_violation(ErrorCode::FrameEncoding);
}

#[test]
fn oversized_stream_frame_closes_with_frame_encoding() {
    let mut s = RawSession::establish(13, Config::default());
    let huge = frames(&[Frame::Stream {
        id: StreamId::new(Side::Client, Dir::Bi, 0),
        offset: 0,
        fin: false,
        data: payload(5, MAX_STREAM_FRAME_PAYLOAD + 1),
    }]);
    s.peer().carrier(huge);
    s.assert_violation(ErrorCode::FrameEncoding);
}

#[test]
fn carrier_ending_inside_a_frame_closes_with_frame_encoding() {
    let mut s = RawSession::establish(14, Config::default());
    let mut cut = frames(&[Frame::Stream {
        id: StreamId::new(Side::Client, Dir::Uni, 0),
        offset: 0,
        fin: true,
        data: payload(6, 100),
    }]);
    cut.truncate(cut.len() - 40);
    let carrier = s.peer().carrier(cut);
    s.run_for(Duration::from_millis(100));
    s.assert_alive();
    s.peer().finish(carrier);
    s.assert_violation(ErrorCode::FrameEncoding);
}

#[test]
fn frames_before_the_hello_close_with_handshake() {
    let mut s = RawSession::connect(15, Config::default());
    s.peer().carrier(frames(&[Frame::Stream {
        id: StreamId::new(Side::Client, Dir::Uni, 0),
        offset: 0,
        fin: true,
        data: Bytes::from_static(b"too early"),
    }]));
    assert_eq!(
        s.run_until_peer_closed(),
        Some(ErrorCode::Handshake.to_wire())
    );
    // No session was ever set up, so none is reported closed.
    assert!(s.server_events.is_empty(), "{:?}", s.server_events);
    let stats = s.server_endpoint().stats();
    assert_eq!(stats.protocol_violations, 1);
    // Counted by code too (the metrics' `code` label).
    assert_eq!(stats.protocol_violations_of(ErrorCode::Handshake), 1);
    assert_eq!(stats.protocol_violations_of(ErrorCode::FrameEncoding), 0);
    s.assert_server_forgets();
}
