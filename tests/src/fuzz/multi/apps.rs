//! The applications of `engine_multi`: the client reads every stream, the servers serve
//! what they are delegated, and both check the events their engines raise.

use kwik_core::{
    DelegationOutcome, Dir, Event, PathId, ReadError, Role, SessionHandle, WriteError,
};

use super::super::pattern_bytes;
use super::{M_CLIENT, M_PRIMARY, Multi, Serving};

impl Multi {
    pub(super) fn client_events(&mut self) -> bool {
        let mut any = false;
        let mut n = 0;
        while let Some(event) = self.nodes[M_CLIENT].ep.poll_event() {
            any = true;
            n += 1;
            assert!(n < 1_000_000, "client: poll_event does not end");
            match event {
                Event::Connected(h) => {
                    assert!(self.client.session.is_none(), "client: connected twice");
                    self.client.session = Some(h);
                }
                Event::Incoming(_) => panic!("client: an incoming session"),
                Event::Closed { session, error } => {
                    assert_eq!(
                        Some(session),
                        self.client.session,
                        "client: closed a stranger"
                    );
                    assert!(self.client.closed.is_none(), "client: closed twice");
                    self.check_session_error("client", &error);
                    self.client.closed = Some(error);
                }
                Event::PathFailed { path, error, .. } => {
                    assert_ne!(
                        path,
                        PathId::PRIMARY,
                        "client: the primary path failed alone"
                    );
                    self.check_path_error("client", path, &error);
                    self.report.path_failures += 1;
                }
                _ => {}
            }
        }
        any
    }

    pub(super) fn server_events(&mut self, n: usize) -> bool {
        let mut any = false;
        let mut count = 0;
        while let Some(event) = self.nodes[n].ep.poll_event() {
            any = true;
            count += 1;
            let name = self.nodes[n].name;
            assert!(count < 1_000_000, "{name}: poll_event does not end");
            match event {
                Event::Incoming(h) => {
                    // Events are queued: the session may be gone already (its connection
                    // drained in the same drive).
                    let Some(role) = self.nodes[n].ep.session(h).map(|s| s.role()) else {
                        continue;
                    };
                    let app = &mut self.servers[n - 1];
                    assert!(
                        !app.sessions.contains_key(&h),
                        "{name}: {h:?} came in twice"
                    );
                    app.sessions.insert(h, role);
                    match role {
                        Role::Primary => {
                            assert_eq!(n, M_PRIMARY, "{name}: a client dialed a secondary");
                            assert!(self.primary.is_none(), "{name}: a second primary session");
                            self.primary = Some(h);
                        }
                        Role::Secondary => {}
                        Role::Client => panic!("{name}: a client session came in"),
                    }
                }
                Event::Connected(_) => panic!("{name}: a server connected out"),
                Event::Closed { error, .. } => self.check_session_error(name, &error),
                Event::DelegationReceived { session } => self.accept_delegations(n, session),
                Event::PathActive { path, .. } if n == M_PRIMARY => {
                    if self.same_peer.contains(&path) {
                        self.report.same_peer_joined += 1;
                    } else {
                        self.report.secondaries_joined += 1;
                    }
                }
                Event::PathFailed { path, error, .. } => self.check_path_error(name, path, &error),
                Event::StripeFinished { .. } => self.report.stripes_finished += 1,
                Event::DelegationFinished { outcome, .. } if outcome != DelegationOutcome::Done => {
                    self.report.delegations_failed += 1;
                }
                _ => {}
            }
        }
        any
    }

