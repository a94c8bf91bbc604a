//! One host of the real-network scenarios: a primary, a secondary or a client.
//!
//! ```text
//! kwik-node primary   --listen ADDR --dir DIR [--secondary ADDR]... [--same-peer ADDR]...
//! kwik-node secondary --listen ADDR --dir DIR
//! kwik-node client    --server ADDR --dir DIR --get BYTES [--paths N] [--stream|--striped]
//!                     [--cut-after SECS]
//! kwik-node mptcp-server --listen ADDR --dir DIR
//! kwik-node mptcp-client --server ADDR --dir DIR --get BYTES [--cut-after SECS]
//! kwik-node quinn-server --listen ADDR --dir DIR
//! kwik-node quinn-client --server ADDR --dir DIR --get BYTES [--cut-after SECS]
//! ```
//!
//! With `--h3` on the primary, the secondaries and the client, the session carries HTTP/3
//! (kwik-h3): the client GETs `/body/BYTES`, and the primary answers with a body striped
//! over its secondaries (`send_striped`, served by `serve_stripes` on every server), or,
//! without secondaries, with plain DATA frames.
//!
//! The `mptcp-*` modes move the same body over a Linux MPTCP socket (protocol 262), for
//! comparison on the same links; the `quinn-*` modes over one plain quinn connection.
//!
//! A server drains on SIGTERM (30 s at most): it takes no new session or join, serves
//! what it accepted, prints `drained sessions_done=.. at_deadline=..` and exits with
//! status 0. On SIGHUP it re-reads its group keys from `DIR/keys` (one `ID HEX` line per
//! key, the current one first; `group.key` is key 0). `--lifetimes SECS` sets the ticket
//! and join proof lifetimes of a server (60 s by default). The client's last line is
//! `events refused=.. failed=..`: the pulls a server refused and the paths that failed.
//!
//! `--same-peer` adds another address of the primary itself (same-peer multipath); the
//! client's `--stream` asks for the body written on the stream by the primary (spread over
//! its paths by the scheduler) rather than striped over the servers.
//!
//! Servers share the certificate, key and group key files in `DIR` (the primary writes
//! them). The client prints `ready` once its paths are active, `cut` when `--cut-after`
//! seconds passed since the first byte (the harness then cuts a link) followed by one
//! `rtt path=.. ms=..` line per path (the smoothed RTT at the cut), `lost after_cut_ms=..
//! error=..` if the transfer then fails, and at the end one
//! line `done bytes=.. secs=.. sha256_ok=.. gap_ms=.. slow_ms=..` followed by one `path ..`
//! line per path. `gap_ms` is the longest time the reader got no new byte and `slow_ms`
//! the longest stretch of 100 ms windows (slid by 10 ms) under 5 Mbit/s, both from the cut
//! (or the first byte) to the last byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_core::{
    CertificateDer, ClientConfig, Config, GroupKey, PrivateKeyDer, PrivatePkcs8KeyDer, ServerConfig,
};
use kwik_tokio::{Endpoint, PathEvent, PathKind, Role, Session, VarInt};
use sha2::{Digest, Sha256};

fn config(h3: bool) -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 32 << 20;
    c.receive_window = 64 << 20;
    if h3 {
        c.app_protocols = vec![kwik_h3::ALPN.to_vec()];
    }
    c
}

