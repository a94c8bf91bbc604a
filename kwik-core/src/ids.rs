//! The ids of what the engine holds: sessions, their paths, logical streams, delegations
//! and stripes.
//!
//! They live apart from the state they name, so that policy modules (the stripe
//! scheduler, the same-peer scheduler) and the connection layer can share them without
//! depending on each other.

use quinn_proto::{Dir, Side};

/// Identifies a session within its [`Endpoint`](crate::Endpoint). Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionHandle(pub u64);

/// Identifies a path within its session; assigned by the primary, 0 is the primary path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(pub u32);

impl PathId {
    /// The primary path.
    pub const PRIMARY: Self = Self(0);
}

impl std::fmt::Display for PathId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "path {}", self.0)
    }
}

/// A logical stream id: bit 0 is the initiator (0 client), bit 1 the direction (0 bidi),
/// the rest the index, as in QUIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The id of the `index`th stream of `dir` opened by `initiator`.
    pub fn new(initiator: Side, dir: Dir, index: u64) -> Self {
        Self(index << 2 | (dir as u64) << 1 | initiator as u64)
    }
    /// Which side opened the stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }
    /// Whether the stream is bidirectional.
    pub fn dir(self) -> Dir {
        if self.0 & 2 == 0 { Dir::Bi } else { Dir::Uni }
    }
    /// Position among the streams of its initiator and direction.
    pub fn index(self) -> u64 {
        self.0 >> 2
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.initiator() {
            Side::Client => "client",
            Side::Server => "server",
        };
        let dir = match self.dir() {
            Dir::Bi => "bidi",
            Dir::Uni => "uni",
        };
        write!(f, "{who} {dir} stream {}", self.index())
    }
}

/// Identifies a delegation within its session; assigned by the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelegationId(pub u64);

impl std::fmt::Display for DelegationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "delegation {}", self.0)
    }
}

/// Identifies a stripe within its session, as [`SendStream::stripe`] returns it; the
/// primary's [`Event::StripeFinished`] names it.
///
/// [`SendStream::stripe`]: crate::SendStream::stripe
/// [`Event::StripeFinished`]: crate::Event::StripeFinished
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StripeId(pub u64);

impl std::fmt::Display for StripeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stripe {}", self.0)
    }
}

/// Identifies one QUIC connection within the endpoint: quinn-proto's connection handle.
/// The endpoint routes each to the session and path it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ConnKey(pub(crate) usize);

impl From<quinn_proto::ConnectionHandle> for ConnKey {
    fn from(ch: quinn_proto::ConnectionHandle) -> Self {
        Self(ch.0)
    }
}

impl From<ConnKey> for quinn_proto::ConnectionHandle {
    fn from(key: ConnKey) -> Self {
        Self(key.0)
    }
}
