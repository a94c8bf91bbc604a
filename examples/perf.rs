//! KWIK against plain quinn 0.11 on loopback, same machine, same run.
//!
//! Every figure is the median of `--reps` (9) repetitions, printed with its minimum and
//! maximum; the two stacks alternate within each repetition, so that slow phases of the
//! machine hit both. Each side of a connection runs on its own current-thread runtime
//! (the server on a thread of its own, the client on the main thread), so the two stacks
//! are measured alike.
//!
//! - `bulk_gbps`: one stream of `--bulk-mib` MiB;
//! - `small_streams_per_s`: `--streams` streams each echoing 1 KiB, `--concurrency` at
//!   a time, with the default `streams_per_carrier` (also with 1, 4, 16 and 64, against
//!   the same quinn figure);
//! - `rr_p50_us`, `rr_p99_us`, `rr_p999_us`: sequential 1 KiB request/response round
//!   trips, after a warm-up;
//! - `h3_gets_per_s`: `--h3-gets` HTTP/3 GETs of 1 KiB, `--concurrency` at a time, h3's
//!   client and server over `kwik-h3` against the same over `h3-quinn` and plain quinn;
//! - `stripe_gbps_1`, `stripe_gbps_3`: one body striped (`stripe`) by a primary alone and
//!   by a primary with two secondaries, against `bulk_gbps` of the same run;
//! - `limit_udp_gbps`: a plain UDP socket pair with GSO and GRO, no crypto;
//! - `limit_aead_gbps`: AES-128-GCM (ring) sealing and opening 1,200-byte packets on one
//!   core: the rate at which one core can both seal and open;
//! - `cpu_ns_per_byte` (bulk) and `cpu_us_per_stream` (small streams): CPU time of the
//!   whole process (every thread's, from /proc) per byte and per stream.
//!
//! `paired` beside a ratio is the median of the per-repetition ratios: each KWIK run
//! against the quinn run next to it, so that a slow phase of the machine hits both sides of
//! a pair. `--json PATH` also writes every figure as one JSON object per line.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kwik_core::{Config, GroupKey};
use kwik_examples::{client_config, self_signed, serve, server_config};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

#[derive(Parser, Clone)]
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
    /// Number of HTTP/3 GETs for the h3 figure.
    #[arg(long, default_value_t = 10_000)]
    h3_gets: usize,
    /// Number of request/response round trips (after as many warm-up rounds / 10).
    #[arg(long, default_value_t = 20_000)]
    rr: usize,
    /// Repetitions of every measurement; the median is printed with min and max.
    #[arg(long, default_value_t = 9)]
    reps: usize,
    /// Only these figures (comma-separated prefixes: bulk, small, rr, h3, stripe, limit).
    #[arg(long)]
    only: Option<String>,
    /// Also write the figures as JSON lines here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run only one stack's side of one figure, for profiles: `kwik` or `quinn`, then
    /// optionally `-small` or `-rr` (the bulk figure otherwise).
    #[arg(long)]
    profile: Option<String>,
    /// Also draw KWIK ÷ quinn for every figure as an SVG file here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// Logical streams per carrier for KWIK's figures (the library's default otherwise).
    #[arg(long)]
    streams_per_carrier: Option<u32>,
    /// Record KWIK's metrics into a Prometheus recorder, rendered every 5 s as a scrape
    /// would, to measure what they cost (built with the `metrics` feature, the default;
    /// without this flag they go nowhere).
    #[arg(long)]
    metrics: bool,
}

const MSG: usize = 1024;

/// Streams per carrier the small-stream figure is also measured with, beside the default.
const SHARING: [u32; 4] = [1, 4, 16, 64];

