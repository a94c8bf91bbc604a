//! The demo scenario over real loopback sockets, on both runtimes: a primary and two
//! secondaries on 127.0.0.1 stripe one body to a client; one secondary's endpoint closes
//! when half of it was read; the body completes and its SHA-256 matches, and the primary
//! learns that its stripe finished. Then the primary delegates the body's first MiB to
//! the secondary that is left, and learns that this delegation finished too. A test
//! recorder installed for the `metrics` facade sees each of these happen.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures::future::{Either, select};
use futures::stream::{FuturesUnordered, StreamExt};
use kwik_async::{
    Bytes, ClientConfig, DelegationOutcome, Endpoint, GroupKey, PathEvent, PathState, Role,
    ServerConfig, Session, TransferEvent, VarInt,
};
use kwik_core::Config;
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::runtimes::tokio_run;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sha2::{Digest, Sha256};

/// The process-wide test recorder, and the lock that keeps the two runtimes' scenarios
/// from reading each other's counts (a snapshot resets them).
static RECORDER: OnceLock<Snapshotter> = OnceLock::new();
static METRICS: Mutex<()> = Mutex::new(());

fn recorder() -> &'static Snapshotter {
    RECORDER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("no other recorder");
        snapshotter
    })
}

/// Counter totals and histogram sample counts, by name and sorted `key=value` labels.
fn recorded() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (key, _, _, value) in recorder().snapshot().into_vec() {
        let mut labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
        let n = match value {
            DebugValue::Counter(n) => n,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => continue,
        };
        *out.entry(name).or_default() += n;
    }
    out
}

/// The sum of the series of `name` whose labels include every one of `labels`.
fn total(m: &HashMap<String, u64>, name: &str, labels: &[&str]) -> u64 {
    m.iter()
        .filter(|(k, _)| {
            k.split_once('{').is_some_and(|(n, rest)| {
                let set: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                n == name && labels.iter().all(|l| set.contains(l))
            })
        })
        .map(|(_, v)| *v)
        .sum()
}

const BODY: usize = 64 << 20;
/// Bytes of the body delegated to one secondary after the stripe.
const DELEGATED: usize = 1 << 20;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 32 << 20;
    c.receive_window = 64 << 20;
    c
}

fn server_config(cert: &TestCert) -> ServerConfig {
    let mut s = cert.server(config());
    s.group_key(GroupKey::new([9; 32]));
    s
}

/// Serves one session: delegated ranges of `body`, and (on the primary) `body <len>`
/// requests striped over every path.
async fn serve_session(session: Session, body: Bytes) {
    let delegations = async {
        while let Ok((d, mut writer)) = session.accept_delegation().await {
            let start = d.body_offset as usize;
            let range = body.slice(start..start + d.len as usize);
            if writer.write_chunk(range).await.is_err() {
                continue;
            }
        }
    };
    let requests = async {
        if session.role() != Role::Primary {
            return;
        }
        // The end of the last transfer handed out, as the primary should hear of it.
        let mut expected = None;
        while let Ok((mut send, mut recv)) = session.accept_bi().await {
            let request = recv.read_to_end(64).await.unwrap();
            if request == b"finished?" {
                // The client read every byte: the transfer's end reaches this side too.
                let event = session.transfer_event().await.unwrap();
                assert_eq!(Some(event), expected.take());
                send.write_all(b"yes").await.unwrap();
                send.finish().unwrap();
                continue;
            }
            if request == b"delegate" {
                // A plain delegation of the body's start to a secondary still up.
                let path = session
                    .paths()
                    .into_iter()
                    .find(|p| !p.is_primary && p.state == PathState::Active)
                    .expect("an active secondary")
                    .id;
                let delegation = send
                    .delegate(path, Bytes::from_static(b"body"), DELEGATED as u64)
                    .unwrap();
                expected = Some(TransferEvent::DelegationFinished {
                    delegation,
                    outcome: DelegationOutcome::Done,
                });
                send.finish().unwrap();
                continue;
            }
            assert_eq!(request, b"body");
            let stripe = send
                .stripe(Bytes::from_static(b"body"), body.len() as u64)
                .unwrap();
            expected = Some(TransferEvent::StripeFinished { stripe });
            send.finish().unwrap();
        }
    };
    futures::future::join(delegations, requests).await;
}

/// Accepts sessions on `server`; a primary session gets `secondaries` added.
async fn serve(server: Endpoint, secondaries: Vec<SocketAddr>, body: Bytes) {
    let mut sessions = FuturesUnordered::new();
    loop {
        // An empty set of sessions is ready at once (with none): then only accept.
        let next = if sessions.is_empty() {
            Either::Left((server.accept().await, sessions.next()))
        } else {
            select(Box::pin(server.accept()), sessions.next()).await
        };
        match next {
            Either::Left((Some(incoming), _)) => {
                let Ok(session) = incoming.await else {
                    continue;
                };
                if session.role() == Role::Primary {
                    for a in &secondaries {
                        session.add_path(*a, "localhost").unwrap();
                    }
                }
                sessions.push(serve_session(session, body.clone()));
            }
            Either::Left((None, _)) => return,
            Either::Right(_) => {}
        }
    }
}

