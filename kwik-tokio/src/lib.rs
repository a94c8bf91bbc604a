//! KWIK on tokio.
//!
//! ```no_run
//! # async fn run(server_config: kwik_tokio::ServerConfig, client_config: kwik_tokio::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! // Server: listen, accept a session, echo one stream.
//! let server = kwik_tokio::listen("127.0.0.1:4433".parse()?, server_config)?;
//! tokio::spawn(async move {
//!     while let Some(incoming) = server.accept().await {
//!         let session = incoming.await.expect("session");
//!         let (mut send, mut recv) = session.accept_bi().await.expect("stream");
//!         let data = recv.read_to_end(1 << 20).await.expect("read");
//!         send.write_all(&data).await.expect("write");
//!         send.finish().expect("finish");
//!         let _ = send.stopped().await;
//!     }
//! });
//! // Client: dial, open a stream, echo.
//! let session = kwik_tokio::dial("127.0.0.1:4433".parse()?, "localhost", client_config).await?;
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

use kwik_async::{AsyncTimer, AsyncUdpSocket, Runtime};
use tokio::io::Interest;

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

/// The tokio [`Runtime`].
#[derive(Debug)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(Timer(Box::pin(tokio::time::sleep_until(deadline.into()))))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(future);
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        socket.set_nonblocking(true)?;
        Ok(Arc::new(UdpSocket {
            state: quinn_udp::UdpSocketState::new((&socket).into())?,
            io: tokio::net::UdpSocket::from_std(socket)?,
        }))
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

#[derive(Debug)]
struct Timer(Pin<Box<tokio::time::Sleep>>);

impl AsyncTimer for Timer {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.get_mut().0.as_mut().reset(deadline.into());
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.as_mut().poll(cx)
    }
}

#[derive(Debug)]
struct UdpSocket {
    io: tokio::net::UdpSocket,
    state: quinn_udp::UdpSocketState,
}

impl AsyncUdpSocket for UdpSocket {
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        transmit: &quinn_udp::Transmit<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.io.poll_send_ready(cx))?;
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.send((&self.io).into(), transmit)
            }) {
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
            ready!(self.io.poll_recv_ready(cx))?;
            match self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
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

/// A KWIK endpoint on tokio. Derefs to [`kwik_async::Endpoint`] for `connect`, `accept`,
/// `close` and the rest.
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
        kwik_async::Endpoint::client_with(Arc::new(TokioRuntime), addr).map(Self)
    }

    /// A server endpoint bound to `addr`.
    pub fn server(config: ServerConfig, addr: SocketAddr) -> io::Result<Self> {
        kwik_async::Endpoint::server_with(Arc::new(TokioRuntime), config, addr).map(Self)
    }

    /// An endpoint on an existing socket.
    pub fn new(socket: std::net::UdpSocket, server: Option<ServerConfig>) -> io::Result<Self> {
        kwik_async::Endpoint::new(Arc::new(TokioRuntime), socket, server).map(Self)
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
    kwik_async::dial_with(Arc::new(TokioRuntime), addr, server_name, config).await
}
