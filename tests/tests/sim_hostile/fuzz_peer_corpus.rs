//! Replays the committed corpora of the hostile-peer fuzz targets (`fuzz/corpus/peer_*`)
//! through the same checks the targets run, and checks that the scenarios themselves can
//! tell a hostile peer from an honest one.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use kwik_tests::fuzz::peer::{PeerReport, peer_client, peer_primary, peer_secondary};

fn replay(target: &str, run: fn(&[u8]) -> PeerReport) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{target}: an empty corpus");
    let mut closed = 0;
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let report = run(&data);
        closed += usize::from(report.closed.is_some());
    }
    println!(
        "{target}: {} inputs replayed, {closed} closed the hostile session",
        files.len()
    );
}

#[test]
fn peer_client_corpus() {
    replay("peer_client", peer_client);
}

#[test]
fn peer_primary_corpus() {
    replay("peer_primary", peer_primary);
}

#[test]
fn peer_secondary_corpus() {
    replay("peer_secondary", peer_secondary);
}

/// Eight seed bytes and a bits byte of zero (no loss, pings answered), then `ops`.
fn input(ops: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 9];
    v.extend_from_slice(ops);
    v
}

#[test]
fn an_idle_hostile_peer_leaves_every_session_open() {
    for run in [peer_client, peer_primary, peer_secondary] {
        let r = run(&input(&[9, 100]));
        assert_eq!(r.closed, None);
        assert!(!r.connection_closed);
    }
}

#[test]
fn garbage_on_the_control_stream_closes_the_hostile_session_with_a_typed_error() {
    // A control frame announcing 255 bytes of 0xff: it does not decode.
    let mut ops = vec![1, 255];
    ops.extend([0xff; 255]);
    ops.extend([9, 50]);
    for (name, run) in [
        ("client", peer_client as fn(&[u8]) -> PeerReport),
        ("primary", peer_primary),
    ] {
        let r = run(&input(&ops));
        let closed = r.closed.unwrap_or_else(|| panic!("{name}: not closed"));
        assert!(closed.contains("ControlDecode"), "{name}: {closed}");
        assert!(r.connection_closed, "{name}: the connection stays open");
    }
}

/// Writes the seeds recorded from honest runs into the corpora (run with `--ignored` when
/// the protocol changes).
#[test]
#[ignore = "rewrites fuzz/corpus seeds"]
fn record_seeds() {
    use kwik_tests::fuzz::peer::{record_honest_client, record_honest_server};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let client = record_honest_client();
    let server = record_honest_server();
    for (target, ops) in [
        ("peer_client", &client),
        ("peer_primary", &server),
        ("peer_secondary", &server),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seed-honest"), ops).unwrap();
        // The same with loss on the hostile link and unanswered health checks.
        let mut lossy = ops.clone();
        lossy[8] = 0b1111;
        std::fs::write(dir.join("seed-honest-lossy-silent"), &lossy).unwrap();
        println!("{target}: {} bytes", ops.len());
    }
}

#[test]
fn honest_recordings_replay_without_closing_anything() {
    use kwik_tests::fuzz::peer::{record_honest_client, record_honest_server};
    let client = peer_client(&record_honest_client());
    assert_eq!(client.closed, None, "an honest client's bytes");
    for run in [peer_primary, peer_secondary] {
        let r = run(&record_honest_server());
        assert_eq!(r.closed, None, "an honest server's bytes: {r:?}");
    }
}
