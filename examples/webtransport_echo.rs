//! A WebTransport echo server and client over KWIK sessions.
//!
//! The server runs `h3-webtransport` unchanged on kwik-h3 (`kwik_examples::webtransport`):
//! it echoes every bidirectional stream, answers every unidirectional stream with one of
//! its own carrying the same bytes, echoes every datagram, and closes with a code and
//! reason when the client does. The client is kwik-h3's. A browser reaches the server too,
//! as a plain session: the server's certificate is ECDSA P-256 and valid for 13 days, and
//! it prints the certificate's SHA-256 hash for the page's `serverCertificateHashes`.
//!
//! ```text
//! cargo run --release --example webtransport_echo                      # both, on loopback
//! cargo run --release --example webtransport_echo -- server --listen 127.0.0.1:4434
//! cargo run --release --example webtransport_echo -- client https://127.0.0.1:4434/echo
//! ```
//!
//! In a page served from `http://localhost` (a secure context), with the printed hash:
//!
//! ```text
//! const wt = new WebTransport("https://127.0.0.1:4434/echo", {
//!   serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array([...]) }],
//! });
//! ```
//!
//! Chromium sends WebTransport for `localhost` to `::1` only: name the server by its IPv4
//! address when it listens on IPv4.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::Uri;
use kwik_examples::webtransport::serve;
use kwik_examples::{
    cert_hash, client_config, read_cert, read_key, resolve, self_signed, server_config,
};
use kwik_h3::webtransport::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Log filter (RUST_LOG wins when set).
    #[arg(long, default_value = "warn", global = true)]
    log_level: String,
}

#[derive(Subcommand)]
enum Role {
    /// Serve WebTransport echo sessions.
    Server {
        #[arg(long, default_value = "127.0.0.1:4434")]
        listen: SocketAddr,
        /// Where to write the self-signed certificate (DER).
        #[arg(long, default_value = "kwik-wt-cert.der")]
        cert_out: PathBuf,
        /// Serve this certificate (DER) instead of a self-signed one, with `--key`. A
        /// browser that trusts it by hash needs ECDSA and at most 14 days of validity.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The key of `--cert` (DER, PKCS#8).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Open a session, echo streams and datagrams, close.
    Client {
        /// `https://HOST:PORT/path`, HOST an IP address.
        url: Uri,
        /// The server's certificate.
        #[arg(long, default_value = "kwik-wt-cert.der")]
        cert: PathBuf,
        #[command(flatten)]
        load: Load,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct Load {
    /// Bidirectional streams to echo.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Datagrams to echo.
    #[arg(long, default_value_t = 1000)]
    datagrams: u32,
}

fn config() -> kwik_core::Config {
    let mut c = kwik_examples::bulk_config();
    c.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    c
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kwik_examples::init_logging(&args.log_level)?;
    match args.role {
        Some(Role::Server {
            listen,
            cert_out,
            cert,
            key,
        }) => {
            let (cert, key) = match (cert, key) {
                (Some(cert), Some(key)) => (read_cert(&cert)?, read_key(&key)?),
                _ => {
                    let (cert, key) = self_signed()?;
                    std::fs::write(&cert_out, cert.as_ref())?;
                    println!("certificate in {}", cert_out.display());
                    (cert, key)
                }
            };
            let hash = cert_hash(&cert);
            let server = kwik_tokio::listen(listen, server_config(&cert, &key, config())?)?;
            println!("WebTransport echo on {}", server.local_addr()?);
            println!("certificate SHA-256 (serverCertificateHashes): {hash:?}");
            serve(server, None).await;
            Ok(())
        }
        Some(Role::Client { url, cert, load }) => {
            let (_, addrs) = resolve(&url).await?;
            client(addrs[0], url, &read_cert(&cert)?, load).await
        }
        None => {
            // Both on loopback, in one process.
            let (cert, key) = self_signed()?;
            let server = kwik_tokio::listen(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                server_config(&cert, &key, config())?,
            )?;
            let addr = server.local_addr()?;
            tokio::spawn(serve(server, None));
            let url: Uri = format!("https://{addr}/echo").parse()?;
            let load = Load {
                streams: 1000,
                datagrams: 1000,
            };
            client(addr, url, &cert, load).await
        }
    }
}

async fn client(
    addr: SocketAddr,
    url: Uri,
    cert: &rustls::pki_types::CertificateDer<'static>,
    load: Load,
) -> anyhow::Result<()> {
    let local = SocketAddr::from(([0, 0, 0, 0], 0));
    let endpoint = kwik_tokio::Endpoint::client(local)?;
    let session = endpoint
        .connect_with(client_config(cert, config())?, addr, "localhost")?
        .await?;
    let (client, driver) = Client::connect(kwik_h3::Connection::new(session.clone()), url).await?;
    tokio::spawn(driver);
    let client = Arc::new(client);

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..load.streams {
        let client = client.clone();
        tasks.spawn(async move {
            let message = format!("stream {i}");
            let mut s = client.open_bi().await?;
            s.write_all(message.as_bytes()).await?;
            s.shutdown().await?;
            let mut back = Vec::new();
            s.read_to_end(&mut back).await?;
            anyhow::ensure!(back == message.as_bytes(), "stream {i}: the echo differs");
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let streams_took = started.elapsed();

    let mut s = client.open_uni().await?;
    s.write_all(b"one way, and back").await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    client
        .accept_uni()
        .await
        .context("no stream came back")?
        .read_to_end(&mut back)
        .await?;
    anyhow::ensure!(back == b"one way, and back", "the uni echo differs");

    let datagrams = client.datagrams();
    let mut reader = client.datagram_reader();
    let started = Instant::now();
    let echoed = async {
        let mut n = 0u32;
        while n < load.datagrams {
            let got = tokio::time::timeout(Duration::from_secs(1), reader.read_datagram()).await;
            let Ok(Ok(_)) = got else { break };
            n += 1;
        }
        n
    };
    let send = async {
        for i in 0..load.datagrams {
            datagrams
                .send_wait(&Bytes::from(i.to_be_bytes().repeat(100)))
                .await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (echoed, sent) = tokio::join!(echoed, send);
    sent?;
    let datagrams_took = started.elapsed();

    client.close(42, "done").await?;
    let closed = client.closed().await?;
    println!(
        "{} bidi echoes in {:.1} ms; a uni stream there and back; {echoed} of {} datagrams \
         echoed in {:.1} ms; closed with 42 \"done\", the server answered {} {:?}",
        load.streams,
        streams_took.as_secs_f64() * 1e3,
        load.datagrams,
        datagrams_took.as_secs_f64() * 1e3,
        closed.code,
        closed.reason
    );
    session.close(kwik_async::VarInt::from_u32(0), b"");
    Ok(())
}
