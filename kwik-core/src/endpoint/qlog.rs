//! qlog of each path's QUIC connection (feature `qlog`), through quinn-proto's own qlog
//! support. Opening a stream reads the clock and creates a file, so the engine only asks
//! a [`QlogFactory`] the adapter installed for one per connection, and tells it which
//! session and path the connection turned out to carry. Without the feature every helper
//! here is a no-op.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Endpoint;
use crate::config::Config;
use crate::ids::{ConnKey, PathId, SessionHandle};

/// Names the qlog stream of one connection between its creation and its label.
pub(super) type QlogToken = Option<u64>;

/// Where each QUIC connection of an endpoint writes its qlog.
///
/// Both calls come from inside the engine, under whatever lock guards it: keep them short.
#[cfg(feature = "qlog")]
pub trait QlogFactory: Send + Sync + std::fmt::Debug {
    /// A QUIC connection of this endpoint starts (`side` is this side's): the stream its
    /// events go to, and a token naming it in [`QlogFactory::labelled`]; `None` logs
    /// nothing for it.
    fn stream(
        &self,
        side: quinn_proto::Side,
        remote: SocketAddr,
    ) -> Option<(u64, quinn_proto::QlogStream)>;

    /// The connection of `token` carries `path` (`kind`: primary, secondary or same-peer)
    /// of the session with id `session`, in which this side is `role`.
    fn labelled(&self, token: u64, session: u64, role: crate::Role, path: PathId, kind: &str);

    /// The connection of `token` is gone without ever carrying a session (a refused join,
    /// a failed handshake): forget what was kept to label it.
    fn unlabelled(&self, token: u64);
}

/// The installed factory and the token of every connection it gave a stream to.
#[cfg(feature = "qlog")]
#[derive(Debug, Default)]
pub(super) struct Qlog {
    factory: Option<Arc<dyn QlogFactory>>,
    tokens: rustc_hash::FxHashMap<ConnKey, u64>,
}

impl Endpoint {
    /// Gives every QUIC connection created from now on a qlog stream from `factory`
    /// (`None`: no more qlog).
    #[cfg(feature = "qlog")]
    pub fn set_qlog(&mut self, factory: Option<Arc<dyn QlogFactory>>) {
        self.qlog.factory = factory;
    }

    /// The transport of a new connection of a session with `config`: with a factory, one
    /// that writes the connection's own qlog stream.
    #[cfg(feature = "qlog")]
    fn qlog_transport(
        &self,
        side: quinn_proto::Side,
        remote: SocketAddr,
        config: &Config,
    ) -> Option<(u64, Arc<quinn_proto::TransportConfig>)> {
        let (token, stream) = self.qlog.factory.as_ref()?.stream(side, remote)?;
        let mut transport = config.transport();
        transport.qlog_stream(Some(stream));
        Some((token, Arc::new(transport)))
    }

    /// The client config to dial `remote` with.
    pub(super) fn dial_config(
        &self,
        dial: &quinn_proto::ClientConfig,
        config: &Config,
        remote: SocketAddr,
    ) -> (quinn_proto::ClientConfig, QlogToken) {
        #[cfg(feature = "qlog")]
        if let Some((token, transport)) =
            self.qlog_transport(quinn_proto::Side::Client, remote, config)
        {
            let mut dial = dial.clone();
            dial.transport_config(transport);
            return (dial, Some(token));
        }
        let _ = (config, remote);
        (dial.clone(), None)
    }

    /// The server config to accept a connection from `remote` with (`None`: the
    /// endpoint's).
    pub(super) fn accept_config(
        &self,
        remote: SocketAddr,
    ) -> (Option<Arc<quinn_proto::ServerConfig>>, QlogToken) {
        #[cfg(feature = "qlog")]
        if let Some(server) = &self.server
            && let Some((token, transport)) =
                self.qlog_transport(quinn_proto::Side::Server, remote, &server.config)
        {
            let mut quic = (**server.quic()).clone();
            quic.transport_config(transport);
            return (Some(Arc::new(quic)), Some(token));
        }
        let _ = remote;
        (None, None)
    }

    /// Connection `key` was created with `token`'s stream.
    pub(super) fn qlog_bind(&mut self, key: ConnKey, token: QlogToken) {
        #[cfg(feature = "qlog")]
        if let Some(token) = token {
            self.qlog.tokens.insert(key, token);
        }
        let _ = (key, token);
    }

    /// Connection `key` carries `path` (of `kind`) of session `h`.
    pub(super) fn qlog_label(&mut self, key: ConnKey, h: SessionHandle, path: PathId, kind: &str) {
        #[cfg(feature = "qlog")]
        if let (Some(factory), Some(token), Some(s)) = (
            &self.qlog.factory,
            self.qlog.tokens.remove(&key),
            self.sessions.get(&h),
        ) {
            factory.labelled(token, s.id, s.role, path, kind);
        }
        let _ = (key, h, path, kind);
    }

    /// Connection `key` is gone.
    pub(super) fn qlog_forget(&mut self, key: ConnKey) {
        #[cfg(feature = "qlog")]
        if let (Some(token), Some(factory)) = (self.qlog.tokens.remove(&key), &self.qlog.factory) {
            factory.unlabelled(token);
        }
        let _ = key;
    }
}
