//! A KWIK server and one or more raw peers on a simulated link: the harness of the
//! hostile-peer scenarios.

use std::sync::Arc;
use std::time::Duration;

use kwik_core::{
    CertificateDer, Config, ErrorCode, Event, GroupKey, ProtocolError, SessionError, SessionHandle,
    VarInt,
};

use crate::certs::TestCert;
use crate::net::LinkConfig;
use crate::raw::{RawPeer, client_config, client_config_for, default_limits};
use crate::sim::{NodeId, Sim, addr};

/// A KWIK server and a raw peer connected to it over a simulated link.
pub struct RawSession {
    /// The world.
    pub sim: Sim,
    /// The KWIK server.
    pub server: NodeId,
    /// The raw peer, in [`RawHosts::raw`](crate::sim::RawHosts::raw).
    pub peer: usize,
    /// The server's session with the peer, once the peer's Hello was accepted.
    pub session: Option<SessionHandle>,
    /// Every event the server produced so far.
    pub server_events: Vec<Event>,
    /// The server's certificate, which raw peers trust.
    root: CertificateDer<'static>,
}

impl RawSession {
    /// A server with `config` and a raw peer that completed the QUIC handshake with it
    /// (but sent nothing yet) over a 100 Mbit/s link with 5 ms of delay.
    pub fn connect(seed: u64, config: Config) -> Self {
        Self::connect_with_window(seed, config, None)
    }

    /// [`RawSession::connect`], the peer granting only `window` bytes per QUIC stream if
    /// given (so that a peer that stops reading soon blocks the server's writes).
    pub fn connect_with_window(seed: u64, config: Config, window: Option<u32>) -> Self {
        let transport = window.map(|window| {
            let mut transport = quinn_proto::TransportConfig::default();
            transport.stream_receive_window(window.into());
            transport
        });
        Self::connect_inner(seed, config, transport, None, kwik_core::ALPN)
    }

    /// A server with `config` and a raw peer that negotiated `alpn` (one of
    /// `config.app_protocols`) instead of KWIK's: a plain QUIC client, whose session the
    /// server holds once the handshake completed. The peer may keep 256 MiB unacknowledged,
    /// so that only the server's limits hold it back.
    pub fn connect_plain(seed: u64, config: Config, alpn: &[u8]) -> Self {
        let mut transport = quinn_proto::TransportConfig::default();
        transport.send_window(256 << 20);
        let mut this = Self::connect_inner(seed, config, Some(transport), None, alpn);
        let admitted = this.run_until(Duration::from_secs(1), |s| s.session.is_some());
        assert!(admitted, "the server did not admit the plain peer");
        this
    }

    /// [`RawSession::connect`] to a server that holds the group key `key`, so that it
    /// admits joins: the peer may then send a `Join` as its first control frame.
    pub fn connect_secondary(seed: u64, config: Config, key: GroupKey) -> Self {
        Self::connect_inner(seed, config, None, Some(key), kwik_core::ALPN)
    }

    fn connect_inner(
        seed: u64,
        config: Config,
        transport: Option<quinn_proto::TransportConfig>,
        key: Option<GroupKey>,
        alpn: &[u8],
    ) -> Self {
        let cert = TestCert::localhost();
        let mut sim = Sim::new(seed);
        let server_addr = addr([10, 0, 0, 1], 4433);
        let peer_addr = addr([10, 0, 0, 66], 6666);
        sim.net.link(
            server_addr.ip(),
            peer_addr.ip(),
            LinkConfig::default().rate_mbit(100).delay_ms(5),
        );
        let mut server_config = cert.server(config);
        if let Some(key) = key {
            server_config.group_key(key);
        }
        let server = sim.add_node(server_addr, Some(server_config));
        let peer = sim.hosts.add_raw(peer_addr);
        let now = sim.now();
        let mut quic = client_config_for(std::slice::from_ref(&cert.cert), alpn);
        if let Some(transport) = transport {
            quic.transport_config(Arc::new(transport));
        }
        sim.hosts.raw[peer].connect(now, quic, server_addr, "localhost");
        let mut this = Self {
            sim,
            server,
            peer,
            session: None,
            server_events: Vec::new(),
            root: cert.cert.clone(),
        };
        assert!(
            this.run_until(Duration::from_secs(5), |s| s.peer().connected),
            "QUIC handshake did not complete: {:?}",
            this.peer().lost
        );
        this
    }

    /// [`RawSession::connect`], then the KWIK setup: Hello with [`default_limits`], Welcome.
    pub fn establish(seed: u64, config: Config) -> Self {
        Self::establish_with_window(seed, config, None)
    }

