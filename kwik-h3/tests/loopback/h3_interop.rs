//! HTTP/3 between kwik-h3 and an HTTP/3 stack not written here (hyperium's h3 over
//! h3-quinn), on loopback:
//! - an h3-quinn client GETs 0 B, 1 B, 1 MiB and 64 MiB from a kwik-h3 primary (a plain
//!   session on the KWIK server's own port), the 64 MiB body through `send_striped`, which
//!   the primary serves alone; at the same time a KWIK client GETs the same 64 MiB from
//!   that primary, striped over two secondaries. Every body is compared whole.
//! - kwik-h3's client GETs the same files from an h3 server over h3-quinn, falling back
//!   to a plain session.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, StatusCode};
use kwik_async::{GroupKey, Mode, PathEvent, Role, ServerConfig};
use kwik_h3::{Content, StripedRequest};
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::tokio_run;

use crate::support::{config, loopback, response, secondaries, serve_h3, spawn};

const STRIPED: &str = "/64m";

/// The files every server holds, by path.
fn files() -> Arc<BTreeMap<&'static str, Content>> {
    let mut files = BTreeMap::new();
    for (path, len, seed) in [
        ("/0", 0, 1),
        ("/1", 1, 2),
        ("/1m", 1 << 20, 3),
        (STRIPED, 64 << 20, 4),
    ] {
        let bytes = payload(seed, len);
        let validator = Bytes::copy_from_slice(&sha256(&bytes));
        files.insert(path, Content { bytes, validator });
    }
    Arc::new(files)
}

/// Every KWIK server: its share of striped bodies; the primary also adds the secondaries
/// to KWIK sessions and answers requests on every session, plain ones included.
async fn serve(
    server: Endpoint,
    secondaries: Vec<SocketAddr>,
    files: Arc<BTreeMap<&'static str, Content>>,
) {
    while let Some(incoming) = server.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        let served = files.clone();
        let find = move |r: &StripedRequest| served.get(r.path.as_str()).cloned();
        tokio::spawn(kwik_h3::serve_stripes(session.clone(), find, spawn));
        if session.role() == Role::Primary {
            if session.mode() == Mode::Kwik {
                for a in &secondaries {
                    session.add_path(*a, "localhost").unwrap();
                }
            }
            tokio::spawn(serve_h3(session, files.clone(), STRIPED));
        }
    }
}

type Endpoint = kwik_async::Endpoint;

/// GETs `path` through `send` and returns the body.
async fn get<T, B>(send: &mut h3::client::SendRequest<T, B>, path: &str) -> Bytes
where
    T: h3::quic::OpenStreams<B>,
    B: Buf,
{
    let req = Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    // RFC 9114 §4.1.2: a server that sent its whole response may stop the request stream
    // before the client finished it (h3's `finish` writes a GREASE frame first); the
    // client keeps the response.
    match stream.finish().await {
        Ok(()) | Err(h3::error::StreamError::RemoteTerminate { .. }) => {}
        Err(e) => panic!("{path}: {e}"),
    }
    let resp = stream.recv_response().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    body.freeze()
}

/// h3's client on `conn`, its driver on a task of its own.
async fn h3_client<C>(
    conn: C,
) -> (
    h3::client::SendRequest<C::OpenStreams, Bytes>,
    tokio::task::JoinHandle<()>,
)
where
    C: h3::quic::Connection<Bytes> + Send + 'static,
    C::OpenStreams: Send,
    C::RecvStream: Send,
    C::BidiStream: Send,
    <C as h3::quic::OpenStreams<Bytes>>::SendStream: Send,
    <C as h3::quic::OpenStreams<Bytes>>::BidiStream: Send,
{
    let (mut driver, send) = h3::client::new(conn).await.unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (send, drive)
}

/// GETs every file through `send`, each body compared whole.
async fn get_every_file<T: h3::quic::OpenStreams<Bytes>>(
    send: &mut h3::client::SendRequest<T, Bytes>,
    files: &BTreeMap<&'static str, Content>,
) {
    for path in ["/0", "/1", "/1m", STRIPED] {
        let body = get(send, path).await;
        assert_whole(path, &body, files);
    }
}

fn assert_whole(path: &str, got: &Bytes, files: &BTreeMap<&'static str, Content>) {
    let want = &files[path].bytes;
    assert_eq!(got.len(), want.len(), "{path}: length");
    assert!(sha256(got) == sha256(want), "{path}: the body differs");
}

fn quinn_client(cert: &TestCert) -> quinn::Endpoint {
    kwik_tests::stock::quinn_client(cert, kwik_h3::ALPN, None)
}

fn quinn_server(cert: &TestCert) -> quinn::Endpoint {
    kwik_tests::stock::quinn_server(cert, kwik_h3::ALPN, None)
}

