//! KWIK over one path against plain quinn 0.11, same machine, same run, loopback.
//!
//! Prints one line per figure: `figure <name> kwik=<v> quinn=<v> ratio=<kwik/quinn>`.
//! - `bulk_gbps`: one stream of `--bulk-mib` MiB (default 1024);
//! - `small_streams_per_s`: `--streams` (10,000) streams each echoing 1 KiB, 256 at a time;
//! - `rr_p99_us`: `--rr` (10,000) sequential 1 KiB request/response round trips, p99;
//! - `small_streams_per_s_carrier1` / `_carrier4`: the same with `streams_per_carrier` 1
//!   and 4 (the carrier trade-off), against the same quinn figure.
//!
//! Each figure is the median of `--reps` (3) repetitions, the two stacks alternating.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kwik_core::Config;
use kwik_examples::{client_config, self_signed, server_config};
use tokio::sync::Semaphore;

#[derive(Parser, Clone, Copy)]
struct Args {
    /// Size of the bulk transfer in MiB.
    #[arg(long, default_value_t = 1024)]
    bulk_mib: u64,
    /// Number of small echo streams.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Concurrency of the small streams.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Number of request/response round trips.
    #[arg(long, default_value_t = 10_000)]
    rr: usize,
    /// Repetitions of every measurement; the median is printed.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

const MSG: usize = 1024;

/// The same workload code for both stacks: their stream APIs have the same shape.
macro_rules! workloads {
    ($name:ident, $conn:ty) => {
        mod $name {
            use super::*;

            pub(crate) async fn bulk(client: $conn, server: $conn, total: u64) -> f64 {
                let block = Bytes::from(vec![0x5au8; 1 << 20]);
                let reader = tokio::spawn(async move {
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
                server: $conn,
                count: usize,
                concurrency: usize,
            ) -> f64 {
                let echo = tokio::spawn(async move {
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

            pub(crate) async fn rr(client: $conn, server: $conn, rounds: usize) -> Vec<Duration> {
                let echo = tokio::spawn(async move {
                    let (mut send, mut recv) = server.accept_bi().await.expect("accept_bi");
                    let mut buf = vec![0u8; MSG];
                    for _ in 0..rounds {
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
                for _ in 0..rounds {
                    let t = Instant::now();
                    send.write_all(&request).await.expect("write");
                    recv.read_exact(&mut buf).await.expect("read");
                    samples.push(t.elapsed());
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

fn kwik_config(streams_per_carrier: u32) -> Config {
    let mut c = Config::default();
    c.streams_per_carrier = streams_per_carrier;
    c.max_concurrent_bidi_streams = 1024;
    c.max_concurrent_uni_streams = 1024;
    c
}

async fn kwik_pair(
    streams_per_carrier: u32,
) -> anyhow::Result<(kwik_tokio::Session, kwik_tokio::Session)> {
    let (cert, key) = self_signed()?;
    let server = kwik_tokio::Endpoint::server(
        server_config(&cert, &key, kwik_config(streams_per_carrier))?,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )?;
    let addr = server.local_addr()?;
    let client = kwik_tokio::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let connecting = client.connect_with(
        client_config(&cert, kwik_config(streams_per_carrier))?,
        addr,
        "localhost",
    )?;
    let (c, s) = tokio::join!(connecting, async {
        server.accept().await.expect("incoming").await
    });
    Ok((c?, s?))
}

async fn quinn_pair() -> anyhow::Result<(quinn::Connection, quinn::Connection)> {
    let (cert, key) = self_signed()?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    transport.max_concurrent_uni_streams(1024u32.into());
    let transport = Arc::new(transport);
    let mut server_cfg = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key)?;
    server_cfg.transport_config(transport.clone());
    let server = quinn::Endpoint::server(server_cfg, SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = server.local_addr()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_cfg = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    client_cfg.transport_config(transport);
    let mut client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    client.set_default_client_config(client_cfg);
    let connecting = client.connect(addr, "localhost")?;
    let (c, s) = tokio::join!(connecting, async {
        server.accept().await.expect("incoming").await
    });
    Ok((c?, s?))
}

fn p99(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let i = (samples.len() * 99 / 100).min(samples.len().saturating_sub(1));
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn figure(name: &str, kwik: f64, quinn: f64) {
    println!(
        "figure {name} kwik={kwik:.3} quinn={quinn:.3} ratio={:.3}",
        kwik / quinn
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let total = args.bulk_mib << 20;
    let reps = args.reps.max(1);
    // The stacks alternate within each repetition, so slow phases of the machine hit both;
    // each figure is the median of the repetitions.
    let (mut kwik, mut quinn) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (c, s) = quinn_pair().await?;
        quinn.push(on_quinn::bulk(c, s, total).await);
        let (c, s) = kwik_pair(4).await?;
        kwik.push(on_kwik::bulk(c, s, total).await);
    }
    figure("bulk_gbps", median(kwik), median(quinn));

    let (mut kwik, mut quinn, mut kwik1) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (c, s) = quinn_pair().await?;
        quinn.push(on_quinn::small_streams(c, s, args.streams, args.concurrency).await);
        let (c, s) = kwik_pair(4).await?;
        kwik.push(on_kwik::small_streams(c, s, args.streams, args.concurrency).await);
        let (c, s) = kwik_pair(1).await?;
        kwik1.push(on_kwik::small_streams(c, s, args.streams, args.concurrency).await);
    }
    let quinn_small = median(quinn);
    let kwik4 = median(kwik);
    figure("small_streams_per_s", kwik4, quinn_small);
    figure("small_streams_per_s_carrier1", median(kwik1), quinn_small);
    figure("small_streams_per_s_carrier4", kwik4, quinn_small);

    let (mut kwik, mut quinn) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (c, s) = quinn_pair().await?;
        quinn.push(p99(on_quinn::rr(c, s, args.rr).await));
        let (c, s) = kwik_pair(4).await?;
        kwik.push(p99(on_kwik::rr(c, s, args.rr).await));
    }
    figure("rr_p99_us", median(kwik), median(quinn));
    Ok(())
}
