//! A hostile peer ignores the limits the server granted: flow-control windows, the stream
//! limit and the reassembly gap limit. Traffic up to each limit is accepted; one step past
//! it closes the session with the matching typed error.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::frame::Frame;
use kwik_core::{Config, Dir, ErrorCode, Event, StreamId};
use kwik_tests::app::payload;
use kwik_tests::raw::frames;
use kwik_tests::raw_session::RawSession;
use quinn_proto::Side;

fn bidi(index: u64) -> StreamId {
    StreamId::new(Side::Client, Dir::Bi, index)
}

fn stream(id: StreamId, offset: u64, len: usize) -> Frame {
    Frame::Stream {
        id,
        offset,
        fin: false,
        data: payload(id.0 ^ offset, len),
    }
}

/// Sends `allowed` on a carrier, checks the session survives it, then sends `excess` on
/// the same carrier and checks the session is closed with `code`.
fn within_then_beyond(mut s: RawSession, allowed: &[Frame], excess: &[Frame], code: ErrorCode) {
    let carrier = s.peer().carrier(frames(allowed));
    s.run_for(Duration::from_millis(200));
    s.assert_alive();
    assert!(
        s.server_events
            .iter()
            .any(|e| matches!(e, Event::StreamReadable { .. })),
        "the allowed frames were delivered: {:?}",
        s.server_events
    );
    s.peer().write(carrier, frames(excess));
    s.assert_violation(code);
}

#[test]
fn data_beyond_the_stream_window_closes_with_flow_control() {
    let mut config = Config::default();
    config.stream_receive_window = 64 * 1024;
    let s = RawSession::establish(31, config);
    // Nobody reads: the window never moves. Exactly the window is fine, one byte more is not.
    within_then_beyond(
        s,
        &[stream(bidi(0), 0, 64 * 1024)],
        &[stream(bidi(0), 64 * 1024, 1)],
        ErrorCode::FlowControl,
    );
}

#[test]
fn data_far_beyond_the_stream_window_closes_with_flow_control() {
    let mut config = Config::default();
    config.stream_receive_window = 64 * 1024;
    let s = RawSession::establish(32, config);
    // An out-of-order frame far ahead, with nothing before it.
    within_then_beyond(
        s,
        &[stream(bidi(0), 0, 10)],
        &[stream(bidi(0), 1 << 40, 10)],
        ErrorCode::FlowControl,
    );
}

#[test]
fn data_beyond_the_session_window_closes_with_flow_control() {
    let mut config = Config::default();
    config.stream_receive_window = 64 * 1024;
    config.receive_window = 128 * 1024;
    let s = RawSession::establish(33, config);
    // Two streams fill the session window; a third stream's first byte exceeds it.
    within_then_beyond(
        s,
        &[stream(bidi(0), 0, 64 * 1024), stream(bidi(1), 0, 64 * 1024)],
        &[stream(bidi(2), 0, 1)],
        ErrorCode::FlowControl,
    );
}

#[test]
fn stream_beyond_the_limit_closes_with_stream_limit() {
    let mut config = Config::default();
    config.max_concurrent_bidi_streams = 10;
    let s = RawSession::establish(34, config);
    // Index 9 (implicitly opening 0..=9) is the last allowed; index 10 is one too many.
    within_then_beyond(
        s,
        &[stream(bidi(9), 0, 100)],
        &[stream(bidi(10), 0, 100)],
        ErrorCode::StreamLimit,
    );
}

#[test]
fn uni_stream_beyond_the_limit_closes_with_stream_limit() {
    let mut config = Config::default();
    config.max_concurrent_uni_streams = 3;
    let s = RawSession::establish(35, config);
    let uni = |i| StreamId::new(Side::Client, Dir::Uni, i);
    within_then_beyond(
        s,
        &[stream(uni(0), 0, 1), stream(uni(2), 0, 1)],
        &[stream(uni(1 << 40), 0, 1)],
        ErrorCode::StreamLimit,
    );
}

#[test]
fn too_many_gaps_close_with_reassembly_limit() {
    let mut config = Config::default();
    config.max_reassembly_gaps = 4;
    let s = RawSession::establish(36, config);
    // Byte 0 arrives, so the stream is readable; then four separate out-of-order bytes
    // leave four gaps (allowed), and a fifth separate byte makes five.
    let allowed: Vec<Frame> = [0, 10, 20, 30, 40]
        .into_iter()
        .map(|o| stream(bidi(0), o, 1))
        .collect();
    within_then_beyond(
        s,
        &allowed,
        &[stream(bidi(0), 50, 1)],
        ErrorCode::ReassemblyLimit,
    );
}

#[test]
fn adjacent_out_of_order_frames_are_not_gaps() {
    let mut config = Config::default();
    config.max_reassembly_gaps = 2;
    let mut s = RawSession::establish(37, config);
    // 100 one-byte frames ending at offset 1000, sent back to front: a single gap above
    // the missing byte 0 at every moment, however many segments are buffered.
    let mut fs: Vec<Frame> = (1..=100)
        .rev()
        .map(|o| stream(bidi(0), 900 + o, 1))
        .collect();
    fs.push(stream(bidi(0), 0, 901));
    s.peer().carrier(frames(&fs));
    s.run_for(Duration::from_millis(200));
    s.assert_alive();
    assert!(
        s.server_events
            .iter()
            .any(|e| matches!(e, Event::StreamReadable { .. }))
    );
}
