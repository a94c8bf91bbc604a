//! The multi-server scenario: a client, a primary server and secondaries, each server on its
//! own link to the client. The primary adds every secondary to the client's session, then
//! serves one body on a stream, striped over every path; each server's delegation handler
//! serves byte ranges of that body.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_core::{
    Config, DelegationId, Dir, Endpoint, Event, GroupKey, PathId, ReadError, Role, SessionError,
    SessionHandle, StreamId, WriteError,
};
use sha2::{Digest, Sha256};

use crate::certs::TestCert;
use crate::net::LinkConfig;
use crate::sim::{NodeId, Sim, addr, drive_until};

/// The group key the test servers share.
pub const GROUP_KEY: [u8; 32] = [0x4b; 32];

/// A body server's role in the scenario: serve ranges of `body` for every delegation.
#[derive(Default)]
pub struct Server {
    /// Sessions this server holds, with their role.
    pub sessions: BTreeMap<SessionHandle, Role>,
    /// Delegations accepted and not fully written: (session, id) -> bytes left of the body.
    pending: BTreeMap<(SessionHandle, DelegationId), Bytes>,
    /// Delegations accepted.
    pub delegations: u64,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Sessions closed, with the error.
    pub closed: Vec<(SessionHandle, SessionError)>,
}

impl Server {
    pub(crate) fn poll(&mut self, ep: &mut Endpoint, events: Vec<Event>, body: &Bytes) {
        for event in events {
            match &event {
                Event::Incoming(h) => {
                    if let Some(s) = ep.session(*h) {
                        self.sessions.insert(*h, s.role());
                    }
                }
                Event::DelegationReceived { session } => {
                    let Some(mut s) = ep.session(*session) else {
                        continue;
                    };
                    while let Some(d) = s.accept_delegation() {
                        self.delegations += 1;
                        let start = d.body_offset as usize;
                        let end = start + d.len as usize;
                        let range = if end <= body.len() {
                            body.slice(start..end)
                        } else {
                            Bytes::new()
                        };
                        self.pending.insert((*session, d.id), range);
                    }
                }
                Event::Closed { session, error } => self.closed.push((*session, error.clone())),
                _ => {}
            }
            self.events.push(event);
        }
        self.flush(ep);
    }

