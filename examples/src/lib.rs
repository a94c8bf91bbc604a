//! Shared set-up of the example programs: certificates, configs, and the body server the
//! multi-server examples use.

pub mod files;
pub mod host;
pub mod plot;
pub mod stock;
pub mod webtransport;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use kwik_core::{
    CertificateDer, ClientConfig, Config, PrivateKeyDer, PrivatePkcs8KeyDer, ServerConfig,
};
use kwik_tokio::{Endpoint, PathEvent, Role, Session};

/// Installs the log output of every example: `level` is the `--log-level` flag (`error`,
/// `warn`, `info`, `debug`, `trace`, or filter directives such as `kwik_core=debug`);
/// `RUST_LOG`, when set, wins. Logs go to standard error.
pub fn init_logging(level: &str) -> anyhow::Result<()> {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| level.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .with_context(|| format!("bad log filter {directives:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Serves the metrics of every endpoint in this process at `http://ADDR/` in the
/// Prometheus text format (any path answers). Call it inside a tokio runtime, before the
/// endpoints start.
#[cfg(feature = "metrics")]
pub fn serve_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("cannot serve metrics at {addr}"))
}

/// Without the `metrics` feature there is nothing to serve.
#[cfg(not(feature = "metrics"))]
pub fn serve_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    anyhow::bail!("cannot serve metrics at {addr}: built without the `metrics` feature")
}

/// Writes the qlog of `endpoint`'s connections and sessions into `dir`, if given.
#[cfg(feature = "qlog")]
pub fn qlog_into(endpoint: &Endpoint, dir: Option<&Path>) -> anyhow::Result<()> {
    if let Some(dir) = dir {
        endpoint
            .set_qlog_dir(dir)
            .with_context(|| format!("cannot write qlog into {}", dir.display()))?;
        println!("qlog into {}", dir.display());
    }
    Ok(())
}

/// Without the `qlog` feature there is nothing to write.
#[cfg(not(feature = "qlog"))]
pub fn qlog_into(_endpoint: &Endpoint, dir: Option<&Path>) -> anyhow::Result<()> {
    match dir {
        Some(dir) => anyhow::bail!(
            "cannot write qlog into {}: built without the `qlog` feature (add --features qlog)",
            dir.display()
        ),
        None => Ok(()),
    }
}

// The operations flags of the `server` and `secondary` examples (a plain comment: a doc
// comment would become their `--help` text).
#[derive(clap::Args, Default)]
pub struct ServerOps {
    /// Log filter: error, warn, info, debug, trace, or directives such as kwik_core=debug
    /// (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Serve Prometheus metrics at this address (`curl http://ADDR/metrics`).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Write qlog files into this directory (built with `--features qlog`).
    #[arg(long)]
    qlog: Option<std::path::PathBuf>,
    /// On SIGTERM, drain: take no new session or join, finish what is in flight, and exit
    /// (status 0) once every session is done or after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
}

impl ServerOps {
    /// Installs the logger and, if asked, the metrics endpoint (inside a tokio runtime,
    /// before the endpoint starts).
    pub fn start(&self) -> anyhow::Result<()> {
        init_logging(&self.log_level)?;
        if let Some(addr) = self.metrics {
            serve_metrics(addr)?;
            println!("metrics at http://{addr}/metrics");
        }
        Ok(())
    }

