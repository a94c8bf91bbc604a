//! A KWIK client (the quick start's client half): echoes a message, or downloads a striped
//! body and checks it.
//!
//! `cargo run --example client -- --server 127.0.0.1:4433 --cert kwik-cert.der hello`
//! `cargo run --example client -- --server 127.0.0.1:4433 --get 268435456`
//! `cargo run --example client --features qlog -- --get 268435456 --qlog qlog/` also
//! writes a qlog file per path and one of KWIK's events (see the README).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use kwik_examples::{BodyCheck, bulk_config, client_config, rate, read_cert};
use kwik_tokio::{PathEvent, PathId, VarInt};

#[derive(Parser)]
struct Args {
    /// Log filter: error, warn, info, debug, trace, or directives such as kwik_core=debug
    /// (RUST_LOG wins when set).
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Write qlog files into this directory (built with `--features qlog`).
    #[arg(long)]
    qlog: Option<PathBuf>,
    /// The server to dial.
    #[arg(long, default_value = "127.0.0.1:4433")]
    server: SocketAddr,
    /// The server's certificate (written by the server example).
    #[arg(long, default_value = "kwik-cert.der")]
    cert: PathBuf,
    /// Name to verify the certificate against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Download a body of this many bytes, striped over every server of the session.
    #[arg(long)]
    get: Option<u64>,
    /// The message to echo.
    #[arg(default_value = "hello, kwik")]
    message: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kwik_examples::init_logging(&args.log_level)?;
    let config = client_config(&read_cert(&args.cert)?, bulk_config())?;
    let local = match args.server {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let endpoint = kwik_tokio::Endpoint::client(local)?;
    kwik_examples::qlog_into(&endpoint, args.qlog.as_deref())?;
    let session = endpoint
        .connect_with(config, args.server, &args.server_name)?
        .await?;
    // Why each failed path failed, as it happens and again in the summary.
    let failures: Arc<Mutex<BTreeMap<PathId, String>>> = Arc::default();
    tokio::spawn({
        let (session, failures) = (session.clone(), failures.clone());
        async move {
            while let Ok(event) = session.path_event().await {
                if let PathEvent::Failed(path, error) = event {
                    eprintln!("{path} failed: {error}");
                    if let Ok(mut f) = failures.lock() {
                        f.insert(path, error.to_string());
                    }
                }
            }
        }
    });
    let (mut send, mut recv) = session.open_bi().await?;
    match args.get {
        Some(len) => {
            send.write_all(format!("body {len}").as_bytes()).await?;
            send.finish()?;
            let started = Instant::now();
            let mut check = BodyCheck::default();
            while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
                check.update(&chunk);
            }
            let secs = started.elapsed().as_secs_f64();
            let received = check.received();
            println!(
                "received {received} bytes in {secs:.2} s ({})",
                rate(received, secs)
            );
            check.verify(len)?;
            println!("every byte matches the body");
            println!("checksum matches");
            println!("{}", kwik_examples::copy_report(&session.stats(), len));
            let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
            for p in session.paths() {
                let why = failures
                    .get(&p.id)
                    .map_or(String::new(), |e| format!(" ({e})"));
                println!(
                    "  {} {} {:?}{why} rtt {} received {} B",
                    p.id,
                    p.address,
                    p.state,
                    p.rtt.map_or("-".to_owned(), |r| format!("{r:.1?}")),
                    p.bytes_received
                );
            }
        }
        None => {
            send.write_all(args.message.as_bytes()).await?;
            send.finish()?;
            let echoed = recv.read_to_end(1 << 20).await?;
            println!("echoed: {}", String::from_utf8_lossy(&echoed));
        }
    }
    session.close(VarInt::from_u32(0), b"bye");
    // The close reaches the server, and the qlog files are complete, once the connections
    // drained.
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}
