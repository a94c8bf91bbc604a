//! The operations an `engine_multi` input runs on the primary, the client and the network,
//! the final settling, and the driver that reads the input.

use std::time::Duration;

use bytes::Bytes;
use kwik_core::{Dir, PathId, PathKind, PathState, SessionHandle, StreamId, VarInt};

use super::super::{MultiReport, pattern_bytes};
use super::{
    Body, M_CLIENT, M_PRIMARY, MULTI_ALIAS, MULTI_LINKS, MULTI_MAX_BODY, MULTI_MAX_CONNECTIONS,
    MULTI_MAX_OPS, MULTI_MAX_PATHS, MULTI_MAX_SESSIONS, MULTI_MAX_TOTAL, MULTI_OPS_TIME,
    MULTI_SECONDARIES, MULTI_SETTLE, Multi, path_states,
};
use crate::net::Script;

impl Multi {
    fn primary_session(&mut self) -> Option<kwik_core::Session<'_>> {
        let h = self.primary?;
        self.nodes[M_PRIMARY].ep.session(h)
    }

    fn pick_stream(&self, b: u8) -> Option<StreamId> {
        (!self.order.is_empty()).then(|| self.order[usize::from(b) % self.order.len()])
    }

    fn body_len(&self, hi: u8, lo: u8) -> u64 {
        let len = (u64::from(u16::from_be_bytes([hi, lo])) + 1) * 16;
        len.min(MULTI_MAX_BODY).min(MULTI_MAX_TOTAL - self.total)
    }

    fn open(&mut self, dir: Dir) {
        let Some(id) = self.primary_session().and_then(|mut s| s.open(dir)) else {
            return;
        };
        assert_eq!(
            id.initiator(),
            quinn_proto::Side::Server,
            "primary: opened {id}"
        );
        assert!(
            self.bodies.insert(id, Body::default()).is_none(),
            "primary: {id} opened twice"
        );
        self.order.push(id);
    }

    fn write(&mut self, id: StreamId, n: u64) {
        let n = n.min(MULTI_MAX_TOTAL - self.total);
        let Some(body) = self.bodies.get(&id).copied() else {
            return;
        };
        if n == 0 || body.finished {
            return;
        }
        let data = pattern_bytes(id, body.end, n as usize);
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if let Ok(k) = s.send_stream(id).write(&data) {
            assert!(k > 0 && k as u64 <= n, "primary: write took {k} of {n}");
            self.total += k as u64;
            if let Some(b) = self.bodies.get_mut(&id) {
                b.end += k as u64;
            }
        }
    }

    fn stripe(&mut self, id: StreamId, len: u64) {
        let now = self.now();
        if len == 0 || self.bodies.get(&id).is_none_or(|b| b.finished) {
            return;
        }
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if s.send_stream(id)
            .stripe(now, Bytes::from_static(b"body"), len)
            .is_ok()
        {
            self.report.stripes += 1;
            self.total += len;
            if let Some(b) = self.bodies.get_mut(&id) {
                b.stripe = Some((b.end, b.end + len));
                b.end += len;
            }
        }
    }

    fn delegate(&mut self, id: StreamId, pick: u8, len: u64) {
        if len == 0 || self.bodies.get(&id).is_none_or(|b| b.finished) {
            return;
        }
        let now = self.now();
        let Some(mut s) = self.primary_session() else {
            return;
        };
        let paths = s.paths();
        let path = paths[usize::from(pick) % paths.len()].id;
        if s.send_stream(id)
            .delegate(now, path, Bytes::from_static(b"range"), len)
            .is_ok()
        {
            self.report.delegations += 1;
            self.total += len;
            if let Some(b) = self.bodies.get_mut(&id) {
                b.end += len;
            }
        }
    }

    fn finish(&mut self, id: StreamId) {
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if s.send_stream(id).finish().is_ok() {
            let b = self
                .bodies
                .get_mut(&id)
                .expect("a stream the primary opened");
            assert!(!b.finished, "primary: finished {id} twice");
            b.finished = true;
        }
    }

    fn add_path(&mut self, which: u8) {
        let now = self.now();
        let addr = MULTI_SECONDARIES[usize::from(which) % self.secondaries];
        if let Some(mut s) = self.primary_session() {
            let _ = s.add_path(now, addr, "localhost");
        }
    }

    fn add_same_peer_path(&mut self, backup: bool) {
        let now = self.now();
        let kind = if backup {
            PathKind::Backup
        } else {
            PathKind::SamePeer
        };
        let Some(mut s) = self.primary_session() else {
            return;
        };
        if let Ok(path) = s.add_same_peer_path(now, MULTI_ALIAS, "localhost", kind) {
            self.same_peer.push(path);
        }
    }

    /// `remove_path` on the primary (`client` false) or the client of the `pick`th path
    /// other than the primary path.
    fn remove_path(&mut self, client: bool, pick: u8) {
        let now = self.now();
        let (n, h) = if client {
            (M_CLIENT, self.client.session)
        } else {
            (M_PRIMARY, self.primary)
        };
        let Some(mut s) = h.and_then(|h| self.nodes[n].ep.session(h)) else {
            return;
        };
        let paths: Vec<PathId> = s
            .paths()
            .iter()
            .filter(|p| !p.is_primary)
            .map(|p| p.id)
            .collect();
        if paths.is_empty() {
            return;
        }
        let _ = s.remove_path(now, paths[usize::from(pick) % paths.len()]);
    }

    /// Secondary `which` closes every session it holds; with `shut_down`, it also stops
    /// accepting, so that the client's retries find nobody.
    fn close_secondary(&mut self, which: u8, shut_down: bool) {
        let now = self.now();
        let n = 2 + usize::from(which) % self.secondaries;
        let app = &mut self.servers[n - 1];
        let ep = &mut self.nodes[n].ep;
        for h in app.sessions.keys() {
            if let Some(mut s) = ep.session(*h) {
                s.close(now, VarInt::from_u32(0), b"shutting down");
            }
        }
        if shut_down && !app.shut_down {
            app.shut_down = true;
            ep.set_server_config(None);
        }
    }

    /// The engines hold no more than a generous bound of sessions, connections and paths.
    fn check_bounds(&mut self) {
        for node in &mut self.nodes {
            let stats = node.ep.stats();
            assert!(
                node.ep.session_count() <= MULTI_MAX_SESSIONS,
                "{}: {} sessions",
                node.name,
                node.ep.session_count()
            );
            assert!(
                stats.connections <= MULTI_MAX_CONNECTIONS,
                "{}: {} connections",
                node.name,
                stats.connections
            );
        }
        for (n, h) in [(M_CLIENT, self.client.session), (M_PRIMARY, self.primary)] {
            let name = self.nodes[n].name;
            if let Some(s) = h.and_then(|h| self.nodes[n].ep.session(h)) {
                let paths = s.paths();
                assert!(
                    paths.len() <= MULTI_MAX_PATHS,
                    "{name}: the session holds {} paths",
                    paths.len()
                );
                let live = paths
                    .iter()
                    .filter(|p| p.state != PathState::Removed)
                    .count();
                assert!(
                    live <= 8,
                    "{name}: {live} live paths, above max_paths_per_session"
                );
            }
        }
    }

    fn session_alive(&mut self, n: usize, h: Option<SessionHandle>) -> bool {
        h.and_then(|h| self.nodes[n].ep.session(h))
            .is_some_and(|s| s.error().is_none())
    }

    /// Every stream the primary finished was read to its end.
    fn complete(&self) -> bool {
        self.bodies
            .iter()
            .all(|(id, b)| !b.finished || self.client.streams.get(id).is_some_and(|(_, fin)| *fin))
    }

    /// Heals the network (blackholes stay), lets every application work, finishes every
    /// stream and runs until each completed or a session ended.
    fn settle(&mut self) {
        for link in 0..MULTI_LINKS.len() {
            self.script(link, None);
        }
        for app in &mut self.servers {
            app.paused = false;
        }
        self.client.paused = false;
        self.pump();
        for id in self.order.clone() {
            if self.bodies.get(&id).is_some_and(|b| !b.finished) {
                self.finish(id);
            }
        }
        let limit = self.now() + MULTI_SETTLE;
        loop {
            self.pump();
            let alive = self.session_alive(M_CLIENT, self.client.session)
                && self.session_alive(M_PRIMARY, self.primary);
            if !alive || self.complete() || self.now() >= limit {
                break;
            }
            self.step_until(limit);
        }
        self.check_bounds();
        let alive = self.session_alive(M_CLIENT, self.client.session)
            && self.session_alive(M_PRIMARY, self.primary);
        if !alive {
            return;
        }
        // The primary path is up and every server serves: a range is delivered or its
        // path fails and the primary serves it, so every finished stream completes.
        self.report.completion_checked = true;
        for (id, b) in &self.bodies {
            let got = self.client.streams.get(id).copied();
            assert!(
                !b.finished || got.is_some_and(|(_, fin)| fin),
                "{id} of {} bytes did not complete within {MULTI_SETTLE:?}: the client has \
                 {got:?}; primary paths {:?}; client paths {:?}",
                b.end,
                self.primary
                    .and_then(|h| self.nodes[M_PRIMARY].ep.session(h))
                    .map(|s| path_states(&s.paths())),
                self.client
                    .session
                    .and_then(|h| self.nodes[M_CLIENT].ep.session(h))
                    .map(|s| path_states(&s.paths())),
            );
        }
    }
}

