//! Error codes and the errors of sessions and streams.

use bytes::Bytes;
use quinn_proto::{ConnectionError, VarInt};

/// First QUIC application error code reserved for KWIK itself.
///
/// A session closed with a code in `KWIK_ERROR_BASE..KWIK_ERROR_BASE + 256` reports a KWIK
/// protocol error ([`ErrorCode`]); applications use codes below it.
pub const KWIK_ERROR_BASE: u64 = 0x6b77_6b00;

/// Why KWIK closed a session or path: the code travels in the QUIC `CONNECTION_CLOSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum ErrorCode {
    /// An internal error; no peer input should cause it.
    Internal = 1,
    /// Bytes on a carrier did not decode as data-plane frames.
    FrameEncoding = 2,
    /// The peer sent more than its flow-control credit.
    FlowControl = 3,
    /// The peer opened more logical streams than allowed.
    StreamLimit = 4,
    /// A frame referred to a stream in a state or direction that cannot take it.
    StreamState = 5,
    /// A final size changed, or data arrived past it.
    FinalSize = 6,
    /// A control frame exceeded the size limit.
    ControlFrameTooLarge = 7,
    /// A control frame did not decode.
    ControlDecode = 8,
    /// A control frame carried a message kind the peer did not know. Sent by earlier
    /// versions only: this one ignores and counts such messages
    /// (`PathStats::control_unknown`), so that a fleet can be upgraded one server at a time.
    UnknownControlMessage = 9,
    /// A control message arrived where the protocol does not allow it.
    UnexpectedControlMessage = 10,
    /// The peers share no protocol version.
    VersionMismatch = 11,
    /// A stream's reassembly buffer held too many separate gaps.
    ReassemblyLimit = 12,
    /// The peer used a QUIC stream KWIK does not define.
    UnexpectedStream = 13,
    /// The session setup did not complete in time or in order.
    Handshake = 14,
    /// The path stopped answering health checks.
    PathUnresponsive = 15,
    /// The peer sent control messages faster than allowed, or stopped reading the answers.
    ControlRate = 16,
    /// A join was refused: no group key, a wrong or expired proof, or an unknown session.
    JoinRefused = 17,
    /// A server sent bytes it was not delegated, or a delegation broke the rules.
    Delegation = 18,
    /// The server speaks none of the application protocols the client offered (or chose
    /// one it did not offer).
    NoApplicationProtocol = 19,
    /// The server serves only as a secondary (`ServerConfig::joins_only`): it refuses a
    /// client's own session, which would ask for content without a primary's ticket.
    JoinsOnly = 20,
    /// The server is draining: it takes no new session or join, and resets the streams a
    /// client opens after its `Drain` notice.
    Draining = 21,
    /// Closes a connection a drain ended in order: the client's, once a draining server
    /// owed it nothing more, or the server's, once the session's work was done (or its
    /// drain deadline passed).
    Drained = 22,
    /// A join names a group key id the server does not hold (never had, or removed).
    UnknownKey = 23,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [Self; 23] = [
        Self::Internal,
        Self::FrameEncoding,
        Self::FlowControl,
        Self::StreamLimit,
        Self::StreamState,
        Self::FinalSize,
        Self::ControlFrameTooLarge,
        Self::ControlDecode,
        Self::UnknownControlMessage,
        Self::UnexpectedControlMessage,
        Self::VersionMismatch,
        Self::ReassemblyLimit,
        Self::UnexpectedStream,
        Self::Handshake,
        Self::PathUnresponsive,
        Self::ControlRate,
        Self::JoinRefused,
        Self::Delegation,
        Self::NoApplicationProtocol,
        Self::JoinsOnly,
        Self::Draining,
        Self::Drained,
        Self::UnknownKey,
    ];

    /// A short snake_case name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::FrameEncoding => "frame_encoding",
            Self::FlowControl => "flow_control",
            Self::StreamLimit => "stream_limit",
            Self::StreamState => "stream_state",
            Self::FinalSize => "final_size",
            Self::ControlFrameTooLarge => "control_frame_too_large",
            Self::ControlDecode => "control_decode",
            Self::UnknownControlMessage => "unknown_control_message",
            Self::UnexpectedControlMessage => "unexpected_control_message",
            Self::VersionMismatch => "version_mismatch",
            Self::ReassemblyLimit => "reassembly_limit",
            Self::UnexpectedStream => "unexpected_stream",
            Self::Handshake => "handshake",
            Self::PathUnresponsive => "path_unresponsive",
            Self::ControlRate => "control_rate",
            Self::JoinRefused => "join_refused",
            Self::Delegation => "delegation",
            Self::NoApplicationProtocol => "no_application_protocol",
            Self::JoinsOnly => "joins_only",
            Self::Draining => "draining",
            Self::Drained => "drained",
            Self::UnknownKey => "unknown_key",
        }
    }

    /// The QUIC application error code for this KWIK error.
    pub fn to_wire(self) -> VarInt {
        VarInt::from_u64(KWIK_ERROR_BASE + self as u64).unwrap_or(VarInt::MAX)
    }

    /// Recognises a KWIK error in a QUIC application error code.
    pub fn from_wire(code: u64) -> Option<Self> {
        let n = code.checked_sub(KWIK_ERROR_BASE)?;
        Self::ALL.into_iter().find(|c| *c as u64 == n)
    }
}

/// A protocol violation detected locally: the session is closed with `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct ProtocolError {
    /// What kind of violation.
    pub code: ErrorCode,
    /// Human-readable detail, sent to the peer in the close reason.
    pub reason: String,
}

