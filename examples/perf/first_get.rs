//! A stock HTTP/3 client's first GET: h3 over h3-quinn fetches 1 KiB through a relay that
//! holds every datagram `DELAY` each way, from a kwik-h3 server (a plain session, as
//! `h3_server` serves one) and from an h3-quinn server. Reported: UDP payload bytes each
//! way, and round trips from the client's first Initial to the last byte of the body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kwik_examples::{self_signed, server_config};
use tokio::net::UdpSocket;

use kwik_examples::stock::{quinn_client, quinn_server_config};

use crate::pairs::LOOPBACK;

/// One way of the relay: a round trip is twice this.
const DELAY: Duration = Duration::from_millis(10);
const BODY: usize = 1024;

/// What one first GET cost.
pub(crate) struct FirstGet {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) round_trips: f64,
}

/// Relays datagrams between one client and `server`, each after `DELAY`; counts the UDP
/// payload bytes each way. Returns the address the client dials.
async fn relay(server: SocketAddr, up: Arc<AtomicU64>, down: Arc<AtomicU64>) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind(LOOPBACK).await.expect("relay socket"));
    let back = Arc::new(UdpSocket::bind(LOOPBACK).await.expect("relay socket"));
    back.connect(server).await.expect("relay to server");
    let addr = front.local_addr().expect("relay address");
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    {
        let (front, back, client) = (front.clone(), back.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                up.fetch_add(n as u64, Ordering::Relaxed);
                let (back, data) = (back.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    tokio::time::sleep(DELAY).await;
                    let _ = back.send(&data).await;
                });
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            down.fetch_add(n as u64, Ordering::Relaxed);
            let to = *client.lock().unwrap_or_else(|e| e.into_inner());
            let (front, data) = (front.clone(), buf[..n].to_vec());
            if let Some(to) = to {
                tokio::spawn(async move {
                    tokio::time::sleep(DELAY).await;
                    let _ = front.send_to(&data, to).await;
                });
            }
        }
    });
    addr
}

/// quinn's own transport settings: the stock client and server as shipped.
fn quinn_defaults() -> Arc<quinn::TransportConfig> {
    Arc::new(quinn::TransportConfig::default())
}

/// Answers every GET with `BODY` bytes on `conn`.
async fn answer<C: h3::quic::Connection<Bytes>>(conn: C) {
    let Ok(mut h3) = h3::server::Connection::<C, Bytes>::new(conn).await else {
        return;
    };
    // One request at a time is all a first GET needs.
    while let Ok(Some(resolver)) = h3.accept().await {
        let Ok((_, mut stream)) = resolver.resolve_request().await else {
            return;
        };
        let response = http::Response::builder()
            .status(200)
            .body(())
            .expect("response");
        if stream.send_response(response).await.is_ok()
            && stream
                .send_data(Bytes::from(vec![0x61u8; BODY]))
                .await
                .is_ok()
        {
            let _ = stream.finish().await;
        }
    }
}

/// The first GET against a kwik-h3 server (`kwik`) or an h3-quinn server.
pub(crate) async fn first_get(kwik: bool) -> anyhow::Result<FirstGet> {
    let (cert, key) = self_signed()?;
    let server_addr = if kwik {
        let mut config = kwik_examples::bulk_config();
        config.app_protocols = vec![kwik_h3::ALPN.to_vec()];
        let server = kwik_tokio::Endpoint::server(server_config(&cert, &key, config)?, LOOPBACK)?;
        let addr = server.local_addr()?;
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                if let Ok(session) = incoming.await {
                    tokio::spawn(answer(kwik_h3::Connection::new(session)));
                }
            }
        });
        addr
    } else {
        let config = quinn_server_config(&cert, key, quinn_defaults(), Some(kwik_h3::ALPN))?;
        let server = quinn::Endpoint::server(config, LOOPBACK)?;
        let addr = server.local_addr()?;
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                if let Ok(conn) = incoming.await {
                    tokio::spawn(answer(h3_quinn::Connection::new(conn)));
                }
            }
        });
        addr
    };
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let via = relay(server_addr, up.clone(), down.clone()).await;

    let client = quinn_client(&cert, quinn_defaults(), Some(kwik_h3::ALPN))?;

    let started = Instant::now();
    let conn = client.connect(via, "localhost")?.await?;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
    let driving = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let req = http::Request::get("https://localhost/1k").body(())?;
    let mut stream = send.send_request(req).await?;
    // A server may stop the request stream once it answered (RFC 9114, 4.1.2).
    let _ = stream.finish().await;
    stream.recv_response().await?;
    let mut n = 0;
    while let Some(chunk) = stream.recv_data().await? {
        n += chunk.remaining();
    }
    let took = started.elapsed();
    anyhow::ensure!(n == BODY, "got {n} bytes");
    let (up, down) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    conn.close(quinn::VarInt::from_u32(0x100), b"done");
    driving.abort();
    Ok(FirstGet {
        up,
        down,
        round_trips: took.as_secs_f64() / (2.0 * DELAY.as_secs_f64()),
    })
}
