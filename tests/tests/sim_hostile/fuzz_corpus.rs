//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) with the fuzz targets' own
//! checks, so that every input the fuzzers found interesting stays a regression test.
//!
//! The seeds were written by `write_seed_corpus` below:
//! `cargo test -p kwik-tests --test sim_hostile -- --ignored write_seed_corpus`
//! (`SEED_TARGETS=engine_multi` writes only the named targets' seeds). The `crash-*` files
//! are inputs the fuzzers found, minimised.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use kwik_core::frame::Frame;
use kwik_core::{Config, Dir, Endpoint, EndpointConfig, StreamId, VarInt};
use kwik_proto::control_frame::Kind;
use prost::Message;

use kwik_tests::fuzz as harness;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every file of a target's corpus, in name order; the corpus must exist and be non-empty.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    assert!(dir.is_dir(), "missing corpus {}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

/// Replays every file of the corpus, then fails naming each input whose check panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let mut failed = Vec::new();
    for (path, data) in corpus(target) {
        // Names the input in the captured output next to its panic message.
        eprintln!("{target}: {}", path.display());
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs failed: {failed:#?}");
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", harness::frame_decode);
}

#[test]
fn control_decode_corpus() {
    replay("control_decode", harness::control_decode);
}

#[test]
fn engine_input_corpus() {
    replay("engine_input", harness::engine_input);
}

#[test]
fn engine_streams_corpus() {
    replay("engine_streams", harness::engine_streams);
}

#[test]
fn engine_multi_corpus() {
    replay("engine_multi", harness::engine_multi);
}

/// The harnesses' checks can fail: a frame that does not survive a round trip, a decoder
/// that buffers too much, a wrong byte on a stream.
#[test]
fn checks_are_not_vacuous() {
    // A non-minimal varint re-encodes shorter, which is allowed; a check that compared the
    // bytes would fail here, so the frame check compares frames.
    harness::frame_decode(&[0x40, 0x05, 0x00]);
    assert_eq!(
        harness::pattern(StreamId(0), 0),
        harness::pattern(StreamId(0), 0)
    );
    assert_ne!(
        harness::pattern(StreamId(0), 1),
        harness::pattern(StreamId(0), 257)
    );
    assert_ne!(
        harness::pattern(StreamId(0), 5),
        harness::pattern(StreamId(4), 5)
    );
    assert_eq!(harness::control_chunk_size(0), 1);
    assert_eq!(harness::control_chunk_size(127), 128);
    assert_eq!(harness::control_chunk_size(128), 256);
    assert_eq!(harness::control_chunk_size(255), 128 * 256);
}

// ---------------------------------------------------------------------------------------
// Seed generation

fn all_frames() -> Vec<Frame> {
    vec![
        Frame::Stream {
            id: StreamId(0),
            offset: 0,
            fin: false,
            data: Bytes::from_static(b"hello, kwik"),
        },
        Frame::Stream {
            id: StreamId(6),
            offset: 1 << 20,
            fin: true,
            data: Bytes::from(vec![0xa5; 300]),
        },
        Frame::Stream {
            id: StreamId(1 << 40),
            offset: (1 << 62) - 1,
            fin: true,
            data: Bytes::new(),
        },
        Frame::ResetStream {
            id: StreamId(3),
            code: 77,
            final_size: 1 << 33,
        },
        Frame::StopSending {
            id: StreamId(2),
            code: 0,
        },
        Frame::MaxStreamData {
            id: StreamId(9),
            max: 65_536,
        },
        Frame::MaxData { max: (1 << 62) - 1 },
        Frame::MaxStreams {
            dir: Dir::Bi,
            max: 100,
        },
        Frame::MaxStreams {
            dir: Dir::Uni,
            max: 1 << 60,
        },
        Frame::DataAck {
            id: StreamId(8),
            offset: 12_345,
        },
    ]
}

fn encode_frames(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let frames = all_frames();
    let mut seeds: Vec<(String, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                format!("kind-{i:02}"),
                encode_frames(std::slice::from_ref(f)),
            )
        })
        .collect();
    let all = encode_frames(&frames);
    seeds.push(("all-kinds".into(), all.clone()));
    seeds.push(("truncated".into(), all[..all.len() - 3].to_vec()));
    // Non-minimal varints: MAX_DATA with an 8-byte 5.
    seeds.push(("non-minimal".into(), vec![0x05, 0xc0, 0, 0, 0, 0, 0, 0, 5]));
    seeds.push(("unknown-type".into(), vec![0x09, 0x00]));
    // A STREAM header announcing 64 KiB + 1 of payload.
    seeds.push((
        "oversized".into(),
        vec![0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x01],
    ));
    // A STREAM frame whose end passes 2^62.
    seeds.push((
        "past-2-62".into(),
        vec![
            0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00,
        ],
    ));
    seeds
}