    fn accept_delegations(&mut self, n: usize, session: SessionHandle) {
        let name = self.nodes[n].name;
        let Some(mut s) = self.nodes[n].ep.session(session) else {
            return;
        };
        while let Some(d) = s.accept_delegation() {
            assert!(d.len > 0, "{name}: an empty delegation");
            let body = self.bodies.get(&d.stream).unwrap_or_else(|| {
                panic!("{name}: delegated {} the primary never opened", d.stream)
            });
            assert!(
                d.offset.checked_add(d.len).is_some_and(|e| e <= body.end),
                "{name}: delegated {}..+{} of {}, the primary handed out {}",
                d.offset,
                d.len,
                d.stream,
                body.end
            );
            self.servers[n - 1].serving.push(Serving {
                session,
                id: d.id,
                stream: d.stream,
                next: d.offset,
                end: d.offset + d.len,
            });
        }
    }

    /// Writes up to `budget` bytes of node `n`'s delegated ranges; returns whether it
    /// wrote any.
    pub(super) fn serve(&mut self, n: usize, mut budget: u64) -> bool {
        let name = self.nodes[n].name;
        let ep = &mut self.nodes[n].ep;
        let app = &mut self.servers[n - 1];
        let mut wrote = 0;
        app.serving.retain_mut(|r| {
            let Some(mut s) = ep.session(r.session) else {
                return false;
            };
            let mut d = s.delegated(r.id);
            while r.next < r.end && budget > 0 {
                let want = (r.end - r.next).min(32 << 10).min(budget) as usize;
                match d.write(&pattern_bytes(r.stream, r.next, want)) {
                    Ok(k) => {
                        assert!(
                            k > 0 && k <= want,
                            "{name}: delegated write took {k} of {want}"
                        );
                        r.next += k as u64;
                        budget -= k as u64;
                        wrote += k as u64;
                        assert_eq!(
                            d.remaining(),
                            r.end - r.next,
                            "{name}: remaining bytes of {:?}",
                            r.id
                        );
                    }
                    Err(WriteError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            r.next < r.end
        });
        if n != M_PRIMARY {
            self.report.secondary_bytes += wrote;
        }
        wrote > 0
    }

    /// The client accepts the primary's streams and, unless paused, reads them.
    pub(super) fn client_read(&mut self) -> bool {
        let Some(h) = self.client.session else {
            return false;
        };
        let Some(mut s) = self.nodes[M_CLIENT].ep.session(h) else {
            return false;
        };
        let mut any = false;
        for dir in [Dir::Uni, Dir::Bi] {
            while let Some(id) = s.accept(dir) {
                any = true;
                assert_eq!(
                    id.initiator(),
                    quinn_proto::Side::Server,
                    "client: accepted {id}"
                );
                assert!(
                    self.bodies.contains_key(&id),
                    "client: accepted {id} the primary never opened"
                );
                assert!(
                    self.client.streams.insert(id, (0, false)).is_none(),
                    "client: accepted {id} twice"
                );
            }
        }
        if self.client.paused {
            return any;
        }
        for (id, (read, fin)) in self.client.streams.iter_mut() {
            let body = self.bodies.get(id).copied().unwrap_or_default();
            let mut reads = 0;
            while !*fin {
                reads += 1;
                assert!(reads < 100_000, "client: reads of {id} never end");
                match s.recv_stream(*id).read(64 << 10) {
                    Ok(Some(bytes)) => {
                        any = true;
                        assert!(!bytes.is_empty(), "client: empty read on {id}");
                        assert!(
                            bytes[..] == pattern_bytes(*id, *read, bytes.len())[..],
                            "client: wrong bytes on {id} at offset {}",
                            *read
                        );
                        *read += bytes.len() as u64;
                        assert!(
                            *read <= body.end,
                            "client: read {} bytes of {id}, the primary handed out {}",
                            *read,
                            body.end
                        );
                    }
                    Ok(None) => {
                        any = true;
                        *fin = true;
                        assert!(body.finished, "client: the end of {id} nobody finished");
                        assert_eq!(*read, body.end, "client: {id} ended early or late");
                        self.report.completed += 1;
                    }
                    Err(ReadError::Reset(code)) => {
                        panic!("client: {id} reset with {code} though nobody reset it")
                    }
                    Err(_) => break,
                }
            }
        }
        any
    }
}
