//! Incoming connections and their set-up: a server path's first control message, a Hello
//! (a new session) or a Join (a secondary's, or a same-peer address's, path).

use std::time::Instant;

use bytes::Bytes;
use kwik_proto::JoinResult;
use kwik_proto::control_frame::Kind;
use quinn_proto::{Side, VarInt};
use rand::Rng;

use super::{Endpoint, Event, PathSlot, label_path_span, path_span};
use crate::error::{ErrorCode, ProtocolError};
use crate::ids::{PathId, SessionHandle};
use crate::join;
use crate::path::Path;
use crate::session::{
    PathMeta, PathState, Phase, Role, SessionState, limits_from_wire, limits_to_wire, local_limits,
};
use crate::streams::Streams;

/// A refused Join.
pub(super) fn refusal(reason: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::JoinRefused, reason)
}

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
        let pending = self.paths.values().filter(|s| s.session.is_none()).count();
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
                self.qlog_bind(ch.0, token);
                self.paths.insert(
                    ch.0,
                    PathSlot {
                        path: Path::new(conn, PathId::PRIMARY, control_rate),
                        session: None,
                        remote,
                        side: Side::Server,
                        span: path_span(None, None, remote, ""),
                    },
                );
                self.dirty.insert(ch.0);
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
        key: usize,
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
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        let h = SessionHandle(self.next_session);
        self.next_session += 1;
        let id: u64 = self.rng.random();
        let mut session = SessionState::new(Side::Server, id, config.clone(), slot.remote);
        session
            .streams
            .set_peer_limits(limits_from_wire(hello.limits));
        session.phase = Phase::Established;
        session.app_protocol = app_protocol.clone();
        if config.metrics_enabled {
            session.next_metrics = Some(now + config.metrics_interval);
        }
        session.paths.insert(PathId::PRIMARY, key);
        session.metas.insert(
            PathId::PRIMARY,
            PathMeta::new(slot.remote, String::new(), PathState::Active),
        );
        slot.session = Some(h);
        session.label_span(h);
        label_path_span(&slot.span, h, PathId::PRIMARY, "primary");
        tracing::info!(parent: &session.span, "session accepted");
        // Servers probe too: a dead client is noticed within the health window rather
        // than QUIC's idle timeout.
        slot.path.health.start(
            now,
            config.path_health_check_interval,
            config.path_failure_threshold,
        );
        slot.path.send_control(Kind::Welcome(kwik_proto::Welcome {
            version: kwik_proto::VERSION,
            session_id: id,
            limits: Some(limits_to_wire(local_limits(&config), &config)),
            app_protocol: app_protocol.map(Vec::from).unwrap_or_default(),
        }));
        self.sessions.insert(h, session);
        self.events.push_back(Event::Incoming(h));
        self.qlog_label(key, h, PathId::PRIMARY, "primary");
        Ok(())
    }

    /// The first control message of a server path was a Join.
    pub(super) fn on_join(
        &mut self,
        now: Instant,
        key: usize,
        join: kwik_proto::Join,
    ) -> Result<(), ProtocolError> {
        let Some(server) = &self.server else {
            return Err(refusal("not a server"));
        };
        let group = server
            .group_key
            .clone()
            .ok_or_else(|| refusal("this server admits no joins"))?;
        let config = server.config.clone();
        let (interval, threshold) = (
            config.path_health_check_interval,
            config.path_failure_threshold,
        );
        if join.path_id == 0 {
            return Err(refusal("path 0 is the primary path"));
        }
        if join.expiry <= self.unix_secs(now) {
            return Err(refusal("join proof expired"));
        }
        let slot = self
            .paths
            .get_mut(&key)
            .ok_or_else(|| ProtocolError::new(ErrorCode::Internal, "no path"))?;
        let exporter = slot
            .path
            .exporter()
            .ok_or_else(|| refusal("no keying material"))?;
        let secret = join::path_secret(&group, join.session_id, join.path_id, join.expiry);
        if !join::verify(&secret, &exporter, &join.proof) {
            return Err(refusal("join proof does not verify"));
        }
        let path = PathId(join.path_id);
        let own = self.sessions.iter().find_map(|(h, s)| {
            let m = s.metas.get(&path)?;
            (s.role == Role::Primary
                && s.id == join.session_id
                && m.same_peer
                && m.state != PathState::Removed)
                .then_some(*h)
        });
        if let Some(h) = own {
            // This server at another address: the path joins the session itself.
            let Some(s) = self.sessions.get_mut(&h) else {
                return Ok(());
            };
            if let Some(old) = s.paths.insert(path, key)
                && let Some(slot) = self.paths.get_mut(&old)
                && !slot.path.closing
            {
                slot.path
                    .close_app(now, VarInt::from_u32(0), Bytes::from_static(b"replaced"));
                self.dirty.insert(old);
            }
            if let Some(slot) = self.paths.get_mut(&key) {
                slot.path.id = path;
                slot.session = Some(h);
                slot.path.health.start(now, interval, threshold);
                slot.path.send_control(join_accepted());
            }
            return Ok(());
        }
        let Some(slot) = self.paths.get_mut(&key) else {
            return Ok(());
        };
        let h = SessionHandle(self.next_session);
        self.next_session += 1;
        let mut session = SessionState::new(Side::Server, join.session_id, config, slot.remote);
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
        session.writer_path = path;
        session.paths.insert(path, key);
        session.metas.insert(
            path,
            PathMeta::new(slot.remote, String::new(), PathState::Active),
        );
        slot.path.id = path;
        slot.session = Some(h);
        session.label_span(h);
        super::label_path_span(&slot.span, h, path, "secondary");
        tracing::info!(parent: &session.span, %path, "joined as a secondary");
        slot.path.health.start(now, interval, threshold);
        slot.path.send_control(join_accepted());
        self.sessions.insert(h, session);
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