    /// [`RawSession::establish`] with [`RawSession::connect_with_window`].
    pub fn establish_with_window(seed: u64, config: Config, window: Option<u32>) -> Self {
        let mut this = Self::connect_with_window(seed, config, window);
        this.peer().hello(default_limits());
        let done = this.run_until(Duration::from_secs(5), |s| {
            s.peer().welcome().is_some() && s.session.is_some()
        });
        assert!(done, "KWIK setup did not complete: {:?}", this.peer().lost);
        this
    }

    /// Adds another raw peer, on its own link to the server, and completes its QUIC
    /// handshake (it sends nothing yet); returns its index in [`RawHosts::raw`](crate::sim::RawHosts::raw).
    pub fn add_peer(&mut self) -> usize {
        let index = self.sim.hosts.raw.len();
        let peer_addr = addr([10, 0, 1, index as u8 + 1], 6666);
        let server_addr = self.sim.nodes[self.server].addr;
        self.sim.net.link(
            server_addr.ip(),
            peer_addr.ip(),
            LinkConfig::default().rate_mbit(100).delay_ms(5),
        );
        let peer = self.sim.hosts.add_raw(peer_addr);
        let now = self.sim.now();
        let quic = client_config(std::slice::from_ref(&self.root));
        self.sim.hosts.raw[peer].connect(now, quic, server_addr, "localhost");
        let connected = self.run_until(Duration::from_secs(5), |s| s.sim.hosts.raw[peer].connected);
        assert!(
            connected,
            "QUIC handshake did not complete: {:?}",
            self.sim.hosts.raw[peer].lost
        );
        peer
    }

    /// The raw peer.
    pub fn peer(&mut self) -> &mut RawPeer {
        &mut self.sim.hosts.raw[self.peer]
    }

    /// The server's engine.
    pub fn server_endpoint(&mut self) -> &mut kwik_core::Endpoint {
        &mut self.sim.nodes[self.server].endpoint
    }

    /// Runs until `done` or `limit` of virtual time, collecting the server's events.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = self.sim.now() + limit;
        loop {
            self.collect();
            if done(self) {
                return true;
            }
            if self.sim.now() >= deadline || !self.sim.step() {
                self.collect();
                return done(self);
            }
        }
    }

    /// Runs for exactly `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.sim.run_for(d);
        self.collect();
    }

    fn collect(&mut self) {
        let events = self.sim.take_events(self.server);
        for e in &events {
            if let Event::Incoming(h) = e {
                self.session.get_or_insert(*h);
            }
        }
        self.server_events.extend(events);
    }

    /// The error of the server's `Closed` event, if one arrived.
    pub fn server_closed(&self) -> Option<&SessionError> {
        self.server_events.iter().find_map(|e| match e {
            Event::Closed { error, .. } => Some(error),
            _ => None,
        })
    }

    /// Asserts that neither side closed anything yet.
    pub fn assert_alive(&mut self) {
        assert_eq!(self.server_closed(), None, "server closed the session");
        assert!(
            self.peer().lost.is_none(),
            "peer lost: {:?}",
            self.peer().lost
        );
    }

    /// Runs until the raw peer's connection is closed by the server; returns its code.
    pub fn run_until_peer_closed(&mut self) -> Option<VarInt> {
        let closed = self.run_until(Duration::from_secs(5), |s| s.peer().lost.is_some());
        assert!(closed, "the server did not close the connection");
        self.peer().close_code()
    }

    /// Asserts the server closed the session with a protocol violation `code` and the
    /// peer saw the connection closed with that code on the wire, then that the server
    /// forgets the session and connection.
    pub fn assert_violation(&mut self, code: ErrorCode) {
        let peer_code = self.run_until_peer_closed();
        assert_eq!(
            peer_code,
            Some(code.to_wire()),
            "peer saw {:?}",
            self.peer().lost
        );
        match self.server_closed() {
            Some(SessionError::ProtocolViolation(ProtocolError { code: c, .. })) => {
                assert_eq!(*c, code, "server closed with {:?}", self.server_closed())
            }
            other => panic!("server session ended with {other:?}, expected {code:?}"),
        }
        let closes = self
            .server_events
            .iter()
            .filter(|e| matches!(e, Event::Closed { .. }))
            .count();
        assert_eq!(closes, 1, "one Closed event");
        assert_eq!(self.server_endpoint().stats().protocol_violations, 1);
        self.assert_server_forgets();
    }

    /// Asserts the server drops every session and connection within a few seconds.
    pub fn assert_server_forgets(&mut self) {
        let idle = self.run_until(Duration::from_secs(10), |s| {
            let ep = s.server_endpoint();
            ep.is_idle() && ep.session_count() == 0
        });
        assert!(
            idle,
            "server still holds {:?}",
            self.server_endpoint().stats()
        );
    }
}