/// The body: byte `i` is a fixed function of `i`, so any server serves any range.
fn body_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn body_range(offset: u64, len: u64) -> Bytes {
    Bytes::from((offset..offset + len).map(body_byte).collect::<Vec<u8>>())
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn cut_after(args: &[String]) -> Option<Duration> {
    arg(args, "--cut-after").map(|s| Duration::from_secs_f64(s.parse().unwrap()))
}

fn args_all(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

fn server_config(dir: &Path, create: bool, h3: bool, lifetimes: Option<Duration>) -> ServerConfig {
    let (cert, key, group) = if create {
        let certified = rcgen::generate_simple_self_signed(vec!["kwik.test".to_owned()]).unwrap();
        let cert = certified.cert.der().to_vec();
        let key = certified.signing_key.serialize_der();
        let group: [u8; 32] = Sha256::digest(&key).into();
        std::fs::write(dir.join("cert.der"), &cert).unwrap();
        std::fs::write(dir.join("key.der"), &key).unwrap();
        std::fs::write(dir.join("group.key"), group).unwrap();
        (cert, key, group)
    } else {
        let group: [u8; 32] = std::fs::read(dir.join("group.key"))
            .unwrap()
            .try_into()
            .unwrap();
        (
            std::fs::read(dir.join("cert.der")).unwrap(),
            std::fs::read(dir.join("key.der")).unwrap(),
            group,
        )
    };
    let mut session = config(h3);
    if let Some(t) = lifetimes {
        session.ticket_lifetime = t;
        session.join_proof_lifetime = t;
    }
    let mut config = ServerConfig::with_single_cert(
        vec![CertificateDer::from(cert)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        session,
    )
    .unwrap();
    config.group_key(GroupKey::new(group));
    config
}

async fn serve_session(session: Session) {
    let s = session.clone();
    tokio::spawn(async move {
        while let Ok((d, mut writer)) = s.accept_delegation().await {
            tokio::spawn(async move {
                let mut pos = d.body_offset;
                let end = d.body_offset + d.len;
                while pos < end {
                    let n = (end - pos).min(256 * 1024);
                    if writer.write_chunk(body_range(pos, n)).await.is_err() {
                        return;
                    }
                    pos += n;
                }
            });
        }
    });
    if session.role() != Role::Primary {
        return;
    }
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        let request = recv.read_to_end(64).await.unwrap_or_default();
        let request = String::from_utf8_lossy(&request).into_owned();
        if let Some(len) = request
            .strip_prefix("stream ")
            .and_then(|n| n.parse::<u64>().ok())
        {
            tokio::spawn(async move {
                let mut pos = 0;
                while pos < len {
                    let n = (len - pos).min(256 * 1024);
                    if send.write_chunk(body_range(pos, n)).await.is_err() {
                        return;
                    }
                    pos += n;
                }
                let _ = send.finish();
                let _ = send.stopped().await;
            });
            continue;
        }
        let Some(len) = request
            .strip_prefix("body ")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        send.stripe(Bytes::from_static(b"body"), len).unwrap();
        send.finish().unwrap();
    }
}

/// The content an HTTP/3 server serves at `path` (`/body/N`): the body of N bytes, and a
/// validator any server computes alike.
fn h3_content(path: &str) -> Option<kwik_h3::Content> {
    static BODIES: std::sync::Mutex<Vec<(u64, Bytes)>> = std::sync::Mutex::new(Vec::new());
    let len: u64 = path.strip_prefix("/body/")?.parse().ok()?;
    if len > 1 << 30 {
        return None;
    }
    let mut bodies = BODIES.lock().unwrap();
    let bytes = match bodies.iter().find(|(l, _)| *l == len) {
        Some((_, b)) => b.clone(),
        None => {
            let b = body_range(0, len);
            bodies.push((len, b.clone()));
            b
        }
    };
    Some(kwik_h3::Content {
        bytes,
        validator: Bytes::from(format!("body-v1-{len}")),
    })
}

fn spawn_boxed(f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}

/// Serves stripes (every server) and, on the primary, HTTP/3 GETs of `/body/N`.
async fn serve_h3_session(session: Session, striped: bool) {
    tokio::spawn(kwik_h3::serve_stripes(
        session.clone(),
        |r: &kwik_h3::StripedRequest| h3_content(&r.path),
        spawn_boxed,
    ));
    if session.role() != Role::Primary {
        return;
    }
    let conn = kwik_h3::Connection::new(session);
    let striper = conn.striper();
    let Ok(mut h3) = h3::server::Connection::<_, Bytes>::new(conn).await else {
        return;
    };
    while let Ok(Some(resolver)) = h3.accept().await {
        let striper = striper.clone();
        tokio::spawn(async move {
            let Ok((req, mut stream)) = resolver.resolve_request().await else {
                return;
            };
            let path = req.uri().path().to_owned();
            let Some(content) = h3_content(&path) else {
                let resp = http::Response::builder().status(404).body(()).unwrap();
                let _ = stream.send_response(resp).await;
                let _ = stream.finish().await;
                return;
            };
            let len = content.bytes.len() as u64;
            let resp = http::Response::builder()
                .status(200)
                .header("content-length", len)
                .body(())
                .unwrap();
            if stream.send_response(resp).await.is_err() {
                return;
            }
            if striped {
                let request = kwik_h3::StripedRequest {
                    method: "GET".into(),
                    path,
                    validator: content.validator,
                };
                if let Err(e) = striper.send_striped(&mut stream, &request, len).await {
                    eprintln!("send_striped: {e}");
                    return;
                }
            } else {
                for start in (0..content.bytes.len()).step_by(256 * 1024) {
                    let end = (start + 256 * 1024).min(content.bytes.len());
                    if stream
                        .send_data(content.bytes.slice(start..end))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let _ = stream.finish().await;
        });
    }
}

async fn run_server(
    listen: SocketAddr,
    dir: &Path,
    primary: bool,
    secondaries: Vec<SocketAddr>,
    same_peer: Vec<SocketAddr>,
    h3: bool,
    lifetimes: Option<Duration>,
) {
    let server = kwik_tokio::listen(listen, server_config(dir, primary, h3, lifetimes)).unwrap();
    if primary {
        std::fs::write(dir.join("ready"), b"").unwrap();
    }
    reload_keys_on_sighup(&server, dir.join("keys"));
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        () = accept(&server, secondaries, same_peer, h3) => return,
        _ = term.recv() => {}
    }
    let timeout = Duration::from_secs(30);
    server.drain(timeout);
    let _ = tokio::time::timeout(timeout + Duration::from_secs(1), server.drained()).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), server.wait_idle()).await;
    let stats = server.stats();
    println!(
        "drained sessions_done={} at_deadline={}",
        stats.sessions_drained, stats.drain_deadline_closes
    );
}

/// On every SIGHUP, gives `server` the group keys in `file`: one `ID HEX` line per key,
/// the current one first.
fn reload_keys_on_sighup(server: &Endpoint, file: PathBuf) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let server = server.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut keys: Option<kwik_core::GroupKeys> = None;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let (id, hex) = line.trim().split_once(' ').expect("ID HEX");
                let id: u32 = id.parse().expect("key id");
                let key = GroupKey::from_hex(hex).expect("64 hex digits");
                keys = Some(match keys {
                    None => kwik_core::GroupKeys::new(id, key),
                    Some(k) => k.with_earlier(id, key).expect("at most four keys"),
                });
            }
            let keys = keys.expect("a key");
            println!("keys {:?}", keys.ids().collect::<Vec<_>>());
            server.set_group_keys(keys);
        }
    });
}

