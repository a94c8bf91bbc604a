//! KWIK endpoints and plain QUIC peers (quinn, an implementation not written here) on one
//! loopback port: a quinn client reaches a KWIK server as a plain session, a KWIK client
//! falls back to a plain session against a quinn server, and both echo bidirectional
//! streams, unidirectional streams and 1,000 datagrams exactly. Refusals are typed: a
//! client that requires KWIK, a joins-only server, `add_path` on a plain session. A plain
//! client's striped body is served by the primary alone.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kwik_async::{
    AddPathError, Endpoint, Mode, PathId, RemovePathError, Session, SessionError, VarInt,
};
use kwik_core::Config;
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::tokio_run;

const ALPN: &[u8] = b"echo";
const BIDI: usize = 40;
const UNI: usize = 10;
const DATAGRAMS: usize = 1000;
const STREAM_LEN: usize = 48 * 1024;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn kwik_config() -> Config {
    let mut c = Config::default();
    c.app_protocols = vec![ALPN.to_vec()];
    c
}

fn quinn_transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(256));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(256));
    Arc::new(t)
}

fn quinn_server(cert: &TestCert, alpn: &[u8]) -> quinn::Endpoint {
    kwik_tests::stock::quinn_server(cert, alpn, Some(quinn_transport()))
}

fn quinn_client(cert: &TestCert, alpn: &[u8]) -> quinn::Endpoint {
    kwik_tests::stock::quinn_client(cert, alpn, Some(quinn_transport()))
}

/// The one difference between the two stacks' APIs the exchange meets: quinn's datagrams
/// against KWIK's raw datagrams on a path (path 0 on a plain session).
trait Datagrams {
    async fn recv_datagram(&self) -> Option<Bytes>;
    fn send_datagram_now(&self, d: Bytes);
    async fn send_datagram_paced(&self, d: Bytes);
}

impl Datagrams for quinn::Connection {
    async fn recv_datagram(&self) -> Option<Bytes> {
        self.read_datagram().await.ok()
    }

    fn send_datagram_now(&self, d: Bytes) {
        let _ = self.send_datagram(d);
    }

    async fn send_datagram_paced(&self, d: Bytes) {
        self.send_datagram_wait(d).await.unwrap();
    }
}

impl Datagrams for Session {
    async fn recv_datagram(&self) -> Option<Bytes> {
        let (path, d) = self.read_raw().await.ok()?;
        assert_eq!(path, PathId::PRIMARY);
        Some(d)
    }

    fn send_datagram_now(&self, d: Bytes) {
        let _ = self.send_raw(PathId::PRIMARY, d);
    }

    async fn send_datagram_paced(&self, d: Bytes) {
        self.send_raw_wait(PathId::PRIMARY, d).await.unwrap();
    }
}

/// What one side's exchange came to: datagrams echoed exactly.
struct Echoed {
    datagrams: usize,
}

