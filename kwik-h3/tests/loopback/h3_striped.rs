//! A striped HTTP/3 response on loopback: a primary and two secondaries serve one GET's
//! body at once, and the client reads an ordinary h3 response. One secondary's copy of the
//! content differs: it refuses its ranges, and the client pulls them from the others. The
//! secondaries serve only as secondaries (`joins_only`): a client that asks one for the
//! content directly, without a primary's ticket, is refused with a typed error and served
//! nothing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::future::{Either, select};
use http::{Request, StatusCode};
use kwik_async::{GroupKey, PathEvent, Role, ServerConfig};
use kwik_h3::{Content, StripedRequest};
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::tokio_run;
use sha2::{Digest, Sha256};

use crate::support::{config, loopback, secondaries, serve_h3, spawn};

fn server_config(cert: &TestCert) -> ServerConfig {
    let mut s = cert.server(config());
    s.group_key(GroupKey::new([5; 32]));
    s
}

fn content(bytes: &Bytes) -> Content {
    Content {
        bytes: bytes.clone(),
        validator: Bytes::copy_from_slice(&sha256(bytes)),
    }
}

/// Every server: its share of striped bodies, from its own copy of `/file`; the primary
/// also adds the secondaries and answers requests.
async fn serve(server: kwik_tokio::Endpoint, secondaries: Vec<SocketAddr>, copy: Bytes) {
    // The validator is computed once per copy, as a server would keep it beside the file.
    let mine = content(&copy);
    let files = Arc::new(BTreeMap::from([("/file", mine.clone())]));
    while let Some(incoming) = server.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        let served = mine.clone();
        let find = move |r: &StripedRequest| (r.path == "/file").then(|| served.clone());
        tokio::spawn(kwik_h3::serve_stripes(session.clone(), find, spawn));
        if session.role() == Role::Primary {
            for a in &secondaries {
                session.add_path(*a, "localhost").unwrap();
            }
            tokio::spawn(serve_h3(session, files.clone(), "/file"));
        }
    }
}

/// What the client saw of one striped GET of `/file`.
struct Outcome {
    len: usize,
    digest: [u8; 32],
    paths: Vec<kwik_async::PathInfo>,
    addrs: Vec<SocketAddr>,
    servers: Vec<kwik_tokio::Endpoint>,
}

/// Three servers with these copies of `/file` (the first is the primary); the client GETs
/// it over HTTP/3, hashing the body as it comes. With `kill`, that server's endpoint is
/// closed once half the body has arrived.
async fn striped_get(copies: [Bytes; 3], kill: Option<usize>) -> Outcome {
    let cert = TestCert::localhost();
    let body = copies[0].len();
    let servers: Vec<kwik_tokio::Endpoint> = (0..3)
        .map(|i| {
            let mut config = server_config(&cert);
            config.joins_only(i > 0);
            kwik_tokio::Endpoint::server(config, loopback()).unwrap()
        })
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
    for (i, s) in servers.iter().enumerate() {
        tokio::spawn(serve(s.clone(), secondaries(&addrs, i), copies[i].clone()));
    }
    let client = kwik_tokio::Endpoint::client(loopback()).unwrap();
    let session = client
        .connect_with(cert.client(config()), addrs[0], "localhost")
        .unwrap()
        .await
        .unwrap();
    let mut active = 0;
    while active < 2 {
        if let PathEvent::Active(_) = session.path_event().await.unwrap() {
            active += 1;
        }
    }
    let (mut driver, mut send) = h3::client::new(kwik_h3::Connection::new(session.clone()))
        .await
        .unwrap();
    let drive = std::future::poll_fn(|cx| driver.poll_close(cx));
    let victim = kill.map(|i| servers[i].clone());
    let get = async {
        let req = Request::get("https://localhost/file").body(()).unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream.finish().await.unwrap();
        let resp = stream.recv_response().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut hasher = Sha256::new();
        let mut len = 0;
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                hasher.update(piece);
                len += piece.len();
                let n = piece.len();
                chunk.advance(n);
            }
            if len >= body / 2
                && let Some(v) = &victim
            {
                v.close(kwik_async::VarInt::from_u32(0), b"shutting down");
            }
        }
        assert!(stream.recv_trailers().await.unwrap().is_none());
        (len, <[u8; 32]>::from(hasher.finalize()))
    };
    let (len, digest) = match select(Box::pin(get), Box::pin(drive)).await {
        Either::Left((got, _)) => got,
        Either::Right((e, _)) => panic!("h3 connection ended first: {e}"),
    };
    let paths = session.paths();
    drop(send);
    session.close(kwik_async::VarInt::from_u32(0x100), b"done");
    client.wait_idle().await;
    Outcome {
        len,
        digest,
        paths,
        addrs,
        servers,
    }
}

