//! Applies what the control table ([`crate::session::control`]) decides a control message
//! asks for.

use std::time::Instant;

use bytes::Bytes;
use kwik_proto::control_frame::Kind;

use super::{Endpoint, Event};
use crate::error::{PathError, ProtocolError, SessionError};
use crate::ids::{ConnKey, PathId};
use crate::session::{self, Control, PathState};

impl Endpoint {
    /// A control message arrived on path `key`: set-up while the path has no session,
    /// else whatever the control table answers.
    pub(super) fn on_control(
        &mut self,
        now: Instant,
        key: ConnKey,
        kind: Kind,
    ) -> Result<(), ProtocolError> {
        let Some(path) = self.conn(key).map(|p| p.id) else {
            return Ok(());
        };
        let Some(h) = self.session_of(key) else {
            return self.on_setup(now, key, kind);
        };
        let Some(s) = self.sessions.get(&h) else {
            return Ok(());
        };
        match session::control(s.role, s.phase, path, kind)? {
            Control::Reply(reply) => {
                if let Some(p) = self.conn_mut(key) {
                    p.send_control(reply);
                }
            }
            Control::Pong(seq) => {
                if let Some(p) = self.conn_mut(key) {
                    p.health.on_pong(now, seq);
                }
            }
            Control::Welcome(welcome) => {
                let Some(s) = self.sessions.get_mut(&h) else {
                    return Ok(());
                };
                s.on_welcome(welcome)?;
                s.set_state(PathId::PRIMARY, PathState::Active);
                let (interval, threshold) = (
                    s.config.path_health_check_interval,
                    s.config.path_failure_threshold,
                );
                let Some(p) = s.conn_mut(path) else {
                    return Ok(());
                };
                p.health.start(now, interval, threshold);
                if s.config.metrics_enabled {
                    s.next_metrics = Some(now + s.config.metrics_interval);
                }
                s.record_id();
                tracing::info!(parent: &s.span, "session established");
                self.events.push_back(Event::Connected(h));
                self.qlog_label(key, h, PathId::PRIMARY, "primary");
            }
            Control::PeerClosed { code, reason } => {
                self.close_session(h, SessionError::ApplicationClosed { code, reason });
                for k in self.session_paths(h) {
                    if let Some(p) = self.conn_mut(k)
                        && !p.closing
                    {
                        p.close_app(now, code, Bytes::new());
                    }
                }
            }
            Control::SecondaryClosed { code, reason } => {
                let error = SessionError::ApplicationClosed { code, reason };
                self.secondary_failed(now, h, path, PathError::Connection(error));
            }
            Control::AddPath(add) => self.on_add_path(now, h, add),
            Control::RemovePath(removed) => {
                self.remove_path(now, h, removed);
            }
            Control::RefreshPath(refresh) => self.on_refresh_path(h, refresh),
            Control::Delegate(delegate) => self.on_delegate_client(now, h, delegate)?,
            Control::PullRefused(refused) => self.on_pull_refused(now, h, path, refused),
            Control::JoinResult(result) => self.on_join_result(now, h, path, result)?,
            Control::PathStatus(status) => self.on_path_status(now, h, status)?,
            Control::DelegationUpdate(update) => self.on_delegation_update(now, h, update),
            Control::Pull(pull) => self.on_pull(now, h, path, pull)?,
            Control::PullCancel(id) => self.on_pull_cancel(h, id),
        }
        Ok(())
    }
}
