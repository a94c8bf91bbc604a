//! WebTransport over KWIK sessions on loopback, on both runtimes: `h3-webtransport`'s
//! server unchanged, and kwik-h3's client. 1,000 bidirectional echoes, unidirectional
//! streams both ways, a bidirectional stream the server opens, 10,000 datagrams each way
//! with the senders waiting for buffer space, and a close with a code and reason seen at
//! both ends, which resets the streams either side left open with
//! WEBTRANSPORT_SESSION_GONE.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::{or, zip};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use h3::quic::StreamErrorIncoming;
use h3_webtransport::server::AcceptedBi;
use http::Method;
use kwik_async::Session;
use kwik_core::Config;
use kwik_h3::Closed;
use kwik_h3::webtransport::{Client, SESSION_GONE, ServerControl, session_stream};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::{session_pair, tokio_run};

const ECHOES: usize = 1000;
const UNI: usize = 100;
const DATAGRAMS: u32 = 10_000;
const DATAGRAM_SIZE: usize = 1000;

type Spawn = fn(Pin<Box<dyn Future<Output = ()> + Send>>);
type ServerSession = kwik_h3::webtransport::ServerSession;
type Reader = h3_datagram::datagram_handler::DatagramReader<kwik_h3::RecvDatagramHandler>;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> Config {
    let mut c = Config::default();
    c.max_concurrent_bidi_streams = 128;
    c.max_concurrent_uni_streams = 128;
    c.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    // Room for a whole burst: datagrams have no flow control, and a reader that falls
    // behind loses what its queue cannot hold.
    c.raw_receive_queue = DATAGRAMS as usize;
    c
}

/// A datagram: its index, then filler.
fn datagram(i: u32) -> Vec<u8> {
    let mut d = vec![(i % 251) as u8; DATAGRAM_SIZE];
    d[..4].copy_from_slice(&i.to_be_bytes());
    d
}

/// Counts distinct datagrams of session stream `sid` until `DATAGRAMS` arrived, or
/// nothing came for a second.
async fn count_datagrams(
    reader: &mut Reader,
    sid: u64,
    mut first: Option<futures::channel::oneshot::Sender<()>>,
) -> usize {
    let mut seen = HashSet::new();
    while seen.len() < DATAGRAMS as usize {
        let got = or(async { reader.read_datagram().await.ok() }, async {
            async_io::Timer::after(Duration::from_secs(1)).await;
            None
        })
        .await;
        let Some(d) = got else { break };
        assert_eq!(d.stream_id().into_inner(), sid);
        let d = d.into_payload();
        assert_eq!(d.len(), DATAGRAM_SIZE);
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        assert_eq!(&d[..], &datagram(i)[..], "datagram {i} intact");
        seen.insert(i);
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
    }
    seen.len()
}

