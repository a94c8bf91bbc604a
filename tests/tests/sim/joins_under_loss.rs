//! Fifty joins over a link that loses 30 % of the datagrams in each direction: every path
//! a primary adds ends either active or failed with a typed error, each within the
//! handshake timeout (the idle timeout) plus a margin of the time it was added, and the
//! primary learns the same outcome from the client.
//!
//! Fifty clients each hold a session with one primary over a clean link; each primary
//! session adds the same secondary, which every client reaches over its own lossy link.
//!
//! Known failure: nothing in the engine bounds a join. QUIC's idle timer restarts with
//! every packet received, and a client's probe timeout keeps backing off until the server
//! has validated its address, so under this loss a join can stay `Connecting` well past
//! the idle timeout (observed: joined after 25 s, or failed `TimedOut` after 19 s, with a
//! 10 s idle timeout). The timing assertion at the end documents the promise and fails
//! until the engine gives connecting secondary paths a deadline of their own.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use kwik_core::{Config, Event, GroupKey, PathError, PathId, SessionHandle};
use kwik_tests::certs::TestCert;
use kwik_tests::cluster::GROUP_KEY;
use kwik_tests::net::LinkConfig;
use kwik_tests::sim::{Sim, addr};

const CLIENTS: usize = 50;
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Room past the idle timeout: the AddPath's trip to the client (10 ms), the last
/// datagrams of a handshake that completes just in time, and the Join's round trip.
const MARGIN: Duration = Duration::from_secs(1);
/// How long the scenario waits for every outcome before calling a path hung.
const HANG: Duration = Duration::from_secs(60);

/// What first became of one client's path.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Active,
    Failed(PathError),
}

