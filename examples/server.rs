//! A KWIK echo server (the quick start's server half).
//!
//! `cargo run --example server -- --listen 127.0.0.1:4433 --cert-out /tmp/kwik-cert.der`
//! writes its self-signed certificate for the client to trust, then echoes every stream.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kwik_core::Config;
use kwik_examples::{self_signed, server_config};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// Where to write the server's self-signed certificate (DER).
    #[arg(long, default_value = "kwik-cert.der")]
    cert_out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (cert, key) = self_signed()?;
    std::fs::write(&args.cert_out, cert.as_ref())?;
    let server = kwik_tokio::listen(args.listen, server_config(&cert, &key, Config::default())?)?;
    println!(
        "listening on {}, certificate in {}",
        server.local_addr()?,
        args.cert_out.display()
    );
    while let Some(incoming) = server.accept().await {
        let session = match incoming.await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("session failed: {e}");
                continue;
            }
        };
        println!("session from {}", session.remote_address());
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    while let Some(chunk) = recv.read_chunk(64 * 1024).await? {
                        send.write_chunk(chunk).await?;
                    }
                    send.finish()?;
                    Ok::<_, anyhow::Error>(())
                });
            }
        });
    }
    Ok(())
}