fn control(kind: Kind) -> Vec<u8> {
    kwik_proto::ControlFrame { kind: Some(kind) }.encode_length_delimited_to_vec()
}

fn control_seeds() -> Vec<(String, Vec<u8>)> {
    let limits = kwik_proto::Limits {
        max_data: 1 << 24,
        max_stream_data: 1 << 20,
        max_bidi_streams: 100,
        max_uni_streams: 100,
        max_paths: 8,
    };
    let kinds = vec![
        Kind::Hello(kwik_proto::Hello {
            version: 1,
            limits: Some(limits),
            ..Default::default()
        }),
        Kind::Welcome(kwik_proto::Welcome {
            version: 1,
            session_id: 0x1234_5678_9abc,
            limits: Some(limits),
            ..Default::default()
        }),
        Kind::Join(kwik_proto::Join {
            session_id: 42,
            path_id: 1,
            expiry: 1_700_000_000,
            proof: vec![7; 32],
            key_id: 0,
        }),
        Kind::JoinResult(kwik_proto::JoinResult {
            accepted: false,
            code: 3,
            reason: "no".into(),
        }),
        Kind::AddPath(kwik_proto::AddPath {
            path_id: 2,
            addr: "192.0.2.1:4433".into(),
            server_name: "localhost".into(),
            expiry: 1,
            path_secret: vec![1; 32],
            same_peer: false,
            backup: false,
            key_id: 0,
        }),
        Kind::PathStatus(kwik_proto::PathStatus {
            path_id: 2,
            state: 2,
            rtt_us: 1500,
            delivery_rate: 1 << 30,
            reason: String::new(),
        }),
        Kind::RemovePath(kwik_proto::RemovePath { path_id: 2 }),
        Kind::Ping(kwik_proto::Ping { seq: 7 }),
        Kind::Pong(kwik_proto::Pong { seq: u64::MAX }),
        Kind::Delegate(kwik_proto::Delegate {
            ticket: Some(kwik_proto::Ticket {
                id: 1,
                session_id: 9,
                stream: 4,
                offset: 0,
                len: 1 << 20,
                request: b"GET /".to_vec(),
                body_offset: 0,
                any_path: true,
                path_id: 1,
                expiry: 1_700_000_000,
                budget: 2 << 20,
                mac: vec![3; 32],
                key_id: 0,
            }),
            refresh: false,
            ends_stream: false,
        }),
        Kind::DelegationUpdate(kwik_proto::DelegationUpdate {
            id: 1,
            outcome: 1,
            first_missing: 1 << 19,
            shares: vec![kwik_proto::PathShare {
                path_id: 1,
                bytes: 1 << 19,
            }],
        }),
        Kind::Pull(kwik_proto::Pull {
            id: 4,
            ticket: None,
            offset: 1 << 16,
            len: 1 << 16,
        }),
        Kind::PullCancel(kwik_proto::PullCancel { id: 4 }),
        Kind::PullRefused(kwik_proto::PullRefused { id: 4, code: 1 }),
        Kind::RefreshPath(kwik_proto::RefreshPath {
            path_id: 2,
            expiry: 1_700_000_060,
            path_secret: vec![5; 32],
            key_id: 0,
        }),
        Kind::Close(kwik_proto::Close {
            code: 0,
            reason: "bye".into(),
        }),
    ];
    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let wire = control(kind);
        all.extend_from_slice(&wire);
        // Chunk sizes 1, 7, 128 and 256 by turns.
        let first = [0u8, 6, 127, 128][i % 4];
        seeds.push((format!("kind-{i:02}"), [&[first][..], &wire].concat()));
    }
    seeds.push(("all-kinds-bytewise".into(), [&[0u8][..], &all].concat()));
    seeds.push(("all-kinds-32k".into(), [&[255u8][..], &all].concat()));
    // A frame of exactly the limit: an empty Join with 16 KiB of proof.
    let big = control(Kind::Join(kwik_proto::Join {
        proof: vec![0; 16 * 1024 - 4],
        ..Default::default()
    }));
    seeds.push(("near-limit".into(), [&[200u8][..], &big].concat()));
    let mut over = vec![3u8];
    prost::encoding::encode_varint(16 * 1024 + 1, &mut over);
    seeds.push(("too-large".into(), over));
    seeds.push(("empty-kind".into(), vec![0, 0]));
    seeds.push((
        "overlong-prefix".into(),
        [vec![1u8], vec![0xff; 11]].concat(),
    ));
    seeds
}

