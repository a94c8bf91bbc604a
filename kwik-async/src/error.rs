//! Errors of the async API, shaped like quinn's.

use kwik_core::VarInt;
pub use kwik_core::{ClosedStream, SessionError};

/// quinn's name for the error that ends a connection: KWIK calls it [`SessionError`].
#[deprecated(since = "0.1.0", note = "use `SessionError`")]
pub type ConnectionError = SessionError;

/// Writing to a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The peer stopped the stream with this code.
    #[error("sending stopped by peer: error {0}")]
    Stopped(VarInt),
    /// The session was lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] SessionError),
    /// The stream was already finished or reset.
    #[error("closed stream")]
    ClosedStream,
}

/// Reading from a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The peer reset the stream with this code.
    #[error("stream reset by peer: error {0}")]
    Reset(VarInt),
    /// The session was lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] SessionError),
    /// The stream was already stopped or fully read.
    #[error("closed stream")]
    ClosedStream,
}

/// `read_exact` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadExactError {
    /// The stream finished before the buffer filled; this many bytes were read.
    #[error("stream finished early ({0} bytes read)")]
    FinishedEarly(usize),
    /// A read failed.
    #[error(transparent)]
    ReadError(#[from] ReadError),
}

/// `read_to_end` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadToEndError {
    /// The stream is longer than the limit given.
    #[error("stream too long")]
    TooLong,
    /// A read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// `stopped` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoppedError {
    /// The session was lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] SessionError),
}

/// Dialing failed before a session existed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No default client config was set.
    #[error("no default client config")]
    NoDefaultClientConfig,
    /// The endpoint is shutting down.
    #[error("endpoint stopping")]
    EndpointStopping,
    /// QUIC refused the attempt.
    #[error(transparent)]
    Engine(#[from] kwik_core::ConnectError),
}

impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> Self {
        let kind = match e {
            WriteError::Stopped(_) | WriteError::ClosedStream => std::io::ErrorKind::NotConnected,
            WriteError::ConnectionLost(_) => std::io::ErrorKind::ConnectionReset,
        };
        Self::new(kind, e)
    }
}

impl From<ReadError> for std::io::Error {
    fn from(e: ReadError) -> Self {
        let kind = match e {
            ReadError::Reset(_) | ReadError::ConnectionLost(_) => {
                std::io::ErrorKind::ConnectionReset
            }
            ReadError::ClosedStream => std::io::ErrorKind::NotConnected,
        };
        Self::new(kind, e)
    }
}

/// Why a `dial` convenience failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// Binding the socket failed.
    #[error("bind: {0}")]
    Io(#[from] std::io::Error),
    /// The engine refused the attempt.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The session failed to set up.
    #[error(transparent)]
    Session(#[from] SessionError),
}