async fn accept(
    server: &Endpoint,
    secondaries: Vec<SocketAddr>,
    same_peer: Vec<SocketAddr>,
    h3: bool,
) {
    while let Some(incoming) = server.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        if session.role() == Role::Primary {
            for a in &secondaries {
                if let Err(e) = session.add_path(*a, "kwik.test") {
                    eprintln!("add_path {a}: {e}");
                }
            }
            for a in &same_peer {
                if let Err(e) = session.add_same_peer_path(*a, "kwik.test", PathKind::SamePeer) {
                    eprintln!("add_same_peer_path {a}: {e}");
                }
            }
        }
        if h3 {
            tokio::spawn(serve_h3_session(session, !secondaries.is_empty()));
        } else {
            tokio::spawn(serve_session(session));
        }
    }
}

/// What a reader saw: every read with its time, and the checksums.
struct Progress {
    len: u64,
    read: u64,
    hasher: Sha256,
    want: Sha256,
    started: Instant,
    first: Option<Instant>,
    cut_after: Option<Duration>,
    cut_at: Option<Instant>,
    trace: Vec<(Instant, u64)>,
}

impl Progress {
    fn new(len: u64, cut_after: Option<Duration>) -> Self {
        Self {
            len,
            read: 0,
            hasher: Sha256::new(),
            want: Sha256::new(),
            started: Instant::now(),
            first: None,
            cut_after,
            cut_at: None,
            trace: Vec::new(),
        }
    }

