//! Session and path figures: what `stats()` and the periodic metrics report, also for a
//! path whose connection is closing or gone.

use super::Endpoint;
use crate::ids::{PathId, SessionHandle};
use crate::path::Path;
use crate::session::{PathInfo, Role};
use crate::stats::{PathStats, SessionStats};

impl Endpoint {
    pub(super) fn session_stats(&self, h: SessionHandle) -> Option<SessionStats> {
        let s = self.sessions.get(&h)?;
        // Each path's connection, else the one the session let go of while it closes, else
        // the last figures kept when its connection went.
        let mut paths: Vec<PathStats> = s
            .paths
            .iter()
            .filter_map(|(id, m)| match self.path_conn(h, *id) {
                Some(p) => Some(path_stats(p).with_earlier(m.last.as_deref())),
                None => m.last.as_deref().cloned(),
            })
            .collect();
        paths.sort_by_key(|p| p.id);
        let c = s.streams.counters;
        Some(SessionStats {
            session_id: s.id,
            streams_opened_local: c.opened_local,
            streams_opened_remote: c.opened_remote,
            streams_open: s.streams.open_count() as u64,
            stream_bytes_written: c.bytes_written,
            stream_bytes_read: c.bytes_read,
            raw_dropped: s.raw_dropped,
            bytes_unread: s.streams.unread_bytes(),
            bytes_unacked: s.streams.unsent_bytes() + s.streams.retained_bytes(),
            stripe_copy_bytes: s.client.copy_bytes,
            end_game_copy_bytes: s.client.end_game_pulled,
            end_game_copy_bytes_lost: s.client.end_game_lost,
            paths,
        })
    }

    /// Every path of session `h` this side knows of, the primary path first.
    pub(super) fn paths_of(&self, h: SessionHandle) -> Vec<PathInfo> {
        let Some(s) = self.sessions.get(&h) else {
            return Vec::new();
        };
        s.paths
            .iter()
            .map(|(id, m)| {
                let conn = self
                    .path_conn(h, *id)
                    .map(|p| (p.conn.rtt(), p.conn.stats()));
                // What the path's earlier connections carried (a failed path that
                // reconnects keeps it).
                let (sent_before, received_before) = m
                    .last
                    .as_deref()
                    .map_or((0, 0), |l| (l.bytes_sent, l.bytes_received));
                let (rtt, sent, received) = match (conn, m.last.as_deref()) {
                    // A connection still being set up has only QUIC's initial guess.
                    (Some((rtt, q)), _) if m.state.is_usable() => (
                        Some(rtt),
                        q.udp_tx.bytes + sent_before,
                        q.udp_rx.bytes + received_before,
                    ),
                    (Some((_, q)), _) => (
                        m.reported_rtt,
                        q.udp_tx.bytes + sent_before,
                        q.udp_rx.bytes + received_before,
                    ),
                    (None, Some(last)) => (m.reported_rtt, last.bytes_sent, last.bytes_received),
                    (None, None) => (m.reported_rtt, m.delivered, 0),
                };
                PathInfo {
                    id: *id,
                    address: m.address,
                    is_primary: *id == PathId::PRIMARY,
                    same_peer: m.same_peer,
                    state: m.state,
                    rtt,
                    bytes_sent: sent,
                    bytes_received: received,
                    delivery_rate: m.delivery_rate,
                }
            })
            .collect()
    }

    /// The connection of `path` in session `h`, also while it closes after the session
    /// let go of it (a failed or removed path drains for a few round trips).
    pub(super) fn path_conn(&self, h: SessionHandle, path: PathId) -> Option<&Path> {
        let s = self.sessions.get(&h)?;
        let record = s.paths.get(&path)?;
        if let Some(p) = &record.conn {
            return Some(p);
        }
        // A primary has no connection of its own to a secondary (only to itself, by a
        // same-peer path): no scan of the loose connections for those, so that a server
        // with many sessions answers `stats` without one.
        let own = s.role != Role::Primary || record.same_peer;
        if !own {
            return None;
        }
        self.loose
            .values()
            .find(|l| l.session == Some(h) && l.path.id == path)
            .map(|l| &*l.path)
    }
}

/// This side's figures for one path's connection.
pub(super) fn path_stats(p: &Path) -> PathStats {
    let q = p.conn.stats();
    PathStats {
        id: p.id,
        remote: p.remote,
        rtt: p.conn.rtt(),
        cwnd: q.path.cwnd,
        bytes_sent: q.udp_tx.bytes,
        bytes_received: q.udp_rx.bytes,
        datagrams_sent: q.udp_tx.datagrams,
        datagrams_received: q.udp_rx.datagrams,
        lost_packets: q.path.lost_packets,
        frames_sent: p.counters.frames_sent,
        frames_received: p.counters.frames_received,
        carriers: p.carrier_count(),
        carrier_streams: p.assigned_streams(),
        raw_sent: p.counters.raw_sent,
        raw_displaced: p.counters.raw_displaced,
        raw_received: p.counters.raw_received,
        stream_bytes_received: p.counters.stream_bytes_received,
        stream_bytes_sent: p.counters.stream_bytes_sent,
        control_sent: p.counters.control_sent,
        control_received: p.counters.control_received,
        control_unknown: p.counters.control_unknown,
    }
}
