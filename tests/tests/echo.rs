//! A client and one server exchange data over a KWIK session of one path.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir};
use kwik_tests::app::{App, payload};
use kwik_tests::certs::TestCert;
use kwik_tests::net::LinkConfig;
use kwik_tests::sim::{Sim, addr};

#[test]
fn echo_over_one_path() {
    let cert = TestCert::localhost();
    let mut sim = Sim::new(1);
    let server_addr = addr([10, 0, 0, 1], 4433);
    let client_addr = addr([10, 0, 0, 2], 5000);
    sim.net.link(
        server_addr.ip(),
        client_addr.ip(),
        LinkConfig::default().rate_mbit(100).delay_ms(10),
    );
    let server = sim.add_node(server_addr, Some(cert.server(Config::default())));
    let client = sim.add_node(client_addr, None);
    let now = sim.now();
    let h = sim.nodes[client]
        .endpoint
        .connect(
            now,
            &cert.client(Config::default()),
            server_addr,
            "localhost",
        )
        .unwrap();

    let mut server_app = App::echo();
    let mut client_app = App::keeping();
    let message = payload(7, 100_000);
    let mut stream = None;
    let done = sim.run_until(Duration::from_secs(10), |sim| {
        let events = sim.take_events(server);
        server_app.poll(&mut sim.nodes[server].endpoint, events);
        let events = sim.take_events(client);
        client_app.poll(&mut sim.nodes[client].endpoint, events);
        if stream.is_none() && client_app.sessions.contains(&h) {
            let ep = &mut sim.nodes[client].endpoint;
            let id = ep.session(h).unwrap().open(Dir::Bi).unwrap();
            client_app.send(ep, h, id, message.clone(), true);
            stream = Some(id);
        }
        stream.is_some_and(|id| {
            client_app
                .received
                .get(&(h, id))
                .is_some_and(|r| r.finished)
        })
    });
    assert!(
        done,
        "echo did not complete; client closed: {:?}",
        client_app.closed
    );
    let id = stream.unwrap();
    assert_eq!(client_app.received[&(h, id)].data, message);
    assert!(client_app.closed.is_empty() && server_app.closed.is_empty());
}
