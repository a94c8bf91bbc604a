//! A WebTransport echo server and client over KWIK sessions.
//!
//! The server runs `h3-webtransport` unchanged on kwik-h3: it echoes every bidirectional
//! stream, answers every unidirectional stream with one of its own carrying the same bytes,
//! echoes every datagram, and closes with a code and reason when the client does. The
//! client is kwik-h3's.
//!
//! ```text
//! cargo run --release --example webtransport_echo                      # both, on loopback
//! cargo run --release --example webtransport_echo -- server --listen 127.0.0.1:4434
//! cargo run --release --example webtransport_echo -- client https://127.0.0.1:4434/echo
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use h3_webtransport::server::AcceptedBi;
use http::Uri;
use kwik_async::Session;
use kwik_examples::{client_config, read_cert, resolve, self_signed, server_config};
use kwik_h3::webtransport::{Client, ServerControl, session_stream};
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
        Some(Role::Server { listen, cert_out }) => {
            let (cert, key) = self_signed()?;
            std::fs::write(&cert_out, cert.as_ref())?;
            let server = kwik_tokio::listen(listen, server_config(&cert, &key, config())?)?;
            println!(
                "WebTransport echo on {}, certificate in {}",
                server.local_addr()?,
                cert_out.display()
            );
            serve(server).await;
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
            tokio::spawn(serve(server));
            let url: Uri = format!("https://{addr}/echo").parse()?;
            let load = Load {
                streams: 1000,
                datagrams: 1000,
            };
            client(addr, url, &cert, load).await
        }
    }
}

async fn serve(server: kwik_tokio::Endpoint) {
    while let Some(incoming) = server.accept().await {
        tokio::spawn(async move {
            let result = async {
                let session = incoming.await?;
                serve_session(session).await
            }
            .await;
            if let Err(e) = result {
                eprintln!("session: {e:#}");
            }
        });
    }
}

async fn serve_session(session: Session) -> anyhow::Result<()> {
    let conn = kwik_h3::Connection::new(session.clone());
    let control: ServerControl = conn.webtransport_server();
    let mut h3: h3::server::Connection<_, Bytes> =
        kwik_h3::webtransport::server_builder().build(conn).await?;
    let Some(resolver) = h3.accept().await? else {
        return Ok(());
    };
    let (request, stream) = resolver.resolve_request().await?;
    let wt = Arc::new(kwik_h3::webtransport::accept_session(request, stream, h3).await?);
    let id = wt.session_id();

    let bidi = {
        let wt = wt.clone();
        tokio::spawn(async move {
            loop {
                let mut s = match wt.accept_bi().await {
                    Ok(Some(AcceptedBi::BidiStream(_, s))) => s,
                    // A request inside the session is not ours to answer.
                    Ok(Some(AcceptedBi::Request(..))) => continue,
                    Ok(None) | Err(h3::error::StreamError::ConnectionError(_)) => return,
                    // One stream that failed before its header (reset early, say).
                    Err(_) => continue,
                };
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_ok() && s.write_all(&got).await.is_ok() {
                        let _ = s.shutdown().await;
                    }
                });
            }
        })
    };
    let uni = {
        let wt = wt.clone();
        tokio::spawn(async move {
            while let Ok(Some((sid, mut s))) = wt.accept_uni().await {
                let wt = wt.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_err() {
                        return;
                    }
                    if let Ok(mut back) = wt.open_uni(sid).await
                        && back.write_all(&got).await.is_ok()
                    {
                        let _ = back.shutdown().await;
                    }
                });
            }
        })
    };
    let datagrams = {
        let wt = wt.clone();
        let sender = control.datagrams(id);
        tokio::spawn(async move {
            let mut reader = wt.datagram_reader();
            while let Ok(d) = reader.read_datagram().await {
                if sender.send_wait(d.payload()).await.is_err() {
                    return;
                }
            }
        })
    };
    let closed = control.closed(id).await?;
    println!(
        "session {}: the client closed with {} {:?}",
        session_stream(id),
        closed.code,
        closed.reason
    );
    control.close(id, closed.code, "echoed").await?;
    // Closing the connection now could discard the capsule unsent: the client closes it
    // once it has read the capsule.
    let _ = tokio::time::timeout(Duration::from_secs(5), session.closed()).await;
    bidi.abort();
    uni.abort();
    datagrams.abort();
    Ok(())
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