    /// Prints how long after the cut the transfer failed.
    fn lost(&self, error: &str) {
        let since = self.cut_at.map_or(-1, |t| t.elapsed().as_millis() as i64);
        println!("lost after_cut_ms={since} error={error}");
    }

    /// Takes one read; true when this read triggered the cut.
    fn on_read(&mut self, chunk: &[u8]) -> bool {
        let now = Instant::now();
        self.hasher.update(chunk);
        self.want.update(body_range(self.read, chunk.len() as u64));
        self.read += chunk.len() as u64;
        self.trace.push((now, self.read));
        let first = *self.first.get_or_insert(now);
        if let Some(after) = self.cut_after
            && self.cut_at.is_none()
            && now >= first + after
        {
            self.cut_at = Some(now);
            println!("cut");
            return true;
        }
        false
    }

    /// Prints the `done` line.
    fn done(self) {
        let secs = self.started.elapsed().as_secs_f64();
        let ok = self.hasher.finalize() == self.want.finalize() && self.read == self.len;
        let from = self.cut_at.or(self.first).unwrap_or(self.started);
        let end = self.trace.last().map_or(from, |(t, _)| *t);
        let mut gap = Duration::ZERO;
        let mut last = from;
        for (t, _) in self.trace.iter().filter(|(t, _)| *t > from) {
            gap = gap.max(*t - last);
            last = *t;
        }
        let slow = kwik_tests::failover::slow_stretch(&self.trace, from, end);
        println!(
            "done bytes={} secs={secs:.3} sha256_ok={ok} gap_ms={} slow_ms={}",
            self.read,
            gap.as_millis(),
            slow.as_millis()
        );
    }
}

