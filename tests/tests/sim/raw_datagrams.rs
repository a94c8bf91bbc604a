//! Raw datagrams travel unreliably on the chosen path only, are counted per path, are
//! bounded at the receiver, and oversize or unknown-path sends get typed errors.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Bytes, Config, PathId, RAW_QUEUE_LIMIT, RawSendError, SessionHandle};
use kwik_tests::app::App;
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

/// A session over `link`, with the server's handle once both sides are established.
fn established(link: LinkConfig) -> (Pair, App, App, SessionHandle) {
    let mut p = Pair::new(11, link, Config::default(), Config::default());
    let (mut server_app, mut client_app) = (App::default(), App::default());
    let h = p.session;
    assert!(p.run_until(
        Duration::from_secs(5),
        &mut server_app,
        &mut client_app,
        |_, server_app, client_app| client_app.sessions.contains(&h)
            && !server_app.sessions.is_empty()
    ));
    let server_session = server_app.sessions[0];
    (p, server_app, client_app, server_session)
}

fn send(p: &mut Pair, count: usize, size: usize) {
    let h = p.session;
    for i in 0..count {
        let mut data = vec![0u8; size];
        data[..8].copy_from_slice(&(i as u64).to_be_bytes());
        p.client_endpoint()
            .session(h)
            .unwrap()
            .send_raw(PathId::PRIMARY, Bytes::from(data))
            .unwrap();
    }
}

fn drain(p: &mut Pair, server_session: SessionHandle) -> Vec<(PathId, Bytes)> {
    let mut got = Vec::new();
    let mut s = p.server_endpoint().session(server_session).unwrap();
    while let Some(d) = s.read_raw() {
        got.push(d);
    }
    got
}

/// Lets the network deliver for a while, without jumping to far-off timers.
fn settle(p: &mut Pair, server_app: &mut App, client_app: &mut App) {
    p.sim.run_for(Duration::from_millis(500));
    p.poll(server_app, client_app);
}

#[test]
fn datagrams_arrive_on_their_path_and_are_counted() {
    let link = LinkConfig::default().rate_mbit(100).delay_ms(10);
    let (mut p, mut server_app, mut client_app, server_session) = established(link);
    send(&mut p, 100, 1000);
    settle(&mut p, &mut server_app, &mut client_app);
    let got = drain(&mut p, server_session);
    assert_eq!(got.len(), 100);
    for (i, (path, data)) in got.iter().enumerate() {
        assert_eq!(*path, PathId::PRIMARY);
        assert_eq!(data.len(), 1000);
        assert_eq!(u64::from_be_bytes(data[..8].try_into().unwrap()), i as u64);
    }
    let h = p.session;
    let client_stats = p.client_endpoint().session(h).unwrap().stats();
    assert_eq!(client_stats.paths[0].raw_sent, 100);
    let server_stats = p.server_endpoint().session(server_session).unwrap().stats();
    assert_eq!(server_stats.paths[0].raw_received, 100);
    assert_eq!(server_stats.raw_dropped, 0);
}

#[test]
fn datagrams_are_not_retransmitted_under_loss() {
    let link = LinkConfig::default().rate_mbit(100).delay_ms(10).loss(0.2);
    let (mut p, mut server_app, mut client_app, server_session) = established(link);
    send(&mut p, 200, 500);
    settle(&mut p, &mut server_app, &mut client_app);
    let got = drain(&mut p, server_session);
    // About 80 % arrive; the rest are gone for good, and the session lives on.
    assert!((100..200).contains(&got.len()), "{} arrived", got.len());
    assert!(server_app.closed.is_empty() && client_app.closed.is_empty());
}

#[test]
fn oversize_and_unknown_path_are_typed_errors() {
    let link = LinkConfig::default().rate_mbit(100).delay_ms(10);
    let (mut p, _, _, _) = established(link);
    let h = p.session;
    let mut s = p.client_endpoint().session(h).unwrap();
    let max = s.max_raw_size(PathId::PRIMARY).unwrap();
    assert!(max > 1000 && max < 1500, "{max}");
    assert_eq!(
        s.send_raw(PathId::PRIMARY, Bytes::from(vec![0; max + 1])),
        Err(RawSendError::TooLarge {
            size: max + 1,
            max: Some(max)
        })
    );
    assert_eq!(
        s.send_raw(PathId::PRIMARY, Bytes::from(vec![0; max])),
        Ok(())
    );
    assert_eq!(
        s.send_raw(PathId(5), Bytes::from_static(b"x")),
        Err(RawSendError::UnknownPath(PathId(5)))
    );
    assert_eq!(s.max_raw_size(PathId(5)), None);
}

#[test]
fn an_unread_flood_is_bounded() {
    let link = LinkConfig::default().rate_mbit(1000).delay_ms(1);
    let (mut p, mut server_app, mut client_app, server_session) = established(link);
    for _ in 0..5 {
        send(&mut p, 1000, 100);
        settle(&mut p, &mut server_app, &mut client_app);
    }
    let stats = p.server_endpoint().session(server_session).unwrap().stats();
    let got = drain(&mut p, server_session);
    assert_eq!(got.len(), RAW_QUEUE_LIMIT);
    assert_eq!(
        stats.raw_dropped,
        stats.paths[0].raw_received - RAW_QUEUE_LIMIT as u64
    );
    assert!(stats.raw_dropped > 0);
}

