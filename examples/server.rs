//! A KWIK server (the quick start's server half): echoes every stream, and answers
//! `body <len>` requests by striping a body over itself and its secondaries.
//!
//! `cargo run --example server -- --listen 127.0.0.1:4433` writes its self-signed
//! certificate and key for the client and the secondaries, and prints the group key.
//! With `--secondary 127.0.0.1:4434` (repeatable) every session is joined to those
//! secondaries (see the `secondary` example).
//!
//! SIGTERM drains it (`--drain-timeout`, 30 s by default): no new session, streams opened
//! after the notice reset, stripes in flight completed; it exits with status 0 once every
//! session is done.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kwik_examples::{KeyArgs, ServerOps, bulk_config, self_signed, serve, server_config};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    ops: ServerOps,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// Where to write the server's self-signed certificate (DER).
    #[arg(long, default_value = "kwik-cert.der")]
    cert_out: PathBuf,
    /// Where to write its private key (DER, PKCS#8), for secondaries to serve the same
    /// certificate.
    #[arg(long, default_value = "kwik-key.der")]
    key_out: PathBuf,
    #[command(flatten)]
    keys: KeyArgs,
    /// A secondary server to join to every session (repeatable).
    #[arg(long)]
    secondary: Vec<SocketAddr>,
    /// Name the secondaries' certificate is verified against.
    #[arg(long, default_value = "localhost")]
    secondary_name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.ops.start()?;
    let (cert, key) = self_signed()?;
    std::fs::write(&args.cert_out, cert.as_ref())?;
    std::fs::write(&args.key_out, key.secret_der())?;
    let (keys, group_hex) = args.keys.keys(true)?;
    let mut config = server_config(&cert, &key, bulk_config())?;
    config.group_keys(keys.clone());
    let server = kwik_tokio::listen(args.listen, config)?;
    args.ops.qlog_into(&server)?;
    args.keys.reload_on_sighup(&server)?;
    println!(
        "listening on {}, certificate in {}, key in {}, group key {}",
        server.local_addr()?,
        args.cert_out.display(),
        args.key_out.display(),
        group_hex.unwrap_or_else(|| format!("ids {:?}", keys.ids().collect::<Vec<_>>()))
    );
    let serving = serve(server.clone(), args.secondary, args.secondary_name);
    args.ops.serve_until_drained(&server, serving, || {}).await
}