fn record(out: &mut Vec<u8>, meta: u8, payload: &[u8]) {
    if payload.len() < 255 {
        out.push(payload.len() as u8);
        out.push(meta);
    } else {
        out.push(0xff);
        out.push(meta);
        out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(payload);
}

/// The datagrams a client sends to a server during an in-memory handshake.
fn client_datagrams() -> Vec<Vec<u8>> {
    let client_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 4433));
    let server_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 4433));
    let ep = |seed, server| {
        Endpoint::new(
            EndpointConfig {
                seed: [seed; 32],
                allow_mtud: false,
            },
            server,
        )
    };
    let mut client = ep(3, None);
    let mut server = ep(4, Some(harness::server_config(Config::default())));
    let mut now = Instant::now();
    client
        .connect(
            now,
            &harness::client_config(Config::default()),
            server_addr,
            "localhost",
        )
        .unwrap();
    let mut sent = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..20 {
        now += std::time::Duration::from_millis(1);
        while let Some(t) = client.poll_transmit(now, 1, &mut buf) {
            sent.push(buf[..t.size].to_vec());
            server.handle_datagram(now, client_addr, None, None, buf[..t.size].into());
        }
        while let Some(t) = server.poll_transmit(now, 1, &mut buf) {
            client.handle_datagram(now, server_addr, None, None, buf[..t.size].into());
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
    }
    sent
}

fn engine_input_seeds() -> Vec<(String, Vec<u8>)> {
    let datagrams = client_datagrams();
    assert!(datagrams.len() >= 2, "a handshake takes several datagrams");
    assert!(datagrams[0].len() >= 1200, "the first is a padded Initial");
    let mut seeds = Vec::new();
    let mut initial = Vec::new();
    record(&mut initial, 0, &datagrams[0]);
    seeds.push(("initial".into(), initial.clone()));
    let mut handshake = Vec::new();
    for d in &datagrams {
        record(&mut handshake, 4, d);
    }
    seeds.push(("handshake".into(), handshake));
    // The Initial, then silence long enough for every timer.
    let mut idle = initial.clone();
    for _ in 0..4 {
        record(&mut idle, 0xfc, &[]);
    }
    seeds.push(("initial-then-idle".into(), idle));
    // The Initial from two addresses, and a truncated copy.
    let mut two = initial.clone();
    record(&mut two, 1, &datagrams[0]);
    record(&mut two, 2, &datagrams[0][..600]);
    seeds.push(("initial-twice".into(), two));
    // A long header of an unknown version: the server answers with version negotiation.
    let mut vn = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8];
    vn.extend_from_slice(&[0x11; 8]);
    vn.push(8);
    vn.extend_from_slice(&[0x22; 8]);
    vn.resize(1200, 0);
    let mut neg = Vec::new();
    record(&mut neg, 0, &vn);
    seeds.push(("version-negotiation".into(), neg));
    // Short-header garbage for no connection: stateless reset territory.
    let mut short = Vec::new();
    record(&mut short, 3, &[0x40; 60]);
    record(&mut short, 7, &[0x5f; 21]);
    seeds.push(("short-header".into(), short));
    seeds
}

