//! How the paths to one peer share the session's stream data (same-peer multipath):
//! which path takes the next frames, and where copies go.

use crate::config::LoadBalancing;
use crate::ids::PathId;
use crate::path::{Allowance, Path};
use crate::scheduler;

use super::{Role, SessionState};

/// What [`SessionState::schedule`] allows one path.
#[derive(Debug)]
pub(crate) struct Schedule {
    pub(crate) allowance: Allowance,
    /// Paths that get a copy of every frame this one takes.
    pub(crate) copy_to: Vec<PathId>,
    /// The session has several usable paths to the peer.
    pub(crate) multipath: bool,
}

impl Schedule {
    /// All of the session's stream data: the path is its only one to the peer.
    pub(crate) fn everything() -> Self {
        Self {
            allowance: Allowance::Frames(usize::MAX),
            copy_to: Vec::new(),
            multipath: false,
        }
    }
}

impl SessionState {
    /// How much of the session's stream data path `me` may take now, and where copies of
    /// what it takes go (redundant scheduling). With one path to the peer, all of it.
    ///
    /// Several paths to the peer rank by `Config::load_balancing`; a path takes data only
    /// when every path ranked before it is backlogged (QUIC refused more: its send window,
    /// kept near its congestion window, is full). Backup paths take part only when no
    /// other path is usable.
    pub(crate) fn schedule(&self, me: PathId) -> Schedule {
        let all = Schedule::everything();
        let s = self;
        // One path (the common case) needs no ranking: it takes everything.
        if s.conns().nth(1).is_none() || !s.is_peer_path(me) || s.role == Role::Secondary {
            return all;
        }
        let mut peers: Vec<(PathId, &Path, bool)> = s
            .paths
            .iter()
            .filter(|(id, m)| s.is_peer_path(**id) && m.state.is_usable())
            .filter_map(|(id, m)| Some((*id, m.conn.as_deref()?, m.backup)))
            .filter(|(_, p, _)| !p.closing)
            .collect();
        if peers.len() <= 1 {
            return all;
        }
        if peers.iter().any(|p| !p.2) {
            peers.retain(|p| !p.2);
        }
        let multipath = Schedule {
            allowance: Allowance::None,
            copy_to: Vec::new(),
            multipath: true,
        };
        if !peers.iter().any(|p| p.0 == me) {
            return multipath;
        }
        let strategy = s.config.load_balancing;
        if strategy == LoadBalancing::Redundant {
            // The first path takes every frame; the others carry copies.
            return match peers.iter().map(|p| p.0).min() {
                Some(first) if first == me => Schedule {
                    allowance: Allowance::Frames(usize::MAX),
                    copy_to: peers.iter().filter(|p| p.0 != me).map(|p| p.0).collect(),
                    multipath: true,
                },
                _ => multipath,
            };
        }
        let facts: Vec<scheduler::PathFacts> = peers
            .iter()
            .map(|(id, p, _)| scheduler::PathFacts {
                id: *id,
                rtt: p.conn.rtt(),
                cwnd: p.conn.congestion_state().window(),
                frames_sent: p.counters.frames_sent,
                bytes_sent: p.counters.stream_bytes_sent,
                backlogged: p.is_backlogged(),
            })
            .collect();
        let (go, limit) = scheduler::allowance(strategy, &facts, me);
        Schedule {
            allowance: if go {
                Allowance::Frames(limit)
            } else {
                Allowance::None
            },
            copy_to: Vec::new(),
            multipath: true,
        }
    }
}