/// The server: echoes every bidirectional stream, answers every unidirectional stream
/// with one of its own carrying the same bytes, opens one bidirectional stream, counts
/// and sends datagrams, and closes when the client does.
async fn server(session: Session, spawn: Spawn) {
    let conn = kwik_h3::Connection::new(session.clone());
    let control: ServerControl = conn.webtransport_server();
    let mut h3 = kwik_h3::webtransport::server_builder()
        .build(conn)
        .await
        .unwrap();
    let resolver = h3.accept().await.unwrap().unwrap();
    let (request, stream) = resolver.resolve_request().await.unwrap();
    assert_eq!(request.method(), Method::CONNECT);
    let wt: Arc<ServerSession> = Arc::new(
        kwik_h3::webtransport::accept_session(request, stream, h3)
            .await
            .unwrap(),
    );
    let id = wt.session_id();

    // The codes of the echo streams that were reset rather than finished.
    let (reset_tx, reset_rx) = futures::channel::oneshot::channel::<u64>();
    let reset_tx = Arc::new(std::sync::Mutex::new(Some(reset_tx)));
    let accept_bi = {
        let wt = wt.clone();
        async move {
            while let Ok(Some(accepted)) = wt.accept_bi().await {
                let AcceptedBi::BidiStream(sid, mut stream) = accepted else {
                    panic!("no request expected inside the session");
                };
                assert_eq!(sid, wt.session_id());
                let reset_tx = reset_tx.clone();
                spawn(Box::pin(async move {
                    // Echoes as the bytes come, so that a stream held open hears back.
                    let mut buf = vec![0; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) => {
                                stream.close().await.unwrap();
                                return;
                            }
                            Ok(n) => stream.write_all(&buf[..n]).await.unwrap(),
                            Err(e) => {
                                let inner = e.get_ref().and_then(|e| e.downcast_ref());
                                let Some(StreamErrorIncoming::StreamTerminated { error_code }) =
                                    inner
                                else {
                                    panic!("an echo stream failed: {e}");
                                };
                                let tx = reset_tx.lock().unwrap().take();
                                tx.expect("one stream is reset").send(*error_code).unwrap();
                                return;
                            }
                        }
                    }
                }));
            }
        }
    };
    spawn(Box::pin(accept_bi));
    let accept_uni = {
        let wt = wt.clone();
        async move {
            while let Ok(Some((sid, mut stream))) = wt.accept_uni().await {
                assert_eq!(sid, wt.session_id());
                let wt = wt.clone();
                spawn(Box::pin(async move {
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).await.unwrap();
                    let mut back = wt.open_uni(wt.session_id()).await.unwrap();
                    back.write_all(&got).await.unwrap();
                    back.close().await.unwrap();
                }));
            }
        }
    };
    spawn(Box::pin(accept_uni));

    // A stream the server opens: the client answers on it.
    let mut ours = wt.open_bi(id).await.unwrap();
    ours.write_all(b"from the server").await.unwrap();
    ours.close().await.unwrap();
    let mut answer = Vec::new();
    ours.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"answered: from the server");

    // A stream the server holds open until the session ends.
    let mut held = wt.open_bi(id).await.unwrap();
    held.write_all(b"held by the server").await.unwrap();

    // Datagrams both ways, each sender waiting for room.
    let mut reader = wt.datagram_reader();
    let datagrams = control.datagrams(id);
    // The server sends once the client's first datagram shows that it reads them: sent
    // earlier, they would fill its queue while it is busy with streams.
    let (reading, read) = futures::channel::oneshot::channel();
    let receive = count_datagrams(&mut reader, session_stream(id), Some(reading));
    let send = async {
        read.await.unwrap();
        for i in 0..DATAGRAMS {
            datagrams.send_wait(&datagram(i)).await.unwrap();
        }
    };
    let (received, ()) = zip(receive, send).await;
    assert_eq!(
        received, DATAGRAMS as usize,
        "server: every datagram on loopback"
    );

    // The client closes first; the server sees its code and reason, then closes too.
    let closed = control.closed(id).await.unwrap();
    assert_eq!(
        closed,
        Closed {
            code: 7,
            reason: "client done".into()
        }
    );
    // The stream the client held open was reset when it closed the session, and the one
    // the server held was reset on this side when the close arrived.
    assert_eq!(reset_rx.await.unwrap(), SESSION_GONE);
    assert!(
        held.write_all(b"more").await.is_err(),
        "the server's stream of the closed session is reset"
    );
    control.close(id, 8, "server done").await.unwrap();
    let stats = session.stats();
    assert_eq!(
        stats.raw_dropped, 0,
        "the server dropped no datagram it received"
    );
    assert_eq!(
        stats.paths[0].raw_displaced, 0,
        "the server's sends all waited"
    );
    // The client's close of the KWIK session ends this side.
    session.closed().await;
}

