//! The WebTransport echo server of `webtransport_echo`, which its browser test runs too:
//! `h3-webtransport` unchanged on kwik-h3, on KWIK clients and plain ones (a browser)
//! alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h3_webtransport::server::AcceptedBi;
use kwik_async::{Mode, Session};
use kwik_h3::Closed;
use kwik_h3::webtransport::{ServerControl, session_stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the server answers a client's close.
pub const CLOSE_ANSWER: &str = "echoed";

/// What one session came to: the client's mode and how it closed the session.
#[derive(Debug, Clone)]
pub struct Ended {
    /// KWIK, or plain (a browser, or any WebTransport client that does not speak KWIK).
    pub mode: Mode,
    /// The client's close code and reason.
    pub closed: Closed,
}

/// Serves WebTransport echo sessions on `server` until it closes: every bidirectional
/// stream is echoed, every unidirectional stream answered with one of the server's own
/// carrying the same bytes, every datagram echoed, and a client's close answered with its
/// code and [`CLOSE_ANSWER`]. Each session's end goes to `ended`, if given.
pub async fn serve(
    server: kwik_tokio::Endpoint,
    ended: Option<tokio::sync::mpsc::UnboundedSender<anyhow::Result<Ended>>>,
) {
    while let Some(incoming) = server.accept().await {
        let ended = ended.clone();
        tokio::spawn(async move {
            let result = async {
                let session = incoming.await?;
                let mode = session.mode();
                let closed = serve_session(session).await?;
                Ok(Ended { mode, closed })
            }
            .await;
            match ended {
                Some(tx) => {
                    let _ = tx.send(result);
                }
                None => match result {
                    Ok(e) => println!(
                        "a {} session ended: the client closed with {} {:?}",
                        e.mode.name(),
                        e.closed.code,
                        e.closed.reason
                    ),
                    Err(e) => eprintln!("session: {e:#}"),
                },
            }
        });
    }
}

/// Serves one session's WebTransport session; returns how the client closed it.
pub async fn serve_session(session: Session) -> anyhow::Result<Closed> {
    let conn = kwik_h3::Connection::new(session.clone());
    let control: ServerControl = conn.webtransport_server();
    let mut h3: h3::server::Connection<_, Bytes> =
        kwik_h3::webtransport::server_builder().build(conn).await?;
    let Some(resolver) = h3.accept().await? else {
        anyhow::bail!("the connection ended before a CONNECT");
    };
    let (request, stream) = resolver.resolve_request().await?;
    let wt = Arc::new(kwik_h3::webtransport::accept_session(request, stream, h3).await?);
    let id = wt.session_id();

    let bidi = {
        let wt = wt.clone();
        tokio::spawn(async move {
            loop {
                let mut s = match wt.accept_bi().await {
                    Ok(Some(AcceptedBi::BidiStream(_, s))) => s,
                    // A request inside the session is not ours to answer.
                    Ok(Some(AcceptedBi::Request(..))) => continue,
                    Ok(None) | Err(h3::error::StreamError::ConnectionError(_)) => return,
                    // One stream that failed before its header (reset early, say).
                    Err(_) => continue,
                };
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_ok() && s.write_all(&got).await.is_ok() {
                        let _ = s.shutdown().await;
                    }
                });
            }
        })
    };
    let uni = {
        let wt = wt.clone();
        tokio::spawn(async move {
            while let Ok(Some((sid, mut s))) = wt.accept_uni().await {
                let wt = wt.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_err() {
                        return;
                    }
                    if let Ok(mut back) = wt.open_uni(sid).await
                        && back.write_all(&got).await.is_ok()
                    {
                        let _ = back.shutdown().await;
                    }
                });
            }
        })
    };
    let datagrams = {
        let wt = wt.clone();
        let sender = control.datagrams(id);
        tokio::spawn(async move {
            let mut reader = wt.datagram_reader();
            while let Ok(d) = reader.read_datagram().await {
                if sender.send_wait(d.payload()).await.is_err() {
                    return;
                }
            }
        })
    };
    let closed = control.closed(id).await?;
    tracing::info!(
        session = session_stream(id),
        code = closed.code,
        reason = %closed.reason,
        "the client closed its WebTransport session"
    );
    // The client may have closed the connection with its session (a browser does):
    // then there is nobody to answer.
    let _ = control.close(id, closed.code, CLOSE_ANSWER).await;
    // Closing the connection now could discard the capsule unsent: the client closes it
    // once it has read the capsule.
    let _ = tokio::time::timeout(Duration::from_secs(5), session.closed()).await;
    bidi.abort();
    uni.abort();
    datagrams.abort();
    Ok(closed)
}
