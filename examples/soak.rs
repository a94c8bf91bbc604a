//! Soak on loopback: `--sessions` client sessions (default 50) each stripe bodies from a
//! primary and two secondaries, one after another, for `--minutes`, while faults and
//! hostile peers come and go:
//!
//! - a random secondary is blackholed (its socket wrapper drops every datagram both ways)
//!   or its endpoint closed and opened again on the same port, for 2 to 15 s;
//! - hostile clients: garbage on the control stream, connections that never say Hello,
//!   request floods that never read, and readers that read 10 kB/s.
//!
//! Every transfer's length and SHA-256 are checked and logged (`--log`, CSV). Every
//! 10 s a line reports the transfers, mismatches, resident memory, the live heap (a
//! counting allocator: what the allocator keeps from the OS is not in it) and the
//! sessions, connections, paths and carriers open. At the end: the RSS at 1 minute against the end
//! and the peak; the run fails on any mismatch or if the end exceeds the 1-minute RSS by
//! more than 10 %.
//!
//! ```sh
//! cargo run --release --example soak -- --minutes 20
//! ```

use std::future::Future;
use std::io::{self, IoSliceMut, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use kwik_async::{AsyncTimer, AsyncUdpSocket, Runtime};
use kwik_core::{CertificateDer, GroupKey, PathState};
use kwik_examples::{BodyCheck, client_config, hex, self_signed, serve_delegations, server_config};
use kwik_tokio::{Bytes, Config, Role, Session, TokioRuntime, VarInt};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// Counts the heap, so that the report can tell live memory from what the allocator keeps.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, in KiB.
fn live_kib() -> u64 {
    let s = GLOBAL.stats();
    (s.bytes_allocated.saturating_sub(s.bytes_deallocated) / 1024) as u64
}

#[derive(Parser, Clone)]
#[command(about = "A multi-server soak on loopback with faults and hostile peers")]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// Honest client sessions.
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// Largest body one transfer stripes, in KiB.
    #[arg(long, default_value_t = 2048)]
    max_kib: u64,
    /// Hostile peers alive at a time.
    #[arg(long, default_value_t = 5)]
    hostile: usize,
    /// Where each transfer's result goes (CSV).
    #[arg(long, default_value = "soak-transfers.csv")]
    log: PathBuf,
    /// Seeds the faults and the body lengths.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

// ---------------------------------------------------------------------------------------
// Faults: a runtime whose sockets can be blackholed.

/// The tokio runtime, with sockets that drop every datagram while `blackhole` is set.
#[derive(Debug)]
struct Faulty {
    blackhole: Arc<AtomicBool>,
}

impl Runtime for Faulty {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        TokioRuntime.new_timer(deadline)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        TokioRuntime.spawn(future);
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(FaultySocket {
            inner: TokioRuntime.wrap_udp_socket(socket)?,
            blackhole: self.blackhole.clone(),
        }))
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}

#[derive(Debug)]
struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    blackhole: Arc<AtomicBool>,
}

impl AsyncUdpSocket for FaultySocket {
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        transmit: &kwik_async::quinn_udp::Transmit<'_>,
    ) -> Poll<io::Result<()>> {
        if self.blackhole.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [kwik_async::quinn_udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = std::task::ready!(self.inner.poll_recv(cx, bufs, meta))?;
            if !self.blackhole.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn gro_segments(&self) -> usize {
        self.inner.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

// ---------------------------------------------------------------------------------------
// Servers.

#[derive(Default)]
struct Counters {
    transfers: AtomicU64,
    bytes: AtomicU64,
    mismatches: AtomicU64,
    session_failures: AtomicU64,
    hostile_started: AtomicU64,
    hostile_closed: AtomicU64,
    blackholes: AtomicU64,
    restarts: AtomicU64,
    readds: AtomicU64,
}

/// One server: its endpoint (replaced when restarted) and its fault switch.
struct Server {
    addr: SocketAddr,
    endpoint: Mutex<Option<kwik_async::Endpoint>>,
    blackhole: Arc<AtomicBool>,
    config: kwik_core::ServerConfig,
    /// Sessions it holds, for the report (closed ones are pruned).
    sessions: Mutex<Vec<Session>>,
}

impl Server {
    fn start(
        self: &Arc<Self>,
        secondaries: Vec<SocketAddr>,
        counters: Arc<Counters>,
    ) -> io::Result<()> {
        let runtime = Arc::new(Faulty {
            blackhole: self.blackhole.clone(),
        });
        let endpoint = kwik_async::Endpoint::server_with(runtime, self.config.clone(), self.addr)?;
        *self.endpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(endpoint.clone());
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let me = me.clone();
                let secondaries = secondaries.clone();
                let counters = counters.clone();
                tokio::spawn(async move {
                    let Ok(session) = incoming.await else { return };
                    me.sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(session.clone());
                    tokio::spawn(serve_delegations(session.clone()));
                    if session.role() == Role::Primary {
                        tokio::spawn(keep_paths(session.clone(), secondaries, counters));
                        serve_requests(session).await;
                    }
                });
            }
        });
        Ok(())
    }

    fn stop(&self) {
        if let Some(ep) = self
            .endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            ep.close(VarInt::from_u32(0), b"restarting");
        }
    }
}

