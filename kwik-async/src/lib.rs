//! The runtime-agnostic async layer of KWIK, shared by `kwik-tokio` and `kwik-smol`.
//!
//! One [`Endpoint`] owns one [`kwik_core::Endpoint`] behind a mutex and one driver task
//! that feeds it datagrams and timer ticks and wakes whoever waits on its events. Every
//! async operation follows one pattern: try it on the engine, register the waker if it is
//! blocked, wake the driver if it changed something. The API mirrors quinn's.
//!
//! Applications use it through `kwik-tokio` or `kwik-smol`, which supply a [`Runtime`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod endpoint;
mod error;
mod event;
mod multi;
mod observe;
#[cfg(feature = "qlog")]
mod qlog;
mod runtime;
mod session;
mod stream;
#[cfg(feature = "metrics")]
mod telemetry;

pub use endpoint::{Accept, Connecting, Endpoint, Incoming, dial_with};
#[allow(deprecated)]
pub use error::ConnectionError;
pub use error::{
    ClosedStream, ConnectError, DialError, ReadError, ReadExactError, ReadToEndError, SessionError,
    StoppedError, WriteError,
};
pub use event::{PathEvent, TransferEvent};
pub use multi::DelegationWriter;
pub use runtime::{AsyncTimer, AsyncUdpSocket, Runtime};
pub use session::Session;
pub use stream::{RecvStream, SendStream};

pub use bytes::Bytes;
pub use kwik_core::{
    AddPathError, ClientConfig, Config, DelegateError, DelegationId, DelegationOutcome, Dir,
    EndpointStats, GroupKey, IncomingDelegation, LoadBalancing, Mode, PathError, PathId, PathInfo,
    PathKind, PathState, PathStats, RawSendError, RemovePathError, Role, ServerConfig,
    SessionStats, StreamId, StripeId, TicketError, VarInt,
};
pub use quinn_udp;