    /// Runs `serving` until it ends or SIGTERM (or Ctrl-C) comes; then drains `endpoint`
    /// (see [`kwik_tokio::Endpoint::drain`]) within `--drain-timeout`, calling `on_drain`
    /// first (an HTTP/3 server sends its GOAWAYs), and returns once it is drained and its
    /// last closes went out.
    pub async fn serve_until_drained(
        &self,
        endpoint: &Endpoint,
        serving: impl std::future::Future<Output = ()>,
        on_drain: impl FnOnce(),
    ) -> anyhow::Result<()> {
        let timeout = Duration::try_from_secs_f64(self.drain_timeout)
            .context("--drain-timeout: a number of seconds")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot catch SIGTERM")?;
        tokio::select! {
            () = serving => return Ok(()),
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(timeout_s = timeout.as_secs_f64(), "draining");
        on_drain();
        endpoint.drain(timeout);
        let drained = tokio::time::timeout(timeout + Duration::from_secs(1), endpoint.drained())
            .await
            .is_ok();
        // The closes go out before the process does (a drained connection lingers for three
        // probe timeouts, which need not be waited out in full).
        let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
        let stats = endpoint.stats();
        tracing::info!(
            drained,
            sessions_done = stats.sessions_drained,
            at_deadline = stats.drain_deadline_closes,
            "drain over"
        );
        Ok(())
    }

    /// Writes `endpoint`'s qlog if asked.
    pub fn qlog_into(&self, endpoint: &Endpoint) -> anyhow::Result<()> {
        qlog_into(endpoint, self.qlog.as_deref())
    }
}

/// Reads a group key file: one key per line, `ID HEX` (a `u32` id the operator chose and
/// 64 hexadecimal digits), the current key first and up to three earlier ones after it;
/// blank lines and lines starting with `#` are skipped. Errors name the line, never a key.
pub fn read_group_keys(path: &Path) -> anyhow::Result<kwik_core::GroupKeys> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the group key file {}", path.display()))?;
    let mut keys: Option<kwik_core::GroupKeys> = None;
    let lines = text.lines().enumerate().filter(|(_, l)| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    });
    for (n, line) in lines {
        let at = || format!("{} line {}", path.display(), n + 1);
        let (id, hex) = line
            .trim()
            .split_once(char::is_whitespace)
            .with_context(|| format!("{}: expected `ID HEX`", at()))?;
        let id: u32 = id
            .parse()
            .with_context(|| format!("{}: the key id is not a u32", at()))?;
        let key = kwik_core::GroupKey::from_hex(hex)
            .with_context(|| format!("{}: the key is not 64 hex digits", at()))?;
        keys = Some(match keys {
            None => kwik_core::GroupKeys::new(id, key),
            Some(k) => k.with_earlier(id, key).with_context(at)?,
        });
    }
    keys.with_context(|| format!("{} holds no key", path.display()))
}

// The group key flags of the server examples (a plain comment: a doc comment would become
// their `--help` text).
#[derive(clap::Args, Default)]
pub struct KeyArgs {
    /// The group key the deployment's servers share (64 hex digits, key id 0). A primary
    /// draws a random one when neither this nor --group-key-file is given.
    #[arg(long, conflicts_with = "group_key_file")]
    group_key: Option<String>,
    /// The group keys from a file, re-read on SIGHUP (key rotation): one `ID HEX` line per
    /// key (a u32 id and 64 hex digits), the current key first, up to three earlier ones
    /// after it.
    #[arg(long)]
    group_key_file: Option<std::path::PathBuf>,
}

impl KeyArgs {
    /// The keys given, or with `draw` and none given a random key under id 0; with the
    /// hex of a key given or drawn on the command line, for the secondaries.
    pub fn keys(&self, draw: bool) -> anyhow::Result<(kwik_core::GroupKeys, Option<String>)> {
        let hex = match (&self.group_key, &self.group_key_file) {
            (_, Some(file)) => return Ok((read_group_keys(file)?, None)),
            (Some(hex), None) => hex.clone(),
            (None, None) if draw => {
                let mut bytes = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
                hex(&bytes)
            }
            (None, None) => anyhow::bail!("a group key is needed: --group-key or --group-key-file"),
        };
        let key = kwik_core::GroupKey::from_hex(&hex).context("group key: 64 hex digits")?;
        Ok((kwik_core::GroupKeys::new(0, key), Some(hex)))
    }

    /// With `--group-key-file`, re-reads it into `endpoint` on every SIGHUP (see
    /// [`kwik_tokio::Endpoint::set_group_keys`]); a file that does not parse is reported
    /// and the keys stay as they were. Logs key ids, never keys.
    pub fn reload_on_sighup(&self, endpoint: &Endpoint) -> anyhow::Result<()> {
        let Some(file) = self.group_key_file.clone() else {
            return Ok(());
        };
        let endpoint = endpoint.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot catch SIGHUP")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match read_group_keys(&file) {
                    Ok(keys) => {
                        tracing::info!(keys = ?keys, "SIGHUP: group keys reloaded");
                        endpoint.set_group_keys(keys);
                    }
                    Err(e) => tracing::error!("SIGHUP: group keys not reloaded: {e:#}"),
                }
            }
        });
        Ok(())
    }
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, with its key: ECDSA
/// P-256, valid from an hour ago for 13 days, as browsers require of a certificate they
/// accept by its hash (WebTransport's `serverCertificateHashes`: at most 14 days, no RSA).
pub fn self_signed() -> anyhow::Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let names = ["localhost", "127.0.0.1", "::1"]
        .map(str::to_owned)
        .to_vec();
    let mut params = rcgen::CertificateParams::new(names)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(13);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let der = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((der, key))
}

