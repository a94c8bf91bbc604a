//! The timers of one session or loose connection, run when [`Deadlines`] finds them due:
//! QUIC's timers, health probes, degraded paths, path retries and join deadlines, delivery
//! rates, credential refresh, stalled stripes and metrics; and when they are next due.
//!
//! [`Deadlines`]: super::deadlines::Deadlines

use std::time::{Duration, Instant};

use kwik_proto::control_frame::Kind;

use super::Endpoint;
use super::deadlines::Owner;
use crate::error::{ErrorCode, PathError, ProtocolError, SessionError};
use crate::event::Event;
use crate::health::earliest;
use crate::ids::{ConnKey, SessionHandle};
use crate::path::Path;
use crate::session::{PathState, Phase, Role, SessionState};

impl Endpoint {
    /// Runs the timers of `owner` that are due at `now`.
    pub(super) fn run_timers(&mut self, now: Instant, owner: Owner) {
        match owner {
            Owner::Loose(key) => {
                if self.loose.contains_key(&key) {
                    self.quic_timers(now, &[key]);
                    self.check_health(now, &[key]);
                }
            }
            Owner::Session(h) => {
                if !self.sessions.contains_key(&h) {
                    return;
                }
                let keys = self.session_paths(h);
                self.quic_timers(now, &keys);
                self.check_health(now, &keys);
                self.update_degraded(now, h);
                self.retry_paths(now, h);
                self.expire_joins(now, h);
                self.sample_rates(now, h);
                self.refresh_credentials(now, h);
                self.check_stalls(now, h);
                self.drain_deadline(now, h);
                self.lost_deadline(now, h);
                self.emit_metrics(now, h);
            }
        }
        self.touch(owner);
    }

    /// When `owner`'s timers are next due; `None` if it has none or is gone.
    pub(super) fn deadline_of(&mut self, owner: Owner) -> Option<Instant> {
        match owner {
            Owner::Loose(key) => conn_deadline(&mut self.loose.get_mut(&key)?.path),
            Owner::Session(h) => session_deadline(self.sessions.get_mut(&h)?),
        }
    }

    /// Runs the QUIC timers of connections `keys` that are due.
    fn quic_timers(&mut self, now: Instant, keys: &[ConnKey]) {
        for &key in keys {
            if let Some(p) = self.conn_mut(key)
                && p.conn.poll_timeout().is_some_and(|t| t <= now)
            {
                p.conn.handle_timeout(now);
                self.dirty.insert(key);
            }
        }
    }

