//! Incoming connections and their set-up: a server path's first control message, a Hello
//! (a new session) or a Join (a secondary's, or a same-peer address's, path).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kwik_proto::JoinResult;
use kwik_proto::control_frame::Kind;
use quinn_proto::Side;
use rand::Rng;

use super::{Endpoint, Event, Loose, Route, label_path_span, path_span};
use crate::config::Config;
use crate::error::{ErrorCode, ProtocolError};
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::join;
use crate::path::Path;
use crate::session::{
    PathRecord, PathState, Phase, Role, SessionState, limits_from_wire, limits_to_wire,
    local_limits, refusal,
};
use crate::streams::Streams;

impl Endpoint {
    pub(super) fn on_incoming(
        &mut self,
        now: Instant,
        incoming: quinn_proto::Incoming,
        buf: &mut Vec<u8>,
    ) {
        let Some(server) = &self.server else {
            self.quic.ignore(incoming);
            return;
        };
        let remote = incoming.remote_address();
        // Sessions, not connections: a session with several paths counts once; a
        // connection that has no session yet (handshake, Hello or Join pending) counts as
        // one, so half-open connections cannot get around the limit.
        let pending = self.loose.values().filter(|l| l.session.is_none()).count();
        if self.sessions.len() + pending >= server.max_sessions {
            buf.clear();
            let t = self.quic.refuse(incoming, buf);
            self.queue_response(t, buf);
            return;
        }
        let control_rate = server.config.max_control_messages_per_sec;
        buf.clear();
        let (accept, token) = self.accept_config(remote);
        match self.quic.accept(incoming, now, buf, accept) {
            Ok((ch, conn)) => {
                let key = ConnKey::from(ch);
                self.qlog_bind(key, token);
                let span = path_span(None, None, remote, "");
                let path = Path::new(key, conn, PathId::PRIMARY, Side::Server, span, control_rate);
                self.routes.insert(key, Route::Loose);
                self.loose.insert(
                    key,
                    Loose {
                        session: None,
                        path,
                    },
                );
                self.dirty.insert(key);
            }
            Err(e) => {
                tracing::debug!(cause = %e.cause, "refused incoming connection");
                if let Some(t) = e.response {
                    self.queue_response(t, buf);
                }
            }
        }
    }

    /// The first control message of a server path: a Hello makes it a new session.
    pub(super) fn on_setup(
        &mut self,
        now: Instant,
        key: ConnKey,
        kind: Kind,
    ) -> Result<(), ProtocolError> {
        let Some(server) = &self.server else {
            // The server stopped accepting while this connection's handshake was under way.
            let code = match kind {
                Kind::Join(_) => ErrorCode::JoinRefused,
                _ => ErrorCode::Handshake,
            };
            return Err(ProtocolError::new(
                code,
                "this server accepts no new sessions",
            ));
        };
        if self.drain.is_some() {
            return Err(ProtocolError::new(
                ErrorCode::Draining,
                "this server is draining",
            ));
        }
        let config = server.config.clone();
        let joins_only = server.joins_only;
        let hello = match kind {
            Kind::Hello(_) if joins_only => {
                return Err(ProtocolError::new(
                    ErrorCode::JoinsOnly,
                    "this server serves only as a secondary",
                ));
            }
            Kind::Hello(hello) => hello,
            Kind::Join(join) => return self.on_join(now, key, join),
            kind => {
                return Err(ProtocolError::new(
                    ErrorCode::UnexpectedControlMessage,
                    format!("expected Hello, got {}", crate::session::kind_name(&kind)),
                ));
            }
        };
        if hello.version != kwik_proto::VERSION {
            return Err(ProtocolError::new(
                ErrorCode::VersionMismatch,
                format!("client speaks version {}", hello.version),
            ));
        }
        let app_protocol =
            crate::config::choose_app_protocol(&config.app_protocols, &hello.app_protocols)?;
        let Some(Loose { path: mut p, .. }) = self.loose.remove(&key) else {
            return Ok(());
        };
        let (h, mut session) = self.new_server_session(now, &config, p.remote);
        session
            .streams
            .set_peer_limits(limits_from_wire(hello.limits));
        session.phase = Phase::Established;
        session.app_protocol = app_protocol.clone();
        // Servers probe too: a dead client is noticed within the health window rather
        // than QUIC's idle timeout.
        p.start_health(now, &config);
        p.send_control(Kind::Welcome(kwik_proto::Welcome {
            version: kwik_proto::VERSION,
            session_id: session.id,
            limits: Some(limits_to_wire(local_limits(&config), &config)),
            app_protocol: app_protocol.map(Vec::from).unwrap_or_default(),
        }));
        self.admit(h, session, p, "primary");
        Ok(())
    }

    /// A server connection's handshake completed with an application protocol instead of
    /// `kwik/1`: it becomes a plain session (see [`crate::Mode::Plain`]), without health
    /// probes (QUIC's idle timeout is its liveness). Returns the session's handle.
    /// `None` when this server takes no plain session any more (it stopped accepting, or
    /// became joins-only, while the handshake was under way).
    pub(super) fn accept_plain(&mut self, now: Instant, key: ConnKey) -> Option<SessionHandle> {
        let server = self
            .server
            .as_ref()
            .filter(|s| !s.joins_only && self.drain.is_none())?;
        let config = server.config.clone();
        let Loose { path: p, .. } = self.loose.remove(&key)?;
        let (h, mut session) = self.new_server_session(now, &config, p.remote);
        session.start_plain(p.alpn.clone().unwrap_or_default());
        self.admit(h, session, p, "plain");
        Some(h)
    }