/// An op byte of `engine_streams`: `call` on `side` (0 client, 1 server).
fn op(call: u8, side: u8) -> u8 {
    call << 1 | side
}

const OPEN_BI: u8 = 0;
const OPEN_UNI: u8 = 1;
const WRITE: u8 = 2;
const WRITE_CHUNKS: u8 = 3;
const FINISH: u8 = 4;
const RESET: u8 = 5;
const STOP: u8 = 6;
const READ: u8 = 7;
const DELIVER: u8 = 8;
const ADVANCE: u8 = 9;
const CLOSE: u8 = 10;
const ACCEPT: u8 = 11;
const C: u8 = 0;
const S: u8 = 1;

fn engine_streams_seeds() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "echo".into(),
            vec![
                0,
                0,
                op(OPEN_BI, C),
                op(WRITE, C),
                0,
                10,
                op(FINISH, C),
                0,
                op(DELIVER, C),
                7,
                op(READ, C),
                0,
                255,
            ],
        ),
        (
            "tiny-windows".into(),
            vec![
                0b111,
                0b111,
                op(OPEN_BI, C),
                op(OPEN_UNI, C),
                op(OPEN_UNI, C),
                op(WRITE, C),
                0,
                200,
                op(WRITE_CHUNKS, C),
                1,
                200,
                op(DELIVER, C),
                3,
                op(WRITE, C),
                1,
                255,
                op(FINISH, C),
                1,
                op(FINISH, C),
                0,
            ],
        ),
        (
            "reset-and-stop".into(),
            vec![
                0,
                1,
                op(OPEN_UNI, C),
                op(WRITE, C),
                0,
                40,
                op(DELIVER, C),
                1,
                op(RESET, C),
                0,
                9,
                op(OPEN_BI, C),
                op(WRITE, C),
                1,
                40,
                op(DELIVER, C),
                2,
                op(ACCEPT, S),
                0,
                op(ACCEPT, S),
                1,
                op(STOP, S),
                1,
                5,
                op(DELIVER, C),
                4,
                op(WRITE, C),
                1,
                1,
            ],
        ),
        (
            "server-streams-and-close".into(),
            vec![
                4,
                0,
                op(OPEN_UNI, S),
                op(OPEN_BI, S),
                op(WRITE, S),
                0,
                30,
                op(WRITE_CHUNKS, S),
                1,
                30,
                op(FINISH, S),
                0,
                op(ADVANCE, S),
                50,
                op(ACCEPT, C),
                1,
                op(ACCEPT, C),
                0,
                op(READ, C),
                0,
                3,
                op(CLOSE, C),
                3,
            ],
        ),
        (
            "one-carrier".into(),
            vec![
                0b11000,
                0b11000,
                op(OPEN_BI, C),
                op(OPEN_BI, C),
                op(OPEN_UNI, C),
                op(WRITE, C),
                0,
                100,
                op(WRITE, C),
                1,
                100,
                op(WRITE, C),
                2,
                100,
                op(FINISH, C),
                2,
                op(RESET, C),
                0,
                1,
                op(DELIVER, C),
                7,
                op(STOP, C),
                1,
                2,
            ],
        ),
        (
            "stream-limit".into(),
            vec![
                0b100,
                0b100,
                op(OPEN_UNI, C),
                op(OPEN_UNI, C),
                op(OPEN_UNI, C),
                op(FINISH, C),
                0,
                op(FINISH, C),
                1,
                op(DELIVER, C),
                7,
                op(ACCEPT, S),
                1,
                op(ACCEPT, S),
                1,
                op(DELIVER, C),
                7,
                op(OPEN_UNI, C),
                op(OPEN_UNI, C),
                op(WRITE, C),
                2,
                3,
            ],
        ),
    ]
}

