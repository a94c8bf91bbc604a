//! The async endpoint: dial, accept, shut down.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use kwik_core::{ClientConfig, EndpointConfig, ServerConfig, SessionHandle, VarInt};
use rand::RngCore;

use crate::driver::Shared;
use crate::error::{ConnectError, SessionError};
use crate::runtime::Runtime;
use crate::session::Session;

/// Socket buffer size requested from the kernel.
const SOCKET_BUFFER: usize = 4 << 20;

/// A KWIK endpoint on one UDP socket: dials sessions, and accepts them if it has a server
/// config. Cloning gives another handle to the same endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: Arc<EndpointRef>,
}

#[derive(Debug)]
struct EndpointRef {
    shared: Arc<Shared>,
    default_client: Mutex<Option<ClientConfig>>,
}

impl Drop for EndpointRef {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.endpoint_dropped = true;
        state.engine.set_server_config(None);
        state.wake_driver();
    }
}

impl Endpoint {
    /// An endpoint on `socket`, driven by `runtime`; with `server` it accepts sessions.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        socket: std::net::UdpSocket,
        server: Option<ServerConfig>,
    ) -> io::Result<Self> {
        // Bursts at high rates outrun a default-sized receive buffer; the kernel caps the
        // request at net.core.rmem_max, and failure only costs throughput.
        if let Ok(udp) = quinn_udp::UdpSocketState::new((&socket).into()) {
            let _ = udp.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
            let _ = udp.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
        }
        let socket = runtime.wrap_udp_socket(socket)?;
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let mut engine = kwik_core::Endpoint::new(
            EndpointConfig {
                seed,
                allow_mtud: !socket.may_fragment(),
            },
            server,
        );
        // Join proofs expire in Unix time; the engine keeps time from the runtime after.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        engine.set_wall_clock(runtime.now(), since_epoch);
        let shared = Shared::new(engine, runtime, socket);
        Ok(Self {
            inner: Arc::new(EndpointRef {
                shared,
                default_client: Mutex::new(None),
            }),
        })
    }

    /// A client endpoint bound to `addr` (port 0 for any).
    pub fn client_with(runtime: Arc<dyn Runtime>, addr: SocketAddr) -> io::Result<Self> {
        Self::new(runtime, std::net::UdpSocket::bind(addr)?, None)
    }

    /// A server endpoint bound to `addr`.
    pub fn server_with(
        runtime: Arc<dyn Runtime>,
        config: ServerConfig,
        addr: SocketAddr,
    ) -> io::Result<Self> {
        Self::new(runtime, std::net::UdpSocket::bind(addr)?, Some(config))
    }

    /// Sets the config [`Endpoint::connect`] uses.
    pub fn set_default_client_config(&self, config: ClientConfig) {
        *self
            .inner
            .default_client
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(config);
    }

    /// Replaces the server config (`None` stops accepting).
    pub fn set_server_config(&self, config: Option<ServerConfig>) {
        self.inner.shared.lock().engine.set_server_config(config);
    }

    /// Dials `addr` with the default client config, verifying `server_name`.
    pub fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<Connecting, ConnectError> {
        let config = self
            .inner
            .default_client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(ConnectError::NoDefaultClientConfig)?;
        self.connect_with(config, addr, server_name)
    }

    /// Dials `addr` with `config`, verifying `server_name`.
    pub fn connect_with(
        &self,
        config: ClientConfig,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connecting, ConnectError> {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        if state.endpoint_dropped {
            return Err(ConnectError::EndpointStopping);
        }
        let now = shared.now();
        let h = state.engine.connect(now, &config, addr, server_name)?;
        state.waiters(h).refs += 1;
        state.wake_driver();
        Ok(Connecting {
            session: Some(Session::from_handle(shared.clone(), h)),
        })
    }

    /// The next session a client established with this server; `None` once the endpoint
    /// is closed.
    pub fn accept(&self) -> Accept<'_> {
        Accept { endpoint: self }
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.shared.socket.local_addr()
    }

    /// Closes every session with `code` and `reason`.
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        let now = shared.now();
        let handles: Vec<SessionHandle> = state.sessions.keys().copied().collect();
        for h in handles {
            if let Some(mut s) = state.engine.session(h) {
                s.close(now, code, reason);
            }
        }
        state.endpoint_dropped = true;
        for w in state.accept_waiters.drain(..) {
            w.wake();
        }
        state.wake_driver();
    }

    /// Replaces the group keys of this running server: see
    /// [`kwik_core::Endpoint::set_group_keys`] (a primary that switches its current key
    /// re-issues its live tickets and path secrets at once).
    pub fn set_group_keys(&self, keys: kwik_core::GroupKeys) {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        let now = shared.now();
        state.engine.set_group_keys(now, keys);
        state.wake_driver();
    }

    /// Takes this server out of service gracefully within `timeout`: it takes no new
    /// session or join, tells the client of every session it serves, serves what it
    /// accepted before, and closes each session once its work is done (at the deadline at
    /// the latest). See [`kwik_core::Endpoint::drain`]. Await [`Endpoint::drained`] for the
    /// end, then [`Endpoint::wait_idle`] for the last closes to be sent.
    pub fn drain(&self, timeout: std::time::Duration) {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        let now = shared.now();
        state.engine.drain(now, now + timeout);
        state.wake_driver();
    }

    /// Waits until a drain begun with [`Endpoint::drain`] is complete: the last session this
    /// server served is gone. Pending until a drain was begun.
    pub async fn drained(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.inner.shared.lock();
            if state.drained {
                return Poll::Ready(());
            }
            crate::driver::register(&mut state.drained_waiters, cx);
            Poll::Pending
        })
        .await
    }

    /// Writes qlog into `dir` (created if missing) from now on: one file per QUIC
    /// connection of every path, named by session and path, and one file of KWIK's own
    /// events per session. A file is complete once its connection has drained.
    #[cfg(feature = "qlog")]
    pub fn set_qlog_dir(&self, dir: impl AsRef<std::path::Path>) -> io::Result<()> {
        let qlog = crate::qlog::QlogDir::new(dir.as_ref())?;
        let mut state = self.inner.shared.lock();
        state.engine.set_qlog(Some(qlog.clone()));
        state.qlog = Some(crate::qlog::EventLog::new(qlog));
        Ok(())
    }

    /// Waits until every connection closed and drained.
    pub async fn wait_idle(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.inner.shared.lock();
            if state.engine.is_idle() {
                return Poll::Ready(());
            }
            crate::driver::register(&mut state.idle_waiters, cx);
            Poll::Pending
        })
        .await
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> kwik_core::EndpointStats {
        self.inner.shared.lock().engine.stats()
    }
}

