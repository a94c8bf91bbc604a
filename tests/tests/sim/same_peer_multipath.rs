//! Same-peer multipath: one server reachable at two addresses. With each load-balancing
//! strategy the server sends a checksummed body over both paths; and a path cut midway is
//! survived by reinjecting what it carried (the body completes, every byte once, in order).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{
    Config, Dir, Event, GroupKey, LoadBalancing, PathId, PathKind, ReadError, SessionHandle,
    StreamId,
};
use kwik_tests::app::{payload, sha256};
use kwik_tests::certs::TestCert;
use kwik_tests::cluster::GROUP_KEY;
use kwik_tests::net::LinkConfig;
use kwik_tests::sim::{NodeId, Sim, addr};
use sha2::{Digest, Sha256};

const BODY: usize = 16 << 20;

struct World {
    sim: Sim,
    server: NodeId,
    client: NodeId,
    session: SessionHandle,
}

fn world(seed: u64, strategy: LoadBalancing, links: [LinkConfig; 2]) -> World {
    let cert = TestCert::localhost();
    let mut sim = Sim::new(seed);
    let a = addr([10, 0, 1, 1], 4433);
    let b = addr([10, 0, 2, 1], 4433);
    let client_addr = addr([10, 0, 0, 2], 5000);
    sim.net.link(a.ip(), client_addr.ip(), links[0]);
    sim.net.link(b.ip(), client_addr.ip(), links[1]);
    let mut config = Config::default();
    config.load_balancing = strategy;
    config.stream_receive_window = 16 << 20;
    config.receive_window = 64 << 20;
    let mut server_config = cert.server(config.clone());
    server_config.group_key(GroupKey::new(GROUP_KEY));
    let server = sim.add_node(a, Some(server_config));
    sim.add_alias(server, b);
    let client = sim.add_node(client_addr, None);
    let now = sim.now();
    let session = sim.nodes[client]
        .endpoint
        .connect(now, &cert.client(config), a, "localhost")
        .unwrap();
    World {
        sim,
        server,
        client,
        session,
    }
}

struct Outcome {
    read: usize,
    digest_ok: bool,
    per_path: Vec<(PathId, u64)>,
    secs: f64,
}

/// Waits for the client's session, then has the server add its second address to it;
/// returns the server's session once the new path is active.
fn second_path(w: &mut World) -> SessionHandle {
    let second = addr([10, 0, 2, 1], 4433);
    let mut server_session = None;
    let ok = w.sim.run_until(Duration::from_secs(5), |sim| {
        for e in sim.take_events(w.server) {
            if let Event::Incoming(h) = e {
                server_session = Some(h);
            }
        }
        server_session.is_some()
    });
    assert!(ok, "the session was established");
    let sh = server_session.unwrap();
    let now = w.sim.now();
    let path = w.sim.nodes[w.server]
        .endpoint
        .session(sh)
        .unwrap()
        .add_same_peer_path(now, second, "localhost", PathKind::SamePeer)
        .unwrap();
    let active = w.sim.run_until(Duration::from_secs(5), |sim| {
        sim.take_events(w.server)
            .iter()
            .any(|e| matches!(e, Event::PathActive { path: p, .. } if *p == path))
    });
    assert!(active, "the second path became active on the server");
    sh
}

/// The server adds its second address, then sends the body on one stream; the path to
/// the second address is cut after `cut_after` of the body was read, if given.
fn transfer(w: &mut World, cut_after: Option<usize>) -> Outcome {
    let body = payload(5, BODY);
    let want = sha256(&body);
    let sh = second_path(w);
    let second = addr([10, 0, 2, 1], 4433);
    let stream = w.sim.nodes[w.server]
        .endpoint
        .session(sh)
        .unwrap()
        .open(Dir::Uni)
        .unwrap();
    let start = w.sim.now();
    let mut rest = body.clone();
    let mut finished = false;
    let mut hasher = Sha256::new();
    let mut read = 0usize;
    let mut client_stream: Option<StreamId> = None;
    let mut cut = false;
    let (server, client, h) = (w.server, w.client, w.session);
    let done = w.sim.run_until(Duration::from_secs(120), |sim| {
        // Server: write as credit allows.
        if !finished {
            let mut s = sim.nodes[server].endpoint.session(sh).unwrap();
            let mut send = s.send_stream(stream);
            while !rest.is_empty() {
                match send.write_chunks(std::slice::from_mut(&mut rest)) {
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if rest.is_empty() {
                send.finish().unwrap();
                finished = true;
            }
        }
        sim.take_events(server);
        // Client: read everything.
        sim.take_events(client);
        let mut s = sim.nodes[client].endpoint.session(h).unwrap();
        if client_stream.is_none() {
            client_stream = s.accept(Dir::Uni);
        }
        let Some(id) = client_stream else {
            return false;
        };
        loop {
            match s.recv_stream(id).read(usize::MAX) {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk);
                    read += chunk.len();
                }
                Ok(None) => return true,
                Err(ReadError::Blocked) => break,
                Err(e) => panic!("read failed: {e}"),
            }
        }
        if let Some(at) = cut_after
            && !cut
            && read >= at
        {
            cut = true;
            let client_ip = sim.nodes[client].addr.ip();
            sim.net.set_up(second.ip(), client_ip, false);
        }
        false
    });
    if !done {
        let ss = w.sim.nodes[server].endpoint.session(sh).map(|s| s.stats());
        let cs = w.sim.nodes[client].endpoint.session(h).map(|s| s.stats());
        panic!("the body did not complete (read {read} of {BODY}); server {ss:#?} client {cs:#?}");
    }
    let secs = (w.sim.now() - start).as_secs_f64();
    let stats = w.sim.nodes[server]
        .endpoint
        .session(sh)
        .map(|s| s.stats())
        .unwrap_or_default();
    let digest: [u8; 32] = hasher.finalize().into();
    Outcome {
        read,
        digest_ok: digest == want,
        per_path: stats
            .paths
            .iter()
            .map(|p| (p.id, p.stream_bytes_sent))
            .collect(),
        secs,
    }
}

