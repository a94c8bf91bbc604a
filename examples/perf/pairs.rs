//! Connected pairs of either stack on loopback, their server side on a thread of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use kwik_core::Config;
use kwik_examples::stock::{quinn_client, quinn_server_config};
use kwik_examples::{client_config, self_signed, server_config};
use tokio::runtime::Handle;

/// A current-thread runtime on a thread of its own, for the server side.
pub(crate) struct ServerThread {
    pub(crate) handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Starts the server thread, pinned to `core` if one is given.
    pub(crate) fn start(core: Option<core_affinity::CoreId>) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Some(core) = core
                && !core_affinity::set_for_current(core)
            {
                return;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            tx.send(rt.handle().clone()).expect("handle");
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        let Ok(handle) = rx.recv() else {
            anyhow::bail!("the server thread did not start (pinning to {core:?} failed?)");
        };
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn kwik_config(streams_per_carrier: u32) -> Config {
    let mut c = Config::default();
    c.streams_per_carrier = streams_per_carrier;
    c.max_concurrent_bidi_streams = 1024;
    c.max_concurrent_uni_streams = 1024;
    c
}

pub(crate) const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A KWIK server on the server thread, and the task that accepts its first session (and
/// keeps the endpoint alive with it).
async fn kwik_server(
    srv: &Handle,
    config: kwik_core::ServerConfig,
) -> anyhow::Result<(
    SocketAddr,
    tokio::task::JoinHandle<(
        Result<kwik_tokio::Session, kwik_tokio::SessionError>,
        kwik_tokio::Endpoint,
    )>,
)> {
    let server = srv
        .spawn(async move { kwik_tokio::Endpoint::server(config, LOOPBACK) })
        .await??;
    let addr = server.local_addr()?;
    let accepted = srv.spawn(async move {
        let session = server.accept().await.expect("incoming").await;
        (session, server)
    });
    Ok((addr, accepted))
}

pub(crate) async fn kwik_pair(
    srv: &Handle,
    streams_per_carrier: u32,
) -> anyhow::Result<(kwik_tokio::Session, kwik_tokio::Session)> {
    let (cert, key) = self_signed()?;
    let config = server_config(&cert, &key, kwik_config(streams_per_carrier))?;
    let (addr, accepted) = kwik_server(srv, config).await?;
    let client = kwik_tokio::Endpoint::client(LOOPBACK)?;
    let c = client
        .connect_with(
            client_config(&cert, kwik_config(streams_per_carrier))?,
            addr,
            "localhost",
        )?
        .await?;
    let (s, _server) = accepted.await?;
    Ok((c, s?))
}

pub(crate) async fn quinn_pair(
    srv: &Handle,
) -> anyhow::Result<(quinn::Connection, quinn::Connection)> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    transport.max_concurrent_uni_streams(1024u32.into());
    quinn_pair_with(srv, Arc::new(transport), None).await
}

/// The QUIC transport settings a KWIK endpoint with [`kwik_config`] gives a plain session:
/// stream windows of `max(receive_window, 16 MiB)` (32 MiB), twice that for the
/// connection and the send window, 1,024 streams each way, keep-alive every 10 s.
pub(crate) fn plain_transport() -> Arc<quinn::TransportConfig> {
    let window = 32u32 << 20;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1024u32.into());
    t.max_concurrent_uni_streams(1024u32.into());
    t.stream_receive_window(window.into());
    t.receive_window((2 * window).into());
    t.send_window(2 * u64::from(window));
    t.keep_alive_interval(Some(std::time::Duration::from_secs(10)));
    Arc::new(t)
}

/// A quinn client and a KWIK server's plain session (the client offers the application
/// protocol alone), both sides with [`plain_transport`]'s settings.
pub(crate) async fn plain_pair(
    srv: &Handle,
) -> anyhow::Result<(quinn::Connection, kwik_tokio::Session)> {
    let (cert, key) = self_signed()?;
    let mut config = kwik_config(4);
    config.app_protocols = vec![PLAIN_ALPN.to_vec()];
    let config = server_config(&cert, &key, config)?;
    let (addr, accepted) = kwik_server(srv, config).await?;
    let c = quinn_client(&cert, plain_transport(), Some(PLAIN_ALPN))?
        .connect(addr, "localhost")?
        .await?;
    let (s, _server) = accepted.await?;
    let s = s?;
    anyhow::ensure!(s.mode() == kwik_tokio::Mode::Plain, "not a plain session");
    Ok((c, s))
}

/// The application protocol of [`plain_pair`].
const PLAIN_ALPN: &[u8] = b"perf";

/// A quinn pair with `transport` on both sides (and ALPN `alpn`, if given).
pub(crate) async fn quinn_pair_with(
    srv: &Handle,
    transport: Arc<quinn::TransportConfig>,
    alpn: Option<&[u8]>,
) -> anyhow::Result<(quinn::Connection, quinn::Connection)> {
    let (cert, key) = self_signed()?;
    let server_cfg = quinn_server_config(&cert, key, transport.clone(), alpn)?;
    let server = srv
        .spawn(async move { quinn::Endpoint::server(server_cfg, LOOPBACK) })
        .await??;
    let addr = server.local_addr()?;
    let accepted = srv.spawn(async move {
        let conn = server.accept().await.expect("incoming").await;
        (conn, server)
    });
    let c = quinn_client(&cert, transport, alpn)?
        .connect(addr, "localhost")?
        .await?;
    let (s, _server) = accepted.await?;
    Ok((c, s?))
}
