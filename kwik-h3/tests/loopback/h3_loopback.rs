//! h3's own client and server, unchanged, over KWIK sessions on loopback, on both runtimes:
//! GETs and POSTs (echoed back, with trailers) of 0 B, 1 B, 1 MiB and 256 MiB bodies, 100 concurrent
//! requests, and a request the client stops; and a client that does not offer HTTP/3
//! refused by an HTTP/3 server with a typed error.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future::zip;
use h3::error::Code;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use kwik_async::{Session, SessionError};
use kwik_core::{Config, ErrorCode};
use std::sync::OnceLock;

use kwik_tests::app::payload;
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::{session_pair, tokio_run};

type ServerConn = h3::server::Connection<kwik_h3::Connection, Bytes>;
type RequestStream = h3::server::RequestStream<kwik_h3::BidiStream<Bytes>, Bytes>;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> Config {
    let mut c = Config::default();
    c.max_concurrent_bidi_streams = 128;
    c.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    c
}

/// The largest body: made once, before any runtime starts. Generating (or hashing) it
/// inside a task would hold the runtime's thread for a second, past the health window in
/// which the session must answer its peer's probes.
const LARGE: usize = 256 << 20;
static LARGE_BODIES: OnceLock<(Bytes, Bytes)> = OnceLock::new();

fn large() -> &'static (Bytes, Bytes) {
    LARGE_BODIES.get_or_init(|| (payload(LARGE as u64, LARGE), payload(7, LARGE)))
}

/// The body `GET /bytes/N` answers with.
fn body(len: usize) -> Bytes {
    if len == LARGE {
        return large().0.clone();
    }
    payload(len as u64, len)
}

/// The body POSTed to `/echo`.
fn posted(len: usize) -> Bytes {
    if len == LARGE {
        return large().1.clone();
    }
    payload(7, len)
}

