//! The few things the driver needs from an async runtime.

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// An async runtime: timers, task spawning, UDP sockets and the clock.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// A timer that fires at `deadline`.
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>>;
    /// Runs `future` in the background.
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>);
    /// Makes a bound, non-blocking-capable socket async.
    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>>;
    /// The current time, as the runtime's timers see it.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A resettable timer.
pub trait AsyncTimer: Send + Debug + 'static {
    /// Moves the deadline.
    fn reset(self: Pin<&mut Self>, deadline: Instant);
    /// Ready once the deadline passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// A UDP socket with quinn-udp's batched, GSO/GRO-capable I/O.
pub trait AsyncUdpSocket: Send + Sync + Debug + 'static {
    /// Sends one transmit (possibly several GSO segments), waiting for writability.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        transmit: &quinn_udp::Transmit<'_>,
    ) -> Poll<io::Result<()>>;
    /// Receives a batch of datagrams.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [quinn_udp::RecvMeta],
    ) -> Poll<io::Result<usize>>;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Most datagrams one send may carry (GSO).
    fn max_gso_segments(&self) -> usize;
    /// Most datagrams one receive buffer may hold (GRO).
    fn gro_segments(&self) -> usize;
    /// Whether the socket may fragment (then path MTU discovery must stay off).
    fn may_fragment(&self) -> bool;
}
