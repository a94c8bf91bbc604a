//! Table tests of the logical stream state machine, without QUIC: frames go in through
//! `on_frame`, and what comes out of `poll_event`, `poll_signal` and `poll_data` is compared
//! exactly.

use super::*;
use crate::error::{ClosedStream, ReadError, WriteError};

use std::ops::Range;

use crate::error::ErrorCode;

fn lim(max_data: u64, max_stream_data: u64, max_bidi: u64, max_uni: u64) -> Limits {
    Limits {
        max_data,
        max_stream_data,
        max_bidi,
        max_uni,
    }
}

/// A side with `local` limits, after the peer granted `peer`; setup events are drained.
fn side(side: Side, local: Limits, peer: Limits, max_gaps: usize) -> Streams {
    let mut s = Streams::new(side, local, max_gaps);
    s.set_peer_limits(peer);
    while s.poll_event().is_some() {}
    s
}

fn roomy() -> Limits {
    lim(1 << 20, 1 << 16, 16, 16)
}

fn events(s: &mut Streams) -> Vec<StreamEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn signals(s: &mut Streams) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_signal()).collect()
}

/// The stream bytes at `range`: byte `i` is `i as u8`.
fn bytes(range: Range<u64>) -> Bytes {
    range.map(|i| i as u8).collect::<Vec<u8>>().into()
}

fn data(id: StreamId, range: Range<u64>, fin: bool) -> Frame {
    Frame::Stream {
        id,
        offset: range.start,
        fin,
        data: bytes(range),
    }
}

fn code(r: Result<(), ProtocolError>) -> ErrorCode {
    r.expect_err("the frame must be refused").code
}

fn cbi(index: u64) -> StreamId {
    StreamId::new(Side::Client, Dir::Bi, index)
}

fn cuni(index: u64) -> StreamId {
    StreamId::new(Side::Client, Dir::Uni, index)
}

fn sbi(index: u64) -> StreamId {
    StreamId::new(Side::Server, Dir::Bi, index)
}

fn suni(index: u64) -> StreamId {
    StreamId::new(Side::Server, Dir::Uni, index)
}

/// Reads until the stream blocks or ends: the bytes, and how it stopped.
fn read_all(s: &mut Streams, id: StreamId) -> (Vec<u8>, Result<Option<Bytes>, ReadError>) {
    let mut out = Vec::new();
    loop {
        match s.read(id, usize::MAX) {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            other => return (out, other),
        }
    }
}

// --- ids, open and accept --------------------------------------------------------------

#[test]
fn stream_ids_encode_initiator_direction_and_index() {
    let table = [
        (cbi(0), 0, Side::Client, Dir::Bi),
        (sbi(0), 1, Side::Server, Dir::Bi),
        (cuni(0), 2, Side::Client, Dir::Uni),
        (suni(0), 3, Side::Server, Dir::Uni),
        (cbi(5), 20, Side::Client, Dir::Bi),
        (suni(7), 31, Side::Server, Dir::Uni),
    ];
    for (id, raw, initiator, dir) in table {
        assert_eq!(id, StreamId(raw));
        assert_eq!(id.initiator(), initiator, "{raw}");
        assert_eq!(id.dir(), dir, "{raw}");
        assert_eq!(id.index(), raw >> 2, "{raw}");
    }
    assert_eq!(suni(7).to_string(), "server uni stream 7");
}

#[test]
fn open_stops_at_the_peer_limit_until_max_streams_raises_it() {
    let mut s = Streams::new(Side::Client, roomy(), 16);
    assert_eq!(s.open(Dir::Bi), None, "no stream before the peer's limits");
    s.set_peer_limits(lim(1000, 100, 2, 1));
    assert_eq!(
        events(&mut s),
        [
            StreamEvent::Available(Dir::Bi),
            StreamEvent::Available(Dir::Uni)
        ]
    );
    assert_eq!(s.open(Dir::Bi), Some(cbi(0)));
    assert_eq!(s.open(Dir::Bi), Some(cbi(1)));
    assert_eq!(s.open(Dir::Bi), None);
    assert_eq!(s.open(Dir::Uni), Some(cuni(0)));
    assert_eq!(s.open(Dir::Uni), None);
    assert_eq!(s.counters.opened_local, 3);
    assert_eq!(s.open_count(), 3);

    // A limit that does not rise changes nothing.
    for max in [0, 1, 2] {
        s.on_frame(Frame::MaxStreams { dir: Dir::Bi, max }).unwrap();
    }
    assert_eq!(events(&mut s), []);
    assert_eq!(s.open(Dir::Bi), None);

    s.on_frame(Frame::MaxStreams {
        dir: Dir::Bi,
        max: 3,
    })
    .unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Available(Dir::Bi)]);
    assert_eq!(s.open(Dir::Bi), Some(cbi(2)));
    assert_eq!(s.open(Dir::Bi), None);
    assert_eq!(s.open(Dir::Uni), None, "the other direction is unchanged");

    assert_eq!(
        code(s.on_frame(Frame::MaxStreams {
            dir: Dir::Uni,
            max: (1 << 60) + 1,
        })),
        ErrorCode::StreamLimit
    );
    s.on_frame(Frame::MaxStreams {
        dir: Dir::Uni,
        max: 1 << 60,
    })
    .unwrap();
    assert_eq!(s.open(Dir::Uni), Some(cuni(1)));

    let mut server = side(Side::Server, roomy(), lim(1000, 100, 1, 1), 16);
    assert_eq!(server.open(Dir::Bi), Some(sbi(0)));
    assert_eq!(server.open(Dir::Uni), Some(suni(0)));
    assert_eq!(server.open(Dir::Uni), None);
}