/// Drives a client, a primary and one or two secondaries sharing a group key over an
/// in-memory network, with the input as a program of operations.
///
/// Input: `[config bits, link delay bits, ops...]`. Config bit 0 adds a second secondary,
/// bits 1..=3 pick the load balancing, bit 4 small windows, bit 5 a stripe depth of 1, bit
/// 6 one stream per carrier; each link's delay is 1, 2, 5 or 12 ms by two bits of the
/// second byte (primary, its alias, secondary 1, secondary 2). Each op is a byte,
/// `op % 16` the call, followed by its argument bytes: add a secondary path, add a
/// same-peer path, remove a path, open a stream, write, stripe, delegate, finish, pause a
/// server's application, let one serve, impair a link, blackhole a link, close a secondary,
/// run for a while, jump the clock, and a client call (pause reading or remove a path).
///
/// The body byte at offset `o` of stream `id` is `pattern(id, o)` whoever sends it, so
/// every read is checked; nothing may read past what the primary handed out, protocol
/// errors between these honest engines fail the run, and at the end, the network healed
/// but for blackholes, every finished stream must complete if both sessions are alive.
pub fn engine_multi(data: &[u8]) {
    engine_multi_report(data);
}

/// [`engine_multi`], returning what the run reached.
pub fn engine_multi_report(data: &[u8]) -> MultiReport {
    let [config_bits, link_bits, ops @ ..] = data else {
        return MultiReport::default();
    };
    let mut w = Multi::new(*config_bits, *link_bits);
    let stop = w.now() + MULTI_OPS_TIME;
    let mut ops = ops.iter().copied();
    let mut count = 0;
    while let Some(op) = ops.next() {
        count += 1;
        if count > MULTI_MAX_OPS || w.now() >= stop {
            break;
        }
        let mut arg = || ops.next().unwrap_or(0);
        match op % 16 {
            0 => w.add_path(arg()),
            1 => w.add_same_peer_path(arg() & 1 != 0),
            2 => w.remove_path(false, arg()),
            3 => w.open(if arg() & 1 == 0 { Dir::Uni } else { Dir::Bi }),
            4 => {
                let (s, len) = (arg(), arg());
                if let Some(id) = w.pick_stream(s) {
                    w.write(id, (u64::from(len) + 1) * 256);
                }
            }
            5 => {
                let (s, hi, lo) = (arg(), arg(), arg());
                let len = w.body_len(hi, lo);
                if let Some(id) = w.pick_stream(s) {
                    w.stripe(id, len);
                }
            }
            6 => {
                let (s, path, hi, lo) = (arg(), arg(), arg(), arg());
                let len = w.body_len(hi, lo);
                if let Some(id) = w.pick_stream(s) {
                    w.delegate(id, path, len);
                }
            }
            7 => {
                if let Some(id) = w.pick_stream(arg()) {
                    w.finish(id);
                }
            }
            8 => {
                let i = usize::from(arg()) % (1 + w.secondaries);
                w.servers[i].paused = !w.servers[i].paused;
            }
            9 => {
                let (i, kib) = (arg(), arg());
                let n = 1 + usize::from(i) % (1 + w.secondaries);
                w.serve(n, (u64::from(kib) + 1) << 10);
            }
            10 => {
                let (link, pattern, left) = (arg(), arg(), arg());
                let script = Script::new(pattern, u16::from(left) + 1);
                w.script(usize::from(link) % MULTI_LINKS.len(), Some(script));
            }
            11 => {
                w.toggle_blackhole(1 + usize::from(arg()) % 3);
            }
            12 => {
                let a = arg();
                w.close_secondary(a >> 1, a & 1 != 0);
            }
            13 => w.run_for(Duration::from_millis((u64::from(arg()) + 1) * 2)),
            14 => {
                let ms = u64::from(arg());
                w.jump(Duration::from_millis(ms * ms));
            }
            _ => {
                let a = arg();
                if a & 1 == 0 {
                    w.client.paused = !w.client.paused;
                } else {
                    w.remove_path(true, a >> 1);
                }
            }
        }
        w.pump();
        w.check_bounds();
    }
    w.settle();
    w.report
}
