//! The control table: what each control message received on an established session's path
//! asks of the session, decided by the receiver's role, the session's phase and the path
//! the message came on ([`handle`]), and what the session does about it
//! ([`SessionState::on_control`]). Every message kind is matched here and nowhere else (a
//! server path's first message, `Hello` or `Join`, is set-up, not session control: see the
//! endpoint's `accept`). What only the endpoint can do, the session asks for as effects.
//!
//! Who may send what (anything else is `UnexpectedControlMessage`):
//! - either side, on any path: `Ping` (answered with `Pong`), `Pong`, `Close` (ends the
//!   session; a secondary's `Close` fails only its path);
//! - primary -> client: `Welcome` (first, on the primary path), `AddPath`, `RefreshPath`,
//!   `RemovePath`, `Delegate` (a signed ticket, or a fresher copy of one);
//! - client -> primary: `PathStatus`, `DelegationUpdate`;
//! - client -> any server (the primary on path 0 included): `Pull` (a range under a
//!   ticket), `PullCancel` (another copy delivered it: stop writing it);
//! - any server -> client: `PullRefused` (with a typed code), `Drain` (it is being taken
//!   out of service);
//! - secondary -> client: `JoinResult`.

use bytes::Bytes;
use kwik_proto::control_frame::Kind;
use quinn_proto::VarInt;

use super::effects::{Cx, Effect};
use super::{PathState, Phase, Role, SessionState};
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::event::Event;
use crate::ids::PathId;

/// What a control message asks for. [`SessionState::on_control`] acts on each variant.
#[derive(Debug, PartialEq)]
pub(crate) enum Control {
    /// Answer on the path the message came on.
    Reply(Kind),
    /// The peer answered the health probe with this sequence number.
    Pong(u64),
    /// Client: the primary accepted the session.
    Welcome(kwik_proto::Welcome),
    /// The peer ended the session.
    PeerClosed {
        /// The application's code.
        code: VarInt,
        /// The application's reason.
        reason: Bytes,
    },
    /// Client: a secondary closed its path; the session lives on over the others.
    SecondaryClosed {
        /// The secondary's code.
        code: VarInt,
        /// The secondary's reason.
        reason: Bytes,
    },
    /// Client: the primary adds a path.
    AddPath(kwik_proto::AddPath),
    /// Client: the primary removes a path.
    RemovePath(PathId),
    /// Client: the primary renews a path's join credentials.
    RefreshPath(kwik_proto::RefreshPath),
    /// Client: the primary delegates a range (or refreshes a ticket).
    Delegate(kwik_proto::Delegate),
    /// Client: a server refused a pull.
    PullRefused(kwik_proto::PullRefused),
    /// Client: a secondary answered the path's `Join`.
    JoinResult(kwik_proto::JoinResult),
    /// Primary: the client reports a path's state.
    PathStatus(kwik_proto::PathStatus),
    /// Primary: the client reports how a delegation went.
    DelegationUpdate(kwik_proto::DelegationUpdate),
    /// Server: the client pulls a range under a ticket.
    Pull(kwik_proto::Pull),
    /// Server: the client no longer needs pull `id`.
    PullCancel(u64),
    /// Client: the server on this path is draining.
    Drain,
}

/// Decides what `kind`, received by a session of `role` in `phase` on `path`, asks for.
pub(crate) fn handle(
    role: Role,
    phase: Phase,
    path: PathId,
    kind: Kind,
) -> Result<Control, ProtocolError> {
    let primary = path == PathId::PRIMARY;
    let client = role == Role::Client;
    let server = !client;
    Ok(match kind {
        Kind::Ping(ping) => Control::Reply(Kind::Pong(kwik_proto::Pong { seq: ping.seq })),
        Kind::Pong(pong) => Control::Pong(pong.seq),
        Kind::Close(close) => {
            let code = VarInt::from_u64(close.code).unwrap_or(VarInt::MAX);
            let reason = Bytes::from(close.reason);
            if client && !primary {
                Control::SecondaryClosed { code, reason }
            } else {
                Control::PeerClosed { code, reason }
            }
        }
        Kind::Welcome(welcome) if client && phase == Phase::Handshaking => {
            Control::Welcome(welcome)
        }
        Kind::AddPath(add) if client && primary => Control::AddPath(add),
        Kind::RemovePath(remove) if client && primary => {
            Control::RemovePath(PathId(remove.path_id))
        }
        Kind::RefreshPath(refresh) if client && primary => Control::RefreshPath(refresh),
        Kind::Delegate(delegate) if client && primary => Control::Delegate(delegate),
        Kind::PullRefused(refused) if client => Control::PullRefused(refused),
        Kind::JoinResult(result) if client && !primary => Control::JoinResult(result),
        Kind::PathStatus(status) if role == Role::Primary => Control::PathStatus(status),
        Kind::DelegationUpdate(update) if role == Role::Primary => {
            Control::DelegationUpdate(update)
        }
        Kind::Pull(pull) if server => Control::Pull(pull),
        Kind::PullCancel(cancel) if server => Control::PullCancel(cancel.id),
        Kind::Drain(_) if client => Control::Drain,
        kind @ (Kind::Hello(_)
        | Kind::Join(_)
        | Kind::Welcome(_)
        | Kind::AddPath(_)
        | Kind::RemovePath(_)
        | Kind::RefreshPath(_)
        | Kind::Delegate(_)
        | Kind::PullRefused(_)
        | Kind::JoinResult(_)
        | Kind::PathStatus(_)
        | Kind::DelegationUpdate(_)
        | Kind::Pull(_)
        | Kind::PullCancel(_)
        | Kind::Drain(_)) => return Err(unexpected(&kind)),
    })
}

