//! A client and one server exchange data over a KWIK session of one path.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kwik_core::{Config, Dir};
use kwik_tests::app::{App, payload};
use kwik_tests::net::LinkConfig;
use kwik_tests::pair::Pair;

#[test]
fn echo_over_one_path() {
    let link = LinkConfig::default().rate_mbit(100).delay_ms(10);
    let mut p = Pair::new(1, link, Config::default(), Config::default());
    let h = p.session;

    let mut server_app = App::echo();
    let mut client_app = App::keeping();
    let message = payload(7, 100_000);
    let mut stream = None;
    let done = p.run_until(
        Duration::from_secs(10),
        &mut server_app,
        &mut client_app,
        |p, _, client_app| {
            if stream.is_none() && client_app.sessions.contains(&h) {
                stream = Some(
                    p.open_and_send(client_app, Dir::Bi, message.clone())
                        .unwrap(),
                );
            }
            stream.is_some_and(|id| {
                client_app
                    .received
                    .get(&(h, id))
                    .is_some_and(|r| r.finished)
            })
        },
    );
    assert!(
        done,
        "echo did not complete; client closed: {:?}",
        client_app.closed
    );
    let id = stream.unwrap();
    assert_eq!(client_app.received[&(h, id)].data, message);
    assert!(client_app.closed.is_empty() && server_app.closed.is_empty());
}