/// Op bytes of `engine_multi` (the op is `byte % 16`), with the argument bytes each takes.
mod multi {
    /// Primary: `add_path` to secondary `arg % secondaries`.
    pub(super) const ADD_PATH: u8 = 0;
    /// Primary: `add_same_peer_path` to its second address; `arg & 1` makes it a backup.
    pub(super) const ADD_SAME_PEER: u8 = 1;
    /// Primary: `remove_path` of the `arg`th path other than the primary path.
    pub(super) const REMOVE_PATH: u8 = 2;
    /// Primary: open a stream, bidirectional if `arg & 1`.
    pub(super) const OPEN: u8 = 3;
    /// Primary: write `(len + 1) * 256` bytes; args `stream, len`.
    pub(super) const WRITE: u8 = 4;
    /// Primary: stripe `(hi:lo + 1) * 16` bytes; args `stream, hi, lo`.
    pub(super) const STRIPE: u8 = 5;
    /// Primary: delegate `(hi:lo + 1) * 16` bytes to the `path`th path; args `stream, path,
    /// hi, lo`.
    pub(super) const DELEGATE: u8 = 6;
    /// Primary: finish; arg `stream`.
    pub(super) const FINISH: u8 = 7;
    /// Pause or resume server `arg`'s application (0 the primary).
    pub(super) const PAUSE: u8 = 8;
    /// Server `i` serves `(kib + 1)` KiB of its ranges even if paused; args `i, kib`.
    pub(super) const SERVE: u8 = 9;
    /// Impair link `arg % 4` for `left + 1` datagrams; args `link, pattern, left`.
    pub(super) const IMPAIR: u8 = 10;
    /// Blackhole (or heal) link `1 + arg % 3`: the alias, secondary 1, secondary 2.
    pub(super) const BLACKHOLE: u8 = 11;
    /// Secondary `(arg >> 1)` closes its sessions; `arg & 1` also stops accepting.
    pub(super) const CLOSE: u8 = 12;
    /// Run for `(arg + 1) * 2` ms.
    pub(super) const RUN: u8 = 13;
    /// Jump the clock by `arg²` ms.
    pub(super) const JUMP: u8 = 14;
    /// Client: `arg & 1 == 0` pauses or resumes reading, else `remove_path` of the
    /// `(arg >> 1)`th path other than the primary path.
    pub(super) const CLIENT: u8 = 15;
}

