//! A KWIK secondary server: it admits the sessions of a primary that shares its group key,
//! and serves the byte ranges of the body it is delegated.
//!
//! `cargo run --example secondary -- --listen 127.0.0.1:4434 --cert kwik-cert.der \
//!  --key kwik-key.der --group-key <64 hex digits>` (the `server` example writes the
//! certificate, the key and the group key).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kwik_core::GroupKey;
use kwik_examples::{ServerOps, bulk_config, read_cert, read_key, serve, server_config};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    ops: ServerOps,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4434")]
    listen: SocketAddr,
    /// Certificate to serve (DER), shared with the primary.
    #[arg(long, default_value = "kwik-cert.der")]
    cert: PathBuf,
    /// Its private key (DER, PKCS#8).
    #[arg(long, default_value = "kwik-key.der")]
    key: PathBuf,
    /// The group key shared with the primary, as 64 hexadecimal digits.
    #[arg(long)]
    group_key: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.ops.start()?;
    let group = GroupKey::from_hex(&args.group_key).context("group key: 64 hex digits")?;
    let mut config = server_config(
        &read_cert(&args.cert)?,
        &read_key(&args.key)?,
        bulk_config(),
    )?;
    config.group_key(group);
    let server = kwik_tokio::listen(args.listen, config)?;
    args.ops.qlog_into(&server)?;
    println!("secondary listening on {}", server.local_addr()?);
    serve(server, Vec::new(), String::new()).await;
    Ok(())
}