/// Primary: keeps both secondaries in the session, adding back a path the client removed
/// after its server was gone too long.
async fn keep_paths(session: Session, secondaries: Vec<SocketAddr>, counters: Arc<Counters>) {
    for addr in &secondaries {
        let _ = session.add_path(*addr, "localhost");
    }
    while session.close_reason().is_none() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let paths = session.paths();
        for addr in &secondaries {
            let live = paths
                .iter()
                .any(|p| p.address == *addr && p.state != PathState::Removed);
            if !live && session.add_path(*addr, "localhost").is_ok() {
                counters.readds.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Primary: answers `body <len>` on each stream by striping that much of the body.
async fn serve_requests(session: Session) {
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        tokio::spawn(async move {
            let request = recv.read_to_end(64).await?;
            let len: u64 = String::from_utf8_lossy(&request)
                .strip_prefix("body ")
                .and_then(|n| n.trim().parse().ok())
                .context("a body request")?;
            send.stripe(Bytes::from_static(b"body"), len)?;
            send.finish()?;
            let _ = send.stopped().await;
            Ok::<_, anyhow::Error>(())
        });
    }
}

// ---------------------------------------------------------------------------------------
// Clients.

fn session_config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 4 << 20;
    c.receive_window = 8 << 20;
    c
}

/// One honest client: transfers until `end`, reconnecting if its session is lost.
#[allow(clippy::too_many_arguments)]
async fn honest(
    n: usize,
    primary: SocketAddr,
    config: kwik_core::ClientConfig,
    end: Instant,
    max: u64,
    seed: u64,
    counters: Arc<Counters>,
    log: Arc<Mutex<std::fs::File>>,
    sessions: Arc<Mutex<Vec<Session>>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ n as u64);
    while Instant::now() < end {
        let session = match kwik_tokio::dial(primary, "localhost", config.clone()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("client {n}: dial failed: {e}");
                counters.session_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(session.clone());
        while Instant::now() < end {
            let len = rng.random_range(64 * 1024..=max);
            let started = Instant::now();
            let result = transfer(&session, len).await;
            let (ok, digest, got) = match &result {
                Ok((check, digest)) => {
                    (check.verify(len).is_ok(), digest.clone(), check.received())
                }
                Err(e) => (false, format!("error: {e}"), 0),
            };
            if ok {
                counters.transfers.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(len, Ordering::Relaxed);
            } else if result.is_ok() {
                counters.mismatches.fetch_add(1, Ordering::Relaxed);
            }
            let _ = writeln!(
                log.lock().unwrap_or_else(|e| e.into_inner()),
                "{n},{len},{got},{:.3},{ok},{digest}",
                started.elapsed().as_secs_f64()
            );
            if result.is_err() {
                break;
            }
        }
        if let Some(reason) = session.close_reason() {
            eprintln!("client {n}: session lost: {reason}");
            counters.session_failures.fetch_add(1, Ordering::Relaxed);
        }
        session.close(VarInt::from_u32(0), b"done");
    }
}

/// Requests `len` bytes and reads them, comparing each byte with the body as it arrives;
/// returns that comparison and the SHA-256 of what arrived (for the log).
async fn transfer(session: &Session, len: u64) -> anyhow::Result<(BodyCheck, String)> {
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(format!("body {len}").as_bytes()).await?;
    send.finish()?;
    let mut h = Sha256::new();
    let mut check = BodyCheck::default();
    let read = async {
        while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
            check.update(&chunk);
            h.update(&chunk);
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .context("a transfer took over 120 s")??;
    Ok((check, hex(&h.finalize())))
}

/// One hostile peer of a random kind; it runs for at most 30 s.
async fn hostile(
    kind: u32,
    primary: SocketAddr,
    cert: CertificateDer<'static>,
    config: kwik_core::ClientConfig,
    counters: Arc<Counters>,
) {
    counters.hostile_started.fetch_add(1, Ordering::Relaxed);
    let closed = match kind % 4 {
        // Garbage on the control stream: the primary closes with a typed error.
        0 | 1 => {
            let silent = kind % 4 == 1;
            let Ok(conn) = quinn_connect(primary, cert).await else {
                return;
            };
            if let Ok((mut send, _recv)) = conn.open_bi().await {
                if !silent {
                    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 251) as u8).collect();
                    let _ = send.write_all(&garbage).await;
                } else {
                    // Opens the control stream but never says Hello.
                    let _ = send.write_all(&[]).await;
                }
            }
            tokio::time::timeout(Duration::from_secs(30), conn.closed())
                .await
                .is_ok()
        }
        // A flood of requests that are never read, then a close.
        2 => {
            let Ok(session) = kwik_tokio::dial(primary, "localhost", config).await else {
                return;
            };
            let mut streams = Vec::new();
            for _ in 0..32 {
                if let Ok((mut send, recv)) = session.open_bi().await {
                    let _ = send.write_all(b"body 4194304").await;
                    let _ = send.finish();
                    streams.push((send, recv));
                }
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
            session.close(VarInt::from_u32(1), b"flood over");
            true
        }
        // A reader of 10 kB/s that gives up after 30 s.
        _ => {
            let Ok(session) = kwik_tokio::dial(primary, "localhost", config).await else {
                return;
            };
            if let Ok((mut send, mut recv)) = session.open_bi().await {
                let _ = send.write_all(b"body 8388608").await;
                let _ = send.finish();
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until {
                    if !matches!(recv.read_chunk(1000).await, Ok(Some(_))) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            session.close(VarInt::from_u32(1), b"slow reader leaves");
            true
        }
    };
    if closed {
        counters.hostile_closed.fetch_add(1, Ordering::Relaxed);
    }
}

async fn quinn_connect(
    server: SocketAddr,
    cert: CertificateDer<'static>,
) -> anyhow::Result<quinn::Connection> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![kwik_core::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(endpoint.connect(server, "localhost")?.await?)
}

// ---------------------------------------------------------------------------------------
// Report.

struct Snapshot {
    sessions: u64,
    connections: u64,
    paths: usize,
    carriers: usize,
}

fn snapshot(servers: &[Arc<Server>], clients: &Mutex<Vec<Session>>) -> Snapshot {
    let mut snap = Snapshot {
        sessions: 0,
        connections: 0,
        paths: 0,
        carriers: 0,
    };
    for s in servers {
        if let Some(ep) = s
            .endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let stats = ep.stats();
            snap.sessions += stats.sessions;
            snap.connections += stats.connections;
        }
        let mut sessions = s.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|h| h.close_reason().is_none());
        for h in sessions.iter() {
            snap.carriers += h.stats().paths.iter().map(|p| p.carriers).sum::<usize>();
        }
    }
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    clients.retain(|h| h.close_reason().is_none());
    for h in clients.iter() {
        snap.paths += h
            .paths()
            .iter()
            .filter(|p| p.state != PathState::Removed)
            .count();
    }
    snap
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (cert, key) = self_signed()?;
    let group = GroupKey::new(rand::random());
    let mut servers = Vec::new();
    for _ in 0..3 {
        // Bind once to learn a free port; restarts bind the same one again.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let mut config = server_config(&cert, &key, session_config())?;
        config.group_key(group.clone());
        servers.push(Arc::new(Server {
            addr,
            endpoint: Mutex::new(None),
            blackhole: Arc::new(AtomicBool::new(false)),
            config,
            sessions: Mutex::new(Vec::new()),
        }));
    }
    let counters = Arc::new(Counters::default());
    let secondaries = vec![servers[1].addr, servers[2].addr];
    servers[0].start(secondaries, counters.clone())?;
    for s in &servers[1..] {
        s.start(Vec::new(), counters.clone())?;
    }
    let primary = servers[0].addr;
    println!(
        "soak: {} sessions for {} min; primary {primary}, secondaries {} and {}",
        args.sessions, args.minutes, servers[1].addr, servers[2].addr
    );
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.minutes * 60.0);
    let log = Arc::new(Mutex::new(
        std::fs::File::create(&args.log).with_context(|| format!("{}", args.log.display()))?,
    ));
    writeln!(
        log.lock().unwrap_or_else(|e| e.into_inner()),
        "client,requested,received,secs,ok,sha256"
    )?;
    let client_sessions = Arc::new(Mutex::new(Vec::new()));
    let config = client_config(&cert, session_config())?;
    let mut tasks = Vec::new();
    for n in 0..args.sessions {
        tasks.push(tokio::spawn(honest(
            n,
            primary,
            config.clone(),
            end,
            args.max_kib * 1024,
            args.seed,
            counters.clone(),
            log.clone(),
            client_sessions.clone(),
        )));
    }
    // Faults: every 5 to 15 s, one secondary is blackholed or restarted for 2 to 15 s.
    let faults = {
        let servers = servers.clone();
        let counters = counters.clone();
        let seed = args.seed;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            loop {
                tokio::time::sleep(Duration::from_secs(rng.random_range(5..=15))).await;
                let s = &servers[rng.random_range(1..3)];
                let down = Duration::from_secs(rng.random_range(2..=15));
                if rng.random_range(0..2) == 0 {
                    counters.blackholes.fetch_add(1, Ordering::Relaxed);
                    s.blackhole.store(true, Ordering::Relaxed);
                    tokio::time::sleep(down).await;
                    s.blackhole.store(false, Ordering::Relaxed);
                } else {
                    counters.restarts.fetch_add(1, Ordering::Relaxed);
                    s.stop();
                    tokio::time::sleep(down).await;
                    // The old socket closes as its driver ends; retry the bind a while.
                    for _ in 0..50 {
                        if s.start(Vec::new(), counters.clone()).is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    // Hostile peers: `--hostile` at a time, each of a random kind.
    let hostiles = {
        let counters = counters.clone();
        let config = config.clone();
        let cert = cert.clone();
        let n = args.hostile;
        tokio::spawn(async move {
            let mut kind = 0u32;
            loop {
                let mut batch = Vec::new();
                for _ in 0..n {
                    kind += 1;
                    batch.push(tokio::spawn(hostile(
                        kind,
                        primary,
                        cert.clone(),
                        config.clone(),
                        counters.clone(),
                    )));
                }
                for t in batch {
                    let _ = t.await;
                }
            }
        })
    };
    // Report every 10 s.
    let mut rss_at_minute = None;
    let mut live_at_minute = None;
    let mut peak = 0;
    let mut live_peak = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss = kwik_examples::host::rss_kib(None).unwrap_or(0);
        let live = live_kib();
        peak = peak.max(rss);
        live_peak = live_peak.max(live);
        let elapsed = start.elapsed();
        if rss_at_minute.is_none() && elapsed >= Duration::from_secs(60) {
            rss_at_minute = Some(rss);
            live_at_minute = Some(live);
        }
        let snap = snapshot(&servers, &client_sessions);
        println!(
            "{:>6.0} s: {} transfers ({} MiB), {} mismatches, {} session losses; rss {} MiB, \
             live heap {} MiB; \
             servers hold {} sessions, {} connections, {} carriers; clients {} live paths; \
             hostile {} started, {} closed; {} blackholes, {} restarts, {} paths re-added",
            elapsed.as_secs_f64(),
            counters.transfers.load(Ordering::Relaxed),
            counters.bytes.load(Ordering::Relaxed) >> 20,
            counters.mismatches.load(Ordering::Relaxed),
            counters.session_failures.load(Ordering::Relaxed),
            rss / 1024,
            live / 1024,
            snap.sessions,
            snap.connections,
            snap.carriers,
            snap.paths,
            counters.hostile_started.load(Ordering::Relaxed),
            counters.hostile_closed.load(Ordering::Relaxed),
            counters.blackholes.load(Ordering::Relaxed),
            counters.restarts.load(Ordering::Relaxed),
            counters.readds.load(Ordering::Relaxed),
        );
        if Instant::now() >= end {
            break;
        }
    }
    faults.abort();
    hostiles.abort();
    for t in tasks {
        let _ = t.await;
    }
    let rss_end = kwik_examples::host::rss_kib(None).unwrap_or(0);
    let live_end = live_kib();
    let mismatches = counters.mismatches.load(Ordering::Relaxed);
    let at_minute = rss_at_minute.unwrap_or(rss_end);
    let live_minute = live_at_minute.unwrap_or(live_end);
    let change = |end: u64, base: u64| (end as f64 / base.max(1) as f64 - 1.0) * 100.0;
    println!(
        "done: {} transfers, {mismatches} mismatches, {} session losses; rss at 1 min {} MiB, \
         at the end {} MiB ({:+.1} %), peak {} MiB; live heap at 1 min {} MiB, at the end \
         {} MiB ({:+.1} %), peak {} MiB; transfers logged to {}",
        counters.transfers.load(Ordering::Relaxed),
        counters.session_failures.load(Ordering::Relaxed),
        at_minute / 1024,
        rss_end / 1024,
        change(rss_end, at_minute),
        peak / 1024,
        live_minute / 1024,
        live_end / 1024,
        change(live_end, live_minute),
        live_peak / 1024,
        args.log.display()
    );
    ensure!(mismatches == 0, "{mismatches} transfers did not match");
    ensure!(
        rss_end as f64 <= at_minute as f64 * 1.1,
        "memory grew: {at_minute} KiB at 1 minute, {rss_end} KiB at the end"
    );
    Ok(())
}