fn engine_multi_seeds() -> Vec<(String, Vec<u8>)> {
    use multi::*;
    // One secondary joins and the session idles for 800 ms.
    let join = [ADD_PATH, 0, RUN, 200, RUN, 200];
    let seeds: [(&str, Vec<u8>); 13] = [
        // 256 KiB striped over the primary and two secondaries.
        (
            "stripe",
            vec![
                1, 0, ADD_PATH, 0, ADD_PATH, 1, RUN, 200, RUN, 200, OPEN, 0, STRIPE, 0, 0x3f, 0xff,
                FINISH, 0,
            ],
        ),
        // A range delegated to the secondary, one to the primary itself, then plain bytes.
        (
            "delegate",
            [
                &[0, 0][..],
                &join,
                &[
                    OPEN, 0, DELEGATE, 0, 1, 0x0f, 0xff, DELEGATE, 0, 0, 0x0f, 0xff, WRITE, 0, 20,
                    FINISH, 0,
                ],
            ]
            .concat(),
        ),
        // 1 MiB striped while the secondary (12 ms away) holds its chunks, then its link
        // is cut: the primary's end-game copies finish the body.
        (
            "blackhole-mid-stripe",
            [
                &[0, 0x30][..],
                &join,
                &[
                    OPEN, 0, PAUSE, 1, STRIPE, 0, 0xff, 0xff, FINISH, 0, RUN, 10, BLACKHOLE, 1,
                    RUN, 255,
                ],
            ]
            .concat(),
        ),
        // The secondary closes its session mid-stripe: its path fails and its ranges move.
        (
            "close-mid-stripe",
            [
                &[0, 0x30][..],
                &join,
                &[
                    OPEN, 0, PAUSE, 1, STRIPE, 0, 0xff, 0xff, FINISH, 0, RUN, 10, CLOSE, 0, RUN,
                    255,
                ],
            ]
            .concat(),
        ),
        // The same, and the secondary stops accepting: the client's retries find nobody.
        (
            "shutdown-mid-stripe",
            [
                &[0, 0x30][..],
                &join,
                &[
                    OPEN, 0, PAUSE, 1, STRIPE, 0, 0xff, 0xff, FINISH, 0, RUN, 10, CLOSE, 1, RUN,
                    255,
                ],
            ]
            .concat(),
        ),
        // A delegation to a secondary that served 16 KiB of it when its link is cut: it
        // fails and the primary serves the rest itself.
        (
            "delegate-blackhole",
            [
                &[0, 0x30][..],
                &join,
                &[
                    OPEN, 1, PAUSE, 1, DELEGATE, 0, 1, 0x3f, 0xff, RUN, 20, SERVE, 1, 15, WRITE, 0,
                    10, FINISH, 0, RUN, 5, BLACKHOLE, 1, RUN, 255,
                ],
            ]
            .concat(),
        ),
        // The primary removes a path that holds an unserved delegation.
        (
            "paused-remove",
            vec![
                0,
                0x30,
                ADD_PATH,
                0,
                RUN,
                200,
                OPEN,
                0,
                PAUSE,
                1,
                DELEGATE,
                0,
                1,
                0x0f,
                0xff,
                RUN,
                50,
                REMOVE_PATH,
                0,
                RUN,
                100,
                FINISH,
                0,
            ],
        ),
        // The client removes the secondary's path mid-stripe.
        (
            "client-remove-mid-stripe",
            [
                &[0, 0x30][..],
                &join,
                &[
                    OPEN, 0, PAUSE, 1, STRIPE, 0, 0x7f, 0xff, RUN, 20, CLIENT, 1, RUN, 100, FINISH,
                    0,
                ],
            ]
            .concat(),
        ),
        // Same-peer multipath, then the second address is cut mid-stream.
        (
            "same-peer-blackhole",
            vec![
                0,
                0x04,
                ADD_SAME_PEER,
                0,
                RUN,
                200,
                OPEN,
                1,
                WRITE,
                0,
                255,
                WRITE,
                0,
                255,
                RUN,
                3,
                BLACKHOLE,
                0,
                RUN,
                100,
                WRITE,
                0,
                255,
                FINISH,
                0,
            ],
        ),
        // Redundant scheduling over a backup and a same-peer path, the primary link lossy,
        // then the backup removed.
        (
            "same-peer-backup-lossy",
            vec![
                8,
                0x04,
                ADD_SAME_PEER,
                1,
                ADD_SAME_PEER,
                0,
                RUN,
                200,
                OPEN,
                0,
                IMPAIR,
                0,
                0x1b,
                200,
                WRITE,
                0,
                255,
                WRITE,
                0,
                255,
                RUN,
                10,
                REMOVE_PATH,
                0,
                FINISH,
                0,
            ],
        ),
        // The clock jumps 400 ms mid-stripe, below the health window.
        (
            "jump",
            [
                &[0, 0][..],
                &join,
                &[OPEN, 0, STRIPE, 0, 0x3f, 0xff, JUMP, 20, FINISH, 0],
            ]
            .concat(),
        ),
        // 1 MiB over three servers, the primary link dropping, duplicating and reordering,
        // the client pausing its reads.
        (
            "impair-primary",
            vec![
                1, 0x50, ADD_PATH, 0, ADD_PATH, 1, RUN, 200, OPEN, 0, IMPAIR, 0, 0x9d, 255, STRIPE,
                0, 0xff, 0xff, FINISH, 0, CLIENT, 0, RUN, 100, CLIENT, 0,
            ],
        ),
        // Striping under 64 KiB stream windows, stripe depth 1.
        (
            "small-windows-stripe",
            vec![
                0x31, 0, ADD_PATH, 0, ADD_PATH, 1, RUN, 200, RUN, 200, OPEN, 0, STRIPE, 0, 0x3f,
                0xff, FINISH, 0,
            ],
        ),
    ];
    seeds.into_iter().map(|(n, s)| (n.to_owned(), s)).collect()
}

