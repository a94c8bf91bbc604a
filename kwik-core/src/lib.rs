//! The KWIK engine: multi-server sessions over QUIC, without I/O.
//!
//! A KWIK session looks like one QUIC connection to the application, while inside it is an
//! aggregate of QUIC connections ("paths"). Logical streams are multiplexed as data-plane
//! frames on unidirectional QUIC streams ("carriers"), several logical streams per carrier,
//! and reassembled by offset at the receiver.
//!
//! # Several servers, one session
//!
//! The client dials a *primary* server. The primary may join other servers of its
//! deployment (sharing its [`GroupKey`]) to the session with [`Session::add_path`]: the
//! client connects to them from the same endpoint and proves the join with an HMAC bound
//! to the new connection's TLS exporter ([`join`]). The primary then hands byte ranges of
//! its streams to one path ([`SendStream::delegate`]) or serves a whole body from every
//! server at once ([`SendStream::stripe`]). Either way it signs a [`ticket`] that says what
//! may be sent; the client, which sees every path, pulls the ranges under it: a plain
//! delegation from its one server, a stripe chunk by chunk from every server over its own
//! path, on a schedule of its own ([`stripe`]). Every server checks the ticket of each pull
//! and writes what it is asked for through [`Session::accept_delegation`] and
//! [`Session::delegated`]. The client checks each byte against the ranges the path owes,
//! reassembles by offset, re-pulls what a failed or stalled path owes from the others, and
//! reports each delegation done or failed (with the first missing byte) to the primary.
//! [`Session::add_same_peer_path`] adds another address of the primary itself: then the
//! session's own stream frames are spread over those paths by [`scheduler`] and
//! reinjected if one dies.
//!
//! # Limits on what a peer can make this side hold
//!
//! | state | grows with | bound |
//! |---|---|---|
//! | sessions of a server | connections | `ServerConfig::max_sessions`, counting sessions and connections not yet in one |
//! | paths of a session | `AddPath` | `max_paths_per_session` live, as many removed (older ones are forgotten); `add_path_rate` |
//! | logical streams | peer opens | `max_concurrent_bidi_streams`, `max_concurrent_uni_streams`; streams a frame skips over get state only when named or accepted, so one frame costs the same at any limit |
//! | received, unread bytes | peer data | `stream_receive_window` per stream, `receive_window` per session (plus the length of each stripe the primary announced, pulled no further than the stream window) |
//! | reassembly entries per stream | out-of-order frames | `max_reassembly_gaps` gaps (else `ReassemblyLimit`); runs of small segments merged with work linear in the bytes |
//! | retained bytes (same-peer multipath) | unacknowledged writes | the stream window per stream; at the cap the stream waits for `DATA_ACK` |
//! | control messages | peer control frames | `max_control_messages_per_sec` (else `ControlRate`); frames of at most [`control::MAX_CONTROL_FRAME`] bytes; 64 KiB of answers queued for a peer that does not read |
//! | carriers (QUIC streams) per path | peer opens | `max_carriers_per_path` + 1 (QUIC's own stream limit) |
//! | raw datagrams queued | peer datagrams | `Config::raw_receive_queue` (default [`RAW_QUEUE_LIMIT`]), then dropped |
//! | tickets held, pulls owed (client) | primary `Delegate`s, pulls | [`MAX_DELEGATIONS`] each (else `Delegation`) |
//! | pulls served (any server) | client `Pull`s | [`MAX_DELEGATIONS`] (else a `Limit` refusal), each within its ticket's budget |
//! | ticket budgets (any server) | tickets served | [`ticket::MAX_BUDGET_ENTRIES`], forgotten at expiry |
//!
//! # Contract
//!
//! This crate is a pure state machine in the style of quinn-proto:
//! - it performs no I/O: no sockets, no files;
//! - it reads no clock: time enters only through `now` arguments;
//! - it uses no async runtime, threads or locks;
//! - every random choice comes from [`EndpointConfig::seed`] (TLS handshake randomness is
//!   drawn by rustls' crypto provider, as in every QUIC stack);
//! - no peer input panics: every decode returns a `Result`, and every violation closes the
//!   session with an [`ErrorCode`] the peer sees as [`SessionError::PeerProtocolError`].
//!
//! `tests/unit/contract.rs` checks the source for clock, socket, runtime and unseeded-RNG use.
//!
//! See [`Endpoint`] for how to drive the engine.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod control;
mod delegation;
mod endpoint;
mod error;
pub mod frame;
pub mod health;
mod ids;
pub mod join;
mod path;
pub mod rate;
pub mod scheduler;
mod session;
mod stats;
mod streams;
pub mod stripe;
pub mod ticket;
mod varint;

pub use config::{
    ALPN, ClientConfig, Config, ConfigError, LoadBalancing, RAW_QUEUE_LIMIT, ServerConfig,
    SetupError,
};
pub use delegation::{DelegateError, DelegationOutcome, IncomingDelegation};
#[cfg(feature = "qlog")]
pub use endpoint::QlogFactory;
pub use endpoint::{
    AddPathError, ConnectError, Delegated, Endpoint, EndpointConfig, Event, MAX_DELEGATIONS,
    PathKind, RecvStream, SendStream, Session, Transmit,
};
pub use error::{
    ClosedStream, ErrorCode, KWIK_ERROR_BASE, PathError, ProtocolError, RawSendError, ReadError,
    SessionError, WriteError,
};
pub use ids::{DelegationId, PathId, SessionHandle, StreamId, StripeId};
pub use join::GroupKey;
pub use session::{PathInfo, PathState, Role};
pub use stats::{EndpointStats, PathStats, SessionStats};
pub use ticket::TicketError;

pub use bytes::{Bytes, BytesMut};
pub use quinn_proto::{Dir, EcnCodepoint, Side, VarInt};
pub use rustls;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
