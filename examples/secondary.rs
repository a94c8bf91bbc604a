//! A KWIK secondary server: it admits the sessions of a primary that shares its group key,
//! and serves the byte ranges of the body it is delegated.
//!
//! `cargo run --example secondary -- --listen 127.0.0.1:4434 --cert kwik-cert.der \
//!  --key kwik-key.der --group-key <64 hex digits>` (the `server` example writes the
//! certificate, the key and the group key).
//!
//! SIGTERM drains it (`--drain-timeout`, 30 s by default): it serves the pulls it accepted,
//! refuses new ones, and exits with status 0 once the clients closed their paths.
//!
//! With `--root DIR` it serves the striped HTTP/3 bodies of `h3_server` from its own copy
//! of the files instead, refusing any whose copy differs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kwik_examples::files::{Files, spawn};
use kwik_examples::{KeyArgs, ServerOps, bulk_config, read_cert, read_key, serve, server_config};
use kwik_h3::StripedRequest;

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
    #[command(flatten)]
    keys: KeyArgs,
    /// Serve `h3_server`'s striped bodies from the files under this directory. The files
    /// then go out only against the primary's tickets: a client's own session is refused
    /// (`ErrorCode::JoinsOnly`).
    #[arg(long)]
    root: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.ops.start()?;
    let (keys, _) = args.keys.keys(false)?;
    let mut config = server_config(
        &read_cert(&args.cert)?,
        &read_key(&args.key)?,
        bulk_config(),
    )?;
    config.group_keys(keys);
    config.joins_only(args.root.is_some());
    let server = kwik_tokio::listen(args.listen, config)?;
    args.ops.qlog_into(&server)?;
    args.keys.reload_on_sighup(&server)?;
    println!("secondary listening on {}", server.local_addr()?);
    let Some(root) = args.root else {
        let serving = serve(server.clone(), Vec::new(), String::new());
        return args.ops.serve_until_drained(&server, serving, || {}).await;
    };
    let files = Files::new(root);
    let serving = {
        let server = server.clone();
        async move {
            while let Some(incoming) = server.accept().await {
                let Ok(session) = incoming.await else {
                    continue;
                };
                let files = files.clone();
                let find = move |r: &StripedRequest| files.get(&r.path);
                tokio::spawn(kwik_h3::serve_stripes(session, find, spawn));
            }
        }
    };
    args.ops.serve_until_drained(&server, serving, || {}).await
}
