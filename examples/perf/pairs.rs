//! Connected pairs of either stack on loopback, their server side on a thread of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use kwik_core::Config;
use kwik_examples::{client_config, self_signed, server_config};
use tokio::runtime::Handle;

/// A current-thread runtime on a thread of its own, for the server side.
pub(crate) struct ServerThread {
    pub(crate) handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub(crate) fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            tx.send(rt.handle().clone()).expect("handle");
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        Self {
            handle: rx.recv().expect("server runtime started"),
            stop: Some(stop),
            thread: Some(thread),
        }
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

pub(crate) async fn kwik_pair(
    srv: &Handle,
    streams_per_carrier: u32,
) -> anyhow::Result<(kwik_tokio::Session, kwik_tokio::Session)> {
    let (cert, key) = self_signed()?;
    let config = server_config(&cert, &key, kwik_config(streams_per_carrier))?;
    let server = srv
        .spawn(async move { kwik_tokio::Endpoint::server(config, LOOPBACK) })
        .await??;
    let addr = server.local_addr()?;
    let accepted = srv.spawn(async move {
        let session = server.accept().await.expect("incoming").await;
        (session, server)
    });
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
    let (cert, key) = self_signed()?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    transport.max_concurrent_uni_streams(1024u32.into());
    let transport = Arc::new(transport);
    let mut server_cfg = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key)?;
    server_cfg.transport_config(transport.clone());
    let server = srv
        .spawn(async move { quinn::Endpoint::server(server_cfg, LOOPBACK) })
        .await??;
    let addr = server.local_addr()?;
    let accepted = srv.spawn(async move {
        let conn = server.accept().await.expect("incoming").await;
        (conn, server)
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_cfg = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    client_cfg.transport_config(transport);
    let mut client = quinn::Endpoint::client(LOOPBACK)?;
    client.set_default_client_config(client_cfg);
    let c = client.connect(addr, "localhost")?.await?;
    let (s, _server) = accepted.await?;
    Ok((c, s?))
}
