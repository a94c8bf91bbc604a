//! What SIGTERM does to the examples' `secondary` (`Endpoint::drain` on the async API), on
//! loopback: a primary and two secondaries (the examples' `serve`) stripe a body; once a
//! quarter was read, one secondary drains. The body completes intact, the client hears of
//! the drain and removes that path once it owes nothing (never failing it), and the
//! drained endpoint's `drained()` returns with no session left.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use kwik_core::GroupKey;
use kwik_examples::{BodyCheck, bulk_config, client_config, self_signed, serve, server_config};
use kwik_tokio::PathEvent;

const BODY: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_secondary_leaves_without_a_failure() {
    let (cert, key) = self_signed().unwrap();
    let listen = |secondaries: Vec<SocketAddr>| {
        let mut config = server_config(&cert, &key, bulk_config()).unwrap();
        config.group_key(GroupKey::new([5; 32]));
        let endpoint = kwik_tokio::listen("127.0.0.1:0".parse().unwrap(), config).unwrap();
        tokio::spawn(serve(endpoint.clone(), secondaries, "localhost".to_owned()));
        endpoint
    };
    let victim = listen(Vec::new());
    let other = listen(Vec::new());
    let secondaries = vec![victim.local_addr().unwrap(), other.local_addr().unwrap()];
    let primary = listen(secondaries.clone());

    let client = kwik_tokio::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let session = client
        .connect_with(
            client_config(&cert, bulk_config()).unwrap(),
            primary.local_addr().unwrap(),
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let mut events = Vec::new();
    while events
        .iter()
        .filter(|e| matches!(e, PathEvent::Active(_)))
        .count()
        < 2
    {
        let e = tokio::time::timeout(Duration::from_secs(10), session.path_event())
            .await
            .expect("secondaries joined")
            .unwrap();
        events.push(e);
    }
    let drained_path = session
        .paths()
        .into_iter()
        .find(|p| p.address == secondaries[0])
        .unwrap()
        .id;
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(format!("body {BODY}").as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let mut check = BodyCheck::default();
    let mut drained = None;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
        check.update(&chunk);
        if drained.is_none() && check.received() >= BODY / 4 {
            victim.drain(Duration::from_secs(30));
            let victim = victim.clone();
            drained = Some(tokio::spawn(async move { victim.drained().await }));
        }
    }
    check.verify(BODY).unwrap();
    // A hang guard, not a figure: the client closes the drained path as soon as its
    // last pull is in, well before the body ends.
    tokio::time::timeout(Duration::from_secs(20), drained.unwrap())
        .await
        .expect("the secondary drained")
        .unwrap();
    assert_eq!(victim.stats().sessions, 0);
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::ZERO, session.path_event()).await {
        events.push(e);
    }
    let about: Vec<&PathEvent> = events.iter().filter(|e| e.path() == drained_path).collect();
    println!("events of the drained path: {about:?}");
    assert!(about.contains(&&PathEvent::Draining(drained_path)));
    assert!(about.contains(&&PathEvent::Removed(drained_path)));
    assert!(
        !about.iter().any(|e| matches!(e, PathEvent::Failed(..))),
        "{about:?}"
    );
    assert_eq!(client.stats().paths_drained, 1);
    assert_eq!(client.stats().drain_notices, 1);
}