#[test]
fn a_frame_opens_every_lower_peer_stream_implicitly() {
    let mut s = side(Side::Server, lim(1000, 100, 4, 4), roomy(), 16);
    s.on_frame(data(cbi(2), 0..1, false)).unwrap();
    assert_eq!(
        events(&mut s),
        [StreamEvent::Opened(Dir::Bi), StreamEvent::Readable(cbi(2))]
    );
    assert_eq!(s.counters.opened_remote, 3);
    assert_eq!(s.open_count(), 3);
    assert_eq!(s.accept(Dir::Uni), None);
    assert_eq!(s.accept(Dir::Bi), Some(cbi(0)));
    assert_eq!(s.accept(Dir::Bi), Some(cbi(1)));
    assert_eq!(s.accept(Dir::Bi), Some(cbi(2)));
    assert_eq!(s.accept(Dir::Bi), None);

    // A lower stream is already open: no second Opened.
    s.on_frame(data(cbi(1), 0..1, false)).unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Readable(cbi(1))]);
    assert_eq!(s.counters.opened_remote, 3);

    // A send-side frame opens peer bidi streams too.
    s.on_frame(Frame::MaxStreamData {
        id: cbi(3),
        max: 500,
    })
    .unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Opened(Dir::Bi)]);
    assert_eq!(s.accept(Dir::Bi), Some(cbi(3)));

    s.on_frame(data(cuni(1), 0..2, true)).unwrap();
    assert_eq!(
        events(&mut s),
        [
            StreamEvent::Opened(Dir::Uni),
            StreamEvent::Readable(cuni(1))
        ]
    );
    assert_eq!(s.accept(Dir::Uni), Some(cuni(0)));
    assert_eq!(s.accept(Dir::Uni), Some(cuni(1)));
    assert_eq!(s.accept(Dir::Uni), None);
    assert_eq!(s.counters.opened_remote, 6);
    // 4 bidi streams (both halves) and 2 uni streams.
    assert_eq!(s.open_count(), 6);
}

#[test]
fn a_peer_stream_at_or_beyond_the_limit_is_a_stream_limit_error() {
    let table: [(&str, Frame); 6] = [
        ("stream bidi", data(cbi(2), 0..1, false)),
        ("stream uni", data(cuni(1), 0..1, false)),
        (
            "reset",
            Frame::ResetStream {
                id: cbi(2),
                code: 0,
                final_size: 0,
            },
        ),
        (
            "stop",
            Frame::StopSending {
                id: cbi(7),
                code: 0,
            },
        ),
        (
            "max stream data",
            Frame::MaxStreamData { id: cbi(2), max: 9 },
        ),
        (
            "data ack",
            Frame::DataAck {
                id: cbi(2),
                offset: 0,
            },
        ),
    ];
    for (name, frame) in table {
        let mut s = side(Side::Server, lim(1000, 100, 2, 1), roomy(), 16);
        assert_eq!(code(s.on_frame(frame)), ErrorCode::StreamLimit, "{name}");
        assert_eq!(events(&mut s), [], "{name}: nothing opened");
        assert_eq!(s.accept(Dir::Bi), None, "{name}");
        assert_eq!(s.counters.opened_remote, 0, "{name}");
    }
    // Just below the limit is fine.
    let mut s = side(Side::Server, lim(1000, 100, 2, 1), roomy(), 16);
    s.on_frame(data(cbi(1), 0..1, false)).unwrap();
    s.on_frame(data(cuni(0), 0..1, false)).unwrap();
    assert_eq!(s.counters.opened_remote, 3);
}

#[test]
fn a_frame_for_a_local_stream_never_opened_is_a_stream_state_error() {
    let table: [(&str, Frame); 6] = [
        ("stream", data(cbi(0), 0..1, false)),
        (
            "reset",
            Frame::ResetStream {
                id: cbi(1),
                code: 0,
                final_size: 0,
            },
        ),
        (
            "stop",
            Frame::StopSending {
                id: cuni(0),
                code: 0,
            },
        ),
        (
            "max stream data",
            Frame::MaxStreamData {
                id: cuni(0),
                max: 9,
            },
        ),
        (
            "data ack",
            Frame::DataAck {
                id: cbi(0),
                offset: 0,
            },
        ),
        ("second bidi", data(cbi(1), 0..1, false)),
    ];
    for (name, frame) in table {
        let mut s = side(Side::Client, roomy(), roomy(), 16);
        if name == "second bidi" {
            assert_eq!(s.open(Dir::Bi), Some(cbi(0)));
        }
        assert_eq!(code(s.on_frame(frame)), ErrorCode::StreamState, "{name}");
    }
    let mut s = side(Side::Client, roomy(), roomy(), 16);
    assert_eq!(s.open(Dir::Bi), Some(cbi(0)));
    s.on_frame(data(cbi(0), 0..1, false)).unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Readable(cbi(0))]);
}

#[test]
fn frames_against_a_stream_direction_are_stream_state_errors() {
    let mut s = side(Side::Client, roomy(), roomy(), 16);
    assert_eq!(s.open(Dir::Uni), Some(cuni(0)));
    // The peer receives on our uni stream: it cannot send on it or reset it.
    assert_eq!(
        code(s.on_frame(data(cuni(0), 0..1, false))),
        ErrorCode::StreamState
    );
    assert_eq!(
        code(s.on_frame(Frame::ResetStream {
            id: cuni(0),
            code: 1,
            final_size: 0,
        })),
        ErrorCode::StreamState
    );
    // The peer sends on its uni stream: it cannot stop it, raise its credit or ack it.
    s.on_frame(data(suni(0), 0..3, false)).unwrap();
    for frame in [
        Frame::StopSending {
            id: suni(0),
            code: 1,
        },
        Frame::MaxStreamData {
            id: suni(0),
            max: 1 << 20,
        },
        Frame::DataAck {
            id: suni(0),
            offset: 0,
        },
    ] {
        assert_eq!(
            code(s.on_frame(frame.clone())),
            ErrorCode::StreamState,
            "{frame:?}"
        );
    }
    // The API refuses the same directions.
    assert_eq!(s.read(cuni(0), 10), Err(ReadError::ClosedStream));
    assert_eq!(s.write(suni(0), b"x"), Err(WriteError::ClosedStream));
    assert_eq!(s.finish(suni(0)), Err(ClosedStream));
    assert_eq!(s.stop(cuni(0), VarInt::from_u32(1)), Err(ClosedStream));
    // Our uni stream accepts send-side frames.
    s.on_frame(Frame::MaxStreamData {
        id: cuni(0),
        max: 1 << 20,
    })
    .unwrap();
    s.on_frame(Frame::DataAck {
        id: cuni(0),
        offset: 0,
    })
    .unwrap();
}

// --- flow control ------------------------------------------------------------------------

