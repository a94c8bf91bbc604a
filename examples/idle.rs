//! What idle sessions cost a server: KWIK beside plain quinn, same machine, same run.
//!
//! For each `--sessions` count and each stack, a server process of its own (this program
//! again, with `--serve`) and one client process (this one) on loopback: the client opens
//! the sessions (`--concurrency` dials at a time), echoes 16 bytes once on each, holds them
//! idle for `--idle` seconds, then echoes once more on each; every echo must be answered.
//! Printed per row:
//!
//! - `open_s`: time to open every session and echo once on each (client and server);
//! - `rss_kib_per_session`: the server's resident memory after the idle period, less what
//!   it held before the first session, per session;
//! - `idle_cpu_pct`: the server's CPU time (user and system, from /proc) over the last 30 s
//!   of the idle period, as a share of one core;
//! - `answered`: sessions that answered the first echo and the last one (the program
//!   fails if any did not).
//!
//! KWIK's server is the `server` example's (`serve`, with [`bulk_config`]); quinn's echoes
//! every bidirectional stream. Both sides of both stacks keep the same QUIC keep-alive
//! (10 s) and idle timeout (30 s), KWIK's defaults. `--json PATH` appends each row as a JSON
//! object.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kwik_core::Config;
use kwik_examples::host::{cpu_model, rss_kib};
use kwik_examples::stock::{quinn_client, quinn_server_config};
use kwik_examples::{bulk_config, client_config, read_cert, read_key, self_signed, serve};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Parser)]
struct Args {
    /// Session counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sessions: Vec<usize>,
    /// Seconds the sessions stay idle (at least 30: the CPU is measured over the last 30).
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Stacks to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "kwik,quinn")]
    stacks: Vec<Stack>,
    /// Dials in flight at once while opening.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Appends every row to this file as one JSON object per line.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runs a server of this stack (used by the program itself).
    #[arg(long, hide = true)]
    serve: Option<Stack>,
    /// The server's certificate and key (used with `--serve`).
    #[arg(long, hide = true)]
    cert: Option<PathBuf>,
    #[arg(long, hide = true)]
    key: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stack {
    Kwik,
    Quinn,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Self::Kwik => "kwik",
            Self::Quinn => "quinn",
        }
    }
}