async fn client(session: Session, spawn: Spawn) {
    let (client, driver) = Client::connect(
        kwik_h3::Connection::new(session.clone()),
        "https://localhost/wt".parse().unwrap(),
    )
    .await
    .unwrap();
    spawn(Box::pin(async move {
        driver.await;
    }));
    let client = Arc::new(client);

    // The server's stream.
    let mut theirs = client.accept_bi().await.unwrap();
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"from the server");
    theirs
        .write_all(b"answered: from the server")
        .await
        .unwrap();
    theirs.close().await.unwrap();

    // 1,000 bidirectional echoes, 100 at a time.
    for batch in 0..ECHOES / 100 {
        let all = (0..100).map(|k| {
            let client = client.clone();
            async move {
                let i = batch * 100 + k;
                let message = format!("echo {i} ").repeat(1 + i % 50).into_bytes();
                let mut s = client.open_bi().await.unwrap();
                s.write_all(&message).await.unwrap();
                s.close().await.unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, message, "echo {i}");
            }
        });
        futures::future::join_all(all).await;
    }

    // Unidirectional streams: each comes back on one the server opens.
    let send_uni = async {
        let all = (0..UNI).map(|i| {
            let client = client.clone();
            async move {
                let mut s = client.open_uni().await.unwrap();
                s.write_all(format!("uni {i}").as_bytes()).await.unwrap();
                s.close().await.unwrap();
            }
        });
        futures::future::join_all(all).await;
    };
    let receive_uni = async {
        let mut back = HashSet::new();
        for _ in 0..UNI {
            let mut s = client.accept_uni().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            back.insert(String::from_utf8(got).unwrap());
        }
        back
    };
    let ((), back) = zip(send_uni, receive_uni).await;
    let expected: HashSet<String> = (0..UNI).map(|i| format!("uni {i}")).collect();
    assert_eq!(back, expected);

    // Datagrams both ways, each sender waiting for room.
    let mut reader = client.datagram_reader();
    let datagrams = client.datagrams();
    let sid = session_stream(client.session_id());
    let receive = count_datagrams(&mut reader, sid, None);
    let send = async {
        for i in 0..DATAGRAMS {
            datagrams.send_wait(&datagram(i)).await.unwrap();
        }
    };
    let (received, ()) = zip(receive, send).await;
    assert_eq!(
        received, DATAGRAMS as usize,
        "client: every datagram on loopback"
    );
    let stats = session.stats();
    assert_eq!(
        stats.raw_dropped, 0,
        "the client dropped no datagram it received"
    );
    assert_eq!(
        stats.paths[0].raw_displaced, 0,
        "the client's sends all waited"
    );
    assert!(stats.paths[0].raw_sent >= u64::from(DATAGRAMS));

    // A stream still open when the session closes is reset with WEBTRANSPORT_SESSION_GONE.
    let mut held = client.open_bi().await.unwrap();
    held.write_all(b"held open").await.unwrap();
    let mut back = [0; 9];
    held.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"held open", "the server has the stream");

    // Close: the server sees ours, we see the server's.
    client.close(7, "client done").await.unwrap();
    let closed = client.closed().await.unwrap();
    assert_eq!(
        closed,
        Closed {
            code: 8,
            reason: "server done".into()
        }
    );
    session.close(kwik_async::VarInt::from_u32(0), b"");
}

macro_rules! suite {
    ($name:ident, $endpoint:ty, $run:expr, $spawn:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn webtransport_streams_datagrams_and_close() {
                let cert = TestCert::localhost();
                $run(async {
                    let server = <$endpoint>::server(cert.server(config()), loopback()).unwrap();
                    let client = <$endpoint>::client(loopback()).unwrap();
                    let (server_session, client_session) =
                        session_pair(&server, &client, cert.client(config())).await;
                    zip(
                        super::server(server_session, $spawn),
                        super::client(client_session, $spawn),
                    )
                    .await;
                });
            }
        }
    };
}

fn tokio_spawn(f: Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}

fn smol_spawn(f: Pin<Box<dyn Future<Output = ()> + Send>>) {
    smol::spawn(f).detach();
}

suite!(on_tokio, kwik_tokio::Endpoint, tokio_run, tokio_spawn);
suite!(on_smol, kwik_smol::Endpoint, smol::block_on, smol_spawn);