#[test]
fn write_credit_is_the_smaller_of_stream_and_session_windows() {
    let mut s = side(Side::Client, roomy(), lim(100, 60, 4, 4), 16);
    let a = s.open(Dir::Bi).unwrap();
    let b = s.open(Dir::Bi).unwrap();
    assert_eq!(s.write(a, &[1; 80]), Ok(60), "stream window");
    assert_eq!(s.write(a, &[1; 1]), Err(WriteError::Blocked));
    assert_eq!(s.write(a, &[]), Ok(0), "an empty write is not blocked");
    assert_eq!(s.write(b, &[2; 80]), Ok(40), "session window");
    assert_eq!(s.write(b, &[2; 1]), Err(WriteError::Blocked));
    assert_eq!(events(&mut s), []);

    s.on_frame(Frame::MaxStreamData { id: a, max: 200 })
        .unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Writable(a)]);
    assert_eq!(
        s.write(a, &[1; 10]),
        Err(WriteError::Blocked),
        "the session window is still spent"
    );
    // Lower or equal limits change nothing.
    s.on_frame(Frame::MaxStreamData { id: a, max: 200 })
        .unwrap();
    s.on_frame(Frame::MaxStreamData { id: b, max: 10 }).unwrap();
    s.on_frame(Frame::MaxData { max: 100 }).unwrap();
    assert_eq!(events(&mut s), []);

    s.on_frame(Frame::MaxData { max: 150 }).unwrap();
    assert_eq!(
        events(&mut s),
        [StreamEvent::Writable(a), StreamEvent::Writable(b)]
    );
    let mut chunks = [Bytes::from(vec![1; 30]), Bytes::from(vec![1; 100])];
    assert_eq!(s.write_chunks(a, &mut chunks), Ok(50), "session: 150 - 100");
    assert_eq!(chunks.iter().map(Bytes::len).collect::<Vec<_>>(), [0, 80]);
    assert_eq!(s.write(b, &[2; 1]), Err(WriteError::Blocked));
    assert_eq!(s.write_chunks(a, &mut chunks), Err(WriteError::Blocked));
    assert_eq!(chunks[1].len(), 80, "a refused chunk is untouched");

    // Both were refused again, so both wake again; then, with no refusal since, nothing.
    s.on_frame(Frame::MaxData { max: 1000 }).unwrap();
    assert_eq!(
        events(&mut s),
        [StreamEvent::Writable(a), StreamEvent::Writable(b)]
    );
    s.on_frame(Frame::MaxData { max: 2000 }).unwrap();
    assert_eq!(events(&mut s), []);
    // b's stream window (60) is now the limit.
    assert_eq!(s.write(b, &[2; 100]), Ok(20));
    assert_eq!(s.counters.bytes_written, 60 + 40 + 50 + 20);
}

#[test]
fn written_bytes_are_framed_in_order_and_pieces_respect_max() {
    let mut s = side(Side::Client, roomy(), roomy(), 16);
    let a = s.open(Dir::Uni).unwrap();
    assert_eq!(s.sendable().collect::<Vec<_>>(), []);
    s.write(a, &bytes(0..10)).unwrap();
    s.write(a, &bytes(10..25)).unwrap();
    assert_eq!(s.sendable().collect::<Vec<_>>(), [a]);
    let (offset, pieces, fin) = s.poll_data(a, 12).unwrap();
    assert_eq!((offset, fin), (0, false));
    assert_eq!(pieces.concat(), bytes(0..12));
    s.finish(a).unwrap();
    assert_eq!(s.write(a, b"x"), Err(WriteError::ClosedStream));
    let (offset, pieces, fin) = s.poll_data(a, 100).unwrap();
    assert_eq!((offset, fin), (12, true));
    assert_eq!(pieces.concat(), bytes(12..25));
    assert_eq!(s.poll_data(a, 100), None);
    assert_eq!(s.sendable().collect::<Vec<_>>(), []);
    assert_eq!(s.release_epoch(), 1, "the stream's sending ended once");
    assert!(!s.holds_carrier(a));
    assert_eq!(s.finish(a), Err(ClosedStream));
}

#[test]
fn the_receiver_refuses_data_beyond_its_limits() {
    // Stream window 100, session window 150.
    let local = lim(150, 100, 4, 4);
    let mut s = side(Side::Server, local, roomy(), 16);
    s.on_frame(data(cbi(0), 0..100, false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cbi(0), 100..101, false))),
        ErrorCode::FlowControl,
        "stream window"
    );

    let mut s = side(Side::Server, local, roomy(), 16);
    s.on_frame(data(cbi(0), 0..100, false)).unwrap();
    s.on_frame(data(cbi(1), 0..50, false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cbi(2), 0..1, false))),
        ErrorCode::FlowControl,
        "session window"
    );

    // Bytes past the stream window count even when they only announce an offset.
    let mut s = side(Side::Server, local, roomy(), 16);
    assert_eq!(
        code(s.on_frame(data(cbi(0), 100..101, true))),
        ErrorCode::FlowControl
    );
    // A reset's final size counts against both windows too.
    let mut s = side(Side::Server, local, roomy(), 16);
    assert_eq!(
        code(s.on_frame(Frame::ResetStream {
            id: cbi(0),
            code: 0,
            final_size: 101,
        })),
        ErrorCode::FlowControl
    );
    let mut s = side(Side::Server, local, roomy(), 16);
    s.on_frame(data(cbi(0), 0..100, false)).unwrap();
    assert_eq!(
        code(s.on_frame(Frame::ResetStream {
            id: cbi(1),
            code: 0,
            final_size: 51,
        })),
        ErrorCode::FlowControl
    );

    // Reading returns credit: MAX_STREAM_DATA once half the window is read, MAX_DATA once
    // half the session window is.
    let mut s = side(Side::Server, local, roomy(), 16);
    s.on_frame(data(cbi(0), 0..100, false)).unwrap();
    assert_eq!(
        signals(&mut s),
        [Frame::DataAck {
            id: cbi(0),
            offset: 99,
        }]
    );
    assert_eq!(s.read(cbi(0), 49).unwrap(), Some(bytes(0..49)));
    assert_eq!(signals(&mut s), []);
    assert_eq!(s.read(cbi(0), 1).unwrap(), Some(bytes(49..50)));
    assert_eq!(
        signals(&mut s),
        [Frame::MaxStreamData {
            id: cbi(0),
            max: 150,
        }]
    );
    assert_eq!(s.read(cbi(0), 25).unwrap(), Some(bytes(50..75)));
    assert_eq!(
        signals(&mut s),
        [Frame::MaxData { max: 225 }],
        "75 consumed >= 150 / 2"
    );
    s.on_frame(data(cbi(0), 100..150, false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cbi(0), 150..151, false))),
        ErrorCode::FlowControl
    );
}