async fn run_client(
    server: SocketAddr,
    dir: &Path,
    len: u64,
    paths: usize,
    stream: bool,
    cut_after: Option<Duration>,
    h3: bool,
) {
    let cert = CertificateDer::from(std::fs::read(dir.join("cert.der")).unwrap());
    let config = ClientConfig::with_root_certificates([cert], config(h3)).unwrap();
    let client = Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    let session = client
        .connect_with(config, server, "kwik.test")
        .unwrap()
        .await
        .expect("session");
    let mut active = 0;
    while active < paths {
        match tokio::time::timeout(Duration::from_secs(10), session.path_event()).await {
            Ok(Ok(PathEvent::Active(_))) => active += 1,
            Ok(Ok(_)) => {}
            _ => panic!("paths did not become active"),
        }
    }
    println!("ready");
    if h3 {
        h3_get(&session, len, cut_after).await;
        print_paths(&session);
        session.close(VarInt::from_u32(0), b"done");
        return;
    }
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    let verb = if stream { "stream" } else { "body" };
    send.write_all(format!("{verb} {len}").as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let mut progress = Progress::new(len, cut_after);
    loop {
        match recv.read_chunk(usize::MAX).await {
            Ok(Some(chunk)) => {
                if progress.on_read(&chunk) {
                    // The smoothed RTT the paths had when the link was cut, queueing included.
                    for p in session.paths() {
                        println!(
                            "rtt path={} ms={}",
                            p.id.0,
                            p.rtt.unwrap_or_default().as_millis()
                        );
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                progress.lost(&e.to_string());
                break;
            }
        }
    }
    progress.done();
    print_paths(&session);
    print_events(&session).await;
    session.close(VarInt::from_u32(0), b"done");
}

/// Prints how many pulls a server refused and how many paths failed.
async fn print_events(session: &Session) {
    let (mut refused, mut failed) = (0, 0);
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::ZERO, session.path_event()).await {
        match e {
            PathEvent::PullRefused(..) => refused += 1,
            PathEvent::Failed(..) => failed += 1,
            _ => {}
        }
    }
    println!("events refused={refused} failed={failed}");
}

fn print_paths(session: &Session) {
    let stats = session.stats();
    let received = stats.stream_bytes_received();
    let read = stats.stream_bytes_read.max(1);
    let c = stats.stripe_copy_bytes;
    println!(
        "copies ratio={:.4} twice={} end_game={} stall={} window={} failover={} other={}",
        received as f64 / read as f64,
        c.total(),
        c.end_game,
        c.stall,
        c.window,
        c.failover,
        c.other
    );
    for p in session.paths() {
        println!(
            "path {} {} {:?} rtt={:?} received={}",
            p.id.0,
            p.address,
            p.state,
            p.rtt.unwrap_or_default(),
            p.bytes_received
        );
    }
}

/// GETs `/body/LEN` with h3 over the session and checks the body as it comes.
async fn h3_get(session: &Session, len: u64, cut_after: Option<Duration>) {
    use bytes::Buf;
    let (mut driver, mut send) = h3::client::new(kwik_h3::Connection::new(session.clone()))
        .await
        .expect("h3");
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let req = http::Request::get(format!("https://kwik.test/body/{len}"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.expect("request");
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut progress = Progress::new(len, cut_after);
    loop {
        match stream.recv_data().await {
            Ok(Some(mut data)) => {
                while data.has_remaining() {
                    let chunk = data.copy_to_bytes(data.chunk().len());
                    progress.on_read(&chunk);
                }
            }
            Ok(None) => break,
            Err(e) => {
                progress.lost(&e.to_string());
                break;
            }
        }
    }
    progress.done();
}

/// Asks for cubic congestion control on an MPTCP socket (and so its subflows); the
/// namespace default may be bbr, which does worse on these links.
fn cubic(socket: &socket2::Socket) {
    if let Err(e) = socket.set_tcp_congestion(b"cubic") {
        eprintln!("cannot select cubic: {e}");
    }
}

/// Serves the body over MPTCP: each connection sends a length line, then gets the body.
fn mptcp_server(listen: SocketAddr, dir: &Path) {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::io::{BufRead, BufReader, Write};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::from(262)))
        .expect("an MPTCP socket");
    cubic(&socket);
    socket.set_reuse_address(true).unwrap();
    socket.bind(&listen.into()).unwrap();
    socket.listen(16).unwrap();
    let listener: std::net::TcpListener = socket.into();
    std::fs::write(dir.join("ready"), b"").unwrap();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                return;
            }
            let len: u64 = line.trim().parse().unwrap_or(0);
            let mut pos = 0;
            while pos < len {
                let n = (len - pos).min(256 * 1024);
                if conn.write_all(&body_range(pos, n)).is_err() {
                    return;
                }
                pos += n;
            }
        });
    }
}

/// Fetches the body over MPTCP and prints the same `done` line as the KWIK client.
fn mptcp_client(server: SocketAddr, len: u64, cut_after: Option<Duration>) {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::io::{Read, Write};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::from(262)))
        .expect("an MPTCP socket");
    cubic(&socket);
    socket.connect(&server.into()).unwrap();
    let mut conn: std::net::TcpStream = socket.into();
    conn.write_all(format!("{len}\n").as_bytes()).unwrap();
    println!("ready");
    let mut progress = Progress::new(len, cut_after);
    let mut buf = vec![0u8; 256 * 1024];
    while progress.read < len {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        progress.on_read(&buf[..n]);
    }
    progress.done();
}

/// A plain quinn endpoint's configs: the same certificate as the KWIK servers, the same
/// receive windows, no KWIK in between.
fn quinn_transport() -> std::sync::Arc<quinn::TransportConfig> {
    let c = config(false);
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u64(c.stream_receive_window).unwrap());
    t.receive_window(quinn::VarInt::from_u64(c.receive_window).unwrap());
    std::sync::Arc::new(t)
}

