//! The usual scenario: one KWIK server and one KWIK client on a simulated link, the client
//! connecting to the server, each node's events handed to an [`App`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Config, Dir, Endpoint, Event, SessionHandle, StreamId};

use crate::app::App;
use crate::certs::TestCert;
use crate::net::LinkConfig;
use crate::sim::{NodeId, Sim, addr, drive_until};

/// A server and a client joined by one link, the client's session to the server under way.
pub struct Pair {
    /// The world.
    pub sim: Sim,
    /// The server (accepting sessions with a `localhost` certificate).
    pub server: NodeId,
    /// The client.
    pub client: NodeId,
    /// The server's address.
    pub server_addr: SocketAddr,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The client's session to the server.
    pub session: SessionHandle,
}

impl Pair {
    /// A server at 10.0.0.1:4433 with `server_config` and a client at 10.0.0.2:5000 with
    /// `client_config`, joined by `link`; the client has started connecting (no time has
    /// passed yet).
    pub fn new(seed: u64, link: LinkConfig, server_config: Config, client_config: Config) -> Self {
        let cert = TestCert::localhost();
        let mut sim = Sim::new(seed);
        let server_addr = addr([10, 0, 0, 1], 4433);
        let client_addr = addr([10, 0, 0, 2], 5000);
        sim.net.link(server_addr.ip(), client_addr.ip(), link);
        let server = sim.add_node(server_addr, Some(cert.server(server_config)));
        let client = sim.add_node(client_addr, None);
        let now = sim.now();
        let session = sim.nodes[client]
            .endpoint
            .connect(now, &cert.client(client_config), server_addr, "localhost")
            .expect("the client starts connecting");
        Self {
            sim,
            server,
            client,
            server_addr,
            client_addr,
            session,
        }
    }

    /// The server's engine.
    pub fn server_endpoint(&mut self) -> &mut Endpoint {
        &mut self.sim.nodes[self.server].endpoint
    }

    /// The client's engine.
    pub fn client_endpoint(&mut self) -> &mut Endpoint {
        &mut self.sim.nodes[self.client].endpoint
    }

    /// Opens a `dir` stream on the client's session and queues `data` and a fin on it with
    /// `client_app`; `None` if the session's stream limit refuses the stream.
    pub fn open_and_send(
        &mut self,
        client_app: &mut App,
        dir: Dir,
        data: Bytes,
    ) -> Option<StreamId> {
        let h = self.session;
        let ep = self.client_endpoint();
        let id = ep
            .session(h)
            .expect("the client's session is open")
            .open(dir)?;
        client_app.send(ep, h, id, data, true);
        Some(id)
    }

    /// Hands the events each node produced since the last call to its app.
    pub fn poll(&mut self, server_app: &mut App, client_app: &mut App) {
        self.poll_watching(server_app, client_app, |_, _| {});
    }

    /// [`Pair::poll`], showing `watch` each of the client's events (and the client app as it
    /// is) before the client app handles them.
    pub fn poll_watching(
        &mut self,
        server_app: &mut App,
        client_app: &mut App,
        mut watch: impl FnMut(&Event, &App),
    ) {
        let events = self.sim.take_events(self.server);
        server_app.poll(self.server_endpoint(), events);
        let events = self.sim.take_events(self.client);
        for e in &events {
            watch(e, client_app);
        }
        client_app.poll(self.client_endpoint(), events);
    }

    /// Steps until `done` says so or `limit` of virtual time passes, polling both apps
    /// before every check ([`Sim::run_until`] with a [`Pair::poll`] at the start of `done`).
    /// Returns whether `done` was reached.
    pub fn run_until(
        &mut self,
        limit: Duration,
        server_app: &mut App,
        client_app: &mut App,
        mut done: impl FnMut(&mut Pair, &mut App, &mut App) -> bool,
    ) -> bool {
        self.step_until(limit, |p| {
            p.poll(server_app, client_app);
            done(p, server_app, client_app)
        })
    }

    /// Steps until the client's session is established, 5 s of virtual time at most;
    /// returns whether it was.
    pub fn wait_established(&mut self, server_app: &mut App, client_app: &mut App) -> bool {
        let h = self.session;
        self.run_until(Duration::from_secs(5), server_app, client_app, |_, _, c| {
            c.sessions.contains(&h)
        })
    }

    /// [`Sim::run_until`] on the pair: `done` polls whatever apps it drives itself.
    pub fn step_until(&mut self, limit: Duration, done: impl FnMut(&mut Pair) -> bool) -> bool {
        drive_until(self, limit, |p| &mut p.sim, done)
    }
}
