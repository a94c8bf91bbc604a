//! qlog of a multi-server transfer: a primary and a secondary stripe a body to a client on
//! loopback, every endpoint writing qlog into one directory. Each path's QUIC connection
//! gets a file named by session and path, and each side a file of KWIK's events; all are
//! valid JSON-SEQ carrying the fields qvis reads (a header with `qlog_format`,
//! `qlog_version` and a trace with a vantage point, then events with `time` and `name`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kwik_async::{Bytes, Endpoint, GroupKey, PathEvent, Role, Session, VarInt};
use kwik_core::Config;
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::tokio_run;
use serde_json::Value;

const BODY: usize = 4 << 20;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn serve(server: Endpoint, secondary: Option<SocketAddr>, body: Bytes) {
    while let Some(incoming) = server.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        tokio::spawn(serve_session(session, secondary, body.clone()));
    }
}

async fn serve_session(session: Session, secondary: Option<SocketAddr>, body: Bytes) {
    if session.role() == Role::Primary {
        if let Some(a) = secondary {
            session.add_path(a, "localhost").unwrap();
        }
        while let Ok((mut send, mut recv)) = session.accept_bi().await {
            recv.read_to_end(64).await.unwrap();
            send.stripe(Bytes::from_static(b"body"), body.len() as u64)
                .unwrap();
            send.finish().unwrap();
        }
        return;
    }
    while let Ok((d, mut writer)) = session.accept_delegation().await {
        let start = d.body_offset as usize;
        let _ = writer
            .write_chunk(body.slice(start..start + d.len as usize))
            .await;
    }
}

/// The records of a JSON-SEQ file: each starts with the record separator and parses.
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read(path).unwrap();
    assert_eq!(text.first(), Some(&0x1e), "{}", path.display());
    text.split(|b| *b == 0x1e)
        .filter(|r| !r.is_empty())
        .map(|r| {
            serde_json::from_slice(r).unwrap_or_else(|e| {
                panic!("{}: {e}: {}", path.display(), String::from_utf8_lossy(r))
            })
        })
        .collect()
}

/// Checks what qvis reads from a file, and returns its event names.
fn check_qlog(path: &Path) -> Vec<String> {
    let records = records(path);
    let header = &records[0];
    assert_eq!(header["qlog_format"], "JSON-SEQ", "{}", path.display());
    assert!(header["qlog_version"].is_string(), "{header}");
    assert!(header["trace"]["vantage_point"].is_object(), "{header}");
    assert!(records.len() > 1, "{}: no events", path.display());
    records[1..]
        .iter()
        .map(|e| {
            let time = e["time"].as_f64().unwrap_or_else(|| panic!("no time: {e}"));
            assert!(time >= 0.0, "{e}");
            e["name"]
                .as_str()
                .unwrap_or_else(|| panic!("no name: {e}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn a_striped_transfer_leaves_a_qlog_of_every_path() {
    let dir: PathBuf = std::env::temp_dir().join(format!("kwik-qlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cert = TestCert::localhost();
    let id = tokio_run(async {
        let server = |_| {
            let mut c = cert.server(Config::default());
            c.group_key(GroupKey::new([3; 32]));
            let s = kwik_tokio::Endpoint::server(c, loopback()).unwrap();
            s.set_qlog_dir(&dir).unwrap();
            (*s).clone()
        };
        let (primary, secondary) = (server(0), server(1));
        let body = payload(5, BODY);
        tokio::spawn(serve(secondary.clone(), None, body.clone()));
        tokio::spawn(serve(
            primary.clone(),
            Some(secondary.local_addr().unwrap()),
            body.clone(),
        ));
        let client = kwik_tokio::Endpoint::client(loopback()).unwrap();
        client.set_qlog_dir(&dir).unwrap();
        let session = client
            .connect_with(
                cert.client(Config::default()),
                primary.local_addr().unwrap(),
                "localhost",
            )
            .unwrap()
            .await
            .unwrap();
        while !matches!(session.path_event().await.unwrap(), PathEvent::Active(_)) {}
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(b"body").await.unwrap();
        send.finish().unwrap();
        let got = recv.read_to_end(BODY).await.unwrap();
        assert_eq!(sha256(&got), sha256(&body));
        let id = session.id();
        session.close(VarInt::from_u32(0), b"done");
        // The files are complete once every connection drained and was let go.
        let idle = async {
            client.wait_idle().await;
            primary.close(VarInt::from_u32(0), b"");
            secondary.close(VarInt::from_u32(0), b"");
            primary.wait_idle().await;
            secondary.wait_idle().await;
        };
        tokio::time::timeout(Duration::from_secs(30), idle)
            .await
            .unwrap();
        id
    });
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        files.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            path,
        );
    }
    println!("{:#?}", files.keys().collect::<Vec<_>>());
    let session = format!("session-{id:016x}");
    // The QUIC connection of each path, on each side: the client's two, the primary's and
    // the secondary's.
    for (side, path) in [
        ("client-path0-primary", 0),
        ("client-path1-secondary", 1),
        ("primary-path0-primary", 0),
        ("secondary-path1-secondary", 1),
    ] {
        let prefix = format!("{session}-{side}-");
        let (name, file) = files
            .iter()
            .find(|(n, _)| n.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no qlog of {prefix} (path {path})"));
        let events = check_qlog(file);
        assert!(
            events.iter().any(|e| e == "transport:packet_sent")
                && events.iter().any(|e| e == "transport:packet_received"),
            "{name}: {:?}",
            &events[..events.len().min(10)]
        );
    }
    // KWIK's events beside them: the client saw both paths become active.
    let kwik = files
        .get(&format!("{session}-client-kwik.sqlog"))
        .expect("the client's KWIK events");
    let events = records(kwik);
    check_qlog(kwik);
    for path in [0, 1] {
        assert!(
            events.iter().any(|e| e["name"] == "kwik:path_updated"
                && e["data"]["path_id"] == path
                && e["data"]["state"] == "active"),
            "path {path}: {events:?}"
        );
    }
    assert!(events.iter().any(|e| e["name"] == "kwik:session_closed"));
    let primary = records(&files[&format!("{session}-primary-kwik.sqlog")]);
    assert!(
        primary.iter().any(|e| e["name"] == "kwik:stripe_finished"),
        "{primary:?}"
    );
    // No connection of the session was left unnamed.
    assert!(
        !files.keys().any(|n| n.starts_with("conn-")),
        "{:?}",
        files.keys()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
