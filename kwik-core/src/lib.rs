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
//! path, on a schedule of its own (`stripe.rs`). Every server checks the ticket of each pull
//! and writes what it is asked for through [`Session::accept_delegation`] and
//! [`Session::delegated`]. The client checks each byte against the ranges the path owes,
//! reassembles by offset, re-pulls what a failed or stalled path owes from the others, and
//! reports each delegation done or failed (with the first missing byte) to the primary.
//! [`Session::add_same_peer_path`] adds another address of the primary itself: then the
//! session's own stream frames are spread over those paths by the scheduler (`scheduler.rs`) and
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
//! | control messages | peer control frames | `max_control_messages_per_sec` (else `ControlRate`); frames of at most 16 KiB; 64 KiB of answers queued for a peer that does not read |
//! | carriers (QUIC streams) per path | peer opens | `max_carriers_per_path` + 1 (QUIC's own stream limit) |
//! | raw datagrams queued | peer datagrams | `Config::raw_receive_queue` (default [`RAW_QUEUE_LIMIT`]), then dropped |
//! | tickets held, pulls owed (client) | primary `Delegate`s, pulls | [`MAX_DELEGATIONS`] each (else `Delegation`) |
//! | pulls served (any server) | client `Pull`s | [`MAX_DELEGATIONS`] (else a `Limit` refusal), each within its ticket's budget |
//! | ticket budgets (any server) | tickets served | [`ticket::MAX_BUDGET_ENTRIES`], forgotten at expiry |
//! | a plain session's streams | peer opens | `max_concurrent_bidi_streams`, `max_concurrent_uni_streams`, as QUIC stream limits |
//! | a plain session's received, unread bytes | peer data | QUIC's windows, fixed before the protocol is known: `max(receive_window, 16 MiB)` per stream and twice that per connection (64 MiB with the defaults: twice a KWIK session's 32 MiB) |
//! | a plain session's datagrams | peer datagrams | QUIC's datagram buffer, then `raw_receive_queue`, then dropped |
//! | a plain session's range state | the application's stripes | one entry per stream the application writes, gone when QUIC reports the stream done, stopped or reset |
//!
//! # Engine map
//!
//! Who owns what:
//!
//! | owner | holds |
//! |---|---|
//! | [`Endpoint`] (`endpoint/mod.rs`) | quinn-proto's endpoint; every session by [`SessionHandle`]; a route per QUIC connection, by quinn-proto's connection handle, to the session and path that hold it; the connections no session holds (a server's before its `Hello` or `Join`, and those a session let go of while they close); the queue of [`Event`]s; the set of connections with work to do and of those that may have a datagram to send; each session's and loose connection's next deadline, in a heap (`endpoint/deadlines.rs`: a timer runs only what is due, so idle sessions cost nothing per input); ticket key and budgets. It runs a session's work with what the session may use of it (`session::Cx`) and applies the effects the session asks for (`endpoint/apply.rs`): drive a connection, queue an event, dial a path, take in a connection the session let go of |
//! | session state (`session/mod.rs`) | role and phase, config, the logical streams (`streams::Streams`), one record per path (state, address, credentials, last figures, and the connection that carries it now), raw datagrams, and the role's delegation state: tickets issued (primary), held and pulls owed (client), ranges served (any server). The session handles its control messages, drives its own connections (`session/drive.rs`), runs its paths' lives (`paths.rs`), its delegation roles (`primary.rs`, `pulls.rs`, `serving.rs`) and its same-peer schedule (`schedule.rs`); it never sees the endpoint, and asks it for the rest as `session::Effect`s (`effects.rs`) |
//! | `path::Path` (`path/`) | one QUIC connection: its control stream (`control.rs`), the carriers it receives on (`rx.rs`) and sends on (`tx.rs`), delegated carriers (`delegated.rs`), health probes, counters, its [`PathId`], address and tracing span |
//! | `streams::Streams` (`streams/`) | per logical stream: receive reassembly and flow control (`recv.rs`), send buffers and credit (`send.rs`), the flow-control frames owed (`signals.rs`), delegated and striped credit (`delegated.rs`), bytes kept for reinjection (`retain.rs`) |
//! | control table (`session/control.rs`) | which control message each role accepts on which path, answered as a `Control` that `SessionState::on_control` acts on |
//!
//! A datagram in, a stream read, and a datagram out:
//!
//! 1. [`Endpoint::handle_datagram`] hands the datagram to quinn-proto, which names the
//!    connection, and the endpoint's route finds it; the connection is marked to drive. A
//!    datagram for no known connection is a new connection: `endpoint/accept.rs` admits
//!    it (within `max_sessions`) as a connection no session holds yet.
//! 2. The next `poll_*` call drives every marked connection: `endpoint/drive.rs` routes
//!    it to the session that holds it, which drives it (`session/drive.rs`): quinn-proto's
//!    events (connected: open the control stream and send `Hello` or `Join`; carriers
//!    opened; readable streams), then the control stream. A connection without a session
//!    takes only `Hello` (a new session) or `Join` (a secondary's or a same-peer address's
//!    path) in `endpoint/accept.rs`, which moves it into the session's path record; any
//!    other message goes through the control table. The endpoint applies the session's
//!    effects once the session returns.
//! 3. The path decodes its carriers into data-plane frames (`frame.rs`). On a client,
//!    a secondary's frames are first checked against the ranges the client pulled there.
//!    `Streams::on_frame` reassembles them by offset under the stream and session windows
//!    and queues `StreamReadable`, surfaced as [`Event::StreamReadable`].
//! 4. The application reads through [`RecvStream::read`]; the freed window becomes a
//!    `MAX_STREAM_DATA` or `MAX_DATA` frame owed to the peer, and the path is marked.
//! 5. Driving the path again writes: owed flow-control frames first on the signal carrier,
//!    then as many stream frames as the scheduler allows this path (all of them with
//!    one path to the peer), then delegated ranges. The frames go into QUIC streams.
//! 6. [`Endpoint::poll_transmit`] asks the connections that may send (driven, timed out or
//!    commanded since they last had nothing, and every busy path) in turn for a datagram
//!    and returns it as a [`Transmit`] naming the session and path;
//!    [`Endpoint::poll_timeout`] says when [`Endpoint::handle_timeout`] must run next
//!    (QUIC timers, health probes, retries, ticket refresh, stripe schedules, metrics),
//!    the earliest of the deadlines filed per session. A session's deadline that moved
//!    later since it was filed (QUIC's timers do, with every packet) is kept until it
//!    comes: the call then files the session again under the later one and runs nothing.
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
mod delegation;
mod endpoint;
mod error;
mod event;
mod ids;
pub mod join;
mod path;
mod session;
mod stats;
mod streams;
pub mod ticket;
mod varint;