/// An h3 server over h3-quinn, serving `files`.
async fn serve_h3_quinn(server: quinn::Endpoint, files: Arc<BTreeMap<&'static str, Content>>) {
    while let Some(incoming) = server.accept().await {
        let Ok(conn) = incoming.await else { continue };
        let files = files.clone();
        tokio::spawn(async move {
            let mut h3: h3::server::Connection<h3_quinn::Connection, Bytes> =
                h3::server::Connection::new(h3_quinn::Connection::new(conn))
                    .await
                    .unwrap();
            while let Ok(Some(resolver)) = h3.accept().await {
                let (req, mut stream) = resolver.resolve_request().await.unwrap();
                let file = files[req.uri().path()].clone();
                tokio::spawn(async move {
                    stream
                        .send_response(response(file.bytes.len()))
                        .await
                        .unwrap();
                    for start in (0..file.bytes.len()).step_by(1 << 20) {
                        let end = (start + (1 << 20)).min(file.bytes.len());
                        stream
                            .send_data(file.bytes.slice(start..end))
                            .await
                            .unwrap();
                    }
                    stream.finish().await.unwrap();
                });
            }
        });
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("finished within 120 s")
}

/// A primary and two joins-only secondaries; an h3-quinn client and a KWIK client at once.
async fn stock_and_kwik_clients_on_one_port(servers: [Endpoint; 3], cert: TestCert) {
    let files = files();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
    for (i, s) in servers.iter().enumerate() {
        tokio::spawn(serve(s.clone(), secondaries(&addrs, i), files.clone()));
    }
    let primary = servers[0].clone();
    let stock = async {
        let endpoint = quinn_client(&cert);
        let conn = endpoint
            .connect(addrs[0], "localhost")
            .unwrap()
            .await
            .unwrap();
        let (mut send, drive) = h3_client(h3_quinn::Connection::new(conn.clone())).await;
        get_every_file(&mut send, &files).await;
        assert_eq!(
            primary.stats().plain_sessions,
            1,
            "the stock client is the primary's one plain session"
        );
        drop(send);
        conn.close(quinn::VarInt::from_u32(0x100), b"done");
        drive.abort();
    };
    let kwik = async {
        let client = kwik_tokio::Endpoint::client(loopback()).unwrap();
        let session = client
            .connect_with(cert.client(config()), addrs[0], "localhost")
            .unwrap()
            .await
            .unwrap();
        assert_eq!(session.mode(), Mode::Kwik);
        let mut active = 0;
        while active < 2 {
            if let PathEvent::Active(_) = session.path_event().await.unwrap() {
                active += 1;
            }
        }
        let (mut send, drive) = h3_client(kwik_h3::Connection::new(session.clone())).await;
        let body = get(&mut send, STRIPED).await;
        assert_whole(STRIPED, &body, &files);
        let from = |server: usize| {
            session
                .paths()
                .iter()
                .find(|p| p.address == addrs[server])
                .map_or(0, |p| p.bytes_received)
        };
        assert!(
            from(1) > 1 << 20 && from(2) > 1 << 20,
            "both secondaries served a share"
        );
        drop(send);
        session.close(kwik_async::VarInt::from_u32(0x100), b"done");
        drive.abort();
    };
    within(async { tokio::join!(stock, kwik) }).await;
}

/// kwik-h3's client against an h3 server over h3-quinn: it falls back and GETs every file.
async fn kwik_client_falls_back_to_stock_h3(client: Endpoint, cert: TestCert) {
    let files = files();
    let server = quinn_server(&cert);
    let addr = server.local_addr().unwrap();
    tokio::spawn(serve_h3_quinn(server, files.clone()));
    within(async {
        let session = client
            .connect_with(cert.client(config()), addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        assert_eq!(session.mode(), Mode::Plain, "fell back");
        assert_eq!(session.app_protocol().as_deref(), Some(kwik_h3::ALPN));
        assert_eq!(client.stats().fallbacks, 1);
        let (mut send, drive) = h3_client(kwik_h3::Connection::new(session.clone())).await;
        get_every_file(&mut send, &files).await;
        drop(send);
        session.close(kwik_async::VarInt::from_u32(0x100), b"done");
        drive.abort();
    })
    .await;
}

fn group_server(cert: &TestCert, joins_only: bool) -> ServerConfig {
    let mut s = cert.server(config());
    s.group_key(GroupKey::new([6; 32]));
    s.joins_only(joins_only);
    s
}

macro_rules! suite {
    ($name:ident, $endpoint:path) => {
        mod $name {
            use super::*;

            #[test]
            fn a_stock_h3_client_and_a_kwik_client_share_a_port() {
                tokio_run(async {
                    let cert = TestCert::localhost();
                    let servers = [0, 1, 2].map(|i| {
                        (*<$endpoint>::server(group_server(&cert, i > 0), loopback()).unwrap())
                            .clone()
                    });
                    stock_and_kwik_clients_on_one_port(servers, cert).await
                });
            }

            #[test]
            fn a_kwik_h3_client_falls_back_to_a_stock_h3_server() {
                tokio_run(async {
                    let client = (*<$endpoint>::client(loopback()).unwrap()).clone();
                    kwik_client_falls_back_to_stock_h3(client, TestCert::localhost()).await
                });
            }
        }
    };
}

suite!(on_tokio, kwik_tokio::Endpoint);
suite!(on_smol, kwik_smol::Endpoint);
