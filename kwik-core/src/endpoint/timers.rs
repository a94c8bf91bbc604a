//! The endpoint's timed sweeps over its sessions: health probes, degraded paths, path
//! retries and join deadlines, delivery rates, credential refresh and stalled stripes;
//! each finds the sessions due and hands the work to them.

use std::time::{Duration, Instant};

use kwik_proto::control_frame::Kind;

use super::Endpoint;
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::ids::SessionHandle;
use crate::session::{PathState, Phase, Role};

impl Endpoint {
    /// Sends due health probes and fails paths that went silent.
    pub(super) fn check_health(&mut self, now: Instant) {
        let mut failed = Vec::new();
        self.each_conn_mut(|key, p, dirty| {
            let rtt = p.conn.rtt();
            if p.health.deadline(rtt).is_none_or(|t| t > now) {
                return;
            }
            let verdict = p.health.on_timeout(now, rtt);
            if let Some(seq) = verdict.ping {
                p.send_control(Kind::Ping(kwik_proto::Ping { seq }));
                dirty.insert(key);
            }
            if verdict.failed {
                failed.push(key);
            }
        });
        for key in failed {
            let session = self.session_of(key);
            let Some(p) = self.conn_mut(key) else {
                continue;
            };
            let path = p.id;
            tracing::warn!(parent: &p.span, "path stopped answering health checks");
            p.close_with(
                now,
                &ProtocolError::new(ErrorCode::PathUnresponsive, "no answer to health checks"),
            );
            self.dirty.insert(key);
            if let Some(h) = session {
                self.with_session(now, h, |s, cx| {
                    s.path_down(
                        cx,
                        path,
                        PathError::Unresponsive,
                        SessionError::PathUnresponsive { path },
                    )
                });
            }
        }
    }

    /// Marks a client's path degraded or active again from its health.
    pub(super) fn update_degraded(&mut self, now: Instant) {
        let mut changes = Vec::new();
        for (session, p) in self.each_conn() {
            let Some(h) = session else { continue };
            let Some(s) = self.sessions.get(&h) else {
                continue;
            };
            if s.role != Role::Client || p.closing {
                continue;
            }
            let Some(silent) = p.health.silent_for(now) else {
                continue;
            };
            let rtt = p.conn.rtt();
            let limit = (p.health.window(rtt) / 2).max(s.config.path_health_check_interval + rtt);
            let want = if silent > limit {
                PathState::Degraded
            } else {
                PathState::Active
            };
            let current = s.paths.get(&p.id).map(|m| m.state);
            if current.is_some_and(|c| c.is_usable() && c != want) {
                changes.push((h, p.id, want));
            }
        }
        for (h, path, state) in changes {
            self.with_session(now, h, |s, cx| s.set_health_state(cx, path, state));
        }
    }

    /// Retries failed secondary paths, and removes those past their recovery deadline.
    pub(super) fn retry_paths(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (h, s) in &self.sessions {
            if s.role != Role::Client || s.phase != Phase::Established {
                continue;
            }
            for (path, m) in &s.paths {
                if m.state == PathState::Failed && m.next_retry.is_some_and(|t| t <= now) {
                    due.push((*h, *path));
                }
            }
        }
        for (h, path) in due {
            self.with_session(now, h, |s, cx| s.retry_path(cx, path));
        }
    }

    /// Fails connecting paths that did not join by their deadline; their retry follows.
    pub(super) fn expire_joins(&mut self, now: Instant) {
        let mut late = Vec::new();
        for (h, s) in &self.sessions {
            if s.role != Role::Client {
                continue;
            }
            for (path, m) in &s.paths {
                if m.join_deadline.is_some_and(|t| t <= now) {
                    late.push((*h, *path));
                }
            }
        }
        for (h, path) in late {
            self.with_session(now, h, |s, cx| s.join_expired(cx, path));
        }
    }

    /// When [`Endpoint::retry_paths`] or [`Endpoint::expire_joins`] must next run.
    pub(super) fn retry_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .flat_map(|s| s.paths.values())
            .flat_map(|m| [m.next_retry, m.join_deadline])
            .flatten()
            .min()
    }

    /// Measures the stream bytes each of a client's paths delivers per second.
    pub(super) fn sample_rates(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.role != Role::Client {
                continue;
            }
            for m in s.paths.values_mut() {
                let Some(p) = &m.conn else {
                    continue;
                };
                let bytes = p.counters.stream_bytes_received;
                match m.rate_mark {
                    Some((at, before)) if now >= at + Duration::from_millis(250) => {
                        let secs = (now - at).as_secs_f64();
                        m.delivery_rate = (bytes.saturating_sub(before) as f64 / secs) as u64;
                        m.rate_mark = Some((now, bytes));
                    }
                    Some(_) => {}
                    None => m.rate_mark = Some((now, bytes)),
                }
            }
        }
    }

    /// Primary: re-signs unfinished stripe tickets and live path secrets before they
    /// expire, so that a long stripe completes and a path can rejoin at any age.
    pub(super) fn refresh_credentials(&mut self, now: Instant) {
        let due: Vec<SessionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.role == Role::Primary && s.primary.next_refresh.is_some_and(|t| t <= now)
            })
            .map(|(h, _)| *h)
            .collect();
        let group = self.server.as_ref().and_then(|s| s.group_key.clone());
        for h in due {
            self.with_session(now, h, |s, cx| s.refresh_credentials(cx, group.as_ref()));
        }
    }

    /// When [`Endpoint::refresh_credentials`] must next run.
    pub(super) fn refresh_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.primary.next_refresh)
            .min()
    }

    /// When a stripe of some client session may find a stalled path.
    pub(super) fn stripe_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.stripe_deadline())
            .min()
    }

    /// Re-plans the stripes whose stall deadline passed.
    pub(super) fn check_stalls(&mut self, now: Instant) {
        let due: Vec<SessionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.stripe_deadline().is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            self.with_session(now, h, |s, cx| s.pull_stripes(cx));
        }
    }
}
