//! qlog files (feature `qlog`), all in one directory:
//!
//! - `session-<id>-<role>-path<N>-<kind>-<seq>.sqlog`: each path's QUIC connection, written
//!   by quinn-proto. A connection is first named `conn-<seq>-<side>.sqlog`, and renamed once
//!   the engine knows the session and path it carries; one that never carries a session
//!   (a refused join, a scan) keeps that name.
//! - `session-<id>-<role>-kwik.sqlog`: KWIK's own events of the session (paths, transfers,
//!   pulls, the end), which quinn-proto's stream cannot carry.
//!
//! Every file is qlog 0.3 JSON-SEQ with times in milliseconds since the endpoint's qlog
//! started, so the files of one session line up when opened together in qvis.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustc_hash::FxHashMap;
use serde_json::{Value, json};

use kwik_core::{DelegationOutcome, Event, PathId, Role, SessionHandle};
use quinn_proto::Side;

/// Connections logged in this process, so that endpoints sharing a directory never pick
/// the same name.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The record separator that starts every JSON-SEQ record (RFC 7464).
const RS: u8 = 0x1e;

/// One endpoint's qlog directory: the factory the engine asks for each connection's stream,
/// and the writer of KWIK's events.
#[derive(Debug)]
pub(crate) struct QlogDir {
    dir: PathBuf,
    /// The epoch of every file's times.
    start: Instant,
    /// Connections not labelled yet: their file and side.
    pending: Mutex<FxHashMap<u64, (PathBuf, Side)>>,
}

impl QlogDir {
    pub(crate) fn new(dir: &Path) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            start: Instant::now(),
            pending: Mutex::new(FxHashMap::default()),
        }))
    }

    fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64() * 1e3
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
    }
}

impl kwik_core::QlogFactory for QlogDir {
    fn stream(&self, side: Side, remote: SocketAddr) -> Option<(u64, quinn_proto::QlogStream)> {
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("conn-{seq}-{}.sqlog", side_name(side)));
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot create a qlog file");
                return None;
            }
        };
        let mut config = quinn_proto::QlogConfig::default();
        config
            .writer(Box::new(BufWriter::new(file)))
            .title(Some(format!("KWIK {} connection {seq}", side_name(side))))
            .description(Some(format!("remote {remote}")))
            .start_time(self.start);
        let stream = config.into_stream()?;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, (path, side));
        Some((seq, stream))
    }

    fn labelled(&self, token: u64, session: u64, role: Role, path: PathId, kind: &str) {
        let Some((from, _)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token)
        else {
            return;
        };
        let name = format!(
            "session-{session:016x}-{}-path{}-{kind}-{token}.sqlog",
            role.name(),
            path.0
        );
        let to = self.dir.join(name);
        if let Err(e) = std::fs::rename(&from, &to) {
            tracing::warn!(from = %from.display(), error = %e, "cannot rename a qlog file");
        }
    }

    fn unlabelled(&self, token: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
    }
}

/// KWIK's events of every session of one endpoint, one JSON-SEQ file per session.
#[derive(Debug)]
pub(crate) struct EventLog {
    dir: Arc<QlogDir>,
    files: FxHashMap<SessionHandle, File>,
}

impl EventLog {
    pub(crate) fn new(dir: Arc<QlogDir>) -> Self {
        Self {
            dir,
            files: FxHashMap::default(),
        }
    }

    /// Writes `event` to its session's file (opened at the session's first event).
    pub(crate) fn on_event(&mut self, engine: &mut kwik_core::Endpoint, event: &Event) {
        let Some((h, name, data)) = describe(engine, event) else {
            return;
        };
        // A session starts on its primary path, which no path event announces.
        let primary = match event {
            Event::Connected(h) | Event::Incoming(h) => {
                let role = engine.session(*h).map(|s| s.role());
                (role != Some(Role::Secondary))
                    .then(|| path_updated(engine, *h, PathId::PRIMARY, "active", None).2)
            }
            _ => None,
        };
        let time = self.dir.ms(Instant::now());
        let Some(file) = self.file(engine, h) else {
            return;
        };
        let records = std::iter::once((name, data))
            .chain(primary.map(|d| ("kwik:path_updated", d)))
            .map(|(name, data)| json!({ "time": time, "name": name, "data": data }));
        for record in records {
            if let Err(e) = write_record(file, &record) {
                tracing::warn!(error = %e, "cannot write a qlog event");
            }
        }
        if matches!(event, Event::Closed { .. }) {
            self.files.remove(&h);
        }
    }