/// What becomes of the path a control message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// It goes on: its data moves once its messages are handled.
    Goes,
    /// The message ended it (a secondary's `Close`, or the client's report that a
    /// same-peer path failed, sent on that path): its connection closes, and no data
    /// moves on it any more.
    Ended,
}

impl SessionState {
    /// A control message arrived on `path`: whatever the control table answers.
    pub(crate) fn on_control(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        kind: Kind,
    ) -> Result<Flow, ProtocolError> {
        match handle(self.role, self.phase, path, kind)? {
            Control::Reply(reply) => {
                if let Some(p) = self.conn_mut(path) {
                    p.send_control(reply);
                }
            }
            Control::Pong(seq) => {
                let now = cx.now;
                if let Some(p) = self.conn_mut(path) {
                    p.health.on_pong(now, seq);
                }
            }
            Control::Welcome(welcome) => self.on_welcome(cx, path, welcome)?,
            Control::PeerClosed { code, reason } => {
                self.close(cx, SessionError::ApplicationClosed { code, reason });
                let now = cx.now;
                for p in self.conns_mut() {
                    if !p.closing {
                        p.close_app(now, code, Bytes::new());
                    }
                }
            }
            Control::SecondaryClosed { code, reason } => {
                let error = SessionError::ApplicationClosed { code, reason };
                self.secondary_failed(cx, path, PathError::Connection(error));
                return Ok(Flow::Ended);
            }
            Control::AddPath(add) => self.on_add_path(cx, add),
            Control::RemovePath(removed) => {
                self.remove_path(cx, removed);
            }
            Control::RefreshPath(refresh) => self.on_refresh_path(refresh),
            Control::Delegate(delegate) => self.on_delegate(cx, delegate)?,
            Control::PullRefused(refused) => self.on_pull_refused(cx, path, refused),
            Control::JoinResult(result) => self.on_join_result(cx, path, result)?,
            Control::PathStatus(status) => {
                let about = PathId(status.path_id);
                if self.on_path_status(cx, status)? && about == path {
                    return Ok(Flow::Ended);
                }
            }
            Control::DelegationUpdate(update) => self.on_delegation_update(cx, update),
            Control::Pull(pull) => self.on_pull(cx, path, pull),
            Control::PullCancel(id) => self.on_pull_cancel(cx, id),
            Control::Drain => self.on_drain_notice(cx, path),
        }
        Ok(Flow::Goes)
    }

    /// Client: the primary's Welcome establishes the session.
    fn on_welcome(
        &mut self,
        cx: &mut Cx<'_>,
        path: PathId,
        welcome: kwik_proto::Welcome,
    ) -> Result<(), ProtocolError> {
        self.accept_welcome(welcome)?;
        self.set_state(PathId::PRIMARY, PathState::Active);
        let now = cx.now;
        let config = self.config.clone();
        let Some(p) = self.conn_mut(path) else {
            return Ok(());
        };
        p.start_health(now, &config);
        if self.config.metrics_enabled {
            self.next_metrics = Some(now + self.config.metrics_interval);
        }
        self.record_id();
        tracing::info!(parent: &self.span, "session established");
        cx.event(Event::Connected(cx.handle));
        cx.effects.push(Effect::Label {
            path: PathId::PRIMARY,
            kind: "primary",
        });
        Ok(())
    }
}

/// The error for a message this side does not accept here.
pub(crate) fn unexpected(kind: &Kind) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::UnexpectedControlMessage,
        format!("unexpected control message {}", kind_name(kind)),
    )
}

