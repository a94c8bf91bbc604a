//! Counters of endpoints, sessions and paths.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::ids::PathId;

/// Endpoint-wide counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Sessions held now, plain ones included.
    pub sessions: u64,
    /// Of those, plain sessions (peers that do not speak KWIK, see [`crate::Mode::Plain`]).
    pub plain_sessions: u64,
    /// Client: sessions that fell back to plain QUIC because the server chose an
    /// application protocol instead of `kwik/1`.
    pub fallbacks: u64,
    /// QUIC connections held now (all paths, plus server connections not yet in a session).
    pub connections: u64,
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// Paths closed because the peer broke the protocol.
    pub protocol_violations: u64,
    /// Pulls this server refused (bad, foreign, expired or spent tickets, or limits).
    pub pulls_refused: u64,
    /// Client: stripe chunks pulled from a server (copies included).
    pub stripe_chunks: u64,
    /// Client: stripe chunks pulled a second time from another server, because the first
    /// one stalled or in the end game.
    pub stripe_copies: u64,
    /// Client: ranges a failed or refusing path owed, handed to another path (a stripe's
    /// chunk) or back to the primary (a plain delegation's rest).
    pub failovers: u64,
    /// Client: stream bytes received twice (see [`CopyBytes`]).
    pub stripe_copy_bytes: CopyBytes,
    /// Client: drain notices received (a server on one of the session's paths began
    /// draining).
    pub drain_notices: u64,
    /// Client: secondary paths closed with the `Drained` code once their draining server
    /// owed nothing more.
    pub paths_drained: u64,
    /// Server: sessions a drain ended once their work was done.
    pub sessions_drained: u64,
    /// Server: sessions a drain ended at its deadline, with work left.
    pub drain_deadline_closes: u64,
    /// Protocol violations by code, in [`ErrorCode::ALL`] order.
    violations_by_code: [u64; ErrorCode::ALL.len()],
}

impl EndpointStats {
    /// Paths closed because the peer broke the protocol with `code`.
    pub fn protocol_violations_of(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.violations_by_code[i])
    }

    pub(crate) fn count_violation(&mut self, code: ErrorCode) {
        self.protocol_violations += 1;
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.violations_by_code[i] += 1;
        }
    }
}

impl SessionStats {
    /// Stream bytes received on every path, copies included.
    pub fn stream_bytes_received(&self) -> u64 {
        self.paths.iter().map(|p| p.stream_bytes_received).sum()
    }
}

/// Stream bytes a client received at offsets it had already received, by why the range was
/// pulled twice. Each byte counts once, with the later of its arrivals, under the reason
/// of the copy its pull belongs to: the copy itself, or the original a copy was made of.
/// Their sum is what the paths' stream bytes received exceed the distinct bytes by.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyBytes {
    /// End game: an idle path copied the chunk expected to finish last.
    pub end_game: u64,
    /// The path holding the reader's chunk stopped delivering while others delivered.
    pub stall: u64,
    /// The chunk at the start of a full window held the reader.
    pub window: u64,
    /// A failed or refusing path's range re-pulled from another path.
    pub failover: u64,
    /// Anything else (a server that sent a range twice, bytes no pull covers).
    pub other: u64,
}

impl CopyBytes {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.end_game + self.stall + self.window + self.failover + self.other
    }

    /// Adds `bytes` under `reason` (`None`: other).
    pub(crate) fn add(&mut self, reason: Option<crate::stripe::CopyReason>, bytes: u64) {
        use crate::stripe::CopyReason;
        let slot = match reason {
            Some(CopyReason::EndGame) => &mut self.end_game,
            Some(CopyReason::Stall) => &mut self.stall,
            Some(CopyReason::Window) => &mut self.window,
            Some(CopyReason::Failover) => &mut self.failover,
            None => &mut self.other,
        };
        *slot += bytes;
    }
}

/// Counters of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathStats {
    /// The path.
    pub id: PathId,
    /// Its remote address.
    pub remote: SocketAddr,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// UDP bytes sent on the path.
    pub bytes_sent: u64,
    /// UDP bytes received on the path.
    pub bytes_received: u64,
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Data-plane frames sent.
    pub frames_sent: u64,
    /// Data-plane frames received.
    pub frames_received: u64,
    /// Carriers this side opened.
    pub carriers: usize,
    /// Logical streams holding a carrier slot on this path.
    pub carrier_streams: usize,
    /// Raw datagrams sent on this path.
    pub raw_sent: u64,
    /// Raw datagrams sent with `send_raw` while the path's send buffer was full: each
    /// pushed the oldest queued datagrams out, unsent.
    pub raw_displaced: u64,
    /// Raw datagrams received on this path.
    pub raw_received: u64,
    /// Logical stream payload bytes received on this path (duplicates included).
    pub stream_bytes_received: u64,
    /// Logical stream payload bytes sent on this path, delegated ranges included.
    pub stream_bytes_sent: u64,
    /// Control messages sent on this path.
    pub control_sent: u64,
    /// Control messages received on this path.
    pub control_received: u64,
    /// Control messages of kinds this version does not know (from a later version),
    /// received on this path and ignored.
    pub control_unknown: u64,
}

impl PathStats {
    /// Adds the counts of the path's earlier connections (a failed path that reconnects
    /// keeps what it carried before); the gauges (rtt, cwnd, carriers) stay this one's.
    pub(crate) fn with_earlier(mut self, earlier: Option<&Self>) -> Self {
        if let Some(e) = earlier {
            self.bytes_sent += e.bytes_sent;
            self.bytes_received += e.bytes_received;
            self.datagrams_sent += e.datagrams_sent;
            self.datagrams_received += e.datagrams_received;
            self.lost_packets += e.lost_packets;
            self.frames_sent += e.frames_sent;
            self.frames_received += e.frames_received;
            self.raw_sent += e.raw_sent;
            self.raw_displaced += e.raw_displaced;
            self.raw_received += e.raw_received;
            self.stream_bytes_received += e.stream_bytes_received;
            self.stream_bytes_sent += e.stream_bytes_sent;
            self.control_sent += e.control_sent;
            self.control_received += e.control_received;
            self.control_unknown += e.control_unknown;
        }
        self
    }
}

/// Counters of one session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// The session id.
    pub session_id: u64,
    /// Logical streams this side opened.
    pub streams_opened_local: u64,
    /// Logical streams the peer opened.
    pub streams_opened_remote: u64,
    /// Logical streams not yet closed.
    pub streams_open: u64,
    /// Bytes the application wrote to streams.
    pub stream_bytes_written: u64,
    /// Bytes the application read from streams.
    pub stream_bytes_read: u64,
    /// Raw datagrams dropped because the application did not read them in time.
    pub raw_dropped: u64,
    /// Received stream bytes held for the application (unread, or waiting for a gap).
    pub bytes_unread: u64,
    /// Written stream bytes held for the peer: not yet framed, or framed and kept until
    /// `DATA_ACK` (same-peer multipath).
    pub bytes_unacked: u64,
    /// Client: stream bytes received twice, by reason.
    pub stripe_copy_bytes: CopyBytes,
    /// Client: stream bytes pulled as end-game copies.
    pub end_game_copy_bytes: u64,
    /// Client: of those, bytes that arrived after the original's (the copy lost).
    pub end_game_copy_bytes_lost: u64,
    /// Per path.
    pub paths: Vec<PathStats>,
}