/// Serves `GET /bytes/N` (N pattern bytes), `POST /echo` (the body back, with a trailer
/// carrying its length) and `GET /hang` (headers, then nothing until stopped).
async fn handle(mut stream: RequestStream, req: Request<()>) {
    let path = req.uri().path().to_owned();
    if req.method() == Method::POST && path == "/echo" {
        let mut got = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        stream
            .send_response(Response::builder().status(StatusCode::OK).body(()).unwrap())
            .await
            .unwrap();
        let len = got.len();
        if len > 0 {
            stream.send_data(got.freeze()).await.unwrap();
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-echoed-bytes", HeaderValue::from(len));
        stream.send_trailers(trailers).await.unwrap();
        return;
    }
    if path == "/hang" {
        stream
            .send_response(Response::builder().status(StatusCode::OK).body(()).unwrap())
            .await
            .unwrap();
        // The client stops reading: the next write fails with its code.
        let chunk = Bytes::from(vec![0u8; 64 * 1024]);
        loop {
            if let Err(e) = stream.send_data(chunk.clone()).await {
                assert!(
                    e.to_string().contains("H3_REQUEST_CANCELLED"),
                    "stopped with the client's code: {e}"
                );
                return;
            }
        }
    }
    let Some(len) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        stream
            .send_response(
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        stream.finish().await.unwrap();
        return;
    };
    stream
        .send_response(
            Response::builder()
                .status(StatusCode::OK)
                .header("content-length", len)
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    let data = body(len);
    for piece in data.chunks(256 * 1024) {
        stream.send_data(data.slice_ref(piece)).await.unwrap();
    }
    stream.finish().await.unwrap();
}

/// Accepts requests until the client goes away, each handled on its own task.
async fn serve(session: Session, spawn: fn(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>)) {
    let mut conn: ServerConn = h3::server::Connection::new(kwik_h3::Connection::new(session))
        .await
        .unwrap();
    loop {
        match conn.accept().await {
            Ok(Some(resolver)) => spawn(Box::pin(async move {
                let (req, stream) = resolver.resolve_request().await.unwrap();
                handle(stream, req).await;
            })),
            Ok(None) => return,
            Err(e) => {
                assert!(e.is_h3_no_error(), "server connection ended with {e}");
                return;
            }
        }
    }
}

type Sender = h3::client::SendRequest<kwik_h3::OpenStreams, Bytes>;

/// GETs `path` and returns the status and the body.
async fn get(send: &mut Sender, path: &str) -> (StatusCode, Bytes) {
    let req = Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    let mut got = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (resp.status(), got.freeze())
}

async fn client_suite(session: Session) {
    let (mut driver, mut send) = h3::client::new(kwik_h3::Connection::new(session.clone()))
        .await
        .unwrap();
    let drive = async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await };
    let requests = async move {
        for len in [0usize, 1, 1 << 20, LARGE] {
            let (status, got) = get(&mut send, &format!("/bytes/{len}")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(got.len(), len, "GET /bytes/{len}");
            // Compared whole (a memcmp): hashing 256 MiB here would stall the runtime.
            assert!(got == body(len), "GET /bytes/{len}: the body differs");
        }
        let (status, _) = get(&mut send, "/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // POST: the body comes back, and the trailer counts it.
        for len in [0usize, 1, 1 << 20, LARGE] {
            let sent = posted(len);
            let req = Request::post("https://localhost/echo").body(()).unwrap();
            let mut stream = send.send_request(req).await.unwrap();
            if len > 0 {
                stream.send_data(sent.clone()).await.unwrap();
            }
            stream.finish().await.unwrap();
            let resp = stream.recv_response().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mut got = BytesMut::new();
            while let Some(mut chunk) = stream.recv_data().await.unwrap() {
                got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            assert!(got == sent, "POST of {len} bytes: the echo differs");
            let trailers = stream.recv_trailers().await.unwrap().expect("trailers");
            assert_eq!(trailers["x-echoed-bytes"], len.to_string().as_str());
        }

        // 100 requests at once, each answered whole.
        let mut all = Vec::new();
        for i in 0..100usize {
            let mut send = send.clone();
            all.push(async move {
                let len = 1000 + i;
                let (status, got) = get(&mut send, &format!("/bytes/{len}")).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(got, body(len), "concurrent GET {i}");
            });
        }
        futures::future::join_all(all).await;

        // A response the client stops reading: the server sees H3_REQUEST_CANCELLED,
        // and the session serves the next request as before.
        let req = Request::get("https://localhost/hang").body(()).unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream.finish().await.unwrap();
        let resp = stream.recv_response().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        stream.stop_sending(Code::H3_REQUEST_CANCELLED);
        drop(stream);
        let (status, got) = get(&mut send, "/bytes/5").await;
        assert_eq!((status, got.len()), (StatusCode::OK, 5));
        drop(send);
    };
    let (closed, ()) = zip(drive, requests).await;
    assert!(
        closed.is_h3_no_error(),
        "client connection ended with {closed}"
    );
}

/// The server answers one request with its headers, sends GOAWAY, and only then the body:
/// the request in flight finishes whole, a later request is refused (by the client, which
/// saw the GOAWAY, or by the server with H3_REQUEST_REJECTED), and the connection ends
/// with H3_NO_ERROR.
async fn goaway(server: Session, client: Session) {
    let srv = async {
        let mut conn: ServerConn = h3::server::Connection::new(kwik_h3::Connection::new(server))
            .await
            .unwrap();
        let resolver = conn.accept().await.unwrap().unwrap();
        let (_, mut stream) = resolver.resolve_request().await.unwrap();
        stream
            .send_response(Response::builder().status(StatusCode::OK).body(()).unwrap())
            .await
            .unwrap();
        conn.shutdown(0).await.unwrap();
        stream.send_data(body(1 << 20)).await.unwrap();
        stream.finish().await.unwrap();
        // Nothing more is accepted: a late request is rejected, then the client leaves.
        match conn.accept().await {
            Ok(None) => {}
            Ok(Some(_)) => panic!("a request accepted after GOAWAY"),
            Err(e) => assert!(e.is_h3_no_error(), "server ended with {e}"),
        }
    };
    let cli = async {
        let (mut driver, mut send) = h3::client::new(kwik_h3::Connection::new(client))
            .await
            .unwrap();
        let drive = async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await };
        let requests = async move {
            let (status, got) = get(&mut send, "/in-flight").await;
            assert_eq!(status, StatusCode::OK);
            assert!(got == body(1 << 20), "the request in flight finished whole");
            let req = Request::get("https://localhost/late").body(()).unwrap();
            match send.send_request(req).await {
                Err(e) => assert!(
                    e.to_string().contains("Remote is closing the connection"),
                    "refused locally after GOAWAY: {e}"
                ),
                Ok(mut stream) => {
                    let _ = stream.finish().await;
                    let e = stream.recv_response().await.unwrap_err();
                    assert!(
                        e.to_string().contains("H3_REQUEST_REJECTED"),
                        "refused by the server: {e}"
                    );
                }
            }
            drop(send);
        };
        let (closed, ()) = zip(drive, requests).await;
        assert!(closed.is_h3_no_error(), "client ended with {closed}");
    };
    zip(srv, cli).await;
}

macro_rules! suite {
    ($name:ident, $endpoint:ty, $run:expr, $spawn:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn h3_runs_unchanged_over_a_session() {
                let cert = TestCert::localhost();
                large();
                $run(async {
                    let server = <$endpoint>::server(cert.server(config()), loopback()).unwrap();
                    let client = <$endpoint>::client(loopback()).unwrap();
                    let addr = server.local_addr().unwrap();
                    let srv = async {
                        let session = server.accept().await.unwrap().await.unwrap();
                        assert_eq!(session.app_protocol().as_deref(), Some(kwik_h3::ALPN));
                        serve(session, $spawn).await;
                    };
                    let cli = async {
                        let session = client
                            .connect_with(cert.client(config()), addr, "localhost")
                            .unwrap()
                            .await
                            .unwrap();
                        assert_eq!(session.app_protocol().as_deref(), Some(kwik_h3::ALPN));
                        client_suite(session).await;
                    };
                    zip(srv, cli).await;
                });
            }

            #[test]
            fn goaway_finishes_the_request_in_flight_and_refuses_later_ones() {
                let cert = TestCert::localhost();
                $run(async {
                    let server = <$endpoint>::server(cert.server(config()), loopback()).unwrap();
                    let client = <$endpoint>::client(loopback()).unwrap();
                    let (server_session, client_session) =
                        session_pair(&server, &client, cert.client(config())).await;
                    goaway(server_session, client_session).await;
                });
            }

            #[test]
            fn a_session_that_is_not_http3_is_refused() {
                let cert = TestCert::localhost();
                $run(async {
                    let server = <$endpoint>::server(cert.server(config()), loopback()).unwrap();
                    let client = <$endpoint>::client(loopback()).unwrap();
                    let mut other = config();
                    other.app_protocols = vec![b"kwik-echo".to_vec()];
                    let refused = client
                        .connect_with(
                            cert.client(other),
                            server.local_addr().unwrap(),
                            "localhost",
                        )
                        .unwrap()
                        .await
                        .unwrap_err();
                    assert!(
                        matches!(
                            refused,
                            SessionError::PeerProtocolError {
                                code: ErrorCode::NoApplicationProtocol,
                                ..
                            }
                        ),
                        "{refused:?}"
                    );
                    let stats = server.stats();
                    assert_eq!(stats.sessions, 0, "the server holds no session");
                    assert_eq!(
                        stats.protocol_violations_of(ErrorCode::NoApplicationProtocol),
                        1
                    );
                });
            }
        }
    };
}

fn tokio_spawn(f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}

fn smol_spawn(f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    smol::spawn(f).detach();
}

suite!(on_tokio, kwik_tokio::Endpoint, tokio_run, tokio_spawn);
suite!(on_smol, kwik_smol::Endpoint, smol::block_on, smol_spawn);
