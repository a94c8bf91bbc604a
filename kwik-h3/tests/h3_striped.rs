//! A striped HTTP/3 response on loopback: a primary and two secondaries serve one GET's
//! body at once, and the client reads an ordinary h3 response. One secondary's copy of the
//! content differs: it refuses its ranges, and the client pulls them from the others.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::{Either, select};
use http::{Request, Response, StatusCode};
use kwik_async::{GroupKey, PathEvent, Role, ServerConfig, Session};
use kwik_core::Config;
use kwik_h3::{Content, StripedRequest};
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::tokio_run;

const BODY: usize = 16 << 20;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> Config {
    let mut c = Config::default();
    c.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    c.stream_receive_window = 32 << 20;
    c.receive_window = 64 << 20;
    c
}

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

fn spawn(f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}

/// The primary's HTTP/3 server: `GET /file` is answered with a striped body.
async fn serve_h3(session: Session, file: Content) {
    let conn = kwik_h3::Connection::new(session);
    let striper = conn.striper();
    let mut h3: h3::server::Connection<kwik_h3::Connection, Bytes> =
        h3::server::Connection::new(conn).await.unwrap();
    while let Ok(Some(resolver)) = h3.accept().await {
        let (req, mut stream) = resolver.resolve_request().await.unwrap();
        assert_eq!(req.uri().path(), "/file");
        stream
            .send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-length", file.bytes.len())
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        let request = StripedRequest {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            validator: file.validator.clone(),
        };
        striper
            .send_striped(&mut stream, &request, file.bytes.len() as u64)
            .await
            .unwrap();
        stream.finish().await.unwrap();
    }
}

/// Every server: its share of striped bodies, from its own copy of `/file`; the primary
/// also adds the secondaries and answers requests.
async fn serve(server: kwik_tokio::Endpoint, secondaries: Vec<SocketAddr>, copy: Bytes) {
    // The validator is computed once per copy, as a server would keep it beside the file.
    let mine = content(&copy);
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
            tokio::spawn(serve_h3(session, mine.clone()));
        }
    }
}

#[test]
fn a_striped_get_arrives_whole_and_a_stale_copy_is_refused() {
    let cert = TestCert::localhost();
    tokio_run(async {
        let file = payload(21, BODY);
        let mut stale = file.to_vec();
        stale[BODY / 2] ^= 1;
        let copies = [file.clone(), file.clone(), Bytes::from(stale)];
        let servers: Vec<kwik_tokio::Endpoint> = (0..3)
            .map(|_| kwik_tokio::Endpoint::server(server_config(&cert), loopback()).unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
        for (i, s) in servers.iter().enumerate() {
            let secondaries = if i == 0 {
                addrs[1..].to_vec()
            } else {
                Vec::new()
            };
            tokio::spawn(serve(s.clone(), secondaries, copies[i].clone()));
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
        let get = async {
            let req = Request::get("https://localhost/file").body(()).unwrap();
            let mut stream = send.send_request(req).await.unwrap();
            stream.finish().await.unwrap();
            let resp = stream.recv_response().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mut got = BytesMut::with_capacity(BODY);
            while let Some(mut chunk) = stream.recv_data().await.unwrap() {
                got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            assert!(stream.recv_trailers().await.unwrap().is_none());
            got.freeze()
        };
        let got = match select(Box::pin(get), Box::pin(drive)).await {
            Either::Left((got, _)) => got,
            Either::Right((e, _)) => panic!("h3 connection ended first: {e}"),
        };
        assert_eq!(got.len(), BODY);
        assert!(sha256(&got) == sha256(&file), "the body checksum differs");
        let paths = session.paths();
        println!("paths {paths:#?}");
        let from = |addr: SocketAddr| {
            paths
                .iter()
                .find(|p| p.address == addr)
                .map_or(0, |p| p.bytes_received)
        };
        assert!(
            from(addrs[1]) > 1 << 20,
            "the fresh secondary served a share"
        );
        assert!(
            from(addrs[2]) < 1 << 20,
            "the stale secondary served none of the body: {} bytes",
            from(addrs[2])
        );
        assert!(
            servers[2].stats().pulls_refused >= 1,
            "the stale copy refused"
        );
        assert_eq!(servers[1].stats().pulls_refused, 0);
        drop(send);
        session.close(kwik_async::VarInt::from_u32(0x100), b"done");
        client.wait_idle().await;
    });
}