#[test]
fn a_full_send_buffer_hands_back_or_displaces_and_says_when_there_is_room() {
    let link = LinkConfig::default().rate_mbit(10).delay_ms(10);
    let (mut p, mut server_app, mut client_app, _) = established(link);
    let h = p.session;
    // Without the network running, the path's send buffer fills.
    let mut queued = 0;
    let blocked = loop {
        let data = Bytes::from(vec![queued as u8; 1000]);
        match p
            .client_endpoint()
            .session(h)
            .unwrap()
            .try_send_raw(PathId::PRIMARY, data.clone())
        {
            Ok(()) => queued += 1,
            Err(RawSendError::Blocked(back)) => {
                assert_eq!(back, data, "the datagram comes back whole");
                break back;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(queued < 100_000, "the buffer never filled");
    };
    assert!(queued > 100, "{queued} queued before the buffer was full");
    let stats = p.client_endpoint().session(h).unwrap().stats();
    assert_eq!(
        (stats.paths[0].raw_sent, stats.paths[0].raw_displaced),
        (queued, 0)
    );

    // `send_raw` pushes the oldest out instead, and counts it.
    p.client_endpoint()
        .session(h)
        .unwrap()
        .send_raw(PathId::PRIMARY, blocked)
        .unwrap();
    let stats = p.client_endpoint().session(h).unwrap().stats();
    assert_eq!(stats.paths[0].raw_displaced, 1);

    // Sending drains the buffer; the path says so once, as soon as it sends (well within
    // the 20 ms round trip, so not waiting for an acknowledgement).
    let mut writable = 0;
    p.sim.run_for(Duration::from_millis(5));
    p.poll_watching(&mut server_app, &mut client_app, |e, _| {
        if matches!(e, kwik_core::Event::RawWritable { session, path: PathId::PRIMARY } if *session == h)
        {
            writable += 1;
        }
    });
    assert_eq!(writable, 1);
    assert_eq!(
        p.client_endpoint()
            .session(h)
            .unwrap()
            .try_send_raw(PathId::PRIMARY, Bytes::from_static(b"again")),
        Ok(())
    );
}

/// 10,000 datagrams over a link that loses 2 % of packets and queues at most 30 ms, the
/// sender waiting for room (`try_send_raw`, then `RawWritable`) and the receiver reading
/// as they come: nothing is dropped at the sender or the receiver, and every datagram that
/// did not arrive went in a packet the path lost.
#[test]
fn on_a_lossy_link_only_the_path_loses_datagrams_when_the_sender_waits() {
    const COUNT: u64 = 10_000;
    let link = LinkConfig::default()
        .rate_mbit(20)
        .delay_ms(10)
        .loss(0.02)
        .queue_ms(30);
    let (mut p, mut server_app, mut client_app, server_session) = established(link);
    let h = p.session;
    let mut sent = 0u64;
    let mut received = std::collections::HashSet::new();
    let mut blocked = 0u64;
    let deadline = p.sim.now() + Duration::from_secs(60);
    while sent < COUNT && p.sim.now() < deadline {
        // Send until the buffer is full.
        while sent < COUNT {
            let mut data = vec![7u8; 1000];
            data[..8].copy_from_slice(&sent.to_be_bytes());
            match p
                .client_endpoint()
                .session(h)
                .unwrap()
                .try_send_raw(PathId::PRIMARY, Bytes::from(data))
            {
                Ok(()) => sent += 1,
                Err(RawSendError::Blocked(_)) => {
                    blocked += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // Wait for room, reading what arrives.
        let mut writable = false;
        while !writable && p.sim.now() < deadline {
            p.sim.run_for(Duration::from_millis(1));
            p.poll_watching(&mut server_app, &mut client_app, |e, _| {
                writable |= matches!(e, kwik_core::Event::RawWritable { .. });
            });
            for (_, d) in drain(&mut p, server_session) {
                received.insert(u64::from_be_bytes(d[..8].try_into().unwrap()));
            }
            if sent == COUNT {
                break;
            }
        }
    }
    assert_eq!(sent, COUNT, "the sender got room every time it waited");
    assert!(blocked > 10, "the sender waited ({blocked} times)");
    // The last ones still queued go out at the pace congestion control allows: read until
    // nothing new came for two seconds.
    let mut quiet = 0;
    while quiet < 4 {
        let before = received.len();
        settle(&mut p, &mut server_app, &mut client_app);
        for (_, d) in drain(&mut p, server_session) {
            received.insert(u64::from_be_bytes(d[..8].try_into().unwrap()));
        }
        quiet = if received.len() == before {
            quiet + 1
        } else {
            0
        };
    }
    let client = p.client_endpoint().session(h).unwrap().stats();
    let server = p.server_endpoint().session(server_session).unwrap().stats();
    let missing = COUNT - received.len() as u64;
    println!(
        "{COUNT} datagrams at 2 % loss: {} received, {missing} missing, {} packets lost, \
         sender waited {blocked} times",
        received.len(),
        client.paths[0].lost_packets
    );
    assert_eq!(
        client.paths[0].raw_displaced, 0,
        "nothing dropped at the sender"
    );
    assert_eq!(server.raw_dropped, 0, "nothing dropped at the receiver");
    assert!(missing > 0, "a 2 % lossy link lost some");
    assert!(
        missing <= client.paths[0].lost_packets,
        "every missing datagram was in a lost packet: {missing} missing, {} packets lost",
        client.paths[0].lost_packets
    );
}