/// Writes the seed corpora. Run once by hand; the files are committed.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let targets = [
        ("frame_decode", frame_seeds()),
        ("control_decode", control_seeds()),
        ("engine_input", engine_input_seeds()),
        ("engine_streams", engine_streams_seeds()),
        ("engine_multi", engine_multi_seeds()),
    ];
    let only = std::env::var("SEED_TARGETS").ok();
    for (target, seeds) in targets {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|t| t == target))
        {
            continue;
        }
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

/// The seeds exercise what they are named for.
#[test]
fn seeds_decode_as_intended() {
    let all = encode_frames(&all_frames());
    let mut bytes = Bytes::from(all);
    let mut n = 0;
    while let Some(frame) = Frame::decode(&mut bytes).unwrap() {
        assert_eq!(frame, all_frames()[n]);
        n += 1;
    }
    assert_eq!(n, all_frames().len());
    let mut decoder = kwik_core::control::ControlDecoder::default();
    for (_, seed) in control_seeds()
        .iter()
        .filter(|(n, _)| n.starts_with("kind-"))
    {
        decoder.push(&seed[1..]);
        assert!(decoder.next_frame().unwrap().is_some());
    }
    assert_eq!(decoder.buffered(), 0);
    let _ = VarInt::from_u32(0);
}

/// The multi-server seeds reach what they are named for: striping and delegation served
/// by secondaries, path failures with their ranges moved, same-peer paths, and a checked
/// completion.
#[test]
fn multi_seeds_reach_their_scenarios() {
    for (name, seed) in engine_multi_seeds() {
        let r = harness::engine_multi_report(&seed);
        assert!(r.completion_checked, "{name}: {r:?}");
        assert!(r.completed >= 1, "{name}: {r:?}");
        let reached = match name.as_str() {
            "stripe" => r.stripes == 1 && r.secondaries_joined == 2 && r.secondary_bytes > 0,
            "delegate" => r.delegations == 2 && r.secondary_bytes > 0,
            "blackhole-mid-stripe" | "client-remove-mid-stripe" => {
                r.stripes == 1 && r.secondaries_joined == 1
            }
            "close-mid-stripe" | "shutdown-mid-stripe" => r.stripes == 1 && r.path_failures >= 1,
            "delegate-blackhole" => {
                r.path_failures >= 1 && r.delegations_failed >= 1 && r.secondary_bytes > 0
            }
            "paused-remove" => r.delegations_failed >= 1,
            "same-peer-blackhole" => r.same_peer_joined == 1 && r.path_failures >= 1,
            "same-peer-backup-lossy" => r.same_peer_joined == 2,
            "jump" | "impair-primary" | "small-windows-stripe" => r.stripes == 1,
            other => panic!("no expectation for seed {other}"),
        };
        assert!(reached, "{name}: {r:?}");
    }
}