/// The same exchange code for both stacks: their stream APIs have the same shape.
macro_rules! exchange {
    ($name:ident, $conn:ty) => {
        mod $name {
            use super::*;

            /// The echo: every bidirectional stream back on itself, every unidirectional
            /// one back on a new one, every datagram back.
            pub(super) async fn echo(conn: $conn) {
                loop {
                    tokio::select! {
                        bi = conn.accept_bi() => {
                            let Ok((mut send, mut recv)) = bi else { return };
                            tokio::spawn(async move {
                                let data = recv.read_to_end(usize::MAX).await.unwrap();
                                send.write_all(&data).await.unwrap();
                                send.finish().unwrap();
                                let _ = send.stopped().await;
                            });
                        }
                        uni = conn.accept_uni() => {
                            let Ok(mut recv) = uni else { return };
                            let conn = conn.clone();
                            tokio::spawn(async move {
                                let data = recv.read_to_end(usize::MAX).await.unwrap();
                                let mut send = conn.open_uni().await.unwrap();
                                send.write_all(&data).await.unwrap();
                                send.finish().unwrap();
                                let _ = send.stopped().await;
                            });
                        }
                        d = conn.recv_datagram() => {
                            let Some(d) = d else { return };
                            conn.send_datagram_now(d);
                        }
                    }
                }
            }

            /// Drives the exchange against the other stack's echo.
            pub(super) async fn drive(conn: &$conn) -> Echoed {
                let bidi = (0..BIDI).map(|i| {
                    let conn = conn.clone();
                    async move {
                        let (mut send, mut recv) = conn.open_bi().await.unwrap();
                        let data = payload(i as u64, STREAM_LEN);
                        let writer = async {
                            send.write_all(&data).await.unwrap();
                            send.finish().unwrap();
                        };
                        let (_, echoed) = tokio::join!(writer, recv.read_to_end(usize::MAX));
                        assert_eq!(sha256(&echoed.unwrap()), sha256(&data), "bidi stream {i}");
                    }
                });
                futures::future::join_all(bidi).await;
                let mut sent = BTreeSet::new();
                for i in 0..UNI {
                    let data = payload(1000 + i as u64, STREAM_LEN);
                    sent.insert(sha256(&data));
                    let mut send = conn.open_uni().await.unwrap();
                    send.write_all(&data).await.unwrap();
                    send.finish().unwrap();
                }
                let mut back = BTreeSet::new();
                for _ in 0..UNI {
                    let mut recv = conn.accept_uni().await.unwrap();
                    back.insert(sha256(&recv.read_to_end(usize::MAX).await.unwrap()));
                }
                assert_eq!(back, sent, "every unidirectional stream came back exact");
                let mut echoed = 0;
                for window in 0..DATAGRAMS / 10 {
                    let mut want = BTreeSet::new();
                    for i in 0..10 {
                        let d = Bytes::from(format!("datagram {}", window * 10 + i));
                        want.insert(d.clone());
                        conn.send_datagram_paced(d).await;
                    }
                    while !want.is_empty() {
                        let wait = Duration::from_millis(200);
                        match tokio::time::timeout(wait, conn.recv_datagram()).await {
                            Ok(d) => {
                                assert!(want.remove(&d.unwrap()), "an echo of a datagram sent");
                                echoed += 1;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Echoed { datagrams: echoed }
            }
        }
    };
}

exchange!(on_quinn, quinn::Connection);
exchange!(on_kwik, Session);

/// Loopback drops nothing paced like this; a few lost datagrams are still datagrams.
fn assert_datagrams(e: &Echoed) {
    assert!(
        e.datagrams >= DATAGRAMS * 99 / 100,
        "{} of {DATAGRAMS} datagrams echoed",
        e.datagrams
    );
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("finished within 60 s")
}

async fn quinn_client_to_kwik_server(server: Endpoint, cert: TestCert) {
    let addr = server.local_addr().unwrap();
    let client = quinn_client(&cert, ALPN);
    let srv = async {
        let session = server.accept().await.unwrap().await.unwrap();
        assert_eq!(session.mode(), Mode::Plain);
        assert_eq!(session.app_protocol().as_deref(), Some(ALPN));
        assert_eq!(
            session.add_path(addr, "localhost"),
            Err(AddPathError::PlainSession)
        );
        assert_eq!(
            session.remove_path(PathId(1)),
            Err(RemovePathError::PlainSession)
        );
        assert_eq!(server.stats().plain_sessions, 1);
        tokio::spawn(on_kwik::echo(session.clone()));
        session
    };
    let cli = async {
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        assert_eq!(
            conn.handshake_data()
                .unwrap()
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap()
                .protocol
                .as_deref(),
            Some(ALPN)
        );
        let echoed = on_quinn::drive(&conn).await;
        (conn, echoed)
    };
    let (session, (conn, echoed)) = within(async { tokio::join!(srv, cli) }).await;
    assert_datagrams(&echoed);
    conn.close(quinn::VarInt::from_u32(9), b"done");
    let error = within(session.closed()).await;
    assert_eq!(
        error,
        SessionError::ApplicationClosed {
            code: VarInt::from_u32(9),
            reason: Bytes::from_static(b"done"),
        }
    );
}

async fn kwik_client_to_quinn_server(client: Endpoint, cert: TestCert) {
    let server = quinn_server(&cert, ALPN);
    let addr = server.local_addr().unwrap();
    let srv = async {
        let conn = server.accept().await.unwrap().await.unwrap();
        tokio::spawn(on_quinn::echo(conn.clone()));
        conn
    };
    let cli = async {
        let session = client
            .connect_with(cert.client(kwik_config()), addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        assert_eq!(session.mode(), Mode::Plain, "fell back");
        assert_eq!(session.app_protocol().as_deref(), Some(ALPN));
        assert_eq!(client.stats().fallbacks, 1);
        let echoed = on_kwik::drive(&session).await;
        (session, echoed)
    };
    let (conn, (session, echoed)) = within(async { tokio::join!(srv, cli) }).await;
    assert_datagrams(&echoed);
    session.close(VarInt::from_u32(5), b"bye");
    let error = within(conn.closed()).await;
    assert!(
        matches!(&error, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(5)),
        "{error:?}"
    );
}

/// A client that requires KWIK refuses the plain server with a typed error naming the
/// server's choice.
async fn fallback_refused(client: Endpoint, cert: TestCert) {
    let server = quinn_server(&cert, ALPN);
    let addr = server.local_addr().unwrap();
    let _accepting = tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
    });
    let mut config = kwik_config();
    config.require_kwik = true;
    let r = within(
        client
            .connect_with(cert.client(config), addr, "localhost")
            .unwrap(),
    )
    .await;
    match r {
        Err(kwik_async::SessionError::FallbackRefused { protocol }) => {
            assert_eq!(&protocol[..], ALPN)
        }
        other => panic!("expected FallbackRefused, got {other:?}"),
    }
    assert_eq!(client.stats().fallbacks, 0);
}

/// A joins-only secondary offers `kwik/1` alone: a plain client is refused in the TLS
/// handshake, and the server holds no session for it.
async fn joins_only_refuses_plain(server: Endpoint, cert: TestCert) {
    let addr = server.local_addr().unwrap();
    let client = quinn_client(&cert, ALPN);
    let r = within(client.connect(addr, "localhost").unwrap()).await;
    let error = r.expect_err("a joins-only server refuses a plain client");
    // TLS alert 120 (no_application_protocol) as a QUIC CRYPTO_ERROR.
    assert!(
        matches!(&error, quinn::ConnectionError::ConnectionClosed(c) if u64::from(c.error_code) == 0x178),
        "{error:?}"
    );
    let stats = server.stats();
    assert_eq!(stats.sessions, 0, "no session state");
    assert_eq!(stats.plain_sessions, 0);
}

/// A plain client's request for a striped body: the primary serves every byte itself,
/// through the same `accept_delegation` its application runs for its own share.
async fn striped_body_for_plain_client(server: Endpoint, cert: TestCert) {
    const BODY: usize = 9 << 20;
    let addr = server.local_addr().unwrap();
    let body = payload(77, BODY);
    let client = quinn_client(&cert, ALPN);
    let srv = {
        let body = body.clone();
        async move {
            let session = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = session.accept_bi().await.unwrap();
            let request = recv.read_to_end(64).await.unwrap();
            send.write_all(b"head:").await.unwrap();
            let stripe = send.stripe(Bytes::from(request), BODY as u64).unwrap();
            send.finish().unwrap();
            let mut delegations = 0;
            let mut served = 0;
            while served < BODY {
                let (d, mut writer) = session.accept_delegation().await.unwrap();
                assert_eq!(
                    d.offset,
                    5 + d.body_offset,
                    "ranges follow the head in order"
                );
                assert_eq!(&d.request[..], b"file");
                let start = d.body_offset as usize;
                let range = body.slice(start..start + d.len as usize);
                writer.write_chunk(range).await.unwrap();
                served += d.len as usize;
                delegations += 1;
            }
            assert!(delegations > 1, "handed out as consecutive delegations");
            (session, stripe)
        }
    };
    let cli = async {
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"file").await.unwrap();
        send.finish().unwrap();
        let got = recv.read_to_end(usize::MAX).await.unwrap();
        (conn, got)
    };
    let ((_session, _stripe), (_conn, got)) = within(async { tokio::join!(srv, cli) }).await;
    assert_eq!(&got[..5], b"head:");
    assert_eq!(got.len(), 5 + BODY);
    assert_eq!(sha256(&got[5..]), sha256(&body), "the body arrived whole");
}

/// A plain client stops a striped body partway: the primary's writer of the current range
/// is woken and refused (not left waiting for credit that never comes), the stream is
/// reset, and the session serves the next request.
async fn stopped_mid_range(server: Endpoint, cert: TestCert) {
    const BODY: usize = 32 << 20;
    let addr = server.local_addr().unwrap();
    let body = payload(78, BODY);
    let client = quinn_client(&cert, ALPN);
    let srv = async move {
        let session = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = session.accept_bi().await.unwrap();
        let request = recv.read_to_end(64).await.unwrap();
        send.stripe(Bytes::from(request), BODY as u64).unwrap();
        send.finish().unwrap();
        let refused = loop {
            let (d, mut writer) = session.accept_delegation().await.unwrap();
            let start = d.body_offset as usize;
            let range = body.slice(start..start + d.len as usize);
            if let Err(e) = writer.write_chunk(range).await {
                break e;
            }
        };
        // The next request is served as usual.
        let (mut send, mut recv) = session.accept_bi().await.unwrap();
        let ping = recv.read_to_end(64).await.unwrap();
        send.write_all(&ping).await.unwrap();
        send.finish().unwrap();
        let _ = send.stopped().await;
        refused
    };
    let cli = async {
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"file").await.unwrap();
        send.finish().unwrap();
        let mut got = 0;
        while got < 1 << 20 {
            got += recv
                .read_chunk(usize::MAX, true)
                .await
                .unwrap()
                .unwrap()
                .bytes
                .len();
        }
        recv.stop(quinn::VarInt::from_u32(7)).unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"ping").await.unwrap();
        send.finish().unwrap();
        let pong = recv.read_to_end(64).await.unwrap();
        (conn, pong)
    };
    let (refused, (_conn, pong)) = within(async { tokio::join!(srv, cli) }).await;
    assert_eq!(pong, b"ping");
    assert!(
        matches!(refused, kwik_async::WriteError::ClosedStream),
        "the range's writer is refused: {refused:?}"
    );
}