    /// Sends due health probes on connections `keys` and fails those that went silent.
    fn check_health(&mut self, now: Instant, keys: &[ConnKey]) {
        let mut failed = Vec::new();
        for &key in keys {
            let Some(p) = self.conn_mut(key) else {
                continue;
            };
            let rtt = p.conn.rtt();
            if p.health.deadline(rtt).is_none_or(|t| t > now) {
                continue;
            }
            let verdict = p.health.on_timeout(now, rtt);
            if let Some(seq) = verdict.ping {
                p.send_control(Kind::Ping(kwik_proto::Ping { seq }));
                self.dirty.insert(key);
            }
            if verdict.failed {
                failed.push(key);
            }
        }
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

    /// Marks the paths of client session `h` degraded or active again from their health.
    pub(super) fn update_degraded(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get(&h) else {
            return;
        };
        if s.role != Role::Client {
            return;
        }
        let changes: Vec<(crate::ids::PathId, PathState)> = s
            .conns()
            .filter(|p| !p.closing)
            .filter_map(|p| {
                let silent = p.health.silent_for(now)?;
                let want = if silent >= p.health.degraded_after(p.conn.rtt()) {
                    PathState::Degraded
                } else {
                    PathState::Active
                };
                let current = s.paths.get(&p.id)?.state;
                (current.is_usable() && current != want).then_some((p.id, want))
            })
            .collect();
        for (path, state) in changes {
            self.with_session(now, h, |s, cx| s.set_health_state(cx, path, state));
        }
    }

    /// Retries the failed secondary paths of client session `h`, and removes those past
    /// their recovery deadline.
    fn retry_paths(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get(&h) else {
            return;
        };
        if s.role != Role::Client || s.phase != Phase::Established {
            return;
        }
        let due: Vec<_> = s
            .paths
            .iter()
            .filter(|(_, m)| m.state == PathState::Failed && m.next_retry.is_some_and(|t| t <= now))
            .map(|(path, _)| *path)
            .collect();
        for path in due {
            self.with_session(now, h, |s, cx| s.retry_path(cx, path));
        }
    }

    /// Fails the connecting paths of client session `h` that did not join by their
    /// deadline; their retry follows.
    fn expire_joins(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get(&h) else {
            return;
        };
        if s.role != Role::Client {
            return;
        }
        let late: Vec<_> = s
            .paths
            .iter()
            .filter(|(_, m)| m.join_deadline.is_some_and(|t| t <= now))
            .map(|(path, _)| *path)
            .collect();
        for path in late {
            self.with_session(now, h, |s, cx| s.join_expired(cx, path));
        }
    }

    /// Measures the stream bytes each path of client session `h` delivers per second.
    fn sample_rates(&mut self, now: Instant, h: SessionHandle) {
        if let Some(s) = self.sessions.get_mut(&h)
            && s.role == Role::Client
        {
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

    /// Primary: re-signs the unfinished stripe tickets and live path secrets of session
    /// `h` before they expire, so that a long stripe completes and a path can rejoin at any
    /// age.
    fn refresh_credentials(&mut self, now: Instant, h: SessionHandle) {
        let due = self.sessions.get(&h).is_some_and(|s| {
            s.role == Role::Primary && s.primary.next_refresh.is_some_and(|t| t <= now)
        });
        if due {
            let keys = self.server.as_ref().and_then(|s| s.group_key.clone());
            let group = keys.as_ref().map(|k| k.current());
            self.with_session(now, h, |s, cx| s.refresh_credentials(cx, group, false));
        }
    }

    /// Re-plans the stripes of session `h` whose stall deadline passed.
    fn check_stalls(&mut self, now: Instant, h: SessionHandle) {
        let due = self
            .sessions
            .get(&h)
            .is_some_and(|s| s.stripe_deadline().is_some_and(|t| t <= now));
        if due {
            self.with_session(now, h, |s, cx| s.pull_stalled(cx));
        }
    }

    /// Ends client session `h`, whose primary is lost, once its first ticket expired.
    fn lost_deadline(&mut self, now: Instant, h: SessionHandle) {
        let due = self.sessions.get(&h).is_some_and(|s| {
            s.error.is_none() && s.client.lost.as_ref().is_some_and(|l| l.until <= now)
        });
        if due {
            self.with_session(now, h, |s, cx| s.check_lost(cx));
        }
    }

    /// Emits the metrics of session `h` if they are due.
    fn emit_metrics(&mut self, now: Instant, h: SessionHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.next_metrics.is_none_or(|t| t > now) {
            return;
        }
        s.next_metrics = Some(now + s.config.metrics_interval);
        if let Some(stats) = self.session_stats(h) {
            self.events.push_back(Event::Metrics {
                session: h,
                stats: Box::new(stats),
            });
        }
    }
}

/// When connection `p`'s QUIC timers or health next need a look.
fn conn_deadline(p: &mut Path) -> Option<Instant> {
    let rtt = p.conn.rtt();
    earliest(p.conn.poll_timeout(), p.health.deadline(rtt))
}

/// When session `s`'s timers are next due: its connections', a client's paths turning
/// degraded, retries and join deadlines, credential refresh, stripe stalls and metrics.
fn session_deadline(s: &mut SessionState) -> Option<Instant> {
    let client = s.role == Role::Client;
    let drain = s.draining.filter(|_| s.is_draining() && s.error.is_none());
    let lost = s.client.lost.as_ref().filter(|_| s.error.is_none());
    let mut next = [
        s.next_metrics,
        s.primary.next_refresh,
        s.stripe_deadline(),
        drain,
        lost.map(|l| l.until),
    ]
    .into_iter()
    .fold(None, earliest);
    let mut earlier = |t: Option<Instant>| next = earliest(next, t);
    for m in s.paths.values_mut() {
        earlier(m.next_retry);
        earlier(m.join_deadline);
        let Some(p) = &mut m.conn else {
            continue;
        };
        earlier(conn_deadline(p));
        if client && m.state == PathState::Active && !p.closing {
            earlier(p.health.degraded_at(p.conn.rtt()));
        }
    }
    next
}
