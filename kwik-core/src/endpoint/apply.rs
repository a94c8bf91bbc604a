//! Runs session work and applies what it asks of the endpoint ([`Effect`]): drive a
//! connection, hand out an event, dial a path, take in a connection the session let go of.

use std::time::Instant;

use quinn_proto::Side;

use super::{Endpoint, Loose, Route};
use crate::ids::{ConnKey, PathId, SessionHandle};
use crate::path::Path;
use crate::session::{Cx, Effect, PathState, SessionState, failed_status, state_event};

impl Endpoint {
    /// Runs `f` on session `h` with what it may use of the endpoint, then applies the
    /// effects it asked for, in order; `None` if the session is gone.
    pub(super) fn with_session<R>(
        &mut self,
        now: Instant,
        h: SessionHandle,
        f: impl FnOnce(&mut SessionState, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let unix = self.unix_secs(now);
        let s = self.sessions.get_mut(&h)?;
        let mut effects = std::mem::take(&mut self.effects);
        let mut cx = Cx {
            now,
            unix,
            handle: h,
            effects: &mut effects,
            stats: &mut self.stats,
            tickets: &self.ticket_key,
            budgets: &mut self.budgets,
        };
        let r = f(s, &mut cx);
        for effect in effects.drain(..) {
            self.apply(now, h, effect);
        }
        self.effects = effects;
        self.touch_session(h);
        Some(r)
    }

    /// Applies one effect session `h` asked for.
    fn apply(&mut self, now: Instant, h: SessionHandle, effect: Effect) {
        match effect {
            Effect::Drive(key) => {
                self.dirty.insert(key);
            }
            Effect::Event(event) => self.events.push_back(event),
            Effect::Dial { path, new } => {
                let dialed = self.dial_path(now, h, path);
                if !new {
                    // A retry that cannot dial waits for the next.
                    return;
                }
                let Some(s) = self.sessions.get_mut(&h) else {
                    return;
                };
                match dialed {
                    Ok(()) => {
                        let event = state_event(&s.span, h, path, PathState::Connecting, "");
                        self.events.push_back(event);
                    }
                    Err(reason) => {
                        tracing::debug!(%path, reason, "refused AddPath");
                        s.paths.remove(&path);
                        if let Some(p) = s.conn_mut(PathId::PRIMARY) {
                            p.send_control(failed_status(path, reason));
                            self.dirty.insert(p.key);
                        }
                    }
                }
            }
            Effect::LetGo(p) => {
                self.let_go(h, p);
            }
            Effect::Label { path, kind } => {
                if let Some(key) = self
                    .sessions
                    .get(&h)
                    .and_then(|s| s.conn(path))
                    .map(|p| p.key)
                {
                    self.qlog_label(key, h, path, kind);
                }
            }
        }
    }

    /// Connects (or reconnects) the client to the server of `path`.
    fn dial_path(
        &mut self,
        now: Instant,
        h: SessionHandle,
        path: PathId,
    ) -> Result<(), &'static str> {
        let s = self.sessions.get(&h).ok_or("no session")?;
        let meta = s.paths.get(&path).ok_or("unknown path")?;
        let dial = s.client.dial.clone().ok_or("no client config")?;
        let rate = s.config.max_control_messages_per_sec;
        let (address, name) = (meta.address, meta.server_name.clone());
        let kind = if meta.same_peer {
            "same-peer"
        } else {
            "secondary"
        };
        let span = super::path_span(Some(&s.span), Some(path), address, kind);
        let (dial, token) = self.dial_config(&dial, &s.config, address);
        let (ch, conn) = self
            .quic
            .connect(now, dial, address, &name)
            .map_err(|_| "cannot connect")?;
        let key = ConnKey::from(ch);
        self.qlog_bind(key, token);
        self.qlog_label(key, h, path, kind);
        self.attach(h, Path::new(key, conn, path, Side::Client, span, rate));
        if let Some(s) = self.sessions.get_mut(&h) {
            let deadline = now + s.config.idle_timeout;
            if let Some(m) = s.paths.get_mut(&path) {
                m.join_deadline = Some(deadline);
            }
        }
        self.dirty.insert(key);
        Ok(())
    }

    /// Makes `p` the connection of its path in session `h` (whose record must exist);
    /// returns the connection it replaces, now loose, if any.
    pub(super) fn attach(&mut self, h: SessionHandle, p: Box<Path>) -> Option<ConnKey> {
        let (key, path) = (p.key, p.id);
        let Some(record) = self
            .sessions
            .get_mut(&h)
            .and_then(|s| s.paths.get_mut(&path))
        else {
            // Callers create the record first; a connection is never dropped undrained.
            self.let_go(h, p);
            return None;
        };
        let old = record.conn.replace(p);
        self.routes.insert(key, Route::Path(h, path));
        Some(self.let_go(h, old?))
    }

    /// Connection `p`, which session `h` no longer holds, drains under the endpoint.
    /// Returns its key.
    pub(super) fn let_go(&mut self, h: SessionHandle, p: Box<Path>) -> ConnKey {
        let key = p.key;
        self.routes.insert(key, Route::Loose);
        self.loose.insert(
            key,
            Loose {
                session: Some(h),
                path: p,
            },
        );
        self.touch_conn(key);
        key
    }
}