async fn scenario(servers: Vec<Endpoint>, client: Endpoint, cfg: ClientConfig) {
    let body = payload(11, BODY);
    let want = sha256(&body);
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
    let serving = futures::future::join_all(servers.iter().enumerate().map(|(i, s)| {
        let secondaries = if i == 0 {
            addrs[1..].to_vec()
        } else {
            Vec::new()
        };
        serve(s.clone(), secondaries, body.clone())
    }));
    let victim = servers[2].clone();
    let download = async {
        let session = client
            .connect_with(cfg, addrs[0], "localhost")
            .unwrap()
            .await
            .unwrap();
        let mut active = 0;
        while active < 2 {
            if let PathEvent::Active(_) = session.path_event().await.unwrap() {
                active += 1;
            }
        }
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(b"body").await.unwrap();
        send.finish().unwrap();
        let mut hasher = Sha256::new();
        let mut read = 0usize;
        let mut killed = false;
        while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
            hasher.update(&chunk);
            read += chunk.len();
            if !killed && read >= BODY / 2 {
                victim.close(VarInt::from_u32(0), b"shutting down");
                killed = true;
            }
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let finished = || async {
            let (mut send, mut recv) = session.open_bi().await.unwrap();
            send.write_all(b"finished?").await.unwrap();
            send.finish().unwrap();
            assert_eq!(recv.read_to_end(8).await.unwrap(), b"yes");
        };
        finished().await;
        // Then a plain delegation to the secondary that is left.
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(b"delegate").await.unwrap();
        send.finish().unwrap();
        let delegated = recv.read_to_end(DELEGATED).await.unwrap();
        assert!(
            delegated == body[..DELEGATED],
            "the delegated range differs"
        );
        finished().await;
        let paths = session.paths();
        let stats = session.stats();
        session.close(VarInt::from_u32(0), b"done");
        // Every connection of the client closed: its last counts were recorded.
        client.wait_idle().await;
        (read, digest, paths, stats)
    };
    let (read, digest, paths, stats) = match select(Box::pin(download), Box::pin(serving)).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("the servers stopped first"),
    };
    println!("read {read} bytes; paths {paths:?}");
    assert_eq!(read, BODY);
    assert_eq!(digest, want);
    assert_eq!(paths.len(), 3);
    // The closed server's path keeps what it carried before it went.
    let gone = paths
        .iter()
        .find(|p| p.address == addrs[2])
        .expect("the closed server's path is listed");
    assert!(gone.bytes_received > 0, "{gone:?}");
    let kept = stats
        .paths
        .iter()
        .find(|p| p.id == gone.id)
        .expect("the closed server's path stays in the stats");
    assert!(kept.stream_bytes_received > 0, "{kept:?}");

    // What the metrics facade heard, from the client and the three servers.
    let m = recorded();
    let mut names: Vec<_> = m.iter().collect();
    names.sort();
    println!("recorded: {names:?}");
    for (role, n) in [("client", 1), ("primary", 1), ("secondary", 2)] {
        let opened = total(&m, "kwik_sessions_opened_total", &[&format!("role={role}")]);
        assert!(opened >= n, "{role}: {opened}");
    }
    let closed = total(&m, "kwik_sessions_closed_total", &["role=client"]);
    assert_eq!(closed, 1);
    assert!(total(&m, "kwik_path_failures_total", &[]) >= 1);
    assert!(total(&m, "kwik_path_events_total", &["event=failed"]) >= 1);
    assert!(total(&m, "kwik_failovers_total", &[]) >= 1);
    assert!(total(&m, "kwik_stripe_chunks_total", &[]) >= 3);
    assert_eq!(total(&m, "kwik_stripes_finished_total", &[]), 1);
    assert_eq!(
        total(&m, "kwik_delegations_finished_total", &["outcome=done"]),
        1
    );
    let secondary_rx = total(
        &m,
        "kwik_path_stream_bytes_total",
        &["kind=secondary", "direction=rx"],
    );
    assert!(secondary_rx > 0);
    let rx = total(&m, "kwik_path_stream_bytes_total", &["direction=rx"]);
    assert!(rx >= BODY as u64, "{rx}");
    assert!(total(&m, "kwik_udp_bytes_total", &["direction=rx"]) >= BODY as u64);
    assert!(total(&m, "kwik_path_rtt_seconds", &["kind=primary"]) >= 1);
    assert!(total(&m, "kwik_path_cwnd_bytes", &["kind=secondary"]) >= 1);
    assert!(total(&m, "kwik_control_messages_total", &["direction=tx"]) > 0);
    assert_eq!(total(&m, "kwik_protocol_violations_total", &[]), 0);
}

macro_rules! suite {
    ($name:ident, $endpoint:path, $run:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn three_servers_one_closed_midway() {
                let _alone = METRICS.lock().unwrap_or_else(|e| e.into_inner());
                // Counts of earlier runs go.
                recorder().snapshot();
                let cert = TestCert::localhost();
                $run(async {
                    let servers = (0..3)
                        .map(|_| {
                            let s = <$endpoint>::server(server_config(&cert), loopback()).unwrap();
                            (*s).clone()
                        })
                        .collect();
                    let client = <$endpoint>::client(loopback()).unwrap();
                    let limit = Duration::from_secs(60);
                    let run = scenario(servers, (*client).clone(), cert.client(config()));
                    futures_lite::future::or(run, async {
                        futures_lite::future::yield_now().await;
                        sleep(limit).await;
                        panic!("the scenario took longer than {limit:?}");
                    })
                    .await
                });
            }
        }
    };
}

/// A runtime-independent sleep: a thread wakes the waiting task.
async fn sleep(d: Duration) {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

suite!(on_tokio, kwik_tokio::Endpoint, tokio_run);
suite!(on_smol, kwik_smol::Endpoint, smol::block_on);
