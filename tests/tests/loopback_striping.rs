//! The demo scenario over real loopback sockets, on both runtimes: a primary and two
//! secondaries on 127.0.0.1 stripe one body to a client; one secondary's endpoint closes
//! when half of it was read; the body completes and its SHA-256 matches, and the primary
//! learns that its stripe finished. Then the primary delegates the body's first MiB to
//! the secondary that is left, and learns that this delegation finished too.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
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
use sha2::{Digest, Sha256};

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
        let next = select(Box::pin(server.accept()), sessions.next()).await;
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
}

macro_rules! suite {
    ($name:ident, $endpoint:path, $run:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn three_servers_one_closed_midway() {
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