// --- reassembly --------------------------------------------------------------------------

#[test]
fn out_of_order_overlapping_and_duplicate_data_is_delivered_once_in_order() {
    // (frames in arrival order, whether each makes the stream readable)
    type Case = (&'static str, &'static [(Range<u64>, bool)]);
    let table: &[Case] = &[
        ("in order", &[(0..5, true), (5..10, false)]),
        ("reversed", &[(5..10, false), (0..5, true)]),
        (
            "overlaps",
            &[(2..8, false), (0..4, true), (6..12, false), (3..5, false)],
        ),
        (
            "duplicates",
            &[
                (0..12, true),
                (0..12, false),
                (4..6, false),
                (11..12, false),
            ],
        ),
        (
            "a frame spanning held pieces",
            &[(1..2, false), (4..5, false), (7..9, false), (0..12, true)],
        ),
        (
            "a frame inside a held piece",
            &[(3..9, false), (4..6, false), (0..3, true), (9..12, false)],
        ),
    ];
    for (name, frames) in table {
        let mut s = side(Side::Server, roomy(), roomy(), 16);
        for (range, readable) in frames.iter() {
            s.on_frame(data(cuni(0), range.clone(), false)).unwrap();
            let ev = events(&mut s);
            let saw = ev.contains(&StreamEvent::Readable(cuni(0)));
            assert_eq!(saw, *readable, "{name}: after {range:?}: {ev:?}");
        }
        let end = frames.iter().map(|(r, _)| r.end).max().unwrap();
        let (got, last) = read_all(&mut s, cuni(0));
        assert_eq!(got, bytes(0..end), "{name}");
        assert_eq!(last, Err(ReadError::Blocked), "{name}");
        assert_eq!(s.counters.bytes_read, end, "{name}");
        // Everything again after reading: nothing new to read, no event.
        for (range, _) in frames.iter() {
            s.on_frame(data(cuni(0), range.clone(), false)).unwrap();
        }
        assert_eq!(events(&mut s), [], "{name}");
        assert_eq!(s.read(cuni(0), 100), Err(ReadError::Blocked), "{name}");
        // Then the rest with the fin.
        s.on_frame(data(cuni(0), 0..end + 3, true)).unwrap();
        assert_eq!(events(&mut s), [StreamEvent::Readable(cuni(0))], "{name}");
        let (got, last) = read_all(&mut s, cuni(0));
        assert_eq!(got, bytes(end..end + 3), "{name}");
        assert_eq!(last, Ok(None), "{name}");
        assert_eq!(s.read(cuni(0), 100), Err(ReadError::ClosedStream), "{name}");
    }
}

#[test]
fn a_read_takes_at_most_max_bytes_and_keeps_the_rest() {
    let mut s = side(Side::Server, roomy(), roomy(), 16);
    s.on_frame(data(cuni(0), 0..10, true)).unwrap();
    assert_eq!(s.read(cuni(0), 3), Ok(Some(bytes(0..3))));
    assert_eq!(s.read(cuni(0), 3), Ok(Some(bytes(3..6))));
    assert_eq!(s.read(cuni(0), 100), Ok(Some(bytes(6..10))));
    assert_eq!(s.read(cuni(0), 100), Ok(None));
}

#[test]
fn more_gaps_than_allowed_is_a_reassembly_limit_error() {
    let gaps = [10..11, 20..21, 30..31];
    let mut s = side(Side::Server, roomy(), roomy(), 2);
    s.on_frame(data(cuni(0), gaps[0].clone(), false)).unwrap();
    s.on_frame(data(cuni(0), gaps[1].clone(), false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cuni(0), gaps[2].clone(), false))),
        ErrorCode::ReassemblyLimit
    );
    // The contiguous prefix is no gap: two gaps after it are allowed.
    let mut s = side(Side::Server, roomy(), roomy(), 2);
    s.on_frame(data(cuni(0), 0..5, false)).unwrap();
    s.on_frame(data(cuni(0), gaps[0].clone(), false)).unwrap();
    s.on_frame(data(cuni(0), gaps[1].clone(), false)).unwrap();
    // Filling one gap makes room for another.
    s.on_frame(data(cuni(0), 11..20, false)).unwrap();
    s.on_frame(data(cuni(0), gaps[2].clone(), false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cuni(0), 40..41, false))),
        ErrorCode::ReassemblyLimit
    );
}

#[test]
fn many_tiny_adjacent_segments_are_compacted_not_refused() {
    for first_missing in [false, true] {
        let mut s = side(Side::Server, roomy(), roomy(), 4);
        let start = u64::from(first_missing);
        for i in start..2000 {
            s.on_frame(data(cuni(0), i..i + 1, false)).unwrap();
        }
        let r = &s.recv[&cuni(0)];
        assert!(r.segments.len() <= 5, "{} segments", r.segments.len());
        if first_missing {
            assert_eq!(s.read(cuni(0), 10), Err(ReadError::Blocked));
            s.on_frame(data(cuni(0), 0..1, false)).unwrap();
        }
        let (got, last) = read_all(&mut s, cuni(0));
        assert_eq!(got, bytes(0..2000), "first missing: {first_missing}");
        assert_eq!(last, Err(ReadError::Blocked));
    }
}

/// Reassembly work for `w` one-byte frames after a withheld first byte: (bytes copied,
/// entries visited) by compaction.
fn tiny_frame_work(w: u64) -> (u64, u64) {
    let big = lim(1 << 30, 1 << 30, 16, 16);
    let mut s = side(Side::Server, big, big, 1024);
    for i in 1..=w {
        s.on_frame(data(cuni(0), i..i + 1, false)).unwrap();
    }
    let r = &s.recv[&cuni(0)];
    assert!(r.segments.len() <= 2 * 1024 + 1 + (w as usize) / 4096);
    (s.counters.reassembly_copied, s.counters.reassembly_visited)
}

#[test]
fn the_gap_count_kept_on_insertion_matches_a_full_walk() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for round in 0..50 {
        let mut s = side(Side::Server, roomy(), roomy(), 100_000);
        for _ in 0..400 {
            let start = rng.random_range(0..3000u64);
            let len = rng.random_range(1..40u64);
            s.on_frame(data(cuni(0), start..start + len, false))
                .unwrap();
            if rng.random_range(0..10) == 0 {
                let _ = s.read(cuni(0), rng.random_range(1..200));
            }
            let r = &s.recv[&cuni(0)];
            assert_eq!(r.gap_count, r.gaps(), "round {round}");
            let held: usize = r.segments.values().map(Bytes::len).sum();
            assert_eq!(r.held, held as u64, "round {round}");
        }
    }
}

