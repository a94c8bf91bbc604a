//! Session and path figures: what `stats()` and the periodic metrics report, also for a
//! path whose connection is closing or gone.

use super::{Endpoint, PathSlot};
use crate::ids::{PathId, SessionHandle};
use crate::session::Role;
use crate::stats::{PathStats, SessionStats};

impl Endpoint {
    pub(super) fn session_stats(&self, h: SessionHandle) -> Option<SessionStats> {
        let s = self.sessions.get(&h)?;
        // Live paths, then those whose connection the session let go of: closing, or gone
        // with their last figures kept.
        let earlier = |id: &PathId| s.metas.get(id).and_then(|m| m.last.as_deref());
        let mut paths: Vec<PathStats> = s
            .paths
            .iter()
            .filter_map(|(id, key)| {
                let slot = self.paths.get(key)?;
                Some(slot_stats(slot).with_earlier(earlier(id)))
            })
            .collect();
        paths.extend(
            s.metas
                .iter()
                .filter(|(id, _)| !s.paths.contains_key(id))
                .filter_map(|(id, m)| match self.path_slot(h, *id) {
                    Some(slot) => Some(slot_stats(slot).with_earlier(m.last.as_deref())),
                    None => m.last.as_deref().cloned(),
                }),
        );
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
            paths,
        })
    }

    /// The connection of `path` in session `h`, also while it closes after the session
    /// let go of it (a failed or removed path drains for a few round trips).
    pub(super) fn path_slot(&self, h: SessionHandle, path: PathId) -> Option<&PathSlot> {
        let s = self.sessions.get(&h)?;
        if let Some(key) = s.paths.get(&path) {
            return self.paths.get(key);
        }
        // A primary has no connection of its own to a secondary (only to itself, by a
        // same-peer path): no scan of every connection for those, so that a server with
        // many sessions answers `stats` without one.
        let own = s.role != Role::Primary || s.metas.get(&path).is_some_and(|m| m.same_peer);
        if !own {
            return None;
        }
        self.paths
            .values()
            .find(|slot| slot.session == Some(h) && slot.path.id == path)
    }
}

/// This side's figures for one path's connection.
pub(super) fn slot_stats(slot: &PathSlot) -> PathStats {
    let q = slot.path.conn.stats();
    PathStats {
        id: slot.path.id,
        remote: slot.remote,
        rtt: slot.path.conn.rtt(),
        cwnd: q.path.cwnd,
        bytes_sent: q.udp_tx.bytes,
        bytes_received: q.udp_rx.bytes,
        datagrams_sent: q.udp_tx.datagrams,
        datagrams_received: q.udp_rx.datagrams,
        lost_packets: q.path.lost_packets,
        frames_sent: slot.path.counters.frames_sent,
        frames_received: slot.path.counters.frames_received,
        carriers: slot.path.carrier_count(),
        carrier_streams: slot.path.assigned_streams(),
        raw_sent: slot.path.counters.raw_sent,
        raw_displaced: slot.path.counters.raw_displaced,
        raw_received: slot.path.counters.raw_received,
        stream_bytes_received: slot.path.counters.stream_bytes_received,
        stream_bytes_sent: slot.path.counters.stream_bytes_sent,
        control_sent: slot.path.counters.control_sent,
        control_received: slot.path.counters.control_received,
    }
}