fn links() -> [LinkConfig; 2] {
    [
        LinkConfig::default()
            .rate_mbit(40)
            .delay_ms(10)
            .queue_ms(50),
        LinkConfig::default()
            .rate_mbit(20)
            .delay_ms(20)
            .queue_ms(50),
    ]
}

#[test]
fn every_strategy_completes_over_two_paths() {
    for (i, strategy) in [
        LoadBalancing::MinRtt,
        LoadBalancing::RoundRobin,
        LoadBalancing::Weighted,
        LoadBalancing::Adaptive,
        LoadBalancing::Redundant,
    ]
    .into_iter()
    .enumerate()
    {
        let mut w = world(80 + i as u64, strategy, links());
        let out = transfer(&mut w, None);
        let goodput = BODY as f64 * 8.0 / out.secs / 1e6;
        println!(
            "{strategy:?}: {goodput:.1} Mbit/s over 40 + 20 Mbit/s, stream bytes sent per path {:?}",
            out.per_path
        );
        assert_eq!(out.read, BODY);
        assert!(out.digest_ok, "{strategy:?}: checksum");
        let used = out.per_path.iter().filter(|(_, b)| *b > 0).count();
        assert_eq!(used, 2, "{strategy:?}: both paths carried data");
        if strategy != LoadBalancing::Redundant {
            assert!(
                goodput > 40.0,
                "{strategy:?}: {goodput:.1} Mbit/s, no better than the faster path alone"
            );
        }
    }
}

#[test]
fn a_path_cut_midway_is_survived_by_reinjection() {
    for strategy in [LoadBalancing::MinRtt, LoadBalancing::RoundRobin] {
        let mut w = world(90, strategy, links());
        let out = transfer(&mut w, Some(BODY / 2));
        println!(
            "{strategy:?}, second path cut at 50 %: read {} bytes in {:.2} s, per path {:?}",
            out.read, out.secs, out.per_path
        );
        assert_eq!(out.read, BODY, "every byte exactly once");
        assert!(out.digest_ok, "in order and intact");
    }
    let _ = Bytes::new();
}

/// Many short streams over two paths to the same server: each path frees the carrier
/// slots of the streams that finished on it. (A shared list of finished streams used to be
/// drained by one path, so the other path's slots were never freed.)
#[test]
fn carrier_slots_are_freed_on_every_path() {
    let link = LinkConfig::default()
        .rate_mbit(20)
        .delay_ms(10)
        .queue_ms(50);
    let mut w = world(9, LoadBalancing::RoundRobin, [link, link]);
    let sh = second_path(&mut w);
    const STREAMS: usize = 600;
    let body = Bytes::from(vec![0x42u8; 2048]);
    let (server, client, h) = (w.server, w.client, w.session);
    let mut opened = 0;
    let mut finished = 0;
    let mut open: Vec<StreamId> = Vec::new();
    let mut peak = 0;
    let done = w.sim.run_until(Duration::from_secs(120), |sim| {
        let mut s = sim.nodes[server].endpoint.session(sh).unwrap();
        while opened < STREAMS {
            let Some(id) = s.open(Dir::Uni) else { break };
            let mut send = s.send_stream(id);
            let mut chunk = body.clone();
            send.write_chunks(std::slice::from_mut(&mut chunk)).unwrap();
            send.finish().unwrap();
            opened += 1;
        }
        let stats = s.stats();
        peak = stats
            .paths
            .iter()
            .map(|p| p.carrier_streams)
            .sum::<usize>()
            .max(peak);
        sim.take_events(server);
        sim.take_events(client);
        let mut c = sim.nodes[client].endpoint.session(h).unwrap();
        while let Some(id) = c.accept(Dir::Uni) {
            open.push(id);
        }
        open.retain(|id| {
            loop {
                match c.recv_stream(*id).read(usize::MAX) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        finished += 1;
                        return false;
                    }
                    Err(_) => return true,
                }
            }
        });
        finished == STREAMS
    });
    assert!(done, "{finished} of {STREAMS} streams finished");
    // Let the last fins and acknowledgements settle, then one more write frees the slots.
    w.sim.run_for(Duration::from_secs(1));
    let mut s = w.sim.nodes[server].endpoint.session(sh).unwrap();
    let extra = s.open(Dir::Uni).unwrap();
    s.send_stream(extra).finish().unwrap();
    w.sim.run_for(Duration::from_secs(1));
    let stats = w.sim.nodes[server].endpoint.session(sh).unwrap().stats();
    let per_path: Vec<(PathId, usize, u64)> = stats
        .paths
        .iter()
        .map(|p| (p.id, p.carrier_streams, p.frames_sent))
        .collect();
    println!(
        "{STREAMS} streams: peak {peak} slots in use; at the end (path, slots, frames) {per_path:?}"
    );
    assert_eq!(per_path.len(), 2);
    for (p, slots, frames) in &per_path {
        assert!(*frames > 0, "{p} carried frames");
        assert_eq!(*slots, 0, "{p} still holds {slots} slots");
    }
}
