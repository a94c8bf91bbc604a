//! Downloads a URL from an HTTP/3 server with a progress bar, and prints how much of the
//! body each server of the session sent. Against a KWIK server (`h3_server`) the body may
//! come from several servers; against any other HTTP/3 server the session falls back to
//! plain HTTP/3 over one connection, and says so.
//!
//! `cargo run --release --example h3_get -- https://localhost:4433/big.bin --cert
//! kwik-cert.der --wait-paths 2`
//!
//! The URL's host is resolved and its addresses tried in order; the server's certificate
//! is verified against the host (or `--server-name`), trusting the platform's roots, or
//! only the certificate `--cert` pins (as `h3_server` writes its self-signed one).
//!
//! `--wait-paths N` waits until N secondaries are active before asking, so that a striped
//! body is served by all of them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use clap::Parser;
use http::{Request, Uri};
use indicatif::{ProgressBar, ProgressStyle};
use kwik_examples::{bulk_config, dial_first, rate, resolve, trusting, wait_paths};
use std::io::Write;

#[derive(Parser)]
struct Args {
    /// The URL to get, `https://HOST[:PORT]/path` (HOST a name or an IP address).
    url: Uri,
    /// Log filter (RUST_LOG wins when set).
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Trust only this certificate (DER, as h3_server writes its self-signed one) instead
    /// of the platform's roots.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Name to verify the certificate against (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Wait until this many secondaries are active before the request.
    #[arg(long, default_value_t = 0)]
    wait_paths: usize,
    /// Write the body here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kwik_examples::init_logging(&args.log_level)?;
    let (host, addrs) = resolve(&args.url).await?;
    let server_name = args.server_name.clone().unwrap_or(host);
    let mut config = bulk_config();
    config.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    let client = trusting(args.cert.as_deref(), config)?;
    let (endpoint, session) =
        dial_first(&client, &addrs, &server_name, Duration::from_secs(5)).await?;
    if session.mode() == kwik_tokio::Mode::Plain {
        println!("{server_name} does not speak KWIK: plain HTTP/3 over one connection (fallback)");
    } else if args.wait_paths > 0 {
        wait_paths(&session, args.wait_paths, Duration::from_secs(5)).await?;
    }
    let (mut driver, mut send) = h3::client::new(kwik_h3::Connection::new(session.clone())).await?;
    let drive = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let started = Instant::now();
    let mut stream = send
        .send_request(Request::get(args.url.clone()).body(())?)
        .await?;
    stream.finish().await?;
    let resp = stream.recv_response().await?;
    let len = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let bar = ProgressBar::new(len.unwrap_or(0));
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {bytes:>10}/{total_bytes} {bytes_per_sec:>12} {eta}",
    )?);
    // Writes go to the page cache, a chunk at a time: short enough not to hold up the
    // session's driver on this thread.
    let mut out = match &args.out {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let mut got = 0u64;
    while let Some(mut chunk) = stream.recv_data().await? {
        let piece: Bytes = chunk.copy_to_bytes(chunk.remaining());
        got += piece.len() as u64;
        bar.set_position(got);
        if let Some(f) = &mut out {
            f.write_all(&piece)?;
        }
    }
    bar.finish();
    if let Some(f) = &mut out {
        f.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} {}: {got} bytes in {secs:.2} s, {}",
        resp.status(),
        args.url,
        rate(got, secs)
    );
    let paths = session.paths();
    let total: u64 = paths.iter().map(|p| p.bytes_received).sum::<u64>().max(1);
    for p in &paths {
        println!(
            "  {} {}: {} bytes received ({:.1} %)",
            p.id,
            p.address,
            p.bytes_received,
            p.bytes_received as f64 * 100.0 / total as f64
        );
    }
    drop(send);
    session.close(kwik_tokio::VarInt::from_u32(0x100), b"done");
    let _ = drive.await;
    endpoint.wait_idle().await;
    Ok(())
}
