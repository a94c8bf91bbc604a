//! An HTTP/3 file server over KWIK sessions: `GET /path` serves the file at `path` under
//! `--root`. With `--secondary ADDR` (repeatable) every session is joined to those
//! secondaries (`secondary --root DIR` on the same files), and a file of at least
//! `--stripe-above` bytes is sent as a striped body: its bytes come from every server of
//! the session at once, and a server whose copy differs refuses its share.
//!
//! SIGTERM drains it (`--drain-timeout`, 30 s by default): every connection gets GOAWAY,
//! the requests in flight (and their stripes) complete, and it exits with status 0 once
//! every session is done.
//!
//! `cargo run --release --example h3_server -- --root ./files --secondary 127.0.0.1:4434`
//! writes its certificate, key and group key as the `server` example does; then
//! `cargo run --release --example h3_get -- https://localhost:4433/big.bin --cert
//! kwik-cert.der` (the certificate is self-signed: the client pins it).
//!
//! KWIK clients (`h3_get`) and stock HTTP/3 clients share the port: a client that does not
//! speak KWIK (curl, a browser, any h3 library) negotiates `h3` by ALPN and is served as a
//! plain session by the same code, its striped bodies by this server alone.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use clap::Parser;
use http::{Method, Response, StatusCode};
use kwik_examples::files::{Files, spawn};
use kwik_examples::{KeyArgs, ServerOps, bulk_config, self_signed, server_config};
use kwik_h3::StripedRequest;
use kwik_tokio::{PathState, Role, Session};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    ops: ServerOps,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// The directory whose files are served.
    #[arg(long)]
    root: PathBuf,
    /// Where to write the server's self-signed certificate (DER).
    #[arg(long, default_value = "kwik-cert.der")]
    cert_out: PathBuf,
    /// Where to write its private key (DER, PKCS#8), for secondaries to serve.
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
    /// Files of at least this many bytes are striped over every server of the session
    /// (when it has an active secondary).
    #[arg(long, default_value_t = 1 << 20)]
    stripe_above: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.ops.start()?;
    let (cert, key) = self_signed()?;
    std::fs::write(&args.cert_out, cert.as_ref())?;
    std::fs::write(&args.key_out, key.secret_der())?;
    let (keys, group_hex) = args.keys.keys(true)?;
    let mut session_config = bulk_config();
    session_config.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    let mut config = server_config(&cert, &key, session_config)?;
    config.group_keys(keys.clone());
    let server = kwik_tokio::listen(args.listen, config)?;
    args.ops.qlog_into(&server)?;
    args.keys.reload_on_sighup(&server)?;
    println!(
        "HTTP/3 over KWIK on {}, serving {}, certificate in {}, key in {}, group key {}",
        server.local_addr()?,
        args.root.display(),
        args.cert_out.display(),
        args.key_out.display(),
        group_hex.unwrap_or_else(|| format!("ids {:?}", keys.ids().collect::<Vec<_>>()))
    );
    let files = Files::new(args.root.clone());
    // Tells every connection's HTTP/3 task that the server drains: it sends GOAWAY.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let ops = std::mem::take(&mut args.ops);
    let serving = accept(server.clone(), args, files, drain_rx);
    ops.serve_until_drained(&server, serving, move || {
        let _ = drain_tx.send(true);
    })
    .await
}

/// Accepts sessions and serves each: its HTTP/3 requests, and its share of every stripe.
async fn accept(
    server: kwik_tokio::Endpoint,
    args: Args,
    files: Files,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    while let Some(incoming) = server.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        // This server's own share of every striped body.
        let find = {
            let files = files.clone();
            move |r: &StripedRequest| files.get(&r.path)
        };
        tokio::spawn(kwik_h3::serve_stripes(session.clone(), find, spawn));
        if session.role() == Role::Primary {
            // A plain session (a client that does not speak KWIK) has no other path.
            let secondaries = match session.mode() {
                kwik_tokio::Mode::Kwik => &args.secondary[..],
                kwik_tokio::Mode::Plain => &[],
            };
            for addr in secondaries {
                if let Err(e) = session.add_path(*addr, &args.secondary_name) {
                    eprintln!("cannot add {addr}: {e}");
                }
            }
            let (files, threshold) = (files.clone(), args.stripe_above);
            let drain = drain.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_h3(session, files, threshold, drain).await {
                    eprintln!("HTTP/3 connection ended: {e}");
                }
            });
        }
    }
}

/// Answers the requests of one session. When the server drains it sends GOAWAY, and the
/// session closes once its last answer is through (the engine's drain sees to that).
async fn serve_h3(
    session: Session,
    files: Files,
    threshold: u64,
    mut drain: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let conn = kwik_h3::Connection::new(session.clone());
    let striper = conn.striper();
    let mut h3: h3::server::Connection<kwik_h3::Connection, Bytes> =
        h3::server::Connection::new(conn).await?;
    let mut draining = false;
    loop {
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            changed = drain.changed(), if !draining => {
                draining = true;
                if changed.is_ok() && *drain.borrow_and_update() {
                    // GOAWAY: requests in flight go on, later ones are rejected.
                    h3.shutdown(0).await?;
                }
                continue;
            }
        };
        let resolver = match accepted {
            Ok(Some(resolver)) => resolver,
            Ok(None) => break,
            // The drained session closed.
            Err(_) if draining => break,
            Err(e) => return Err(e.into()),
        };
        let (files, striper, session) = (files.clone(), striper.clone(), session.clone());
        tokio::spawn(async move {
            let (req, mut stream) = resolver.resolve_request().await?;
            let path = req.uri().path().to_owned();
            let found = (req.method() == Method::GET)
                .then(|| files.get(&path))
                .flatten();
            let Some(content) = found else {
                let status = if req.method() == Method::GET {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::METHOD_NOT_ALLOWED
                };
                stream
                    .send_response(Response::builder().status(status).body(())?)
                    .await?;
                stream.finish().await?;
                return Ok::<_, anyhow::Error>(());
            };
            let len = content.bytes.len() as u64;
            stream
                .send_response(
                    Response::builder()
                        .status(StatusCode::OK)
                        .header("content-length", len)
                        .body(())?,
                )
                .await?;
            let secondaries = session
                .paths()
                .iter()
                .any(|p| !p.is_primary && p.state == PathState::Active);
            if len >= threshold && secondaries {
                let request = StripedRequest {
                    method: req.method().to_string(),
                    path,
                    validator: content.validator.clone(),
                };
                striper.send_striped(&mut stream, &request, len).await?;
            } else {
                for start in (0..content.bytes.len()).step_by(1 << 20) {
                    let end = (start + (1 << 20)).min(content.bytes.len());
                    stream.send_data(content.bytes.slice(start..end)).await?;
                }
            }
            stream.finish().await?;
            Ok(())
        });
    }
    Ok(())
}