    fn file(&mut self, engine: &mut kwik_core::Endpoint, h: SessionHandle) -> Option<&mut File> {
        if !self.files.contains_key(&h) {
            let s = engine.session(h)?;
            let (id, role) = (s.id(), s.role());
            let path = self
                .dir
                .dir
                .join(format!("session-{id:016x}-{}-kwik.sqlog", role.name()));
            let mut file = File::create(&path)
                .inspect_err(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "cannot create a qlog file");
                })
                .ok()?;
            let vantage = match role {
                Role::Client => "client",
                _ => "server",
            };
            let header = json!({
                "qlog_version": "0.3",
                "qlog_format": "JSON-SEQ",
                "title": format!("KWIK session {id:016x}"),
                "description": format!("the {} of the session: paths, transfers and pulls", role.name()),
                "trace": {
                    "title": format!("KWIK session {id:016x} ({})", role.name()),
                    "vantage_point": { "name": format!("kwik {}", role.name()), "type": vantage },
                    "common_fields": {
                        "group_id": format!("{id:016x}"),
                        "time_format": "relative",
                        "reference_time": 0.0,
                        "protocol_type": ["KWIK"],
                    },
                },
            });
            write_record(&mut file, &header).ok()?;
            self.files.insert(h, file);
        }
        self.files.get_mut(&h)
    }
}

fn write_record(file: &mut File, record: &Value) -> io::Result<()> {
    let mut bytes = vec![RS];
    serde_json::to_writer(&mut bytes, record)?;
    bytes.push(b'\n');
    file.write_all(&bytes)
}

/// A path's new state, as a KWIK event.
fn path_updated(
    engine: &mut kwik_core::Endpoint,
    h: SessionHandle,
    path: PathId,
    state: &str,
    reason: Option<String>,
) -> (SessionHandle, &'static str, Value) {
    let info = engine
        .session(h)
        .and_then(|s| s.paths().into_iter().find(|p| p.id == path));
    let kind = match &info {
        Some(p) if p.is_primary => "primary",
        Some(p) if p.same_peer => "same-peer",
        _ => "secondary",
    };
    let remote = info.map(|p| p.address.to_string());
    (
        h,
        "kwik:path_updated",
        json!({ "path_id": path.0, "state": state, "remote": remote, "kind": kind, "reason": reason }),
    )
}

/// The session, qlog name and data of an event worth logging.
fn describe(
    engine: &mut kwik_core::Endpoint,
    event: &Event,
) -> Option<(SessionHandle, &'static str, Value)> {
    Some(match event {
        Event::Connected(h) | Event::Incoming(h) => {
            let s = engine.session(*h)?;
            let remote = s.remote_address().map(|a| a.to_string());
            (
                *h,
                "kwik:session_started",
                json!({ "role": s.role().name(), "remote": remote }),
            )
        }
        Event::Closed { session, error } => (
            *session,
            "kwik:session_closed",
            json!({ "error": error.to_string() }),
        ),
        Event::PathAdded { session, path } => path_updated(engine, *session, *path, "added", None),
        Event::PathActive { session, path } => {
            path_updated(engine, *session, *path, "active", None)
        }
        Event::PathDegraded { session, path } => {
            path_updated(engine, *session, *path, "degraded", None)
        }
        Event::PathFailed {
            session,
            path,
            error,
        } => path_updated(engine, *session, *path, "failed", Some(error.to_string())),
        Event::PathRemoved { session, path } => {
            path_updated(engine, *session, *path, "removed", None)
        }
        Event::DelegationFinished {
            session,
            delegation,
            outcome,
        } => {
            let (outcome, first_missing) = match outcome {
                DelegationOutcome::Done => ("done", None),
                DelegationOutcome::Failed { first_missing } => ("failed", Some(*first_missing)),
            };
            (
                *session,
                "kwik:delegation_finished",
                json!({ "delegation": delegation.0, "outcome": outcome, "first_missing": first_missing }),
            )
        }
        Event::StripeFinished { session, stripe } => (
            *session,
            "kwik:stripe_finished",
            json!({ "stripe": stripe.0 }),
        ),
        Event::PullRefused {
            session,
            path,
            error,
        } => (
            *session,
            "kwik:pull_refused",
            json!({ "path_id": path.0, "error": error.to_string() }),
        ),
        _ => return None,
    })
}