/// The message kind's name, for errors and logs.
pub(crate) fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Hello(_) => "Hello",
        Kind::Welcome(_) => "Welcome",
        Kind::Join(_) => "Join",
        Kind::JoinResult(_) => "JoinResult",
        Kind::AddPath(_) => "AddPath",
        Kind::PathStatus(_) => "PathStatus",
        Kind::RemovePath(_) => "RemovePath",
        Kind::Ping(_) => "Ping",
        Kind::Pong(_) => "Pong",
        Kind::Delegate(_) => "Delegate",
        Kind::DelegationUpdate(_) => "DelegationUpdate",
        Kind::Close(_) => "Close",
        Kind::Pull(_) => "Pull",
        Kind::PullCancel(_) => "PullCancel",
        Kind::PullRefused(_) => "PullRefused",
        Kind::RefreshPath(_) => "RefreshPath",
        Kind::Drain(_) => "Drain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error code of a refused message, `None` if it was accepted.
    fn refused(r: Result<Control, ProtocolError>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    const UNEXPECTED: Option<ErrorCode> = Some(ErrorCode::UnexpectedControlMessage);

    fn ping() -> Kind {
        Kind::Ping(kwik_proto::Ping { seq: 7 })
    }

    #[test]
    fn every_role_answers_a_ping_on_any_path() {
        for role in [Role::Client, Role::Primary, Role::Secondary] {
            for path in [PathId::PRIMARY, PathId(3)] {
                assert_eq!(
                    handle(role, Phase::Established, path, ping()),
                    Ok(Control::Reply(Kind::Pong(kwik_proto::Pong { seq: 7 })))
                );
            }
        }
    }

    #[test]
    fn a_secondary_close_fails_only_its_path() {
        let close = || Kind::Close(kwik_proto::Close::default());
        assert!(matches!(
            handle(Role::Client, Phase::Established, PathId(2), close()),
            Ok(Control::SecondaryClosed { .. })
        ));
        assert!(matches!(
            handle(Role::Client, Phase::Established, PathId::PRIMARY, close()),
            Ok(Control::PeerClosed { .. })
        ));
        assert!(matches!(
            handle(Role::Secondary, Phase::Established, PathId(2), close()),
            Ok(Control::PeerClosed { .. })
        ));
    }

    #[test]
    fn primary_messages_only_on_the_primary_path() {
        let add = || Kind::AddPath(kwik_proto::AddPath::default());
        assert!(matches!(
            handle(Role::Client, Phase::Established, PathId::PRIMARY, add()),
            Ok(Control::AddPath(_))
        ));
        assert_eq!(
            refused(handle(Role::Client, Phase::Established, PathId(1), add())),
            UNEXPECTED
        );
        assert_eq!(
            refused(handle(
                Role::Secondary,
                Phase::Established,
                PathId(1),
                add()
            )),
            UNEXPECTED
        );
    }

    #[test]
    fn welcome_only_while_the_client_waits_for_it() {
        let welcome = || Kind::Welcome(kwik_proto::Welcome::default());
        assert!(matches!(
            handle(Role::Client, Phase::Handshaking, PathId::PRIMARY, welcome()),
            Ok(Control::Welcome(_))
        ));
        for (role, phase) in [
            (Role::Client, Phase::Established),
            (Role::Primary, Phase::Established),
            (Role::Secondary, Phase::Established),
        ] {
            assert_eq!(
                refused(handle(role, phase, PathId::PRIMARY, welcome())),
                UNEXPECTED
            );
        }
    }

    #[test]
    fn set_up_messages_are_unexpected_in_a_session() {
        for kind in [
            Kind::Hello(kwik_proto::Hello::default()),
            Kind::Join(kwik_proto::Join::default()),
        ] {
            for role in [Role::Client, Role::Primary, Role::Secondary] {
                let err = handle(role, Phase::Established, PathId::PRIMARY, kind.clone());
                assert_eq!(refused(err), UNEXPECTED);
            }
        }
    }

    #[test]
    fn only_a_client_hears_of_a_drain() {
        let drain = || {
            Kind::Drain(kwik_proto::Drain {
                deadline_ms: 30_000,
            })
        };
        for path in [PathId::PRIMARY, PathId(2)] {
            assert_eq!(
                handle(Role::Client, Phase::Established, path, drain()),
                Ok(Control::Drain)
            );
            for role in [Role::Primary, Role::Secondary] {
                assert_eq!(
                    refused(handle(role, Phase::Established, path, drain())),
                    UNEXPECTED
                );
            }
        }
    }

    #[test]
    fn client_reports_reach_only_the_primary() {
        let status = || Kind::PathStatus(kwik_proto::PathStatus::default());
        assert!(matches!(
            handle(Role::Primary, Phase::Established, PathId::PRIMARY, status()),
            Ok(Control::PathStatus(_))
        ));
        for role in [Role::Client, Role::Secondary] {
            assert!(handle(role, Phase::Established, PathId::PRIMARY, status()).is_err());
        }
        let pull = || Kind::Pull(kwik_proto::Pull::default());
        assert!(handle(Role::Secondary, Phase::Established, PathId(1), pull()).is_ok());
        assert!(handle(Role::Client, Phase::Established, PathId(1), pull()).is_err());
    }
}