/// Serves the body over plain quinn: each bidirectional stream sends a length, then gets
/// the body.
async fn quinn_server(listen: SocketAddr, dir: &Path) {
    let certified = rcgen::generate_simple_self_signed(vec!["kwik.test".to_owned()]).unwrap();
    let cert = certified.cert.der().to_vec();
    std::fs::write(dir.join("cert.der"), &cert).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let mut config =
        quinn::ServerConfig::with_single_cert(vec![CertificateDer::from(cert)], key.into())
            .unwrap();
    config.transport_config(quinn_transport());
    let endpoint = quinn::Endpoint::server(config, listen).unwrap();
    std::fs::write(dir.join("ready"), b"").unwrap();
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let request = recv.read_to_end(64).await.unwrap_or_default();
                    let len: u64 = String::from_utf8_lossy(&request)
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    let mut pos = 0;
                    while pos < len {
                        let n = (len - pos).min(256 * 1024);
                        if send.write_chunk(body_range(pos, n)).await.is_err() {
                            return;
                        }
                        pos += n;
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
        });
    }
}

/// Fetches the body over plain quinn and prints the same lines as the KWIK client.
async fn quinn_client(server: SocketAddr, dir: &Path, len: u64, cut_after: Option<Duration>) {
    let cert = CertificateDer::from(std::fs::read(dir.join("cert.der")).unwrap());
    let mut roots = kwik_core::rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut config =
        quinn::ClientConfig::with_root_certificates(std::sync::Arc::new(roots)).unwrap();
    config.transport_config(quinn_transport());
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(server, "kwik.test")
        .unwrap()
        .await
        .unwrap();
    println!("ready");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(len.to_string().as_bytes()).await.unwrap();
    send.finish().unwrap();
    let mut progress = Progress::new(len, cut_after);
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                if progress.on_read(&chunk.bytes) {
                    println!("rtt path=0 ms={}", conn.rtt().as_millis());
                }
            }
            Ok(None) => break,
            Err(e) => {
                progress.lost(&e.to_string());
                break;
            }
        }
    }
    progress.done();
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").expect("--dir"));
    match args.get(1).map(String::as_str) {
        Some("primary") | Some("secondary") => {
            let listen = arg(&args, "--listen").expect("--listen").parse().unwrap();
            let addrs = |flag| {
                args_all(&args, flag)
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .collect()
            };
            run_server(
                listen,
                &dir,
                args[1] == "primary",
                addrs("--secondary"),
                addrs("--same-peer"),
                args.iter().any(|a| a == "--h3"),
                arg(&args, "--lifetimes").map(|s| Duration::from_secs(s.parse().unwrap())),
            )
            .await;
        }
        Some("client") => {
            let server = arg(&args, "--server").expect("--server").parse().unwrap();
            let len = arg(&args, "--get").expect("--get").parse().unwrap();
            let paths = arg(&args, "--paths").map_or(0, |p| p.parse().unwrap());
            let stream = args.iter().any(|a| a == "--stream");
            let h3 = args.iter().any(|a| a == "--h3");
            run_client(server, &dir, len, paths, stream, cut_after(&args), h3).await;
        }
        Some("mptcp-server") => {
            let listen = arg(&args, "--listen").expect("--listen").parse().unwrap();
            tokio::task::spawn_blocking(move || mptcp_server(listen, &dir))
                .await
                .unwrap();
        }
        Some("mptcp-client") => {
            let server = arg(&args, "--server").expect("--server").parse().unwrap();
            let len = arg(&args, "--get").expect("--get").parse().unwrap();
            let cut = cut_after(&args);
            tokio::task::spawn_blocking(move || mptcp_client(server, len, cut))
                .await
                .unwrap();
        }
        Some("quinn-server") => {
            let listen = arg(&args, "--listen").expect("--listen").parse().unwrap();
            quinn_server(listen, &dir).await;
        }
        Some("quinn-client") => {
            let server = arg(&args, "--server").expect("--server").parse().unwrap();
            let len = arg(&args, "--get").expect("--get").parse().unwrap();
            quinn_client(server, &dir, len, cut_after(&args)).await;
        }
        _ => eprintln!(
            "usage: kwik-node primary|secondary|client|mptcp-server|mptcp-client|quinn-server|quinn-client ..."
        ),
    }
}