    fn flush(&mut self, ep: &mut Endpoint) {
        self.pending.retain(|(h, id), rest| {
            let Some(mut s) = ep.session(*h) else {
                return false;
            };
            let mut d = s.delegated(*id);
            while !rest.is_empty() {
                match d.write_chunks(std::slice::from_mut(rest)) {
                    Ok(_) => {}
                    Err(WriteError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            false
        });
    }
}

/// The client's reader: reads the body stream, hashes it and times every stall.
pub struct Reader {
    /// The stream, once the primary opened it.
    pub stream: Option<StreamId>,
    /// Bytes read.
    pub bytes: u64,
    hasher: Sha256,
    /// The fin was read.
    pub finished: bool,
    /// When the first bytes were read.
    pub first_byte: Option<Instant>,
    /// When bytes last arrived.
    pub last_progress: Option<Instant>,
    /// Every read as (when, bytes read so far), once [`Reader::record`] was called.
    pub trace: Option<Vec<(Instant, u64)>>,
    /// The longest time without new bytes, once bytes started to flow, and when it ended.
    pub longest_stall: Duration,
    /// When the longest stall ended.
    pub longest_stall_end: Option<Instant>,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// The session's error, if it ended.
    pub closed: Option<SessionError>,
    /// The session is established.
    pub connected: bool,
    /// A read error other than blocking.
    pub error: Option<ReadError>,
}

impl Reader {
    fn new() -> Self {
        Self {
            stream: None,
            bytes: 0,
            hasher: Sha256::new(),
            finished: false,
            first_byte: None,
            last_progress: None,
            trace: None,
            longest_stall: Duration::ZERO,
            longest_stall_end: None,
            events: Vec::new(),
            closed: None,
            connected: false,
            error: None,
        }
    }

    /// Starts recording every read, for [`crate::failover::slow_stretch`].
    pub fn record(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    /// SHA-256 of what was read.
    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    fn poll(&mut self, now: Instant, ep: &mut Endpoint, h: SessionHandle, events: Vec<Event>) {
        for event in events {
            match &event {
                Event::Connected(_) => self.connected = true,
                Event::Closed { error, .. } => self.closed = Some(error.clone()),
                _ => {}
            }
            self.events.push(event);
        }
        let Some(mut s) = ep.session(h) else { return };
        if self.stream.is_none() {
            self.stream = s.accept(Dir::Uni);
        }
        let Some(id) = self.stream else { return };
        if self.finished {
            return;
        }
        loop {
            match s.recv_stream(id).read(usize::MAX) {
                Ok(Some(chunk)) => {
                    self.hasher.update(&chunk);
                    self.bytes += chunk.len() as u64;
                    if let Some(last) = self.last_progress {
                        let stall = now - last;
                        if stall > self.longest_stall {
                            self.longest_stall = stall;
                            self.longest_stall_end = Some(now);
                        }
                    }
                    self.last_progress = Some(now);
                    self.first_byte.get_or_insert(now);
                    if let Some(trace) = &mut self.trace {
                        trace.push((now, self.bytes));
                    }
                }
                Ok(None) => {
                    self.finished = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
    }
}

/// A client, a primary and secondaries in the simulator.
pub struct Cluster {
    /// The world.
    pub sim: Sim,
    /// The client node.
    pub client: NodeId,
    /// Server nodes: the primary first.
    pub servers: Vec<NodeId>,
    /// Server addresses, the primary first.
    pub addrs: Vec<SocketAddr>,
    /// The client's session.
    pub session: SessionHandle,
    /// The body the servers serve.
    pub body: Bytes,
    /// Each server's application, the primary first.
    pub apps: Vec<Server>,
    /// The client's reader.
    pub reader: Reader,
    /// The primary's session with the client, once it exists.
    pub primary_session: Option<SessionHandle>,
    /// Secondary paths the primary added, by server index.
    pub path_ids: BTreeMap<usize, PathId>,
    /// The servers' certificate, for other clients to trust.
    pub cert: TestCert,
}

impl Cluster {
    /// A client at 10.0.0.2 and one server per link at 10.0.<i+1>.1:4433 (the first is the
    /// primary), the client's session to the primary under way.
    pub fn new(
        seed: u64,
        links: &[LinkConfig],
        server_config: Config,
        client_config: Config,
        body: Bytes,
    ) -> Self {
        let keys = vec![Some(GroupKey::new(GROUP_KEY)); links.len()];
        Self::with_group_keys(seed, links, server_config, client_config, body, &keys)
    }

    /// [`Cluster::new`], server `i` holding the group key `keys[i]` (none for `None`), so
    /// that a test can give a secondary a key other than the primary's.
    pub fn with_group_keys(
        seed: u64,
        links: &[LinkConfig],
        server_config: Config,
        client_config: Config,
        body: Bytes,
        keys: &[Option<GroupKey>],
    ) -> Self {
        assert_eq!(keys.len(), links.len(), "one group key per server");
        let cert = TestCert::localhost();
        let mut sim = Sim::new(seed);
        let client_addr = addr([10, 0, 0, 2], 5000);
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for (i, link) in links.iter().enumerate() {
            let a = addr([10, 0, i as u8 + 1, 1], 4433);
            sim.net.link(a.ip(), client_addr.ip(), *link);
            let mut config = cert.server(server_config.clone());
            if let Some(key) = &keys[i] {
                config.group_key(key.clone());
            }
            servers.push(sim.add_node(a, Some(config)));
            addrs.push(a);
        }
        let client = sim.add_node(client_addr, None);
        let now = sim.now();
        let session = sim.nodes[client]
            .endpoint
            .connect(now, &cert.client(client_config), addrs[0], "localhost")
            .expect("the client starts connecting");
        let apps = links.iter().map(|_| Server::default()).collect();
        Self {
            sim,
            client,
            servers,
            addrs,
            session,
            body,
            apps,
            reader: Reader::new(),
            primary_session: None,
            path_ids: BTreeMap::new(),
            cert,
        }
    }

    /// Hands every node's events to its application.
    pub fn poll(&mut self) {
        let now = self.sim.now();
        for (i, node) in self.servers.iter().enumerate() {
            let events = self.sim.take_events(*node);
            self.apps[i].poll(&mut self.sim.nodes[*node].endpoint, events, &self.body);
        }
        if self.primary_session.is_none() {
            self.primary_session = self.apps[0]
                .sessions
                .iter()
                .find(|(_, r)| **r == Role::Primary)
                .map(|(h, _)| *h);
        }
        let events = self.sim.take_events(self.client);
        let h = self.session;
        self.reader
            .poll(now, &mut self.sim.nodes[self.client].endpoint, h, events);
    }

    /// The primary's engine.
    pub fn primary(&mut self) -> &mut Endpoint {
        &mut self.sim.nodes[self.servers[0]].endpoint
    }

    /// The client's engine.
    pub fn client_endpoint(&mut self) -> &mut Endpoint {
        &mut self.sim.nodes[self.client].endpoint
    }

    /// Steps until `done` says so or `limit` passes, polling every app before each check.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Cluster) -> bool,
    ) -> bool {
        drive_until(
            self,
            limit,
            |c| &mut c.sim,
            |c| {
                c.poll();
                done(c)
            },
        )
    }

    /// Connects the client and has the primary add every secondary; returns when every
    /// path is active on the primary (false if that took longer than `limit`).
    pub fn join_all(&mut self, limit: Duration) -> bool {
        if !self.run_until(limit, |c| c.primary_session.is_some() && c.reader.connected) {
            return false;
        }
        self.add_paths();
        let want = self.servers.len() - 1;
        self.run_until(limit, move |c| {
            let active = c.apps[0]
                .events
                .iter()
                .filter(|e| matches!(e, Event::PathActive { .. }))
                .count();
            active >= want
        })
    }

    /// Has the primary add every secondary to the client's session (recorded in
    /// `path_ids`); returns their paths, in server order.
    pub fn add_paths(&mut self) -> Vec<PathId> {
        let h = self.primary_session.expect("primary session");
        let now = self.sim.now();
        let mut paths = Vec::new();
        for i in 1..self.servers.len() {
            let a = self.addrs[i];
            let path = self
                .primary()
                .session(h)
                .expect("primary session")
                .add_path(now, a, "localhost")
                .expect("add_path");
            self.path_ids.insert(i, path);
            paths.push(path);
        }
        paths
    }

    /// The primary opens a stream and stripes the body over it, then finishes it.
    pub fn start_stripe(&mut self) -> StreamId {
        let h = self.primary_session.expect("primary session");
        let now = self.sim.now();
        let len = self.body.len() as u64;
        let mut s = self.primary().session(h).expect("primary session");
        let id = s.open(Dir::Uni).expect("a stream");
        let mut send = s.send_stream(id);
        send.stripe(now, Bytes::from_static(b"body"), len)
            .expect("stripe");
        send.finish().expect("finish");
        id
    }

    /// Runs until the client read the whole body (or `limit` passes); returns whether it
    /// did.
    pub fn run_to_end(&mut self, limit: Duration) -> bool {
        self.run_until(limit, |c| c.reader.finished || c.reader.closed.is_some())
            && self.reader.finished
    }

    /// Stream bytes the client received on each path (duplicates included).
    pub fn received_per_path(&mut self) -> BTreeMap<PathId, u64> {
        let h = self.session;
        let stats = self
            .client_endpoint()
            .session(h)
            .map(|s| s.stats())
            .unwrap_or_default();
        stats
            .paths
            .iter()
            .map(|p| (p.id, p.stream_bytes_received))
            .collect()
    }
}