#[test]
fn in_order_segments_of_a_packets_size_are_never_copied() {
    // A reader that lags behind a bulk transfer: thousands of packet-sized slices wait,
    // in order. They pin about what they hold, so compaction leaves them alone.
    let big = lim(1 << 30, 1 << 30, 16, 16);
    let mut s = side(Side::Server, big, big, 1024);
    let mut at = 0;
    for _ in 0..10_000 {
        s.on_frame(data(cuni(0), at..at + 1200, false)).unwrap();
        at += 1200;
    }
    assert_eq!(s.recv[&cuni(0)].segments.len(), 10_000);
    assert_eq!(s.counters.reassembly_copied, 0);
    let mut read = 0;
    while let Ok(Some(chunk)) = s.read(cuni(0), usize::MAX) {
        read += chunk.len() as u64;
    }
    assert_eq!(read, at);
    assert_eq!(s.recv[&cuni(0)].held, 0);
}

#[test]
fn compaction_work_grows_linearly_with_the_bytes() {
    // The hostile pattern: byte 0 withheld, then one-byte frames. Copying the whole buffer
    // at each compaction made this O(W² / max_gaps).
    let (c1, v1) = tiny_frame_work(100_000);
    let (c10, v10) = tiny_frame_work(1_000_000);
    println!("100 kB: {c1} bytes copied, {v1} entries visited; 1 MB: {c10}, {v10}");
    // At most a few copies of each byte and a few visits per frame, and ten times the bytes
    // cost about ten times the work.
    assert!(c10 <= 8 * 1_000_000, "{c10} bytes copied for 1 MB");
    assert!(v10 <= 8 * 1_000_000, "{v10} entries visited for 1 MB");
    assert!(c10 <= 12 * c1, "copies grew from {c1} to {c10}");
    assert!(v10 <= 12 * v1, "visits grew from {v1} to {v10}");
}

#[test]
fn a_peer_that_never_acknowledges_pins_at_most_the_retain_limit() {
    let window = 256 * 1024;
    let local = lim(1 << 30, window, 16, 16);
    let mut s = side(Side::Client, local, lim(1 << 30, 1 << 30, 16, 16), 16);
    s.set_retain(true);
    let id = s.open(Dir::Uni).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..8 {
        assert_eq!(s.write(id, &chunk), Ok(1 << 20));
    }
    let frame_all = |s: &mut Streams| {
        let mut framed = 0u64;
        while let Some((_, pieces, _)) = s.poll_data(id, 16 * 1024) {
            framed += pieces.iter().map(|p| p.len() as u64).sum::<u64>();
        }
        framed
    };
    // The peer granted a gigabyte of credit but acknowledges nothing: the stream stops at
    // the cap, and that is all the writer holds for it.
    assert_eq!(frame_all(&mut s), window);
    assert_eq!(s.retained_bytes(), window);
    assert!(!s.sendable().any(|x| x == id), "it waits for DATA_ACK");
    // An acknowledgement of half lets half as much again go out.
    s.on_frame(Frame::DataAck {
        id,
        offset: window / 2,
    })
    .unwrap();
    assert!(s.sendable().any(|x| x == id));
    assert_eq!(frame_all(&mut s), window / 2);
    assert_eq!(s.retained_bytes(), window);
}

// --- final size --------------------------------------------------------------------------

#[test]
fn a_changed_final_size_is_a_final_size_error() {
    let reset = |final_size| Frame::ResetStream {
        id: cuni(0),
        code: 1,
        final_size,
    };
    let table: [(&str, Vec<Frame>, Frame); 7] = [
        (
            "data past the fin",
            vec![data(cuni(0), 0..10, true)],
            data(cuni(0), 10..11, false),
        ),
        (
            "a later fin",
            vec![data(cuni(0), 0..10, true)],
            data(cuni(0), 5..12, true),
        ),
        (
            "an earlier fin",
            vec![data(cuni(0), 0..10, true)],
            data(cuni(0), 0..8, true),
        ),
        (
            "a fin below data received",
            vec![data(cuni(0), 0..20, false)],
            data(cuni(0), 0..10, true),
        ),
        (
            "a reset below data received",
            vec![data(cuni(0), 0..20, false)],
            reset(19),
        ),
        (
            "a reset changing the fin",
            vec![data(cuni(0), 0..10, true)],
            reset(11),
        ),
        (
            "a fin changing the reset",
            vec![data(cuni(0), 0..4, false), reset(10)],
            data(cuni(0), 8..12, true),
        ),
    ];
    for (name, before, frame) in table {
        let mut s = side(Side::Server, roomy(), roomy(), 16);
        for f in before {
            s.on_frame(f).unwrap();
        }
        assert_eq!(code(s.on_frame(frame)), ErrorCode::FinalSize, "{name}");
    }
    // Repeating the fin, or a reset with the same final size, is fine.
    let mut s = side(Side::Server, roomy(), roomy(), 16);
    s.on_frame(data(cuni(0), 0..10, true)).unwrap();
    s.on_frame(data(cuni(0), 4..10, true)).unwrap();
    s.on_frame(data(cuni(0), 0..0, false)).unwrap();
    s.on_frame(reset(10)).unwrap();
    s.on_frame(reset(10)).unwrap();
    assert_eq!(
        s.read(cuni(0), 100),
        Err(ReadError::Reset(VarInt::from_u32(1)))
    );
}

#[test]
fn an_empty_stream_with_a_fin_ends_and_is_acknowledged() {
    let mut s = side(Side::Server, roomy(), roomy(), 16);
    s.on_frame(data(cuni(0), 0..0, true)).unwrap();
    assert_eq!(
        events(&mut s),
        [
            StreamEvent::Opened(Dir::Uni),
            StreamEvent::Readable(cuni(0))
        ]
    );
    assert_eq!(
        signals(&mut s),
        [Frame::DataAck {
            id: cuni(0),
            offset: 0,
        }]
    );
    assert_eq!(s.read(cuni(0), 10), Ok(None));
}

// --- reset and stop ------------------------------------------------------------------------