/// The primary refuses a plain client's striped range (its copy does not match): nobody
/// else can serve it, so the stream is reset with KWIK's delegation code.
async fn refused_range(server: Endpoint, cert: TestCert) {
    let addr = server.local_addr().unwrap();
    let client = quinn_client(&cert, ALPN);
    let srv = async move {
        let session = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = session.accept_bi().await.unwrap();
        let request = recv.read_to_end(64).await.unwrap();
        send.stripe(Bytes::from(request), 1 << 20).unwrap();
        send.finish().unwrap();
        let (_, writer) = session.accept_delegation().await.unwrap();
        writer.refuse().unwrap();
        session
    };
    let cli = async {
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"file").await.unwrap();
        send.finish().unwrap();
        (conn, recv.read_to_end(2 << 20).await)
    };
    let (_session, (_conn, read)) = within(async { tokio::join!(srv, cli) }).await;
    let code = kwik_core::ErrorCode::Delegation.to_wire();
    assert!(
        matches!(&read, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(c))) if c.into_inner() == code.into_inner()),
        "{read:?}"
    );
}

macro_rules! suite {
    ($name:ident, $endpoint:path) => {
        mod $name {
            use super::*;

            fn server(cert: &TestCert, config: Config) -> Endpoint {
                (*<$endpoint>::server(cert.server(config), loopback()).unwrap()).clone()
            }

            fn client() -> Endpoint {
                (*<$endpoint>::client(loopback()).unwrap()).clone()
            }

            #[test]
            fn a_quinn_client_reaches_a_kwik_server_as_a_plain_session() {
                tokio_run(async {
                    let cert = TestCert::localhost();
                    let server = server(&cert, kwik_config());
                    quinn_client_to_kwik_server(server, cert).await
                });
            }

            #[test]
            fn a_kwik_client_falls_back_against_a_quinn_server() {
                tokio_run(async {
                    kwik_client_to_quinn_server(client(), TestCert::localhost()).await
                });
            }

            #[test]
            fn a_client_that_requires_kwik_refuses_fallback() {
                tokio_run(async { fallback_refused(client(), TestCert::localhost()).await });
            }

            #[test]
            fn a_joins_only_server_refuses_plain_clients_in_the_handshake() {
                tokio_run(async {
                    let cert = TestCert::localhost();
                    let mut config = cert.server(kwik_config());
                    config.joins_only(true);
                    let server = (*<$endpoint>::server(config, loopback()).unwrap()).clone();
                    joins_only_refuses_plain(server, cert).await
                });
            }

            #[test]
            fn a_refused_range_resets_a_plain_clients_stream() {
                tokio_run(async {
                    let cert = TestCert::localhost();
                    let server = server(&cert, kwik_config());
                    refused_range(server, cert).await
                });
            }

            #[test]
            fn a_plain_client_stopping_a_striped_body_frees_its_writer() {
                tokio_run(async {
                    let cert = TestCert::localhost();
                    let server = server(&cert, kwik_config());
                    stopped_mid_range(server, cert).await
                });
            }

            #[test]
            fn a_plain_clients_striped_body_is_served_by_the_primary_alone() {
                tokio_run(async {
                    let cert = TestCert::localhost();
                    let server = server(&cert, kwik_config());
                    striped_body_for_plain_client(server, cert).await
                });
            }
        }
    };
}

suite!(on_tokio, kwik_tokio::Endpoint);
suite!(on_smol, kwik_smol::Endpoint);
