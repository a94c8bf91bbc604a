//! A hostile primary cannot turn a KWIK client into a connection cannon or a probe of the
//! client's own networks:
//!
//! - 1,000 `AddPath` for one address: the client dials at most `max_paths_per_session - 1`
//!   secondaries (the primary is one of the session's paths), answers every other request
//!   with `PathStatus FAILED` and a reason, and while the primary keeps removing and
//!   re-adding paths it dials no faster than `add_path_rate` per second;
//! - scope escalation: a primary on a private address cannot point the client at loopback
//!   or link-local addresses, and a primary on a public address cannot point it at private
//!   ones either. Such requests are refused with a reason and no datagram leaves for them,
//!   while a request of the same session for an address of an allowed scope is dialed.
//!
//! The hostile primary is a bare QUIC server ([`RawServer`]) that speaks just enough KWIK:
//! it answers the Hello with a Welcome and Pings with Pongs, writes the `AddPath` frames
//! and records the client's answers. Connection attempts are counted as the distinct
//! connection ids of the client's Initial packets arriving at the target address.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kwik_core::{Config, Event, SessionHandle};
use kwik_proto::control_frame::Kind;
use kwik_proto::{AddPath, PathState, PathStatus, RemovePath};
use kwik_tests::certs::TestCert;
use kwik_tests::net::LinkConfig;
use kwik_tests::raw::{initial_dcid, server_config};
use kwik_tests::sim::{NodeId, Sim, WALL_CLOCK_START, addr};

/// A KWIK client whose session's primary is a hostile raw server.
struct Hostile {
    sim: Sim,
    client: NodeId,
    client_addr: SocketAddr,
    /// Index of the hostile primary in `sim.hosts.raw_servers`.
    primary: usize,
    session: SessionHandle,
    client_events: Vec<Event>,
}