const KEEP_ALIVE: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CPU_WINDOW: Duration = Duration::from_secs(30);
const MESSAGE: &[u8] = b"are you still up";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(stack) = args.serve {
        let cert = read_cert(args.cert.as_deref().context("--cert")?)?;
        let key = read_key(args.key.as_deref().context("--key")?)?;
        return tokio::runtime::Runtime::new()?.block_on(run_server(stack, cert, key));
    }
    anyhow::ensure!(
        args.idle >= CPU_WINDOW.as_secs(),
        "--idle must be at least 30"
    );
    let dir = std::env::temp_dir().join(format!("kwik-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = self_signed()?;
    std::fs::write(dir.join("cert.der"), cert.as_ref())?;
    std::fs::write(dir.join("key.der"), key.secret_der())?;
    println!("cpu: {}", cpu_model());
    println!(
        "{:>6} {:>8} {:>8} {:>20} {:>13} {:>13}",
        "stack", "sessions", "open_s", "rss_kib_per_session", "idle_cpu_pct", "answered"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failed = false;
    for &n in &args.sessions {
        for &stack in &args.stacks {
            let row = rt.block_on(measure(stack, n, &args, &dir, &cert))?;
            println!(
                "{:>6} {:>8} {:>8.2} {:>20.1} {:>13.2} {:>13}",
                stack.name(),
                n,
                row.open.as_secs_f64(),
                row.rss_per_session_kib,
                row.idle_cpu_pct,
                format!("{}/{}", row.opened, row.answered)
            );
            if let Some(path) = &args.json {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                writeln!(
                    f,
                    "{{\"stack\":\"{}\",\"sessions\":{n},\"open_s\":{:.3},\"rss_kib_per_session\":{:.1},\"idle_cpu_pct\":{:.3},\"opened\":{},\"answered\":{},\"cpu\":\"{}\"}}",
                    stack.name(),
                    row.open.as_secs_f64(),
                    row.rss_per_session_kib,
                    row.idle_cpu_pct,
                    row.opened,
                    row.answered,
                    cpu_model()
                )?;
            }
            failed |= row.opened != n || row.answered != n;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        !failed,
        "some sessions did not answer after the idle period"
    );
    Ok(())
}

struct Row {
    open: Duration,
    /// Sessions that answered their first echo.
    opened: usize,
    rss_per_session_kib: f64,
    idle_cpu_pct: f64,
    answered: usize,
}

/// Kills the server process when the measurement ends, however it ends.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(
    stack: Stack,
    n: usize,
    args: &Args,
    dir: &Path,
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> anyhow::Result<Row> {
    let mut child = ServerProcess(
        Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(stack.name())
            .arg("--cert")
            .arg(dir.join("cert.der"))
            .arg("--key")
            .arg(dir.join("key.der"))
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let pid = child.0.id();
    let stdout = child.0.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .context("server's first line")?
        .parse()?;
    let rss_before = rss_kib(Some(pid)).context("server memory")?;
    let started = Instant::now();
    let clients: Vec<Client> = match stack {
        Stack::Kwik => {
            let endpoint = kwik_tokio::Endpoint::client("127.0.0.1:0".parse()?)?;
            let config = client_config(cert, idle_config(Config::default()))?;
            open_all(n, args.concurrency, move || {
                let connecting = endpoint.connect_with(config.clone(), addr, "localhost");
                async move { Ok(Client::Kwik(connecting?.await?)) }
            })
            .await?
        }
        Stack::Quinn => {
            let endpoint = quinn_client(cert, quinn_transport(), None)?;
            open_all(n, args.concurrency, move || {
                let connecting = endpoint.connect(addr, "localhost");
                async move { Ok(Client::Quinn(connecting?.await?)) }
            })
            .await?
        }
    };
    let clients = Arc::new(clients);
    let opened = echo_all(&clients, args.concurrency).await;
    let open = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.idle) - CPU_WINDOW).await;
    let cpu_before = cpu_ticks(pid)?;
    let window_start = Instant::now();
    tokio::time::sleep(CPU_WINDOW).await;
    let cpu_after = cpu_ticks(pid)?;
    let window = window_start.elapsed().as_secs_f64();
    let rss_after = rss_kib(Some(pid)).context("server memory")?;
    let answered = echo_all(&clients, args.concurrency).await;
    let ticks = clock_ticks_per_sec()?;
    Ok(Row {
        open,
        opened,
        rss_per_session_kib: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        idle_cpu_pct: 100.0 * (cpu_after - cpu_before) as f64 / ticks / window,
        answered,
    })
}

enum Client {
    Kwik(kwik_tokio::Session),
    Quinn(quinn::Connection),
}

impl Client {
    async fn echo(&self) -> anyhow::Result<()> {
        let answer = match self {
            Self::Kwik(s) => {
                let (mut send, mut recv) = s.open_bi().await?;
                send.write_all(MESSAGE).await?;
                send.finish()?;
                recv.read_to_end(1024).await?
            }
            Self::Quinn(c) => {
                let (mut send, mut recv) = c.open_bi().await?;
                send.write_all(MESSAGE).await?;
                send.finish()?;
                recv.read_to_end(1024).await?
            }
        };
        anyhow::ensure!(answer == MESSAGE, "wrong echo");
        Ok(())
    }
}

/// Opens `n` sessions with `dial`, `concurrency` at a time.
async fn open_all<F, Fut>(n: usize, concurrency: usize, dial: F) -> anyhow::Result<Vec<Client>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Client>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let dialing = dial();
        set.spawn(async move {
            let client = dialing.await;
            drop(permit);
            client
        });
    }
    let mut clients = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        clients.push(joined??);
    }
    Ok(clients)
}

/// Echoes once on every session, `concurrency` at a time; returns how many answered.
async fn echo_all(clients: &Arc<Vec<Client>>, concurrency: usize) -> usize {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for i in 0..clients.len() {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let clients = clients.clone();
        set.spawn(async move {
            let answered = tokio::time::timeout(Duration::from_secs(10), clients[i].echo()).await;
            drop(permit);
            matches!(answered, Ok(Ok(())))
        });
    }
    let mut answered = 0;
    while let Some(joined) = set.join_next().await {
        answered += usize::from(matches!(joined, Ok(true)));
    }
    answered
}

fn idle_config(mut c: Config) -> Config {
    c.keep_alive_interval = Some(KEEP_ALIVE);
    c.idle_timeout = IDLE_TIMEOUT;
    c
}

fn quinn_transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("idle timeout")));
    Arc::new(t)
}

/// The server process: prints `listening on ADDR`, then serves until killed.
async fn run_server(
    stack: Stack,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> anyhow::Result<()> {
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    match stack {
        Stack::Kwik => {
            let mut config = kwik_examples::server_config(&cert, &key, idle_config(bulk_config()))?;
            config.max_sessions(100_000);
            let server = kwik_tokio::listen(listen, config)?;
            println!("listening on {}", server.local_addr()?);
            serve(server, Vec::new(), "localhost".into()).await;
        }
        Stack::Quinn => {
            let config = quinn_server_config(&cert, key, quinn_transport(), None)?;
            let server = quinn::Endpoint::server(config, listen)?;
            println!("listening on {}", server.local_addr()?);
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    let conn = incoming.await?;
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            let request = recv.read_to_end(1024).await?;
                            send.write_all(&request).await?;
                            send.finish()?;
                            let _ = send.stopped().await;
                            Ok::<_, anyhow::Error>(())
                        });
                    }
                    Ok::<_, anyhow::Error>(())
                });
            }
        }
    }
    Ok(())
}

/// User and system CPU time of process `pid` (every thread), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks_per_sec() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}
