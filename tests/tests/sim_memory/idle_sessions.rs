//! What a server engine holds for each idle session: `n` clients' sessions each echo once,
//! then stay idle for 10 s of virtual time; the server's endpoint is then dropped, and what
//! that frees (less what an endpoint that never held a session frees) is the engine's
//! memory for them, counted by the allocator.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Config, Dir, Endpoint, EndpointConfig, Event, SessionHandle};
use kwik_tests::app::App;
use kwik_tests::certs::TestCert;
use kwik_tests::net::LinkConfig;
use kwik_tests::sim::{Sim, addr};
use stats_alloc::Region;

use super::{GLOBAL, SERIAL, live};

/// The most engine memory an idle session may cost its server.
const PER_SESSION_LIMIT: i64 = 64 * 1024;

/// Heap bytes dropping the server's endpoint frees after `n` sessions echoed once and
/// idled for 10 s (`n` = 0: an endpoint that accepted none).
fn server_engine_bytes(n: usize) -> i64 {
    let cert = TestCert::localhost();
    let mut sim = Sim::new(7);
    let server_addr = addr([10, 0, 0, 1], 4433);
    let client_addr = addr([10, 0, 0, 2], 5000);
    sim.net.link(
        server_addr.ip(),
        client_addr.ip(),
        LinkConfig::default().rate_mbit(1000).delay_ms(1),
    );
    let server = sim.add_node(server_addr, Some(cert.server(Config::default())));
    let client = sim.add_node(client_addr, None);
    let client_config = cert.client(Config::default());
    let now = sim.now();
    let handles: Vec<SessionHandle> = (0..n)
        .map(|_| {
            sim.nodes[client]
                .endpoint
                .connect(now, &client_config, server_addr, "localhost")
                .unwrap()
        })
        .collect();
    let mut server_app = App::echo();
    let mut client_app = App::keeping();
    let poll = |sim: &mut Sim, server_app: &mut App, client_app: &mut App| {
        let events = sim.take_events(server);
        server_app.poll(&mut sim.nodes[server].endpoint, events);
        let events: Vec<Event> = sim.take_events(client);
        client_app.poll(&mut sim.nodes[client].endpoint, events);
    };
    assert!(sim.run_until(Duration::from_secs(30), |sim| {
        poll(sim, &mut server_app, &mut client_app);
        client_app.sessions.len() == n
    }));
    for &h in &handles {
        let ep = &mut sim.nodes[client].endpoint;
        let id = ep.session(h).unwrap().open(Dir::Bi).unwrap();
        client_app.send(ep, h, id, Bytes::from_static(b"are you still up"), true);
    }
    assert!(sim.run_until(Duration::from_secs(30), |sim| {
        poll(sim, &mut server_app, &mut client_app);
        client_app.received.values().filter(|r| r.finished).count() == n
    }));
    sim.run_until(Duration::from_secs(10), |sim| {
        poll(sim, &mut server_app, &mut client_app);
        false
    });
    assert!(server_app.closed.is_empty() && client_app.closed.is_empty());
    assert_eq!(sim.nodes[server].endpoint.session_count(), n);
    sim.take_events(server);
    let empty = Endpoint::new(
        EndpointConfig {
            seed: [0; 32],
            allow_mtud: false,
        },
        None,
    );
    let region = Region::new(GLOBAL);
    drop(std::mem::replace(&mut sim.nodes[server].endpoint, empty));
    -live(&region)
}

#[test]
fn an_idle_session_costs_its_server_engine_at_most_64_kib() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = server_engine_bytes(0);
    let mut per_session = Vec::new();
    for n in [50, 200] {
        let bytes = server_engine_bytes(n) - base;
        let each = bytes / n as i64;
        println!("{n} idle sessions: {bytes} bytes in the server engine, {each} per session");
        per_session.push(each);
        assert!(
            each <= PER_SESSION_LIMIT,
            "{each} bytes per idle session, above {PER_SESSION_LIMIT}"
        );
    }
    // The cost is per session: four times the sessions, not more than 1.2 times the cost
    // each.
    assert!(
        per_session[1] * 10 <= per_session[0] * 12,
        "per session: {per_session:?}"
    );
}