impl Outcome {
    fn from(&self, server: usize) -> u64 {
        self.paths
            .iter()
            .find(|p| p.address == self.addrs[server])
            .map_or(0, |p| p.bytes_received)
    }
}

#[test]
fn a_striped_get_arrives_whole_and_a_stale_copy_is_refused() {
    tokio_run(async {
        let file = payload(21, 16 << 20);
        let mut stale = file.to_vec();
        stale[file.len() / 2] ^= 1;
        let out = striped_get([file.clone(), file.clone(), Bytes::from(stale)], None).await;
        println!("paths {:#?}", out.paths);
        assert_eq!(out.len, file.len());
        assert!(out.digest == sha256(&file), "the body checksum differs");
        assert!(out.from(1) > 1 << 20, "the fresh secondary served a share");
        assert!(
            out.from(2) < 1 << 20,
            "the stale secondary served none of the body: {} bytes",
            out.from(2)
        );
        assert!(
            out.servers[2].stats().pulls_refused >= 1,
            "the stale copy refused"
        );
        assert_eq!(out.servers[1].stats().pulls_refused, 0);
    });
}

#[test]
fn a_request_straight_to_a_secondary_is_refused_and_served_nothing() {
    tokio_run(async {
        let cert = TestCert::localhost();
        let file = content(&payload(23, 1 << 20));
        let mut secondary_config = server_config(&cert);
        secondary_config.joins_only(true);
        let secondary = kwik_tokio::Endpoint::server(secondary_config, loopback()).unwrap();
        let looked_up = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let serving = {
            let secondary = secondary.clone();
            let looked_up = looked_up.clone();
            async move {
                while let Some(incoming) = secondary.accept().await {
                    let Ok(session) = incoming.await else {
                        continue;
                    };
                    let (file, looked_up) = (file.clone(), looked_up.clone());
                    let find = move |_: &StripedRequest| {
                        looked_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Some(file.clone())
                    };
                    tokio::spawn(kwik_h3::serve_stripes(session, find, spawn));
                }
            }
        };
        tokio::spawn(serving);
        // An HTTP/3 client that asks the secondary itself, with no primary and no ticket.
        let client = kwik_tokio::Endpoint::client(loopback()).unwrap();
        let refused = client
            .connect_with(
                cert.client(config()),
                secondary.local_addr().unwrap(),
                "localhost",
            )
            .unwrap()
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                kwik_async::SessionError::PeerProtocolError {
                    code: kwik_core::ErrorCode::JoinsOnly,
                    ..
                }
            ),
            "{refused:?}"
        );
        let stats = secondary.stats();
        assert_eq!(stats.sessions, 0, "the secondary holds no session");
        assert_eq!(
            stats.protocol_violations_of(kwik_core::ErrorCode::JoinsOnly),
            1
        );
        assert!(
            stats.bytes_sent < 16 << 10,
            "no more than a handshake and a close went out: {} bytes",
            stats.bytes_sent
        );
        assert_eq!(
            looked_up.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "the content was never looked up"
        );
    });
}

#[test]
fn a_striped_get_of_256_mib_survives_a_secondary_dying_at_half() {
    tokio_run(async {
        let file = payload(22, 256 << 20);
        let started = std::time::Instant::now();
        let out = striped_get([file.clone(), file.clone(), file.clone()], Some(2)).await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "256 MiB striped GET in {secs:.2} s ({:.0} Mbit/s); from primary {} B, secondary 1 {} B, \
             secondary 2 (closed at half) {} B",
            out.len as f64 * 8.0 / secs / 1e6,
            out.from(0),
            out.from(1),
            out.from(2)
        );
        assert_eq!(out.len, file.len());
        assert!(out.digest == sha256(&file), "the body checksum differs");
        assert!(
            out.from(1) > 0 && out.from(2) > 0,
            "every server served a share"
        );
    });
}