// The engine's internals that only its own tests and fuzz targets reach: the wire codecs
// (to play a hostile peer) and the policies (to test them alone). The
// `_internal_test_exports` feature makes them public; they are not part of the API.
#[cfg(feature = "_internal_test_exports")]
pub mod control;
#[cfg(not(feature = "_internal_test_exports"))]
#[allow(unreachable_pub)]
mod control;
#[cfg(feature = "_internal_test_exports")]
pub mod frame;
#[cfg(not(feature = "_internal_test_exports"))]
#[allow(unreachable_pub)]
mod frame;
#[cfg(feature = "_internal_test_exports")]
pub mod health;
#[cfg(not(feature = "_internal_test_exports"))]
#[allow(unreachable_pub)]
mod health;
#[cfg(feature = "_internal_test_exports")]
pub mod rate;
#[cfg(not(feature = "_internal_test_exports"))]
#[allow(unreachable_pub)]
mod rate;
#[cfg(feature = "_internal_test_exports")]
pub mod scheduler;
#[cfg(not(feature = "_internal_test_exports"))]
#[allow(unreachable_pub)]
mod scheduler;
#[cfg(feature = "_internal_test_exports")]
pub mod stripe;
#[cfg(not(feature = "_internal_test_exports"))]
#[allow(unreachable_pub)]
mod stripe;

pub use config::{
    ALPN, ClientConfig, Config, ConfigError, LoadBalancing, RAW_QUEUE_LIMIT, ServerConfig,
    SetupError,
};
pub use delegation::MAX_DELEGATIONS;
pub use delegation::{DelegateError, DelegationOutcome, IncomingDelegation};
#[cfg(feature = "qlog")]
pub use endpoint::QlogFactory;
pub use endpoint::{
    ConnectError, Delegated, Endpoint, EndpointConfig, RecvStream, SendStream, Session,
};
pub use error::{
    ClosedStream, ErrorCode, KWIK_ERROR_BASE, PathError, ProtocolError, RawSendError, ReadError,
    SessionError, WriteError,
};
pub use event::{Event, Transmit};
pub use ids::{DelegationId, PathId, SessionHandle, StreamId, StripeId};
pub use join::{GroupKey, GroupKeys, GroupKeysError};
pub use session::{AddPathError, Mode, PathInfo, PathKind, PathState, RemovePathError, Role};
pub use stats::{CopyBytes, EndpointStats, PathStats, SessionStats};
pub use ticket::TicketError;

pub use bytes::{Bytes, BytesMut};
pub use quinn_proto::{Dir, EcnCodepoint, VarInt};
pub use rustls;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
