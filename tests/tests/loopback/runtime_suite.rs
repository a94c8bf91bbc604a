//! One behavioural suite over real loopback sockets, run against both runtimes:
//! echo, 100 concurrent streams, a 256 MiB transfer with a matching checksum, periodic
//! metrics snapshots, and typed session errors after a close.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use futures_lite::future::zip;
use kwik_async::{Bytes, ClientConfig, Endpoint, PathId, ReadError, Session, SessionError, VarInt};
use kwik_core::Config;
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::tokio_run;
use sha2::{Digest, Sha256};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> Config {
    let mut c = Config::default();
    c.max_concurrent_bidi_streams = 128;
    c
}

async fn accept(server: &Endpoint) -> Session {
    server
        .accept()
        .await
        .expect("incoming")
        .await
        .expect("session")
}

async fn connect(client: &Endpoint, server: SocketAddr, cfg: ClientConfig) -> Session {
    client
        .connect_with(cfg, server, "localhost")
        .expect("connect")
        .await
        .expect("session")
}

async fn echo_streams(
    server: Endpoint,
    client: Endpoint,
    cfg: ClientConfig,
    streams: usize,
    len: usize,
) {
    let addr = server.local_addr().unwrap();
    let srv = async {
        let session = accept(&server).await;
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let (mut send, mut recv) = session.accept_bi().await.expect("accept_bi");
            tasks.push(async move {
                let data = recv.read_to_end(usize::MAX).await.expect("read");
                send.write_all(&data).await.expect("write");
                send.finish().expect("finish");
                send.stopped().await.expect("stopped");
            });
        }
        futures::future::join_all(tasks).await;
        session
    };
    let cli = async {
        let session = connect(&client, addr, cfg).await;
        let mut tasks = Vec::new();
        for i in 0..streams {
            let (mut send, mut recv) = session.open_bi().await.expect("open_bi");
            let data = payload(i as u64, len);
            tasks.push(async move {
                let writer = async {
                    send.write_chunk(data.clone()).await.expect("write");
                    send.finish().expect("finish");
                };
                let reader = async { recv.read_to_end(usize::MAX).await.expect("read") };
                let ((), echoed) = zip(writer, reader).await;
                assert_eq!(sha256(&echoed), sha256(&data), "stream {i}");
            });
        }
        futures::future::join_all(tasks).await;
        session
    };
    let (server_session, client_session) = zip(srv, cli).await;
    client_session.close(VarInt::from_u32(7), b"bye");
    let error = server_session.closed().await;
    assert_eq!(
        error,
        SessionError::ApplicationClosed {
            code: VarInt::from_u32(7),
            reason: bytes::Bytes::from_static(b"bye")
        }
    );
}

async fn bulk(server: Endpoint, client: Endpoint, cfg: ClientConfig, total: usize) {
    let addr = server.local_addr().unwrap();
    let block = payload(99, 1 << 20);
    let srv = async {
        let session = accept(&server).await;
        let mut recv = session.accept_uni().await.expect("accept_uni");
        let mut hasher = Sha256::new();
        let mut n = 0;
        while let Some(chunk) = recv.read_chunk(usize::MAX).await.expect("read") {
            hasher.update(&chunk);
            n += chunk.len();
        }
        (n, <[u8; 32]>::from(hasher.finalize()), session)
    };
    let cli = async {
        let session = connect(&client, addr, cfg).await;
        let mut send = session.open_uni().await.expect("open_uni");
        let mut hasher = Sha256::new();
        for _ in 0..total / block.len() {
            hasher.update(&block);
            send.write_chunk(block.clone()).await.expect("write");
        }
        send.finish().expect("finish");
        send.stopped().await.expect("stopped");
        (<[u8; 32]>::from(hasher.finalize()), session)
    };
    let ((n, received, _s), (sent, _c)) = zip(srv, cli).await;
    assert_eq!(n, total);
    assert_eq!(received, sent);
}

async fn reset_is_typed(server: Endpoint, client: Endpoint, cfg: ClientConfig) {
    let addr = server.local_addr().unwrap();
    let srv = async {
        let session = accept(&server).await;
        let mut recv = session.accept_uni().await.expect("accept_uni");
        let mut buf = [0u8; 4];
        recv.read_exact(&mut buf).await.expect("read_exact");
        assert_eq!(&buf, b"abcd");
        let r = recv.read_to_end(usize::MAX).await;
        (r, session)
    };
    let cli = async {
        let session = connect(&client, addr, cfg).await;
        let mut send = session.open_uni().await.expect("open_uni");
        send.write_all(b"abcd").await.expect("write");
        // Give the bytes a moment to arrive before abandoning the stream.
        send.stopped_or_timeout().await;
        send.reset(VarInt::from_u32(42)).expect("reset");
        session
    };
    let ((r, _s), _c) = zip(srv, cli).await;
    assert!(
        matches!(r, Err(kwik_async::ReadToEndError::Read(ReadError::Reset(code))) if code == VarInt::from_u32(42)),
        "{r:?}"
    );
}

