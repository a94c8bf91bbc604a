//! HTTP datagrams (RFC 9297) over a KWIK session, through `h3-datagram`: the client sends
//! datagrams tied to a request stream, the server echoes each on the same stream, and on
//! loopback every one comes back, on both runtimes.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::{Buf, Bytes};
use futures_lite::future::zip;
use h3_datagram::datagram_handler::HandleDatagramsExt;
use http::{Request, Response, StatusCode};
use kwik_async::Session;
use kwik_core::Config;
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::{session_pair, tokio_run};

const DATAGRAMS: usize = 500;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> Config {
    let mut c = Config::default();
    c.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    c
}

macro_rules! suite {
    ($name:ident, $endpoint:ty, $run:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn datagrams_of_a_request_are_echoed_on_loopback() {
                let cert = TestCert::localhost();
                $run(async {
                    let server = <$endpoint>::server(cert.server(config()), loopback()).unwrap();
                    let client = <$endpoint>::client(loopback()).unwrap();
                    let (server_session, client_session) =
                        session_pair(&server, &client, cert.client(config())).await;
                    echo(server_session, client_session).await;
                });
            }
        }
    };
}

suite!(on_tokio, kwik_tokio::Endpoint, tokio_run);
suite!(on_smol, kwik_smol::Endpoint, smol::block_on);

async fn echo(server_session: Session, client_session: Session) {
    let srv = async {
        let session = server_session;
        let mut conn: h3::server::Connection<kwik_h3::Connection, Bytes> = h3::server::builder()
            .enable_datagram(true)
            .build(kwik_h3::Connection::new(session))
            .await
            .unwrap();
        let resolver = conn.accept().await.unwrap().unwrap();
        let (_, mut stream) = resolver.resolve_request().await.unwrap();
        stream
            .send_response(Response::builder().status(StatusCode::OK).body(()).unwrap())
            .await
            .unwrap();
        let mut reader = conn.get_datagram_reader();
        let mut sender = conn.get_datagram_sender(stream.send_id());
        for _ in 0..DATAGRAMS {
            let d = reader.read_datagram().await.unwrap();
            assert_eq!(d.stream_id(), stream.send_id());
            sender.send_datagram(d.into_payload()).unwrap();
        }
        // The client ends the request once its echoes are in.
        while stream.recv_data().await.unwrap().is_some() {}
        stream.finish().await.unwrap();
        conn
    };
    let cli = async {
        let session = client_session;
        let (mut driver, mut send) = h3::client::builder()
            .enable_datagram(true)
            .build::<_, _, Bytes>(kwik_h3::Connection::new(session))
            .await
            .unwrap();
        // The first request stream is stream 0; its datagrams carry that id.
        let first = h3::quic::StreamId::try_from(0u64).unwrap();
        let mut sender = driver.get_datagram_sender(first);
        let mut reader = driver.get_datagram_reader();
        let drive = async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await };
        let exchange = async move {
            let req = Request::get("https://localhost/echo").body(()).unwrap();
            let mut stream = send.send_request(req).await.unwrap();
            assert_eq!(stream.id(), first);
            let resp = stream.recv_response().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mut echoed = vec![false; DATAGRAMS];
            for i in 0..DATAGRAMS {
                sender
                    .send_datagram(Bytes::from((i as u32).to_be_bytes().to_vec()))
                    .unwrap();
                // At most 64 in flight: the receive queues stay short.
                if i >= 64 {
                    take_echo(&mut reader, &mut echoed).await;
                }
            }
            for _ in 0..DATAGRAMS.min(64) {
                take_echo(&mut reader, &mut echoed).await;
            }
            assert!(echoed.iter().all(|e| *e), "every datagram came back");
            stream.finish().await.unwrap();
            while stream.recv_data().await.unwrap().is_some() {}
            drop(send);
        };
        zip(drive, exchange).await;
    };
    let _ = zip(srv, cli).await;
}

async fn take_echo(
    reader: &mut h3_datagram::datagram_handler::DatagramReader<kwik_h3::RecvDatagramHandler>,
    echoed: &mut [bool],
) {
    let d = reader.read_datagram().await.unwrap();
    let mut payload = d.into_payload();
    let i = payload.get_u32() as usize;
    assert!(!echoed[i], "datagram {i} came back twice");
    echoed[i] = true;
}