#[test]
fn a_local_reset_drops_unframed_bytes_and_returns_their_session_credit() {
    let mut s = side(Side::Client, roomy(), lim(100, 100, 4, 4), 16);
    let a = s.open(Dir::Uni).unwrap();
    let b = s.open(Dir::Uni).unwrap();
    assert_eq!(s.write(a, &bytes(0..100)), Ok(100));
    let (offset, pieces, fin) = s.poll_data(a, 30).unwrap();
    assert_eq!(
        (offset, pieces.concat(), fin),
        (0, bytes(0..30).to_vec(), false)
    );
    assert_eq!(s.write(b, b"x"), Err(WriteError::Blocked));
    s.reset(a, VarInt::from_u32(7)).unwrap();
    assert_eq!(
        signals(&mut s),
        [Frame::ResetStream {
            id: a,
            code: 7,
            final_size: 30,
        }],
        "the final size is what was framed"
    );
    assert_eq!(s.poll_data(a, 100), None);
    assert_eq!(s.sendable().collect::<Vec<_>>(), []);
    assert_eq!(s.release_epoch(), 1, "the stream's sending ended once");
    assert!(!s.holds_carrier(a));
    assert!(!s.is_sending(a));
    assert_eq!(s.write(a, b"x"), Err(WriteError::ClosedStream));
    assert_eq!(s.reset(a, VarInt::from_u32(7)), Err(ClosedStream));
    // The 70 unframed bytes are credit again.
    assert_eq!(s.write(b, &[0; 100]), Ok(70));
}

#[test]
fn credit_returned_by_a_reset_wakes_a_blocked_stream() {
    let mut s = side(Side::Client, roomy(), lim(100, 100, 4, 4), 16);
    let a = s.open(Dir::Uni).unwrap();
    let b = s.open(Dir::Uni).unwrap();
    assert_eq!(s.write(a, &[0; 100]), Ok(100));
    assert_eq!(s.write(b, b"x"), Err(WriteError::Blocked));
    // Nothing of a was sent, so the peer will never grant more: the credit a held is the
    // only credit b can get, and b must hear of it.
    s.reset(a, VarInt::from_u32(1)).unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Writable(b)]);
    assert_eq!(s.write(b, &[0; 200]), Ok(100));

    // The same when the peer's STOP_SENDING resets the stream.
    let mut s = side(Side::Client, roomy(), lim(100, 100, 4, 4), 16);
    let a = s.open(Dir::Bi).unwrap();
    let b = s.open(Dir::Bi).unwrap();
    assert_eq!(s.write(a, &[0; 100]), Ok(100));
    assert_eq!(s.write(b, b"x"), Err(WriteError::Blocked));
    s.on_frame(Frame::StopSending { id: a, code: 3 }).unwrap();
    assert_eq!(
        events(&mut s),
        [
            StreamEvent::Writable(b),
            StreamEvent::Stopped(a, VarInt::from_u32(3))
        ]
    );
    assert_eq!(s.write(b, &[0; 200]), Ok(100));
}

#[test]
fn a_peer_reset_releases_unread_bytes_to_the_session_window() {
    // Session window 100: the reset stream's 80 bytes must come back as MAX_DATA.
    let mut s = side(Side::Server, lim(100, 100, 4, 4), roomy(), 16);
    s.on_frame(data(cbi(0), 0..60, false)).unwrap();
    assert_eq!(
        events(&mut s),
        [StreamEvent::Opened(Dir::Bi), StreamEvent::Readable(cbi(0))]
    );
    s.on_frame(Frame::ResetStream {
        id: cbi(0),
        code: 3,
        final_size: 80,
    })
    .unwrap();
    // Readable was already reported and not read since: no second event.
    assert_eq!(events(&mut s), []);
    assert_eq!(
        signals(&mut s),
        [
            Frame::MaxData { max: 180 },
            Frame::DataAck {
                id: cbi(0),
                offset: 60,
            }
        ]
    );
    assert_eq!(
        s.read(cbi(0), 100),
        Err(ReadError::Reset(VarInt::from_u32(3)))
    );
    assert_eq!(s.read(cbi(0), 100), Err(ReadError::ClosedStream));
    // 80 of 180 used: another 100 fit, one more byte does not.
    s.on_frame(data(cbi(1), 0..100, false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cbi(2), 0..1, false))),
        ErrorCode::FlowControl
    );
}

#[test]
fn stop_sending_from_the_peer_resets_the_stream_at_the_framed_size() {
    let mut s = side(Side::Client, roomy(), lim(1000, 1000, 4, 4), 16);
    let a = s.open(Dir::Bi).unwrap();
    assert_eq!(s.write(a, &bytes(0..50)), Ok(50));
    let (_, pieces, _) = s.poll_data(a, 20).unwrap();
    assert_eq!(pieces.concat(), bytes(0..20));
    assert_eq!(s.stopped(a), Err(ClosedStream), "not stopped yet");
    s.on_frame(Frame::StopSending { id: a, code: 9 }).unwrap();
    assert_eq!(
        events(&mut s),
        [StreamEvent::Stopped(a, VarInt::from_u32(9))]
    );
    assert_eq!(
        signals(&mut s),
        [Frame::ResetStream {
            id: a,
            code: 9,
            final_size: 20,
        }]
    );
    assert_eq!(s.release_epoch(), 1, "the stream's sending ended once");
    assert!(!s.holds_carrier(a));
    assert_eq!(s.poll_data(a, 100), None);
    assert_eq!(
        s.write(a, b"x"),
        Err(WriteError::Stopped(VarInt::from_u32(9)))
    );
    assert_eq!(
        s.finish(a),
        Ok(()),
        "finishing a stopped stream is harmless"
    );
    assert_eq!(signals(&mut s), [], "and sends nothing");
    assert_eq!(s.reset(a, VarInt::from_u32(1)), Err(ClosedStream));
    // A repeated STOP_SENDING changes nothing.
    s.on_frame(Frame::StopSending { id: a, code: 9 }).unwrap();
    assert_eq!(events(&mut s), []);
    assert_eq!(signals(&mut s), []);
    assert_eq!(s.stopped(a), Ok(Some(VarInt::from_u32(9))));
    assert!(s.is_sending(a));
    s.forget_stopped(a);
    assert!(!s.is_sending(a));
    assert_eq!(s.stopped(a), Ok(None));
    // The 30 unframed bytes went back to the session window (1000 - 20 left).
    let b = s.open(Dir::Bi).unwrap();
    s.on_frame(Frame::MaxStreamData { id: b, max: 5000 })
        .unwrap();
    assert_eq!(s.write(b, &[0; 2000]), Ok(980));

    // After a local reset, a STOP_SENDING finds nothing to do.
    let mut s = side(Side::Client, roomy(), roomy(), 16);
    let a = s.open(Dir::Uni).unwrap();
    s.reset(a, VarInt::from_u32(4)).unwrap();
    let _ = signals(&mut s);
    s.on_frame(Frame::StopSending { id: a, code: 5 }).unwrap();
    assert_eq!(events(&mut s), []);
    assert_eq!(signals(&mut s), []);
}