/// The SHA-256 hash of a certificate, as a page passes it to WebTransport's
/// `serverCertificateHashes`.
pub fn cert_hash(cert: &CertificateDer<'_>) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(cert.as_ref()).into()
}

/// A server config for `cert`.
pub fn server_config(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    config: Config,
) -> anyhow::Result<ServerConfig> {
    Ok(ServerConfig::with_single_cert(
        vec![cert.clone()],
        key.clone_key(),
        config,
    )?)
}

/// A client config trusting exactly `cert`.
pub fn client_config(
    cert: &CertificateDer<'static>,
    config: Config,
) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::with_root_certificates(
        [cert.clone()],
        config,
    )?)
}

/// Reads a DER certificate written by the `server` example.
pub fn read_cert(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    Ok(CertificateDer::from(std::fs::read(path)?))
}

/// Reads a DER PKCS#8 key written by the `server` example.
pub fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        std::fs::read(path)?,
    )))
}

/// The host an `https://HOST[:PORT]/...` URL names and its addresses, in the resolver's
/// order (port 443 when the URL gives none). HOST is a name or an IP address.
pub async fn resolve(url: &http::Uri) -> anyhow::Result<(String, Vec<SocketAddr>)> {
    let authority = url.authority().context("the URL names no server")?;
    // An IPv6 literal comes in brackets.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "{host} has no address");
    Ok((host, addrs))
}

