//! The measured workloads: the same code over KWIK and quinn, h3 over both, and a striped
//! body from a primary and its secondaries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_core::GroupKey;
use kwik_examples::{client_config, self_signed, serve, server_config};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::pairs::LOOPBACK;

const MSG: usize = 1024;

/// The same workload code for both stacks: their stream APIs have the same shape.
macro_rules! workloads {
    ($name:ident, $conn:ty) => {
        workloads!($name, $conn, $conn);
    };
    ($name:ident, $conn:ty, $server:ty) => {
        pub(crate) mod $name {
            use super::*;

            pub(crate) async fn bulk(
                client: $conn,
                server: $server,
                srv: &Handle,
                total: u64,
            ) -> f64 {
                let block = Bytes::from(vec![0x5au8; 1 << 20]);
                let reader = srv.spawn(async move {
                    let mut recv = server.accept_uni().await.expect("accept_uni");
                    let mut n = 0u64;
                    while let Some(len) = recv.next_chunk_len().await {
                        n += len as u64;
                    }
                    n
                });
                let started = Instant::now();
                let mut send = client.open_uni().await.expect("open_uni");
                for _ in 0..total / block.len() as u64 {
                    send.write_chunk(block.clone()).await.expect("write");
                }
                send.finish().expect("finish");
                let n = reader.await.expect("reader");
                assert_eq!(n, total);
                n as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9
            }

            pub(crate) async fn small_streams(
                client: $conn,
                server: $server,
                srv: &Handle,
                count: usize,
                concurrency: usize,
            ) -> f64 {
                let echo = srv.spawn(async move {
                    for _ in 0..count {
                        let (mut send, mut recv) = server.accept_bi().await.expect("accept_bi");
                        tokio::spawn(async move {
                            let data = recv.read_to_end(MSG).await.expect("read");
                            send.write_all(&data).await.expect("write");
                            send.finish().expect("finish");
                            let _ = send.stopped().await;
                        });
                    }
                    server
                });
                let limit = Arc::new(Semaphore::new(concurrency));
                let started = Instant::now();
                let mut tasks = Vec::with_capacity(count);
                for _ in 0..count {
                    let permit = limit.clone().acquire_owned().await.expect("semaphore");
                    let client = client.clone();
                    tasks.push(tokio::spawn(async move {
                        let (mut send, mut recv) = client.open_bi().await.expect("open_bi");
                        send.write_all(&[1u8; MSG]).await.expect("write");
                        send.finish().expect("finish");
                        let data = recv.read_to_end(MSG).await.expect("read");
                        assert_eq!(data.len(), MSG);
                        drop(permit);
                    }));
                }
                for t in tasks {
                    t.await.expect("stream task");
                }
                let rate = count as f64 / started.elapsed().as_secs_f64();
                let _server = echo.await.expect("echo");
                rate
            }

            pub(crate) async fn rr(
                client: $conn,
                server: $server,
                srv: &Handle,
                warmup: usize,
                rounds: usize,
            ) -> Vec<Duration> {
                let echo = srv.spawn(async move {
                    let (mut send, mut recv) = server.accept_bi().await.expect("accept_bi");
                    let mut buf = vec![0u8; MSG];
                    for _ in 0..warmup + rounds {
                        recv.read_exact(&mut buf).await.expect("read");
                        send.write_all(&buf).await.expect("write");
                    }
                    let _ = send.finish();
                    server
                });
                let (mut send, mut recv) = client.open_bi().await.expect("open_bi");
                let request = vec![7u8; MSG];
                let mut buf = vec![0u8; MSG];
                let mut samples = Vec::with_capacity(rounds);
                for i in 0..warmup + rounds {
                    let t = Instant::now();
                    send.write_all(&request).await.expect("write");
                    recv.read_exact(&mut buf).await.expect("read");
                    if i >= warmup {
                        samples.push(t.elapsed());
                    }
                }
                let _server = echo.await.expect("echo");
                samples
            }
        }
    };
}

/// The one call whose shape differs: quinn's `read_chunk` takes an `ordered` flag.
trait NextChunk {
    async fn next_chunk_len(&mut self) -> Option<usize>;
}

impl NextChunk for kwik_tokio::RecvStream {
    async fn next_chunk_len(&mut self) -> Option<usize> {
        self.read_chunk(usize::MAX)
            .await
            .expect("read")
            .map(|b| b.len())
    }
}

impl NextChunk for quinn::RecvStream {
    async fn next_chunk_len(&mut self) -> Option<usize> {
        self.read_chunk(usize::MAX, true)
            .await
            .expect("read")
            .map(|c| c.bytes.len())
    }
}

