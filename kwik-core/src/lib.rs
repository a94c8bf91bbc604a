//! The KWIK engine: multi-server sessions over QUIC, without I/O.
//!
//! A KWIK session looks like one QUIC connection to the application, while inside it is an
//! aggregate of QUIC connections ("paths"). Logical streams are multiplexed as data-plane
//! frames on unidirectional QUIC streams ("carriers"), several logical streams per carrier,
//! and reassembled by offset at the receiver.
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
//! `tests/contract.rs` checks the source for clock, socket, runtime and unseeded-RNG use.
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
pub mod join;
mod path;
pub mod rate;
pub mod scheduler;
mod session;
mod stats;
mod streams;
pub mod stripe;
mod varint;

pub use config::{
    ALPN, ClientConfig, Config, ConfigError, LoadBalancing, ServerConfig, SetupError,
};
pub use delegation::{DelegateError, DelegationId, DelegationOutcome, IncomingDelegation};
pub use endpoint::{
    AddPathError, ConnectError, Delegated, Endpoint, EndpointConfig, Event, MAX_DELEGATIONS,
    PathKind, RecvStream, SendStream, Session, Transmit,
};
pub use error::{
    ClosedStream, ErrorCode, KWIK_ERROR_BASE, PathError, ProtocolError, RawSendError, ReadError,
    SessionError, WriteError,
};
pub use join::GroupKey;
pub use path::PathId;
pub use session::{PathInfo, PathState, RAW_QUEUE_LIMIT, Role, SessionHandle};
pub use stats::{EndpointStats, PathStats, SessionStats};
pub use streams::StreamId;

pub use bytes::{Bytes, BytesMut};
pub use quinn_proto::{Dir, EcnCodepoint, Side, VarInt};
pub use rustls;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
