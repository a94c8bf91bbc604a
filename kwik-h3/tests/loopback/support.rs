//! What several scenarios of this binary share.

use std::net::SocketAddr;

use kwik_core::Config;

pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// HTTP/3 over KWIK with windows for bodies of tens of MiB.
pub(crate) fn config() -> Config {
    let mut c = Config::default();
    c.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    c.stream_receive_window = 32 << 20;
    c.receive_window = 64 << 20;
    c
}

/// How `serve_stripes` starts its tasks here.
pub(crate) fn spawn(f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}