impl ProtocolError {
    #[cold]
    pub(crate) fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Why a path failed (the session may live on over its other paths).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path stopped answering health checks.
    #[error("no answer to health checks")]
    Unresponsive,
    /// The path's QUIC connection ended: a handshake or idle timeout, a close by the
    /// server (a refused join shows as `PeerProtocolError` with `ErrorCode::JoinRefused`).
    #[error("connection ended: {0}")]
    Connection(SessionError),
    /// The server on the path broke the protocol; this side closed the path.
    #[error("protocol violation: {0}")]
    Protocol(ProtocolError),
    /// Primary: the client reported the failure, for this reason.
    #[error("client reported: {0}")]
    Reported(String),
}

/// Why a session ended. Sticky: once set, every operation on the session reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer violated the KWIK protocol; this side closed the session.
    #[error("peer violated the protocol: {0}")]
    ProtocolViolation(ProtocolError),
    /// The peer closed the session because it saw this side violate the protocol.
    #[error("peer closed the session with protocol error {code:?}: {reason}")]
    PeerProtocolError {
        /// The error the peer reported.
        code: ErrorCode,
        /// The peer's reason text.
        reason: String,
    },
    /// The peer application closed the session.
    #[error("closed by peer application: code {code}")]
    ApplicationClosed {
        /// Application error code.
        code: VarInt,
        /// Application reason.
        reason: Bytes,
    },
    /// This side closed the session.
    #[error("closed locally")]
    LocallyClosed,
    /// The peer went silent for longer than the idle timeout.
    #[error("timed out")]
    TimedOut,
    /// The primary path stopped answering health checks for longer than the window
    /// `max(3 × RTT, path_health_check_interval × path_failure_threshold)`.
    #[error("{path} stopped answering health checks")]
    PathUnresponsive {
        /// The path that failed.
        path: crate::PathId,
    },
    /// The peer reset the connection (stateless reset).
    #[error("reset by peer")]
    Reset,
    /// Any other QUIC-level failure of the primary path.
    #[error("transport: {0}")]
    Transport(ConnectionError),
    /// Client with `Config::require_kwik`: the server does not speak KWIK and chose this
    /// application protocol instead; this side closed the connection rather than fall
    /// back to a plain session.
    #[error("server does not speak KWIK (it chose {}); fallback refused", String::from_utf8_lossy(.protocol))]
    FallbackRefused {
        /// The application protocol the server chose.
        protocol: Bytes,
    },
    /// The session's server is draining: it takes no new streams (what opening one
    /// reports; the session itself lives on until the streams in flight are done).
    #[error("the server is draining: no new streams")]
    Draining,
}

impl From<ConnectionError> for SessionError {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::ApplicationClosed(close) => {
                match ErrorCode::from_wire(close.error_code.into_inner()) {
                    Some(code) => Self::PeerProtocolError {
                        code,
                        reason: String::from_utf8_lossy(&close.reason).into_owned(),
                    },
                    None => Self::ApplicationClosed {
                        code: close.error_code,
                        reason: close.reason,
                    },
                }
            }
            ConnectionError::LocallyClosed => Self::LocallyClosed,
            ConnectionError::TimedOut => Self::TimedOut,
            ConnectionError::Reset => Self::Reset,
            other => Self::Transport(other),
        }
    }
}

/// Errors of writing to a logical stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// No flow-control credit or buffer space now; a `StreamWritable` event follows.
    #[error("blocked")]
    Blocked,
    /// The peer asked to stop sending with this code; the stream was reset.
    #[error("stopped by peer: code {0}")]
    Stopped(VarInt),
    /// The stream is finished, reset or unknown.
    #[error("closed stream")]
    ClosedStream,
    /// The session is gone.
    #[error("session lost: {0}")]
    SessionLost(SessionError),
}

/// Errors of reading from a logical stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No data now; a `StreamReadable` event follows.
    #[error("blocked")]
    Blocked,
    /// The peer reset the stream with this code.
    #[error("reset by peer: code {0}")]
    Reset(VarInt),
    /// The stream was stopped, fully read or is unknown.
    #[error("closed stream")]
    ClosedStream,
    /// The session is gone.
    #[error("session lost: {0}")]
    SessionLost(SessionError),
}

/// The stream is finished, reset or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("closed stream")]
pub struct ClosedStream;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_apps_codes_are_not_kwik() {
        for code in ErrorCode::ALL {
            assert_eq!(
                ErrorCode::from_wire(code.to_wire().into_inner()),
                Some(code)
            );
        }
        assert_eq!(ErrorCode::from_wire(0), None);
        assert_eq!(ErrorCode::from_wire(KWIK_ERROR_BASE), None);
        assert_eq!(ErrorCode::from_wire(KWIK_ERROR_BASE + 200), None);
    }
}

/// Why a raw datagram could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RawSendError {
    /// The session has no such path.
    #[error("no {0}")]
    UnknownPath(crate::PathId),
    /// The datagram exceeds what the path carries now.
    #[error("datagram of {size} bytes exceeds the path's limit of {max:?}")]
    TooLarge {
        /// The datagram's size.
        size: usize,
        /// The path's current limit, if datagrams are possible at all.
        max: Option<usize>,
    },
    /// The peer does not accept datagrams.
    #[error("peer does not accept datagrams")]
    UnsupportedByPeer,
    /// The path's send buffer is full: the datagram, handed back by `try_send_raw`.
    #[error("the path's datagram send buffer is full")]
    Blocked(bytes::Bytes),
    /// The session is gone.
    #[error("session lost: {0}")]
    SessionLost(SessionError),
}