async fn raw_datagrams(server: Endpoint, client: Endpoint, cfg: ClientConfig) {
    let addr = server.local_addr().unwrap();
    let srv = async {
        let session = accept(&server).await;
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(session.read_raw().await.expect("read_raw"));
        }
        (got, session)
    };
    let cli = async {
        let session = connect(&client, addr, cfg).await;
        for i in 0..20u8 {
            session
                .send_raw(PathId::PRIMARY, Bytes::from(vec![i; 100]))
                .expect("send_raw");
            futures_lite::future::yield_now().await;
        }
        session
    };
    let ((got, _s), client_session) = zip(srv, cli).await;
    for (path, data) in &got {
        assert_eq!(*path, PathId::PRIMARY);
        assert_eq!(data.len(), 100);
        assert!(data.iter().all(|b| *b == data[0]));
    }
    assert_eq!(client_session.stats().paths[0].raw_sent, 20);
}

/// A client with periodic metrics sends 4 MiB: its snapshots arrive while the session
/// lives, count the bytes as they go, and end with the session's error.
async fn metrics_snapshots(server: Endpoint, client: Endpoint, cfg: ClientConfig) {
    const TOTAL: u64 = 4 << 20;
    let addr = server.local_addr().unwrap();
    let srv = async {
        let session = accept(&server).await;
        let mut recv = session.accept_uni().await.expect("accept_uni");
        let data = recv.read_to_end(TOTAL as usize).await.expect("read");
        (data.len() as u64, session)
    };
    let cli = async {
        let session = connect(&client, addr, cfg).await;
        let mut send = session.open_uni().await.expect("open_uni");
        send.write_all(&vec![3u8; TOTAL as usize])
            .await
            .expect("write");
        send.finish().expect("finish");
        // Snapshots come every 20 ms; a few hundred is seconds of waiting for the count.
        let mut snapshots = 0;
        let mut last = 0;
        while last < TOTAL && snapshots < 500 {
            let m = session.metrics().await.expect("metrics");
            assert!(m.stream_bytes_written >= last, "the count never goes back");
            assert_eq!(m.paths.len(), 1, "one path in every snapshot");
            last = m.stream_bytes_written;
            snapshots += 1;
        }
        assert_eq!(
            last, TOTAL,
            "{snapshots} snapshots never counted every byte"
        );
        session
    };
    let ((read, _server_session), session) = zip(srv, cli).await;
    assert_eq!(read, TOTAL);
    session.close(VarInt::from_u32(0), b"done");
    assert!(
        session.metrics().await.is_err(),
        "a closed session yields no more snapshots"
    );
}

trait StoppedOrTimeout {
    async fn stopped_or_timeout(&mut self);
}

impl StoppedOrTimeout for kwik_async::SendStream {
    async fn stopped_or_timeout(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
        while std::time::Instant::now() < deadline {
            futures_lite::future::yield_now().await;
        }
    }
}

macro_rules! suite {
    ($name:ident, $endpoint:path, $run:expr) => {
        mod $name {
            use super::*;

            fn endpoints(cert: &TestCert) -> (Endpoint, Endpoint, ClientConfig) {
                let server = <$endpoint>::server(cert.server(config()), loopback()).unwrap();
                let client = <$endpoint>::client(loopback()).unwrap();
                ((*server).clone(), (*client).clone(), cert.client(config()))
            }

            #[test]
            fn echo() {
                let cert = TestCert::localhost();
                $run(async {
                    let (s, c, cfg) = endpoints(&cert);
                    echo_streams(s, c, cfg, 1, 1000).await
                });
            }

            #[test]
            fn hundred_concurrent_streams() {
                let cert = TestCert::localhost();
                $run(async {
                    let (s, c, cfg) = endpoints(&cert);
                    echo_streams(s, c, cfg, 100, 64 * 1024).await
                });
            }

            #[test]
            fn transfer_256_mib() {
                let cert = TestCert::localhost();
                $run(async {
                    let (s, c, cfg) = endpoints(&cert);
                    bulk(s, c, cfg, 256 << 20).await
                });
            }

            #[test]
            fn raw_datagrams_travel_on_the_path() {
                let cert = TestCert::localhost();
                $run(async {
                    let (s, c, cfg) = endpoints(&cert);
                    raw_datagrams(s, c, cfg).await
                });
            }

            #[test]
            fn metrics_snapshots_reach_the_application() {
                let cert = TestCert::localhost();
                let mut with_metrics = config();
                with_metrics.metrics_enabled = true;
                with_metrics.metrics_interval = std::time::Duration::from_millis(20);
                $run(async {
                    let (s, c, _) = endpoints(&cert);
                    metrics_snapshots(s, c, cert.client(with_metrics)).await
                });
            }

            #[test]
            fn reset_reaches_reader_as_typed_error() {
                let cert = TestCert::localhost();
                $run(async {
                    let (s, c, cfg) = endpoints(&cert);
                    reset_is_typed(s, c, cfg).await
                });
            }
        }
    };
}

suite!(on_tokio, kwik_tokio::Endpoint, tokio_run);
suite!(on_smol, kwik_smol::Endpoint, smol::block_on);