impl Hostile {
    /// The client at 10.0.0.2 connects to a hostile primary at `primary_addr` and the
    /// session is established; every address in `targets` gets a link to the client and
    /// is watched.
    fn new(seed: u64, primary_addr: SocketAddr, config: Config, targets: &[SocketAddr]) -> Self {
        let cert = TestCert::localhost();
        let mut sim = Sim::new(seed);
        let client_addr = addr([10, 0, 0, 2], 5000);
        let link = LinkConfig::default().rate_mbit(50).delay_ms(10);
        sim.net.link(client_addr.ip(), primary_addr.ip(), link);
        for t in targets {
            sim.net.link(client_addr.ip(), t.ip(), link);
            sim.watch(*t);
        }
        let primary = sim.hosts.add_raw_server(primary_addr, server_config(&cert));
        let client = sim.add_node(client_addr, None);
        let now = sim.now();
        let session = sim.nodes[client]
            .endpoint
            .connect(now, &cert.client(config), primary_addr, "localhost")
            .unwrap();
        let mut this = Self {
            sim,
            client,
            client_addr,
            primary,
            session,
            client_events: Vec::new(),
        };
        let up = this.run_until(Duration::from_secs(5), |h| {
            h.client_events
                .iter()
                .any(|e| matches!(e, Event::Connected(_)))
        });
        assert!(
            up,
            "session not established: {:?}, primary lost {:?}",
            this.client_events, this.sim.hosts.raw_servers[this.primary].lost
        );
        this
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = self.sim.now() + limit;
        loop {
            let events = self.sim.take_events(self.client);
            self.client_events.extend(events);
            if done(self) {
                return true;
            }
            if self.sim.now() >= deadline || !self.sim.step() {
                let events = self.sim.take_events(self.client);
                self.client_events.extend(events);
                return done(self);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        self.sim.run_for(d);
        let events = self.sim.take_events(self.client);
        self.client_events.extend(events);
    }

    fn add_path(&mut self, path_id: u32, target: &str) {
        let expiry = WALL_CLOCK_START.as_secs() + 60;
        self.sim.hosts.raw_servers[self.primary].send_control(Kind::AddPath(AddPath {
            path_id,
            addr: target.to_owned(),
            server_name: "localhost".to_owned(),
            expiry,
            path_secret: vec![0x42; 32],
            ..Default::default()
        }));
    }

    fn remove_path(&mut self, path_id: u32) {
        self.sim.hosts.raw_servers[self.primary]
            .send_control(Kind::RemovePath(RemovePath { path_id }));
    }

    /// The client's PathStatus answers, in order.
    fn statuses(&self) -> Vec<PathStatus> {
        self.sim.hosts.raw_servers[self.primary]
            .received
            .iter()
            .filter_map(|k| match k {
                Kind::PathStatus(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// Path ids the client answered with `state`.
    fn answered(&self, state: PathState) -> BTreeSet<u32> {
        self.statuses()
            .iter()
            .filter(|s| s.state == state as i32)
            .map(|s| s.path_id)
            .collect()
    }

    /// Connection attempts that reached `target`, with the time the first Initial of each
    /// arrived.
    fn attempts(&self, target: SocketAddr) -> BTreeMap<Vec<u8>, Instant> {
        let mut out = BTreeMap::new();
        for (at, dg) in self.sim.watched(target) {
            if dg.src != self.client_addr {
                continue;
            }
            if let Some(dcid) = initial_dcid(&dg.data) {
                out.entry(dcid.to_vec()).or_insert(*at);
            }
        }
        out
    }

    /// Datagrams the client sent towards `ip`, delivered or not.
    fn sent_to(&self, ip: std::net::IpAddr) -> u64 {
        self.sim.net.stats(self.client_addr.ip(), ip).sent
    }

    fn assert_session_alive(&self) {
        let closed: Vec<_> = self
            .client_events
            .iter()
            .filter(|e| matches!(e, Event::Closed { .. }))
            .collect();
        assert!(closed.is_empty(), "the client session ended: {closed:?}");
        let server = &self.sim.hosts.raw_servers[self.primary];
        assert!(server.lost.is_none(), "connection lost: {:?}", server.lost);
        assert!(server.control_error.is_none(), "{:?}", server.control_error);
        let _ = self.session;
    }
}

#[test]
fn a_thousand_add_paths_open_at_most_the_path_limit_at_the_add_path_rate() {
    let config = Config::default();
    let max_secondaries = config.max_paths_per_session as usize - 1;
    let rate = u64::from(config.add_path_rate);
    let target = addr([10, 0, 0, 9], 4433);
    let target_str = target.to_string();
    let mut h = Hostile::new(81, addr([10, 0, 0, 1], 4433), config.clone(), &[target]);

    // Phase 1: 1,000 AddPath for one address, in batches of 100 every 200 ms (below the
    // client's limit on control messages, so that the AddPath guards are what answers).
    let start = h.sim.now();
    let mut next_id = 1u32;
    for _ in 0..10 {
        for _ in 0..100 {
            h.add_path(next_id, &target_str);
            next_id += 1;
        }
        h.run_for(Duration::from_millis(200));
    }
    h.run_for(Duration::from_millis(800));
    let phase1_ids: BTreeSet<u32> = (1..next_id).collect();
    let attempts1 = h.attempts(target).len();
    let failed1 = h.answered(PathState::Failed);
    let added1 = h
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::PathAdded { .. }))
        .count();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for s in h.statuses() {
        if s.state == PathState::Failed as i32 {
            *reasons.entry(s.reason.clone()).or_default() += 1;
        }
    }
    println!(
        "1000 AddPath in {:?}: {attempts1} connection attempts at {target}, {added1} paths \
         added, {} answered FAILED {reasons:?}",
        h.sim.now() - start,
        failed1.len()
    );
    h.assert_session_alive();
    assert!(
        attempts1 >= 1,
        "the client dialed nothing: the count proves nothing"
    );
    assert!(
        attempts1 <= max_secondaries,
        "{attempts1} connection attempts, limit {max_secondaries}"
    );
    assert_eq!(added1, attempts1, "one attempt per added path");
    assert_eq!(
        failed1.len(),
        phase1_ids.len() - attempts1,
        "every AddPath not dialed is answered FAILED"
    );
    assert!(failed1.is_subset(&phase1_ids));
    assert!(
        reasons.keys().all(|r| !r.is_empty()),
        "a FAILED without a reason: {reasons:?}"
    );

    // Phase 2: for 5 s, every 100 ms the primary removes the paths of its previous batch
    // (freeing the path limit) and asks for 10 more: only the AddPath rate limits now.
    let mut live: Vec<u32> = phase1_ids.difference(&failed1).copied().collect();
    let phase2_start = h.sim.now();
    let phase2 = Duration::from_secs(5);
    let mut phase2_ids = BTreeSet::new();
    while h.sim.now() < phase2_start + phase2 {
        for id in live.drain(..) {
            h.remove_path(id);
        }
        for _ in 0..10 {
            h.add_path(next_id, &target_str);
            live.push(next_id);
            phase2_ids.insert(next_id);
            next_id += 1;
        }
        h.run_for(Duration::from_millis(100));
    }
    let phase2_end = h.sim.now();
    for id in live.drain(..) {
        h.remove_path(id);
    }
    h.run_for(Duration::from_secs(1));
    let attempts: BTreeMap<Vec<u8>, Instant> = h.attempts(target);
    let attempts2: Vec<Instant> = attempts
        .values()
        .copied()
        .filter(|t| *t >= phase2_start)
        .collect();
    let per_second: Vec<usize> = (0..phase2.as_secs())
        .map(|s| {
            let from = phase2_start + Duration::from_secs(s);
            let to = from + Duration::from_secs(1);
            attempts2.iter().filter(|t| **t >= from && **t < to).count()
        })
        .collect();
    let failed = h.answered(PathState::Failed);
    let removed = h.answered(PathState::Removed);
    let unanswered: Vec<u32> = (1..next_id)
        .filter(|id| !failed.contains(id) && !removed.contains(id))
        .collect();
    println!(
        "then {} AddPath over {:?} with removals: {} more attempts, per second {per_second:?} \
         (rate {rate}/s); {} answered FAILED, {} REMOVED in all",
        phase2_ids.len(),
        phase2_end - phase2_start,
        attempts2.len(),
        failed.len(),
        removed.len()
    );
    h.assert_session_alive();
    // The bucket may hold up to a burst of tokens when the phase starts, then refills at
    // the rate; the phase drains it every 100 ms.
    let burst = u64::from(config.max_paths_per_session);
    assert!(
        attempts2.len() as u64 <= rate * phase2.as_secs() + burst,
        "{} attempts in {phase2:?}",
        attempts2.len()
    );
    for (s, n) in per_second.iter().enumerate().skip(1) {
        assert!(
            *n as u64 <= rate + 1,
            "second {s} of the phase: {n} attempts, rate {rate}/s"
        );
    }
    assert!(
        attempts2.len() as u64 >= rate * (phase2.as_secs() - 1),
        "the client stopped dialing: {} attempts",
        attempts2.len()
    );
    // Every request was answered: FAILED if refused, REMOVED once dialed and removed.
    assert!(unanswered.is_empty(), "no answer for {unanswered:?}");
    assert_eq!(removed.len(), attempts.len(), "one dial per path kept");
    assert!(failed.is_disjoint(&removed));
    // The client forgot all but the newest removed paths: the list does not grow with
    // the primary's churn.
    let listed = h.sim.nodes[h.client]
        .endpoint
        .session(h.session)
        .unwrap()
        .paths()
        .len();
    println!(
        "the client lists {listed} paths after {} removals",
        removed.len()
    );
    assert!(
        listed <= 2 * config.max_paths_per_session as usize,
        "{listed} paths listed"
    );
}

/// `targets[i]` is refused (`false`) or dialed (`true`) by a client whose primary is at
/// `primary`.
fn check_scopes(seed: u64, primary: SocketAddr, targets: &[(SocketAddr, bool)]) {
    let watched: Vec<SocketAddr> = targets.iter().map(|(t, _)| *t).collect();
    let mut h = Hostile::new(seed, primary, Config::default(), &watched);
    for (i, (t, _)) in targets.iter().enumerate() {
        h.add_path(i as u32 + 1, &t.to_string());
    }
    h.run_for(Duration::from_secs(2));
    h.assert_session_alive();
    let statuses = h.statuses();
    for (i, (t, allowed)) in targets.iter().enumerate() {
        let id = i as u32 + 1;
        let status = statuses.iter().find(|s| s.path_id == id);
        let attempts = h.attempts(*t).len();
        let sent = h.sent_to(t.ip());
        println!(
            "primary {primary} -> {t}: {} attempt(s), {sent} datagram(s) sent, status {:?}",
            attempts,
            status.map(|s| (s.state, s.reason.as_str()))
        );
        if *allowed {
            assert_eq!(attempts, 1, "{primary} -> {t} was not dialed");
            assert!(
                status.is_none_or(|s| s.state != PathState::Failed as i32),
                "{primary} -> {t} refused: {status:?}"
            );
        } else {
            assert_eq!(sent, 0, "{primary} -> {t}: the client sent datagrams");
            let status = status.unwrap_or_else(|| panic!("{primary} -> {t}: no answer"));
            assert_eq!(status.state, PathState::Failed as i32, "{primary} -> {t}");
            assert!(
                status.reason.contains("scope"),
                "{primary} -> {t}: reason {:?}",
                status.reason
            );
        }
    }
}

#[test]
fn a_private_primary_cannot_point_the_client_at_loopback_or_link_local() {
    check_scopes(
        82,
        addr([10, 0, 0, 1], 4433),
        &[
            (addr([127, 0, 0, 1], 4433), false),
            ("[::1]:4433".parse().unwrap(), false),
            (addr([169, 254, 1, 1], 4433), false),
            (addr([10, 0, 0, 9], 4433), true),
        ],
    );
}

#[test]
fn a_public_primary_cannot_point_the_client_at_private_addresses() {
    check_scopes(
        83,
        addr([8, 8, 8, 8], 4433),
        &[
            (addr([10, 0, 0, 9], 4433), false),
            (addr([192, 168, 1, 1], 4433), false),
            (addr([127, 0, 0, 1], 4433), false),
            (addr([1, 1, 1, 1], 4433), true),
        ],
    );
}

/// A primary that delegates range after range of a stream to itself and never serves
/// one: the client pulls each (it owes the reader those bytes), holds at most
/// [`MAX_DELEGATIONS`] of them, and closes the session with a typed `Delegation` error
/// when the primary asks for one more.
#[test]
fn a_primary_that_never_serves_its_delegations_is_capped_and_closed() {
    use kwik_core::{ErrorCode, MAX_DELEGATIONS, SessionError, StreamId};
    use kwik_proto::{Delegate, Ticket};
    use quinn_proto::Side;

    let primary_addr: SocketAddr = "10.0.0.1:4433".parse().unwrap();
    let mut h = Hostile::new(71, primary_addr, Config::default(), &[]);
    let session_id = h.sim.hosts.raw_servers[h.primary].session_id;
    let stream = StreamId::new(Side::Server, kwik_core::Dir::Uni, 0);
    let ticket = |id: u64| Ticket {
        id,
        session_id,
        stream: stream.0,
        offset: id * 10,
        len: 10,
        expiry: WALL_CLOCK_START.as_secs() + 3600,
        budget: 10,
        mac: vec![0; 32],
        ..Default::default()
    };
    let pulls = |h: &Hostile| {
        h.sim.hosts.raw_servers[h.primary]
            .received
            .iter()
            .filter(|k| matches!(k, Kind::Pull(_)))
            .count()
    };
    for id in 0..MAX_DELEGATIONS as u64 {
        h.sim.hosts.raw_servers[h.primary].send_control(Kind::Delegate(Delegate {
            ticket: Some(ticket(id)),
            refresh: false,
            ends_stream: false,
        }));
        if id % 100 == 99 {
            // Within the client's control-message rate.
            h.run_for(Duration::from_millis(150));
        }
    }
    let pulled = h.run_until(Duration::from_secs(5), |h| pulls(h) >= MAX_DELEGATIONS);
    assert!(
        pulled,
        "{} pulls for {MAX_DELEGATIONS} delegations",
        pulls(&h)
    );
    h.assert_session_alive();
    // One more, while every pull is still owed.
    h.sim.hosts.raw_servers[h.primary].send_control(Kind::Delegate(Delegate {
        ticket: Some(ticket(MAX_DELEGATIONS as u64)),
        refresh: false,
        ends_stream: false,
    }));
    let closed = h.run_until(Duration::from_secs(5), |h| {
        h.client_events
            .iter()
            .any(|e| matches!(e, Event::Closed { .. }))
    });
    assert!(closed, "the client kept the session");
    let error = h.client_events.iter().find_map(|e| match e {
        Event::Closed { error, .. } => Some(error.clone()),
        _ => None,
    });
    match error {
        Some(SessionError::ProtocolViolation(e)) => {
            assert_eq!(e.code, ErrorCode::Delegation, "{e}");
            assert!(e.reason.contains("too many delegations"), "{e}");
        }
        other => panic!("the session ended with {other:?}"),
    }
    assert_eq!(pulls(&h), MAX_DELEGATIONS, "no pull beyond the cap");
}
