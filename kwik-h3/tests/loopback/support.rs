//! What several scenarios of this binary share.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use kwik_async::Session;
use kwik_core::Config;
use kwik_h3::{Content, StripedRequest};

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

/// The secondaries server `i` of `addrs` adds to its sessions: the others if it is the
/// primary (the first), none otherwise.
pub(crate) fn secondaries(addrs: &[SocketAddr], i: usize) -> Vec<SocketAddr> {
    if i == 0 {
        addrs[1..].to_vec()
    } else {
        Vec::new()
    }
}

/// How `serve_stripes` starts its tasks here.
pub(crate) fn spawn(f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}

/// A `200 OK` with a `content-length` of `len`.
pub(crate) fn response(len: usize) -> Response<()> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-length", len)
        .body(())
        .unwrap()
}

/// A primary's HTTP/3 server: `GET` of the path `striped` is answered with a striped body
/// (`send_striped`), any other of `files` with `send_data`.
pub(crate) async fn serve_h3(
    session: Session,
    files: Arc<BTreeMap<&'static str, Content>>,
    striped: &'static str,
) {
    let conn = kwik_h3::Connection::new(session);
    let striper = conn.striper();
    let mut h3: h3::server::Connection<kwik_h3::Connection, Bytes> =
        h3::server::Connection::new(conn).await.unwrap();
    while let Ok(Some(resolver)) = h3.accept().await {
        let (req, mut stream) = resolver.resolve_request().await.unwrap();
        let path = req.uri().path().to_owned();
        let file = files[path.as_str()].clone();
        let striper = striper.clone();
        tokio::spawn(async move {
            stream
                .send_response(response(file.bytes.len()))
                .await
                .unwrap();
            if path == striped {
                let request = StripedRequest {
                    method: req.method().to_string(),
                    path,
                    validator: file.validator.clone(),
                };
                striper
                    .send_striped(&mut stream, &request, file.bytes.len() as u64)
                    .await
                    .unwrap();
            } else if !file.bytes.is_empty() {
                stream.send_data(file.bytes.clone()).await.unwrap();
            }
            stream.finish().await.unwrap();
        });
    }
}