#[test]
fn every_join_over_a_lossy_link_ends_typed_and_in_time() {
    let cert = TestCert::localhost();
    let mut config = Config::default();
    config.idle_timeout = IDLE_TIMEOUT;
    let mut sim = Sim::new(61);
    let primary_addr = addr([10, 0, 0, 1], 4433);
    let secondary_addr = addr([10, 0, 2, 1], 4433);
    let mut servers = Vec::new();
    for a in [primary_addr, secondary_addr] {
        let mut server = cert.server(config.clone());
        server.group_key(GroupKey::new(GROUP_KEY));
        servers.push(sim.add_node(a, Some(server)));
    }
    let (primary, secondary) = (servers[0], servers[1]);
    let clean = LinkConfig::default().rate_mbit(50).delay_ms(10);
    let lossy = LinkConfig::default().rate_mbit(20).delay_ms(20).loss(0.3);
    let client_config = cert.client(config.clone());
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let a = addr([10, 1, 0, i as u8 + 1], 5000);
        sim.net.link(a.ip(), primary_addr.ip(), clean);
        sim.net.link(a.ip(), secondary_addr.ip(), lossy);
        let node = sim.add_node(a, None);
        let now = sim.now();
        sim.nodes[node]
            .endpoint
            .connect(now, &client_config, primary_addr, "localhost")
            .unwrap();
        clients.push(node);
    }

    // Every client's session is established with the primary.
    let mut primary_sessions: Vec<SessionHandle> = Vec::new();
    let mut connected = [false; CLIENTS];
    let all_connected = sim.run_until(Duration::from_secs(5), |sim| {
        for e in sim.take_events(primary) {
            if let Event::Incoming(h) = e {
                primary_sessions.push(h);
            }
        }
        for (i, node) in clients.iter().enumerate() {
            for e in sim.take_events(*node) {
                connected[i] |= matches!(e, Event::Connected(_));
            }
        }
        primary_sessions.len() == CLIENTS && connected.iter().all(|c| *c)
    });
    assert!(all_connected, "{} sessions", primary_sessions.len());

    // Each primary session adds the secondary at once.
    let added_at = sim.now();
    for h in &primary_sessions {
        let path = sim.nodes[primary]
            .endpoint
            .session(*h)
            .unwrap()
            .add_path(added_at, secondary_addr, "localhost")
            .unwrap();
        assert_eq!(path, PathId(1));
    }
    let mut outcomes: Vec<Option<(Outcome, Duration)>> = vec![None; CLIENTS];
    let mut primary_events: Vec<Event> = Vec::new();
    let mut session_errors = Vec::new();
    sim.run_until(HANG, |sim| {
        let now = sim.now();
        primary_events.extend(sim.take_events(primary));
        sim.take_events(secondary);
        for (i, node) in clients.iter().enumerate() {
            for e in sim.take_events(*node) {
                let outcome = match e {
                    Event::PathActive { path, .. } if path != PathId::PRIMARY => Outcome::Active,
                    Event::PathFailed { error, .. } => Outcome::Failed(error),
                    Event::Closed { error, .. } => {
                        session_errors.push((i, error));
                        continue;
                    }
                    _ => continue,
                };
                outcomes[i].get_or_insert((outcome, now - added_at));
            }
        }
        outcomes.iter().all(Option::is_some)
    });
    // The primary's view arrives over the clean link shortly after.
    sim.run_for(Duration::from_millis(100));
    primary_events.extend(sim.take_events(primary));

    let decided: Vec<&(Outcome, Duration)> = outcomes.iter().flatten().collect();
    let joined = decided
        .iter()
        .filter(|(o, _)| *o == Outcome::Active)
        .count();
    let failed = decided.len() - joined;
    let slowest = |active: bool| {
        decided
            .iter()
            .filter(|(o, _)| (*o == Outcome::Active) == active)
            .map(|(_, t)| *t)
            .max()
    };
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for (o, _) in &decided {
        if let Outcome::Failed(e) = o {
            *errors.entry(format!("{e:?}")).or_default() += 1;
        }
    }
    let deadline = IDLE_TIMEOUT + MARGIN;
    let late: Vec<(usize, &Outcome, Duration)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().map(|(o, t)| (i, o, *t)))
        .filter(|(_, _, t)| *t > deadline)
        .collect();
    println!(
        "{CLIENTS} joins over 30 % loss each way: {joined} joined, {failed} failed {errors:?}, \
         {} undecided after {HANG:?}; slowest join {:?}, slowest failure {:?}; \
         {} past the deadline of {deadline:?}: {late:?}",
        CLIENTS - decided.len(),
        slowest(true),
        slowest(false),
        late.len(),
    );

    assert!(
        session_errors.is_empty(),
        "client sessions ended: {session_errors:?}"
    );
    for (i, o) in outcomes.iter().enumerate() {
        let (outcome, _) = o
            .as_ref()
            .unwrap_or_else(|| panic!("client {i}'s path neither joined nor failed: a hang"));
        if let Outcome::Failed(error) = outcome {
            assert!(
                matches!(
                    error,
                    PathError::Connection(_) | PathError::Unresponsive | PathError::Protocol(_)
                ),
                "client {i}'s path failed with {error:?}"
            );
        }
    }
    assert!(joined > 0, "no join succeeded: the scenario proves nothing");
    // The primary heard the same first outcome for every session.
    let mut primary_view: BTreeMap<SessionHandle, bool> = BTreeMap::new();
    for e in &primary_events {
        match e {
            Event::PathActive { session, .. } => {
                primary_view.entry(*session).or_insert(true);
            }
            Event::PathFailed { session, .. } => {
                primary_view.entry(*session).or_insert(false);
            }
            _ => {}
        }
    }
    let primary_joined = primary_view.values().filter(|a| **a).count();
    assert_eq!(
        primary_view.len(),
        CLIENTS,
        "the primary heard every outcome"
    );
    assert_eq!(primary_joined, joined, "the primary counts the same joins");
    // Fails today (engine gap, see the module documentation): no deadline bounds a join.
    assert!(
        late.is_empty(),
        "{} paths decided after {deadline:?} (idle timeout {IDLE_TIMEOUT:?} + {MARGIN:?}): \
         {late:?}",
        late.len()
    );
}