#[test]
fn a_local_stop_discards_data_returns_credit_and_asks_the_peer_to_stop() {
    let mut s = side(Side::Server, lim(100, 100, 4, 4), roomy(), 16);
    s.on_frame(data(cuni(0), 0..10, false)).unwrap();
    s.on_frame(data(cuni(0), 20..60, false)).unwrap();
    let _ = events(&mut s);
    s.stop(cuni(0), VarInt::from_u32(6)).unwrap();
    // 60 bytes counted (the gap too) are released: 60 >= 100 / 2.
    assert_eq!(
        signals(&mut s),
        [
            Frame::StopSending {
                id: cuni(0),
                code: 6,
            },
            Frame::MaxData { max: 160 },
        ]
    );
    assert_eq!(s.read(cuni(0), 10), Err(ReadError::ClosedStream));
    assert_eq!(s.stop(cuni(0), VarInt::from_u32(6)), Err(ClosedStream));
    // Data still in flight is dropped on arrival and its credit returned at once; the
    // reset closes the stream and frees its slot.
    s.on_frame(data(cuni(0), 10..20, false)).unwrap();
    s.on_frame(data(cuni(0), 60..100, false)).unwrap();
    assert_eq!(events(&mut s), []);
    s.on_frame(Frame::ResetStream {
        id: cuni(0),
        code: 6,
        final_size: 100,
    })
    .unwrap();
    assert_eq!(
        signals(&mut s),
        [Frame::MaxStreams {
            dir: Dir::Uni,
            max: 5,
        }]
    );
    assert_eq!(s.open_count(), 0);
    // 100 of 160 received; the 40 consumed since the last MAX_DATA are below half the window,
    // so the limit is still 160: 60 more bytes fit, one more does not.
    s.on_frame(data(cuni(1), 0..60, false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cuni(2), 0..1, false))),
        ErrorCode::FlowControl
    );
}

// --- acknowledgement and stream credit -----------------------------------------------------

#[test]
fn data_ack_of_every_byte_of_a_finished_stream_reports_finished() {
    let mut s = side(Side::Client, roomy(), roomy(), 16);
    let a = s.open(Dir::Uni).unwrap();
    s.write(a, &bytes(0..10)).unwrap();
    s.on_frame(Frame::DataAck { id: a, offset: 0 }).unwrap();
    assert_eq!(
        code(s.on_frame(Frame::DataAck { id: a, offset: 1 })),
        ErrorCode::StreamState,
        "beyond what was framed"
    );
    s.finish(a).unwrap();
    let (offset, pieces, fin) = s.poll_data(a, 6).unwrap();
    assert_eq!(
        (offset, pieces.concat(), fin),
        (0, bytes(0..6).to_vec(), false)
    );
    s.on_frame(Frame::DataAck { id: a, offset: 6 }).unwrap();
    assert_eq!(events(&mut s), [], "the fin is not sent yet");
    let (offset, pieces, fin) = s.poll_data(a, 6).unwrap();
    assert_eq!(
        (offset, pieces.concat(), fin),
        (6, bytes(6..10).to_vec(), true)
    );
    s.on_frame(Frame::DataAck { id: a, offset: 9 }).unwrap();
    assert_eq!(events(&mut s), []);
    assert_eq!(s.stopped(a), Err(ClosedStream));
    s.on_frame(Frame::DataAck { id: a, offset: 10 }).unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Finished(a)]);
    assert!(!s.is_sending(a));
    assert_eq!(s.stopped(a), Ok(None));
    // Late or repeated acks of a finished stream are harmless.
    s.on_frame(Frame::DataAck { id: a, offset: 10 }).unwrap();
    s.on_frame(Frame::DataAck { id: a, offset: 3 }).unwrap();
    assert_eq!(events(&mut s), []);
    // An empty finished stream is done when offset 0 is acknowledged.
    let b = s.open(Dir::Uni).unwrap();
    s.finish(b).unwrap();
    assert_eq!(s.poll_data(b, 10), Some((0, vec![], true)));
    s.on_frame(Frame::DataAck { id: b, offset: 0 }).unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Finished(b)]);
}

#[test]
fn the_receiver_acks_contiguous_data_by_threshold_and_at_the_end() {
    // Stream window 400: a DATA_ACK is owed every 100 contiguous bytes and at the end.
    let mut s = side(Side::Server, lim(10_000, 400, 4, 4), roomy(), 16);
    s.on_frame(data(cuni(0), 0..99, false)).unwrap();
    assert_eq!(signals(&mut s), []);
    s.on_frame(data(cuni(0), 150..160, false)).unwrap();
    assert_eq!(signals(&mut s), [], "out of order bytes are not acked");
    s.on_frame(data(cuni(0), 99..150, false)).unwrap();
    assert_eq!(
        signals(&mut s),
        [Frame::DataAck {
            id: cuni(0),
            offset: 159,
        }],
        "the last byte is acked with the fin"
    );
    s.on_frame(data(cuni(0), 160..170, true)).unwrap();
    assert_eq!(
        signals(&mut s),
        [Frame::DataAck {
            id: cuni(0),
            offset: 170,
        }]
    );
}