/// A current-thread runtime on a thread of its own, for the server side.
struct ServerThread {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            tx.send(rt.handle().clone()).expect("handle");
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        Self {
            handle: rx.recv().expect("server runtime started"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The same workload code for both stacks: their stream APIs have the same shape.
macro_rules! workloads {
    ($name:ident, $conn:ty) => {
        mod $name {
            use super::*;

            pub(crate) async fn bulk(
                client: $conn,
                server: $conn,
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
                server: $conn,
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
                server: $conn,
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

/// The same h3 code over both stacks.
macro_rules! h3_workload {
    ($name:ident, $conn:ty) => {
        /// `count` GETs of 1 KiB, `concurrency` at a time, from h3's client to h3's server;
        /// GETs per second.
        async fn $name(
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

/// Logical streams per carrier: as asked, else the library's default.
fn sharing(args: &Args) -> u32 {
    args.streams_per_carrier
        .unwrap_or(Config::default().streams_per_carrier)
}

fn kwik_config(streams_per_carrier: u32) -> Config {
    let mut c = Config::default();
    c.streams_per_carrier = streams_per_carrier;
    c.max_concurrent_bidi_streams = 1024;
    c.max_concurrent_uni_streams = 1024;
    c
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

async fn kwik_pair(
    srv: &Handle,
    streams_per_carrier: u32,
) -> anyhow::Result<(kwik_tokio::Session, kwik_tokio::Session)> {
    let (cert, key) = self_signed()?;
    let config = server_config(&cert, &key, kwik_config(streams_per_carrier))?;
    let server = srv
        .spawn(async move { kwik_tokio::Endpoint::server(config, LOOPBACK) })
        .await??;
    let addr = server.local_addr()?;
    let accepted = srv.spawn(async move {
        let session = server.accept().await.expect("incoming").await;
        (session, server)
    });
    let client = kwik_tokio::Endpoint::client(LOOPBACK)?;
    let c = client
        .connect_with(
            client_config(&cert, kwik_config(streams_per_carrier))?,
            addr,
            "localhost",
        )?
        .await?;
    let (s, _server) = accepted.await?;
    Ok((c, s?))
}

async fn quinn_pair(srv: &Handle) -> anyhow::Result<(quinn::Connection, quinn::Connection)> {
    let (cert, key) = self_signed()?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    transport.max_concurrent_uni_streams(1024u32.into());
    let transport = Arc::new(transport);
    let mut server_cfg = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key)?;
    server_cfg.transport_config(transport.clone());
    let server = srv
        .spawn(async move { quinn::Endpoint::server(server_cfg, LOOPBACK) })
        .await??;
    let addr = server.local_addr()?;
    let accepted = srv.spawn(async move {
        let conn = server.accept().await.expect("incoming").await;
        (conn, server)
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_cfg = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    client_cfg.transport_config(transport);
    let mut client = quinn::Endpoint::client(LOOPBACK)?;
    client.set_default_client_config(client_cfg);
    let c = client.connect(addr, "localhost")?.await?;
    let (s, _server) = accepted.await?;
    Ok((c, s?))
}

/// A primary with `secondaries` secondaries on the server thread; the client stripes
/// `total` bytes from them and counts what arrives. Returns Gbit/s.
async fn stripe(srv: &Handle, secondaries: usize, total: u64) -> anyhow::Result<f64> {
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

/// Plain UDP on loopback with GSO and GRO (quinn-udp), no crypto: 1,200-byte datagrams
/// sent in batches of 10 for about `secs`. Returns the Gbit/s received.
fn limit_udp(secs: f64) -> anyhow::Result<f64> {
    use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
    use std::io::IoSliceMut;
    let rx = std::net::UdpSocket::bind(LOOPBACK)?;
    let tx = std::net::UdpSocket::bind(LOOPBACK)?;
    let dst = rx.local_addr()?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let rx_state = UdpSocketState::new((&rx).into())?;
    let tx_state = UdpSocketState::new((&tx).into())?;
    let _ = rx_state.set_recv_buffer_size((&rx).into(), 8 << 20);
    let _ = tx_state.set_send_buffer_size((&tx).into(), 8 << 20);
    let segments = tx_state.max_gso_segments().clamp(1, 10);
    let payload = vec![0xa5u8; 1200 * segments];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Transmit {
                    destination: dst,
                    ecn: None,
                    contents: &payload,
                    segment_size: (segments > 1).then_some(1200),
                    src_ip: None,
                };
                let _ = tx_state.send((&tx).into(), &t);
            }
        })
    };
    let gro = rx_state.gro_segments().max(1);
    let batch = quinn_udp::BATCH_SIZE.max(1);
    let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; 1500 * gro]).collect();
    let mut meta = vec![RecvMeta::default(); batch];
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        if let Ok(n) = rx_state.recv((&rx).into(), &mut slices, &mut meta) {
            bytes += meta[..n].iter().map(|m| m.len as u64).sum::<u64>();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    Ok(bytes as f64 * 8.0 / elapsed / 1e9)
}

/// AES-128-GCM with ring on one core: (seal, open, both) in Gbit/s of 1,200-byte packets.
fn limit_aead(secs: f64) -> anyhow::Result<(f64, f64, f64)> {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &[7u8; 16]).map_err(|_| anyhow::anyhow!("aead key"))?,
    );
    let nonce = |i: u64| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&i.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut packet = vec![0x3cu8; 1200];
    let mut sealed = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for _ in 0..1024 {
            let tag = key
                .seal_in_place_separate_tag(nonce(i), Aad::empty(), &mut packet)
                .map_err(|_| anyhow::anyhow!("seal"))?;
            if sealed.len() < 1024 {
                let mut p = packet.clone();
                p.extend_from_slice(tag.as_ref());
                sealed.push((i, p));
            }
            i += 1;
        }
    }
    let seal = (i * 1200) as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9;
    let started = Instant::now();
    let mut opened = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for (n, p) in &sealed {
            let mut buf = p.clone();
            key.open_in_place(nonce(*n), Aad::empty(), &mut buf)
                .map_err(|_| anyhow::anyhow!("open"))?;
            opened += 1;
        }
    }
    let open = (opened * 1200) as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9;
    Ok((seal, open, 1.0 / (1.0 / seal + 1.0 / open)))
}

/// CPU time of every thread of this process so far (from /proc, Linux), in ns.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Median, min and max.
#[derive(Clone, Copy, Default)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Stat::default();
    }
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn percentile(samples: &mut [Duration], per_mille: usize) -> f64 {
    samples.sort();
    let i = (samples.len() * per_mille / 1000).min(samples.len().saturating_sub(1));
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

struct Report {
    json: Option<std::fs::File>,
    /// Every figure's KWIK ÷ quinn ratio, for the picture.
    ratios: Vec<(String, f64)>,
}

impl Report {
    /// Prints a figure from its repetitions: KWIK's median, min and max, quinn's, the ratio
    /// of the medians and the median of the per-repetition ratios (each KWIK repetition
    /// against the quinn one beside it, which cancels the machine's slow phases). Returns
    /// KWIK's statistics.
    fn figure(&mut self, name: &str, kwik: &[f64], quinn: Option<&[f64]>) -> Stat {
        let paired = quinn
            .filter(|q| q.len() == kwik.len())
            .map(|q| stat(kwik.iter().zip(q).map(|(k, q)| k / q).collect()).median);
        let (kwik, quinn) = (stat(kwik.to_vec()), quinn.map(|q| stat(q.to_vec())));
        let ratio = quinn.map(|q| kwik.median / q.median);
        if let Some(r) = ratio {
            self.ratios.push((name.to_owned(), r));
        }
        let q = quinn.map_or(String::new(), |q| {
            format!(" quinn={:.3} [{:.3}..{:.3}]", q.median, q.min, q.max)
        });
        let r = ratio.map_or(String::new(), |r| format!(" ratio={r:.3}"));
        let pr = paired.map_or(String::new(), |r| format!(" paired={r:.3}"));
        println!(
            "figure {name} kwik={:.3} [{:.3}..{:.3}]{q}{r}{pr}",
            kwik.median, kwik.min, kwik.max
        );
        if let Some(f) = &mut self.json {
            let quinn = quinn.map_or("null".to_owned(), |q| {
                format!(
                    r#"{{"median":{},"min":{},"max":{}}}"#,
                    q.median, q.min, q.max
                )
            });
            let none = || "null".to_owned();
            let _ = writeln!(
                f,
                r#"{{"figure":"{name}","kwik":{{"median":{},"min":{},"max":{}}},"quinn":{quinn},"ratio":{},"paired_ratio":{}}}"#,
                kwik.median,
                kwik.min,
                kwik.max,
                ratio.map_or_else(none, |r| r.to_string()),
                paired.map_or_else(none, |r| r.to_string())
            );
        }
        kwik
    }

    fn single(&mut self, name: &str, value: f64, note: &str) {
        println!("figure {name} {value:.3} {note}");
        if let Some(f) = &mut self.json {
            let _ = writeln!(f, r#"{{"figure":"{name}","value":{value}}}"#);
        }
    }
}

/// Installs a Prometheus recorder and renders it every 5 s on a thread of its own.
#[cfg(feature = "metrics")]
fn record_metrics() -> anyhow::Result<()> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
            std::hint::black_box(handle.render());
        }
    });
    Ok(())
}

#[cfg(not(feature = "metrics"))]
fn record_metrics() -> anyhow::Result<()> {
    anyhow::bail!("--metrics: built without the `metrics` feature")
}

fn wanted(args: &Args, figure: &str) -> bool {
    args.only
        .as_deref()
        .is_none_or(|only| only.split(',').any(|p| figure.starts_with(p.trim())))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "metrics feature {}, recorder {}",
        if cfg!(feature = "metrics") {
            "on"
        } else {
            "off"
        },
        if args.metrics { "on" } else { "off" }
    );
    if args.metrics {
        record_metrics()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let total = args.bulk_mib << 20;
    let reps = args.reps.max(1);
    let server = ServerThread::start();
    let srv = &server.handle;
    let mut report = Report {
        json: args.json.as_ref().map(std::fs::File::create).transpose()?,
        ratios: Vec::new(),
    };
    if let Some(profile) = &args.profile {
        let (stack, figure) = profile.split_once('-').unwrap_or((profile, "bulk"));
        let quinn = match stack {
            "quinn" => true,
            "kwik" => false,
            _ => anyhow::bail!("--profile: unknown stack {stack}"),
        };
        for _ in 0..reps {
            let (n, c) = (args.streams, args.concurrency);
            let value = match (figure, quinn) {
                ("bulk", true) => {
                    let (c, s) = quinn_pair(srv).await?;
                    on_quinn::bulk(c, s, srv, total).await
                }
                ("bulk", false) => {
                    let (c, s) = kwik_pair(srv, sharing(&args)).await?;
                    on_kwik::bulk(c, s, srv, total).await
                }
                ("small", true) => {
                    let (cl, s) = quinn_pair(srv).await?;
                    on_quinn::small_streams(cl, s, srv, n, c).await
                }
                ("small", false) => {
                    let (cl, s) = kwik_pair(srv, sharing(&args)).await?;
                    on_kwik::small_streams(cl, s, srv, n, c).await
                }
                ("rr", true) => {
                    let (cl, s) = quinn_pair(srv).await?;
                    let mut samples = on_quinn::rr(cl, s, srv, args.rr / 10, args.rr).await;
                    percentile(&mut samples, 990)
                }
                ("rr", false) => {
                    let (cl, s) = kwik_pair(srv, sharing(&args)).await?;
                    let mut samples = on_kwik::rr(cl, s, srv, args.rr / 10, args.rr).await;
                    percentile(&mut samples, 990)
                }
                _ => anyhow::bail!("--profile: unknown figure {figure}"),
            };
            println!("{profile} {value:.3}");
        }
        return Ok(());
    }
    let mut bulk_kwik = 0.0;
    if wanted(&args, "bulk") {
        let (mut kwik, mut quinn, mut kcpu, mut qcpu) = (vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let cpu = cpu_ns();
            quinn.push(on_quinn::bulk(c, s, srv, total).await);
            qcpu.push((cpu_ns() - cpu) as f64 / total as f64);
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let cpu = cpu_ns();
            kwik.push(on_kwik::bulk(c, s, srv, total).await);
            kcpu.push((cpu_ns() - cpu) as f64 / total as f64);
        }
        bulk_kwik = report.figure("bulk_gbps", &kwik, Some(&quinn)).median;
        report.figure("cpu_ns_per_byte", &kcpu, Some(&qcpu));
    }
    if wanted(&args, "small") {
        let (mut kwik, mut quinn) = (vec![], vec![]);
        let (mut kcpu, mut qcpu) = (vec![], vec![]);
        let mut shared: Vec<Vec<f64>> = vec![vec![]; SHARING.len()];
        let n = args.streams;
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let cpu = cpu_ns();
            quinn.push(on_quinn::small_streams(c, s, srv, n, args.concurrency).await);
            qcpu.push((cpu_ns() - cpu) as f64 / 1e3 / n as f64);
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let cpu = cpu_ns();
            kwik.push(on_kwik::small_streams(c, s, srv, n, args.concurrency).await);
            kcpu.push((cpu_ns() - cpu) as f64 / 1e3 / n as f64);
            for (per_carrier, rates) in SHARING.iter().zip(&mut shared) {
                let (c, s) = kwik_pair(srv, *per_carrier).await?;
                rates.push(on_kwik::small_streams(c, s, srv, n, args.concurrency).await);
            }
        }
        report.figure("small_streams_per_s", &kwik, Some(&quinn));
        for (per_carrier, rates) in SHARING.iter().zip(shared) {
            let name = format!("small_streams_per_s_carrier{per_carrier}");
            report.figure(&name, &rates, Some(&quinn));
        }
        report.figure("cpu_us_per_stream", &kcpu, Some(&qcpu));
    }
    if wanted(&args, "rr") {
        let warmup = args.rr / 10;
        let mut k = [vec![], vec![], vec![]];
        let mut q = [vec![], vec![], vec![]];
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let mut samples = on_quinn::rr(c, s, srv, warmup, args.rr).await;
            for (i, p) in [500, 990, 999].into_iter().enumerate() {
                q[i].push(percentile(&mut samples, p));
            }
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let mut samples = on_kwik::rr(c, s, srv, warmup, args.rr).await;
            for (i, p) in [500, 990, 999].into_iter().enumerate() {
                k[i].push(percentile(&mut samples, p));
            }
        }
        for (i, name) in ["rr_p50_us", "rr_p99_us", "rr_p999_us"]
            .into_iter()
            .enumerate()
        {
            report.figure(name, &k[i], Some(&q[i]));
        }
    }
    if wanted(&args, "h3") {
        let (mut kwik, mut quinn) = (vec![], vec![]);
        for _ in 0..reps {
            let (c, s) = quinn_pair(srv).await?;
            let (c, s) = (h3_quinn::Connection::new(c), h3_quinn::Connection::new(s));
            quinn.push(h3_on_quinn(c, s, srv, args.h3_gets, args.concurrency).await);
            let (c, s) = kwik_pair(srv, sharing(&args)).await?;
            let (c, s) = (kwik_h3::Connection::new(c), kwik_h3::Connection::new(s));
            kwik.push(h3_on_kwik(c, s, srv, args.h3_gets, args.concurrency).await);
        }
        report.figure("h3_gets_per_s", &kwik, Some(&quinn));
    }
    if wanted(&args, "stripe") {
        let (mut one, mut three) = (vec![], vec![]);
        for _ in 0..reps {
            one.push(stripe(srv, 0, total).await?);
            three.push(stripe(srv, 2, total).await?);
        }
        let one = report.figure("stripe_gbps_1", &one, None);
        let three = report.figure("stripe_gbps_3", &three, None);
        if bulk_kwik > 0.0 {
            report.single("stripe_1_over_bulk", one.median / bulk_kwik, "(floor 0.9)");
            report.single("stripe_3_over_bulk", three.median / bulk_kwik, "");
        }
    }
    if wanted(&args, "limit") {
        let udp: Vec<f64> = (0..reps.min(5))
            .map(|_| limit_udp(1.0))
            .collect::<Result<_, _>>()?;
        let udp = report.figure("limit_udp_gbps", &udp, None);
        let (seal, open, both) = limit_aead(1.0)?;
        report.single("limit_aead_seal_gbps", seal, "(one core)");
        report.single("limit_aead_open_gbps", open, "(one core)");
        report.single("limit_aead_gbps", both, "(one core seals and opens)");
        if bulk_kwik > 0.0 {
            report.single("bulk_over_udp_limit", bulk_kwik / udp.median, "");
            report.single("bulk_over_aead_limit", bulk_kwik / both, "");
        }
    }
    if let Some(svg) = &args.svg {
        let title = format!("KWIK ÷ quinn, median of {reps} alternating runs on loopback");
        kwik_examples::plot::ratios_svg(svg, &title, &report.ratios)?;
        println!("ratios drawn in {}", svg.display());
    }
    Ok(())
}
