//! A KWIK echo client (the quick start's client half).
//!
//! `cargo run --example client -- --server 127.0.0.1:4433 --cert kwik-cert.der hello`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kwik_core::Config;
use kwik_examples::{client_config, read_cert};
use kwik_tokio::VarInt;

#[derive(Parser)]
struct Args {
    /// The server to dial.
    #[arg(long, default_value = "127.0.0.1:4433")]
    server: SocketAddr,
    /// The server's certificate (written by the server example).
    #[arg(long, default_value = "kwik-cert.der")]
    cert: PathBuf,
    /// Name to verify the certificate against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The message to echo.
    #[arg(default_value = "hello, kwik")]
    message: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = client_config(&read_cert(&args.cert)?, Config::default())?;
    let session = kwik_tokio::dial(args.server, &args.server_name, config).await?;
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(args.message.as_bytes()).await?;
    send.finish()?;
    let echoed = recv.read_to_end(1 << 20).await?;
    println!("echoed: {}", String::from_utf8_lossy(&echoed));
    session.close(VarInt::from_u32(0), b"bye");
    Ok(())
}