workloads!(on_kwik, kwik_tokio::Session);
workloads!(on_quinn, quinn::Connection);
workloads!(on_plain, quinn::Connection, kwik_tokio::Session);

/// The same h3 code over both stacks.
macro_rules! h3_workload {
    ($name:ident, $conn:ty) => {
        /// `count` GETs of 1 KiB, `concurrency` at a time, from h3's client to h3's server;
        /// GETs per second.
        pub(crate) async fn $name(
            client: $conn,
            server: $conn,
            srv: &Handle,
            count: usize,
            concurrency: usize,
        ) -> f64 {
            let body = Bytes::from(vec![0x61u8; MSG]);
            let serving = srv.spawn(async move {
                let mut conn: h3::server::Connection<$conn, Bytes> =
                    h3::server::Connection::new(server)
                        .await
                        .expect("h3 server");
                while let Ok(Some(resolver)) = conn.accept().await {
                    let body = body.clone();
                    tokio::spawn(async move {
                        let (_, mut stream) = resolver.resolve_request().await.expect("request");
                        let resp = http::Response::builder()
                            .status(200)
                            .body(())
                            .expect("response");
                        stream.send_response(resp).await.expect("send_response");
                        stream.send_data(body).await.expect("send_data");
                        stream.finish().await.expect("finish");
                    });
                }
            });
            let (mut driver, send) = h3::client::new(client).await.expect("h3 client");
            let driving = tokio::spawn(async move {
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            });
            let limit = Arc::new(Semaphore::new(concurrency));
            let started = Instant::now();
            let mut tasks = Vec::with_capacity(count);
            for _ in 0..count {
                let permit = limit.clone().acquire_owned().await.expect("semaphore");
                let mut send = send.clone();
                tasks.push(tokio::spawn(async move {
                    let req = http::Request::get("https://localhost/1k")
                        .body(())
                        .expect("request");
                    let mut stream = send.send_request(req).await.expect("send_request");
                    stream.finish().await.expect("finish");
                    stream.recv_response().await.expect("response");
                    let mut n = 0;
                    while let Some(chunk) = stream.recv_data().await.expect("data") {
                        n += bytes::Buf::remaining(&chunk);
                    }
                    assert_eq!(n, MSG);
                    drop(permit);
                }));
            }
            for t in tasks {
                t.await.expect("GET task");
            }
            let rate = count as f64 / started.elapsed().as_secs_f64();
            drop(send);
            let _ = driving.await;
            let _ = serving.await;
            rate
        }
    };
}

h3_workload!(h3_on_kwik, kwik_h3::Connection);
h3_workload!(h3_on_quinn, h3_quinn::Connection);

/// A primary with `secondaries` secondaries on the server thread; the client stripes
/// `total` bytes from them and counts what arrives. Returns Gbit/s.
pub(crate) async fn stripe(srv: &Handle, secondaries: usize, total: u64) -> anyhow::Result<f64> {
    let (cert, key) = self_signed()?;
    let group = GroupKey::new([0x42; 32]);
    let mut config = kwik_examples::bulk_config();
    config.max_concurrent_bidi_streams = 16;
    let mut addrs = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..=secondaries {
        let mut sc = server_config(&cert, &key, config.clone())?;
        sc.group_key(group.clone());
        let ep = srv
            .spawn(async move { kwik_tokio::Endpoint::server(sc, LOOPBACK) })
            .await??;
        addrs.push(ep.local_addr()?);
        endpoints.push(ep);
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let peers = if i == 0 {
            addrs[1..].to_vec()
        } else {
            Vec::new()
        };
        srv.spawn(serve(ep.clone(), peers, "localhost".to_owned()));
    }
    let client = kwik_tokio::Endpoint::client(LOOPBACK)?;
    let session = client
        .connect_with(client_config(&cert, config)?, addrs[0], "localhost")?
        .await?;
    kwik_examples::wait_paths(&session, secondaries, Duration::from_secs(5)).await?;
    let started = Instant::now();
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(format!("body {total}").as_bytes()).await?;
    send.finish()?;
    let mut n = 0u64;
    while let Some(len) = recv.next_chunk_len().await {
        n += len as u64;
    }
    anyhow::ensure!(n == total, "striped {n} of {total} bytes");
    let gbps = n as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9;
    session.close(kwik_tokio::VarInt::from_u32(0), b"done");
    for ep in &endpoints {
        ep.close(kwik_tokio::VarInt::from_u32(0), b"done");
    }
    Ok(gbps)
}