#[test]
fn a_fully_closed_peer_stream_returns_max_streams_credit() {
    // One peer stream of each direction at a time.
    let mut s = side(Side::Server, lim(1000, 1000, 1, 1), roomy(), 16);
    s.on_frame(data(cuni(0), 0..3, true)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cuni(1), 0..1, false))),
        ErrorCode::StreamLimit
    );
    assert_eq!(s.accept(Dir::Uni), Some(cuni(0)));
    assert_eq!(s.read(cuni(0), 2), Ok(Some(bytes(0..2))));
    assert_eq!(
        signals(&mut s),
        [Frame::DataAck {
            id: cuni(0),
            offset: 3,
        }],
        "no credit while unread bytes remain"
    );
    assert_eq!(read_all(&mut s, cuni(0)), (bytes(2..3).to_vec(), Ok(None)));
    assert_eq!(
        signals(&mut s),
        [Frame::MaxStreams {
            dir: Dir::Uni,
            max: 2,
        }]
    );
    s.on_frame(data(cuni(1), 0..1, false)).unwrap();

    // A bidi stream frees its slot only when both halves are done.
    s.on_frame(data(cbi(0), 0..2, true)).unwrap();
    assert_eq!(s.accept(Dir::Bi), Some(cbi(0)));
    assert_eq!(read_all(&mut s, cbi(0)), (bytes(0..2).to_vec(), Ok(None)));
    assert_eq!(
        signals(&mut s),
        [Frame::DataAck {
            id: cbi(0),
            offset: 2,
        }]
    );
    s.write(cbi(0), b"ok").unwrap();
    s.finish(cbi(0)).unwrap();
    assert_eq!(
        s.poll_data(cbi(0), 100),
        Some((0, vec![Bytes::from_static(b"ok")], true))
    );
    assert_eq!(signals(&mut s), []);
    let _ = events(&mut s);
    s.on_frame(Frame::DataAck {
        id: cbi(0),
        offset: 2,
    })
    .unwrap();
    assert_eq!(events(&mut s), [StreamEvent::Finished(cbi(0))]);
    assert_eq!(
        signals(&mut s),
        [Frame::MaxStreams {
            dir: Dir::Bi,
            max: 2,
        }]
    );
    s.on_frame(data(cbi(1), 0..1, false)).unwrap();
    assert_eq!(
        code(s.on_frame(data(cbi(2), 0..1, false))),
        ErrorCode::StreamLimit
    );

    // A peer reset read by the application frees the slot too.
    s.on_frame(Frame::ResetStream {
        id: cuni(1),
        code: 2,
        final_size: 1,
    })
    .unwrap();
    assert_eq!(s.accept(Dir::Uni), Some(cuni(1)));
    assert_eq!(
        s.read(cuni(1), 10),
        Err(ReadError::Reset(VarInt::from_u32(2)))
    );
    assert_eq!(
        signals(&mut s),
        [Frame::MaxStreams {
            dir: Dir::Uni,
            max: 3,
        }]
    );
    // Our own streams never return credit to the peer.
    let own = s.open(Dir::Uni).unwrap();
    s.finish(own).unwrap();
    let _ = s.poll_data(own, 10);
    s.on_frame(Frame::DataAck { id: own, offset: 0 }).unwrap();
    assert_eq!(signals(&mut s), []);
}

/// State entries created by one frame to the last stream a limit of `n` allows, then by
/// accepting every stream it opened implicitly.
fn skip_ahead_work(n: u64) -> (u64, u64, usize) {
    let mut s = side(Side::Server, lim(1 << 20, 1 << 10, n, n), roomy(), 16);
    s.on_frame(data(cbi(n - 1), 0..1, false)).unwrap();
    let on_frame = s.counters.materialized;
    let entries = s.recv.len() + s.send.len();
    let mut accepted = 0;
    while let Some(id) = s.accept(Dir::Bi) {
        assert_eq!(id, cbi(accepted));
        accepted += 1;
    }
    assert_eq!(accepted, n, "every skipped stream is opened, as in QUIC");
    (on_frame, s.counters.materialized, entries)
}

#[test]
fn a_frame_that_skips_ahead_costs_the_same_whatever_the_stream_limit() {
    let (f1, a1, e1) = skip_ahead_work(1_000);
    let (f10, a10, e10) = skip_ahead_work(10_000);
    println!("limit 1000: {f1} on the frame, {a1} after accepting; 10000: {f10}, {a10}");
    // One frame creates one stream's state (a receive and a send half), not one per
    // skipped index; the others get theirs as the application accepts them.
    assert_eq!((f1, e1), (1, 2));
    assert_eq!((f10, e10), (1, 2));
    assert_eq!((a1, a10), (1_000, 10_000));
}

#[test]
fn a_skipped_stream_gets_its_state_when_a_frame_names_it() {
    let mut s = side(Side::Server, roomy(), roomy(), 16);
    s.on_frame(data(cuni(5), 0..2, true)).unwrap();
    assert!(
        !s.recv_finished(cuni(2)),
        "a skipped stream is open, not finished"
    );
    s.on_frame(data(cuni(2), 0..3, true)).unwrap();
    assert_eq!(s.counters.materialized, 2);
    for i in 0..6 {
        assert_eq!(s.accept(Dir::Uni), Some(cuni(i)));
    }
    assert_eq!(read_all(&mut s, cuni(2)), (bytes(0..3).to_vec(), Ok(None)));
    assert_eq!(read_all(&mut s, cuni(5)), (bytes(0..2).to_vec(), Ok(None)));
    assert!(s.recv_finished(cuni(2)));
    // Stale bytes of a finished stream are dropped, not taken for a new stream.
    s.on_frame(data(cuni(2), 0..3, true)).unwrap();
    assert!(s.recv_finished(cuni(2)));
    assert_eq!(s.accept(Dir::Uni), None);
}

#[test]
fn the_release_log_names_each_ended_stream_once_and_says_when_it_no_longer_reaches_back() {
    let mut s = side(Side::Client, roomy(), lim(1 << 40, 1 << 20, 0, 1 << 20), 16);
    let mut ended = Vec::new();
    for _ in 0..RELEASE_LOG + 10 {
        let id = s.open(Dir::Uni).unwrap();
        s.write(id, b"x").unwrap();
        s.finish(id).unwrap();
        assert!(s.poll_data(id, 100).unwrap().2, "the fin is framed");
        ended.push(id);
    }
    let epoch = s.release_epoch();
    assert_eq!(epoch, ended.len() as u64);
    let tail: Vec<StreamId> = s.released_since(epoch - 3).unwrap().collect();
    assert_eq!(tail, ended[ended.len() - 3..]);
    assert_eq!(s.released_since(epoch).unwrap().count(), 0);
    assert!(
        s.released_since(5).is_none(),
        "a cursor older than the log must rescan"
    );
    let oldest = epoch - RELEASE_LOG as u64;
    assert_eq!(s.released_since(oldest).unwrap().count(), RELEASE_LOG);
    assert!(s.released_since(oldest - 1).is_none());
}