    /// A new session of this server with a client at `remote`: its handle and state.
    fn new_server_session(
        &mut self,
        now: Instant,
        config: &Arc<Config>,
        remote: SocketAddr,
    ) -> (SessionHandle, SessionState) {
        let h = self.new_session_handle();
        let id: u64 = self.rng.random();
        let mut session = SessionState::new(Side::Server, id, config.clone(), remote);
        if config.metrics_enabled {
            session.next_metrics = Some(now + config.metrics_interval);
        }
        (h, session)
    }

    /// Session `h` takes connection `p` as its primary path (`kind` names the path in its
    /// span and qlog trace), and the application hears of the session.
    fn admit(
        &mut self,
        h: SessionHandle,
        mut session: SessionState,
        p: Box<Path>,
        kind: &'static str,
    ) {
        session.label_span(h);
        label_path_span(&p.span, h, PathId::PRIMARY, kind);
        tracing::info!(parent: &session.span, "session accepted");
        session.paths.insert(
            PathId::PRIMARY,
            PathRecord::new(p.remote, String::new(), PathState::Active),
        );
        let key = p.key;
        self.primaries.insert(session.id, h);
        self.sessions.insert(h, session);
        self.attach(h, p);
        self.events.push_back(Event::Incoming(h));
        self.qlog_label(key, h, PathId::PRIMARY, kind);
    }

    /// The first control message of a server path was a Join.
    pub(super) fn on_join(
        &mut self,
        now: Instant,
        key: ConnKey,
        join: kwik_proto::Join,
    ) -> Result<(), ProtocolError> {
        let Some(server) = &self.server else {
            return Err(refusal("not a server"));
        };
        let keys = server
            .group_key
            .as_ref()
            .ok_or_else(|| refusal("this server admits no joins"))?;
        let group = keys.get(join.key_id).cloned().ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::UnknownKey,
                format!("no group key {}", join.key_id),
            )
        })?;
        let config = server.config.clone();
        if join.path_id == 0 {
            return Err(refusal("path 0 is the primary path"));
        }
        if join.expiry <= self.unix_secs(now) {
            return Err(refusal("join proof expired"));
        }
        let p = self
            .conn(key)
            .ok_or_else(|| ProtocolError::new(ErrorCode::Internal, "no path"))?;
        let exporter = p.exporter().ok_or_else(|| refusal("no keying material"))?;
        let secret = join::path_secret(&group, join.session_id, join.path_id, join.expiry);
        if !join::verify(&secret, &exporter, &join.proof) {
            return Err(refusal("join proof does not verify"));
        }
        let path = PathId(join.path_id);
        let own = self.primaries.get(&join.session_id).copied().filter(|h| {
            self.sessions.get(h).is_some_and(|s| {
                s.role == Role::Primary
                    && s.paths
                        .get(&path)
                        .is_some_and(|m| m.same_peer && m.state != PathState::Removed)
            })
        });
        if let Some(h) = own {
            // This server at another address: the path joins the session itself, and
            // the connection it had before (a rejoin's) closes.
            let Some(Loose { path: mut p, .. }) = self.loose.remove(&key) else {
                return Ok(());
            };
            p.id = path;
            p.start_health(now, &config);
            p.send_control(join_accepted());
            if let Some(old) = self.attach(h, p) {
                self.close_conn(now, old, Bytes::from_static(b"replaced"));
            }
            return Ok(());
        }
        let Some(Loose { path: mut p, .. }) = self.loose.remove(&key) else {
            return Ok(());
        };
        let h = self.new_session_handle();
        let mut session = SessionState::new(Side::Server, join.session_id, config, p.remote);
        // A secondary serves delegated ranges only: the client opens no streams on it.
        session.streams = Streams::new(
            Side::Server,
            crate::streams::Limits {
                max_data: 0,
                max_stream_data: 0,
                max_bidi: 0,
                max_uni: 0,
            },
            1,
        );
        session.role = Role::Secondary;
        session.phase = Phase::Established;
        session.serving.writer_path = path;
        p.id = path;
        session.label_span(h);
        super::label_path_span(&p.span, h, path, "secondary");
        tracing::info!(parent: &session.span, %path, "joined as a secondary");
        p.start_health(now, &session.config);
        p.send_control(join_accepted());
        session.paths.insert(
            path,
            PathRecord::new(p.remote, String::new(), PathState::Active),
        );
        self.sessions.insert(h, session);
        self.attach(h, p);
        self.events.push_back(Event::Incoming(h));
        self.qlog_label(key, h, path, "secondary");
        Ok(())
    }
}

/// A secondary's (or a same-peer address's) answer to a valid Join.
fn join_accepted() -> Kind {
    Kind::JoinResult(JoinResult {
        accepted: true,
        code: 0,
        reason: String::new(),
    })
}
