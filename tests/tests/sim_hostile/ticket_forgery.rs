//! A client that joined a secondary legitimately cannot make it serve anything the
//! primary did not sign. Raw peers join a KWIK secondary with valid proofs, then pull under
//! tickets an attacker could make: each field of a valid ticket altered, a ticket of
//! another session of the same primary, an expired ticket, a random MAC, a valid ticket
//! replayed on a connection that joined another session, a plain ticket for another path,
//! a range outside the ticket, and re-pulls beyond the ticket's budget. Each is refused
//! with its typed `PullRefused` code, no byte is served and the secondary's application
//! hears of nothing. A flood of 10,000 valid pulls per second ends in a `ControlRate` close
//! of that client's path with the secondary's state bounded, and another session on the
//! same secondary is served throughout. A valid ticket is the positive control.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::join::{path_secret, proof};
use kwik_core::ticket::TicketKey;
use kwik_core::{
    Config, DelegationId, Dir, ErrorCode, Event, GroupKey, SessionHandle, StreamId, TicketError,
    WriteError,
};
use kwik_proto::control_frame::Kind;
use kwik_proto::{Join, Pull, Ticket};
use kwik_tests::cluster::GROUP_KEY;
use kwik_tests::raw::control_frame;
use kwik_tests::raw_session::RawSession;
use kwik_tests::sim::WALL_CLOCK_START;
use quinn_proto::Side;

const NOW_UNIX: u64 = WALL_CLOCK_START.as_secs();
const EXPIRY: u64 = NOW_UNIX + 60;
const SESSION_A: u64 = 0x0a0a_0a0a;
const SESSION_B: u64 = 0x0b0b_0b0b;
/// The path every raw peer joins as.
const PATH: u32 = 1;
/// Bytes a ticket covers.
const LEN: u64 = 64 * 1024;

fn key() -> GroupKey {
    GroupKey::new(GROUP_KEY)
}

/// The primary's stream the tickets name: its first unidirectional stream.
fn stream() -> u64 {
    StreamId::new(Side::Server, Dir::Uni, 0).0
}

/// A ticket as the primary of `session` signs it: `[0, LEN)` of [`stream`], for any
/// server (`path: None`) or for one path.
fn ticket(session: u64, path: Option<u32>, expiry: u64) -> Ticket {
    let mut t = Ticket {
        id: 1,
        session_id: session,
        stream: stream(),
        offset: 0,
        len: LEN,
        request: b"GET /body".to_vec(),
        body_offset: 0,
        any_path: path.is_none(),
        path_id: path.unwrap_or(0),
        expiry,
        budget: 2 * LEN,
        mac: Vec::new(),
        key_id: 0,
    };
    TicketKey::derive(&key()).sign(&mut t);
    t
}

fn pull_frame(id: u64, ticket: &Ticket, offset: u64, len: u64) -> Vec<u8> {
    control_frame(Some(Kind::Pull(Pull {
        id,
        ticket: Some(ticket.clone()),
        offset,
        len,
    })))
}

/// Raw peer `peer` joins `session` as [`PATH`] with a valid proof.
fn join(s: &mut RawSession, peer: usize, session: u64) {
    let exporter = s.sim.hosts.raw[peer]
        .exporter()
        .expect("handshake complete");
    let proof = proof(&path_secret(&key(), session, PATH, EXPIRY), &exporter);
    let p = &mut s.sim.hosts.raw[peer];
    p.answer_pings = true;
    p.open_control();
    p.write_control(control_frame(Some(Kind::Join(Join {
        session_id: session,
        path_id: PATH,
        expiry: EXPIRY,
        proof,
        key_id: 0,
    }))));
    let joined = s.run_until(Duration::from_secs(5), |s| {
        s.sim.hosts.raw[peer]
            .control_messages
            .iter()
            .any(|k| matches!(k, Kind::JoinResult(r) if r.accepted))
    });
    assert!(joined, "the join was not accepted");
}

/// The secondary's application: serves every delegation it is handed, in full. Returns
/// how many it accepted.
#[derive(Default)]
struct App {
    accepted: u64,
    pending: Vec<(SessionHandle, DelegationId, u64)>,
    seen: usize,
}