/// A client config that trusts the certificate at `pinned` alone (DER, as the example
/// servers write their self-signed one), or else the platform's roots.
pub fn trusting(pinned: Option<&Path>, config: Config) -> anyhow::Result<ClientConfig> {
    if let Some(path) = pinned {
        return client_config(&read_cert(path)?, config);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .context("cannot load the platform's root certificates")?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    Ok(ClientConfig::from_rustls(tls, config)?)
}

/// Dials `addrs` in order, verifying the server's certificate as `server_name`, until one
/// completes its handshake within `each`; returns that session with its endpoint (one of
/// the address's family). The attempts before it are closed.
pub async fn dial_first(
    config: &ClientConfig,
    addrs: &[SocketAddr],
    server_name: &str,
    each: Duration,
) -> anyhow::Result<(Endpoint, Session)> {
    let mut failures = Vec::new();
    for &addr in addrs {
        let local = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let endpoint = match Endpoint::client(local) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                failures.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let attempt = endpoint.connect_with(config.clone(), addr, server_name)?;
        match tokio::time::timeout(each, attempt).await {
            Ok(Ok(session)) => return Ok((endpoint, session)),
            Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
            Err(_) => failures.push(format!("{addr}: no answer within {each:?}")),
        }
        endpoint.close(kwik_tokio::VarInt::from_u32(0), b"");
    }
    anyhow::bail!("no address answered: {}", failures.join("; "))
}

/// Formats a byte rate.
pub fn rate(bytes: u64, secs: f64) -> String {
    format!("{:.1} Mbit/s", bytes as f64 * 8.0 / secs.max(1e-9) / 1e6)
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Session knobs for bulk multi-server transfers: windows large enough for several paths'
/// chunks in flight at once.
pub fn bulk_config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 32 << 20;
    c.receive_window = 64 << 20;
    c
}

/// Size of the body's repeating block.
const BLOCK: usize = 1 << 20;

/// The body every example server serves: a deterministic 1 MiB pattern, repeated, so that
/// any server can produce any range of it and the client can check the whole. Made once
/// per process and shared: each call is a reference to the same bytes, so a server that
/// holds thousands of sessions holds one block, not one per session.
pub fn block() -> Bytes {
    static SHARED: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            Bytes::from(
                (0..BLOCK as u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .clone()
}

/// The bytes `[offset, offset + len)` of a body made of `block` repeated, as slices of it.
pub fn body_range(block: &Bytes, offset: u64, len: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let start = (pos % BLOCK as u64) as usize;
        let take = ((BLOCK - start) as u64).min(end - pos) as usize;
        out.push(block.slice(start..start + take));
        pos += take as u64;
    }
    out
}

/// Checks a received body byte by byte against the known pattern as it arrives: one
/// comparison with the block in memory, no hash of the received bytes and none of the
/// expected ones, so the check costs a fraction of what the transport does.
pub struct BodyCheck {
    block: Bytes,
    received: u64,
    first_mismatch: Option<u64>,
}

impl Default for BodyCheck {
    fn default() -> Self {
        Self {
            block: block(),
            received: 0,
            first_mismatch: None,
        }
    }
}

impl BodyCheck {
    /// Compares the next `chunk` of the body with the pattern.
    pub fn update(&mut self, chunk: &[u8]) {
        let mut at = 0;
        for piece in body_range(&self.block, self.received, chunk.len() as u64) {
            let got = &chunk[at..at + piece.len()];
            if self.first_mismatch.is_none() && got != &piece[..] {
                let i = got.iter().zip(piece.iter()).position(|(a, b)| a != b);
                self.first_mismatch = Some(self.received + (at + i.unwrap_or(0)) as u64);
            }
            at += piece.len();
        }
        self.received += chunk.len() as u64;
    }

    /// Bytes compared so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// `Ok` if exactly `len` bytes arrived and each matched the body.
    pub fn verify(&self, len: u64) -> anyhow::Result<()> {
        if let Some(at) = self.first_mismatch {
            anyhow::bail!("byte {at} of the body differs");
        }
        anyhow::ensure!(
            self.received == len,
            "received {} bytes of {len}",
            self.received
        );
        Ok(())
    }
}

/// What a client's paths received beyond a body of `body` bytes: the ratio of the paths'
/// stream bytes to the body, and the bytes received twice by reason.
pub fn copy_report(stats: &kwik_core::SessionStats, body: u64) -> String {
    let received = stats.stream_bytes_received();
    let c = stats.stripe_copy_bytes;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "paths received {:.3} x the body; received twice: {:.1} MiB (end game {:.1}, \
         stall {:.1}, full window {:.1}, failover {:.1}, other {:.1}); end-game copies \
         lost {:.1} of {:.1} MiB pulled",
        received as f64 / body.max(1) as f64,
        mib(c.total()),
        mib(c.end_game),
        mib(c.stall),
        mib(c.window),
        mib(c.failover),
        mib(c.other),
        mib(stats.end_game_copy_bytes_lost),
        mib(stats.end_game_copy_bytes),
    )
}

/// Writes every range this server is delegated in `session`, from the body.
pub async fn serve_delegations(session: Session) {
    let block = block();
    while let Ok((d, mut writer)) = session.accept_delegation().await {
        let pieces = body_range(&block, d.body_offset, d.len);
        tokio::spawn(async move {
            for piece in pieces {
                if writer.write_chunk(piece).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Primary: answers each request `body <len>` on a bidirectional stream by striping a body
/// of `len` bytes over every path of the session.
pub async fn serve_requests(session: Session) {
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        tokio::spawn(async move {
            let request = recv.read_to_end(1024).await?;
            let text = String::from_utf8_lossy(&request).into_owned();
            match text
                .strip_prefix("body ")
                .and_then(|n| n.trim().parse::<u64>().ok())
            {
                Some(len) => {
                    send.stripe(Bytes::from_static(b"body"), len)?;
                }
                // Anything else is echoed.
                None => send.write_all(&request).await?,
            }
            send.finish()?;
            let _ = send.stopped().await;
            Ok::<_, anyhow::Error>(())
        });
    }
}

/// Accepts sessions on `endpoint`: a primary session gets `secondaries` added as paths
/// (verified as `server_name`) and its requests served; a joined (secondary) session
/// serves its delegations.
pub async fn serve(endpoint: Endpoint, secondaries: Vec<SocketAddr>, server_name: String) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        tokio::spawn(serve_delegations(session.clone()));
        if session.role() == Role::Primary {
            // A plain session (a client that does not speak KWIK) has no other path.
            let secondaries = match session.mode() {
                kwik_tokio::Mode::Kwik => &secondaries[..],
                kwik_tokio::Mode::Plain => &[],
            };
            for addr in secondaries {
                if let Err(e) = session.add_path(*addr, &server_name) {
                    eprintln!("cannot add {addr}: {e}");
                }
            }
            tokio::spawn(serve_requests(session));
        }
    }
}

/// Waits until `want` paths besides the primary are active (or `limit` passes).
pub async fn wait_paths(session: &Session, want: usize, limit: Duration) -> anyhow::Result<()> {
    let mut active = 0;
    tokio::time::timeout(limit, async {
        while active < want {
            if let PathEvent::Active(_) = session.path_event().await? {
                active += 1;
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("secondary paths did not become active")?
}