/// Future of [`Endpoint::accept`].
#[derive(Debug)]
pub struct Accept<'a> {
    endpoint: &'a Endpoint,
}

impl Future for Accept<'_> {
    type Output = Option<Incoming>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = &self.endpoint.inner.shared;
        let mut state = shared.lock();
        if let Some(h) = state.incoming.pop_front() {
            state.waiters(h).refs += 1;
            return Poll::Ready(Some(Incoming {
                session: Session::from_handle(shared.clone(), h),
            }));
        }
        if state.endpoint_dropped {
            return Poll::Ready(None);
        }
        crate::driver::register(&mut state.accept_waiters, cx);
        Poll::Pending
    }
}

/// A session a client established; await it (or call [`Incoming::accept`]) to use it.
#[derive(Debug)]
pub struct Incoming {
    session: Session,
}

impl Incoming {
    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.session.remote_address()
    }

    /// Takes the session.
    pub fn accept(self) -> Result<Session, SessionError> {
        Ok(self.session)
    }

    /// Refuses the session.
    pub fn refuse(self) {
        self.session.close(0u32.into(), b"refused");
    }
}

impl IntoFuture for Incoming {
    type Output = Result<Session, SessionError>;
    type IntoFuture = std::future::Ready<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        std::future::ready(Ok(self.session))
    }
}

/// A session being set up; resolves once the server welcomed it.
#[derive(Debug)]
pub struct Connecting {
    session: Option<Session>,
}

impl Future for Connecting {
    type Output = Result<Session, SessionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(session) = &self.session else {
            return Poll::Ready(Err(SessionError::LocallyClosed));
        };
        let shared = session.shared().clone();
        let h = session.handle();
        let mut state = shared.lock();
        let waiters = state.waiters(h);
        if waiters.established {
            drop(state);
            return Poll::Ready(self.session.take().ok_or(SessionError::LocallyClosed));
        }
        if let Some(e) = waiters.error.clone() {
            return Poll::Ready(Err(e));
        }
        waiters.connecting = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Dials `addr` from a fresh client endpoint on an unspecified local address.
pub async fn dial_with(
    runtime: Arc<dyn Runtime>,
    addr: SocketAddr,
    server_name: &str,
    config: ClientConfig,
) -> Result<Session, crate::error::DialError> {
    let bind: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let endpoint = Endpoint::client_with(runtime, bind)?;
    Ok(endpoint.connect_with(config, addr, server_name)?.await?)
}