impl App {
    fn serve(&mut self, s: &mut RawSession) {
        let events: Vec<Event> = s.server_events[self.seen..].to_vec();
        self.seen = s.server_events.len();
        for e in events {
            if let Event::DelegationReceived { session } = e
                && let Some(mut ss) = s.server_endpoint().session(session)
            {
                while let Some(d) = ss.accept_delegation() {
                    self.accepted += 1;
                    self.pending.push((session, d.id, d.len));
                }
            }
        }
        let ep = s.server_endpoint();
        self.pending.retain_mut(|(h, id, left)| {
            let Some(mut ss) = ep.session(*h) else {
                return false;
            };
            let mut d = ss.delegated(*id);
            while *left > 0 {
                let n = (*left).min(16 * 1024) as usize;
                match d.write(&vec![0x5a; n]) {
                    Ok(w) => *left -= w as u64,
                    Err(WriteError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            false
        });
    }

    /// Runs the world for `d`, serving every millisecond.
    fn run(&mut self, s: &mut RawSession, d: Duration) {
        let end = s.sim.now() + d;
        while s.sim.now() < end {
            self.serve(s);
            s.run_for(Duration::from_millis(1).min(end - s.sim.now()));
        }
        self.serve(s);
    }
}

fn served(s: &RawSession, peer: usize) -> u64 {
    s.sim.hosts.raw[peer].carrier_bytes.values().sum()
}

fn refusals(s: &RawSession, peer: usize) -> Vec<(u64, TicketError)> {
    s.sim.hosts.raw[peer]
        .control_messages
        .iter()
        .filter_map(|k| match k {
            Kind::PullRefused(r) => Some((r.id, TicketError::from_wire(r.code))),
            _ => None,
        })
        .collect()
}

/// A fresh secondary with one raw peer joined to session A.
fn joined(seed: u64) -> (RawSession, App) {
    let mut s = RawSession::connect_secondary(seed, Config::default(), key());
    let peer = s.peer;
    join(&mut s, peer, SESSION_A);
    (s, App::default())
}

/// Pulls `[offset, offset + len)` under `ticket` on a fresh joined peer and asserts the
/// refusal `want`, no byte served and no delegation at the secondary.
fn refused(seed: u64, case: &str, ticket: &Ticket, offset: u64, len: u64, want: TicketError) {
    let (mut s, mut app) = joined(seed);
    let peer = s.peer;
    s.peer().write_control(pull_frame(7, ticket, offset, len));
    app.run(&mut s, Duration::from_secs(1));
    println!("{case}: {:?}", refusals(&s, peer));
    assert_eq!(refusals(&s, peer), vec![(7, want)], "{case}");
    assert_eq!(served(&s, peer), 0, "{case}: bytes served");
    assert_eq!(app.accepted, 0, "{case}: the application heard of it");
    assert!(
        !s.server_events
            .iter()
            .any(|e| matches!(e, Event::DelegationReceived { .. })),
        "{case}"
    );
    assert_eq!(s.server_endpoint().stats().pulls_refused, 1, "{case}");
    s.assert_alive();
}

#[test]
fn a_valid_ticket_is_served() {
    let (mut s, mut app) = joined(80);
    let peer = s.peer;
    s.peer()
        .write_control(pull_frame(7, &ticket(SESSION_A, None, EXPIRY), 0, LEN));
    app.run(&mut s, Duration::from_secs(1));
    assert_eq!(refusals(&s, peer), vec![]);
    assert_eq!(app.accepted, 1);
    assert!(served(&s, peer) >= LEN, "served {}", served(&s, peer));
    // A plain ticket for this very path is served too.
    s.peer().write_control(pull_frame(
        8,
        &ticket(SESSION_A, Some(PATH), EXPIRY),
        LEN / 2,
        LEN / 2,
    ));
    app.run(&mut s, Duration::from_secs(1));
    assert_eq!(refusals(&s, peer), vec![]);
    assert_eq!(app.accepted, 2);
    s.assert_alive();
}

#[test]
fn altered_tickets_are_refused() {
    let good = ticket(SESSION_A, None, EXPIRY);
    type Alteration = (&'static str, fn(&mut Ticket));
    let alterations: [Alteration; 8] = [
        ("request", |t| t.request = b"GET /secret".to_vec()),
        ("range", |t| t.len *= 4),
        ("offset", |t| t.offset += 1),
        ("body offset", |t| t.body_offset += 1 << 30),
        ("stream", |t| t.stream += 4),
        ("expiry", |t| t.expiry += 3600),
        ("path", |t| {
            t.any_path = false;
            t.path_id = PATH;
        }),
        ("budget", |t| t.budget *= 100),
    ];
    for (i, (case, alter)) in alterations.into_iter().enumerate() {
        let mut t = good.clone();
        alter(&mut t);
        refused(81 + i as u64, case, &t, t.offset, 1024, TicketError::BadMac);
    }
    let mut random = good.clone();
    random.mac = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    refused(90, "random MAC", &random, 0, 1024, TicketError::BadMac);
    let mut empty = good;
    empty.mac.clear();
    refused(91, "no MAC", &empty, 0, 1024, TicketError::BadMac);
}

#[test]
fn tickets_outside_their_scope_are_refused() {
    refused(
        92,
        "another session of the same primary",
        &ticket(SESSION_B, None, EXPIRY),
        0,
        1024,
        TicketError::WrongSession,
    );
    refused(
        93,
        "expired",
        &ticket(SESSION_A, None, NOW_UNIX - 1),
        0,
        1024,
        TicketError::Expired,
    );
    refused(
        94,
        "plain ticket for another path",
        &ticket(SESSION_A, Some(PATH + 1), EXPIRY),
        0,
        1024,
        TicketError::WrongPath,
    );
    refused(
        95,
        "range outside the ticket",
        &ticket(SESSION_A, None, EXPIRY),
        LEN - 10,
        20,
        TicketError::OutOfRange,
    );
}

#[test]
fn a_valid_ticket_replayed_on_another_session_is_refused() {
    let (mut s, mut app) = joined(96);
    let a = s.peer;
    let b = s.add_peer();
    join(&mut s, b, SESSION_B);
    // Session A's valid ticket, pulled on the connection that joined session B.
    s.sim.hosts.raw[b].write_control(pull_frame(7, &ticket(SESSION_A, None, EXPIRY), 0, 1024));
    app.run(&mut s, Duration::from_secs(1));
    assert_eq!(refusals(&s, b), vec![(7, TicketError::WrongSession)]);
    assert_eq!(served(&s, b), 0);
    assert_eq!(app.accepted, 0);
    // On its own session the same ticket works: the positive control.
    s.sim.hosts.raw[a].write_control(pull_frame(7, &ticket(SESSION_A, None, EXPIRY), 0, 1024));
    app.run(&mut s, Duration::from_secs(1));
    assert_eq!(refusals(&s, a), vec![]);
    assert_eq!(app.accepted, 1);
}

#[test]
fn re_pulls_beyond_the_budget_are_refused() {
    let (mut s, mut app) = joined(97);
    let peer = s.peer;
    let t = ticket(SESSION_A, None, EXPIRY);
    // The budget is twice the range: two full pulls, then nothing.
    for id in 0..3 {
        s.peer().write_control(pull_frame(id, &t, 0, LEN));
        app.run(&mut s, Duration::from_millis(500));
    }
    assert_eq!(refusals(&s, peer), vec![(2, TicketError::BudgetSpent)]);
    assert_eq!(app.accepted, 2);
    let before = served(&s, peer);
    assert!((2 * LEN..3 * LEN).contains(&before), "served {before}");
    // Rejoining on a new connection does not reset the budget.
    let again = s.add_peer();
    join(&mut s, again, SESSION_A);
    s.sim.hosts.raw[again].write_control(pull_frame(9, &t, 0, 1024));
    app.run(&mut s, Duration::from_millis(500));
    assert_eq!(refusals(&s, again), vec![(9, TicketError::BudgetSpent)]);
    assert_eq!(served(&s, again), 0);
    assert_eq!(app.accepted, 2);
}

#[test]
fn a_flood_of_valid_pulls_is_cut_off_and_other_sessions_are_untouched() {
    let (mut s, mut app) = joined(98);
    let a = s.peer;
    let b = s.add_peer();
    join(&mut s, b, SESSION_B);
    let ta = ticket(SESSION_A, None, EXPIRY);
    let mut tb = ticket(SESSION_B, None, EXPIRY);
    tb.id = 2;
    tb.budget = u64::MAX;
    TicketKey::derive(&key()).sign(&mut tb);
    // 10,000 pulls per second of 1 KiB each on A, for up to 2 s; one pull per 100 ms on B.
    let mut next_b = 0;
    let mut id = 0;
    for ms in 0..2000u64 {
        if s.sim.hosts.raw[a].lost.is_none() {
            let mut batch = Vec::new();
            for _ in 0..10 {
                batch.extend(pull_frame(id, &ta, (id * 1024) % LEN, 1024));
                id += 1;
            }
            s.sim.hosts.raw[a].write_control(batch);
        }
        if ms % 100 == 0 {
            s.sim.hosts.raw[b].write_control(pull_frame(next_b, &tb, 0, 4096));
            next_b += 1;
        }
        app.run(&mut s, Duration::from_millis(1));
    }
    app.run(&mut s, Duration::from_secs(1));
    let code = s.sim.hosts.raw[a]
        .close_code()
        .and_then(|c| ErrorCode::from_wire(c.into_inner()));
    let refused_a = refusals(&s, a).len();
    println!(
        "flood: {id} pulls sent, A closed with {code:?}, {refused_a} refusals, {} delegations \
         accepted in all, B served {} bytes",
        app.accepted,
        served(&s, b)
    );
    assert_eq!(code, Some(ErrorCode::ControlRate), "A was cut off");
    // What A got served stays within its ticket's budget; the rest was refused or never
    // read.
    let a_accepted = app.accepted - next_b;
    assert!(a_accepted * 1024 <= 2 * LEN, "A: {a_accepted} pulls served");
    // The secondary forgot A's session; B's is alive and every one of its pulls served.
    assert_eq!(s.server_endpoint().session_count(), 1);
    assert!(s.sim.hosts.raw[b].lost.is_none());
    assert_eq!(refusals(&s, b), vec![]);
    assert!(served(&s, b) >= next_b * 4096, "B served {}", served(&s, b));
}

#[test]
fn a_ticket_under_a_key_the_secondary_does_not_hold_is_refused() {
    use kwik_core::GroupKeys;
    use kwik_core::ticket::TicketKeys;
    // Signed with the very key the secondary holds (as key 0), but naming key 7: a key
    // that was removed, or never given to this server.
    let mut t = ticket(SESSION_A, None, EXPIRY);
    TicketKeys::derive(&GroupKeys::new(7, key())).sign(&mut t);
    assert_eq!(t.key_id, 7);
    refused(95, "unknown key id", &t, 0, 1024, TicketError::UnknownKey);
}
