//! KWIK on smol (async-io): the same API as `kwik-tokio`.
//!
//! ```no_run
//! # async fn run(client_config: kwik_smol::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let session = kwik_smol::dial("127.0.0.1:4433".parse()?, "localhost", client_config).await?;
//! let (mut send, mut recv) = session.open_bi().await?;
//! send.write_all(b"hello").await?;
//! send.finish()?;
//! assert_eq!(recv.read_to_end(1024).await?, b"hello");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use async_io::{Async, Timer as IoTimer};
use kwik_async::{AsyncTimer, AsyncUdpSocket, Runtime};

#[allow(deprecated)]
pub use kwik_async::ConnectionError;
pub use kwik_async::{
    Accept, AddPathError, Bytes, ClientConfig, ClosedStream, Config, ConnectError, Connecting,
    DelegateError, DelegationId, DelegationOutcome, DelegationWriter, DialError, Dir,
    EndpointStats, GroupKey, Incoming, IncomingDelegation, LoadBalancing, Mode, PathError,
    PathEvent, PathId, PathInfo, PathKind, PathState, PathStats, RawSendError, ReadError,
    ReadExactError, ReadToEndError, RecvStream, RemovePathError, Role, SendStream, ServerConfig,
    Session, SessionError, SessionStats, StoppedError, StreamId, StripeId, TicketError,
    TransferEvent, VarInt, WriteError,
};

/// The smol / async-io [`Runtime`].
#[derive(Debug)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(Timer(IoTimer::at(deadline)))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        smol::spawn(future).detach();
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(UdpSocket {
            state: quinn_udp::UdpSocketState::new((&socket).into())?,
            io: Async::new_nonblocking(socket)?,
        }))
    }
}

#[derive(Debug)]
struct Timer(IoTimer);

impl AsyncTimer for Timer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.get_mut().0.set_at(deadline);
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Future::poll(Pin::new(&mut self.get_mut().0), cx).map(|_| ())
    }
}

#[derive(Debug)]
struct UdpSocket {
    io: Async<std::net::UdpSocket>,
    state: quinn_udp::UdpSocketState,
}

impl AsyncUdpSocket for UdpSocket {
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        transmit: &quinn_udp::Transmit<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.io.poll_writable(cx))?;
            match self.state.send(self.io.get_ref().into(), transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [quinn_udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.io.poll_readable(cx))?;
            match self.state.recv(self.io.get_ref().into(), bufs, meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }
}

/// A KWIK endpoint on smol. Derefs to [`kwik_async::Endpoint`].
#[derive(Debug, Clone)]
pub struct Endpoint(kwik_async::Endpoint);

impl std::ops::Deref for Endpoint {
    type Target = kwik_async::Endpoint;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Endpoint {
    /// A client endpoint bound to `addr` (use port 0 for any).
    pub fn client(addr: SocketAddr) -> io::Result<Self> {
        kwik_async::Endpoint::client_with(Arc::new(SmolRuntime), addr).map(Self)
    }

    /// A server endpoint bound to `addr`.
    pub fn server(config: ServerConfig, addr: SocketAddr) -> io::Result<Self> {
        kwik_async::Endpoint::server_with(Arc::new(SmolRuntime), config, addr).map(Self)
    }

    /// An endpoint on an existing socket.
    pub fn new(socket: std::net::UdpSocket, server: Option<ServerConfig>) -> io::Result<Self> {
        kwik_async::Endpoint::new(Arc::new(SmolRuntime), socket, server).map(Self)
    }
}

/// Listens for KWIK sessions on `addr` (the seed's `kwik.Listen`).
pub fn listen(addr: SocketAddr, config: ServerConfig) -> io::Result<Endpoint> {
    Endpoint::server(config, addr)
}

/// Dials a KWIK server from a fresh client endpoint (the seed's `kwik.Dial`).
pub async fn dial(
    addr: SocketAddr,
    server_name: &str,
    config: ClientConfig,
) -> Result<Session, DialError> {
    kwik_async::dial_with(Arc::new(SmolRuntime), addr, server_name, config).await
}
