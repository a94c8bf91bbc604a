//! Configuration: the session knobs ([`Config`]) and the TLS-bearing client and server
//! configurations built on them.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{ErrorCode, ProtocolError};
use crate::join::{GroupKey, GroupKeys};
use crate::varint;
use bytes::Bytes;

/// The default of `Config::raw_receive_queue`: most raw datagrams a session holds for the
/// application; beyond, new ones are dropped, as a full socket buffer would.
pub const RAW_QUEUE_LIMIT: usize = 1024;

/// The ALPN protocol identifier of KWIK version 1.
pub const ALPN: &[u8] = b"kwik/1";

/// A stream count as QUIC carries it.
pub(crate) fn count(n: u64) -> VarInt {
    VarInt::from_u64(n).unwrap_or(VarInt::MAX)
}

/// The largest UDP payload a path's datagrams take (quinn-proto's default ceiling).
const MAX_UDP_PAYLOAD: u16 = 1452;

/// How a writer spreads frames over several paths to the same peer.
///
/// With one path per peer every strategy behaves the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LoadBalancing {
    /// The path with the lowest smoothed RTT that has congestion window left.
    #[default]
    MinRtt,
    /// Paths in turn.
    RoundRobin,
    /// In proportion to each path's rate (congestion window over RTT).
    Weighted,
    /// The path with the earliest expected completion of the frame.
    Adaptive,
    /// Every frame on every path; the receiver keeps the first copy. A path that falls
    /// more than 4 MiB behind drops copies rather than queue them.
    Redundant,
}

/// Session knobs, shared by both roles. Every field has a documented default; build with
/// `Config::default()` and change fields, then [`Config::validate`] (the endpoint validates
/// again when it takes the config).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Most paths one session may hold, primary included. Default 8. A client refuses
    /// `AddPath` beyond it; a primary's `add_path` fails beyond it.
    pub max_paths_per_session: u32,
    /// `AddPath` requests a client acts on per second, in bursts of up to
    /// `max_paths_per_session`; more are refused. Default 4.
    pub add_path_rate: u32,
    /// Whether a primary may point the client at addresses of a narrower scope than its own
    /// (a public server at a private or loopback address). Default false.
    pub allow_scope_escalation: bool,
    /// How long a join proof stays valid after the primary issued it. Default 60 s.
    pub join_proof_lifetime: Duration,
    /// How long a delegation ticket stays valid after the primary issued (or last
    /// refreshed) it. The primary refreshes the tickets of unfinished stripes and the
    /// secrets of live paths every half of the shorter of this and
    /// `join_proof_lifetime`. Default 60 s.
    pub ticket_lifetime: Duration,
    /// Striping: each chunk is sized to take about this long on its path. Default 100 ms.
    pub stripe_chunk_time: Duration,
    /// Striping: chunks outstanding per path. Default 3.
    pub stripe_depth: u32,
    /// Logical streams with bytes or a fin still to frame that share one carrier (QUIC
    /// stream) before another carrier opens. Default 4. A stream's slot frees when its fin
    /// is framed, so a round of short streams shares one carrier. With 1, each logical
    /// stream gets a QUIC stream of its own, finished with it: plain QUIC's isolation (no
    /// stream waits behind another one's lost bytes), at the price of a QUIC stream per
    /// logical stream. Fewer means less head-of-line blocking under loss, more means fewer
    /// QUIC streams (`tests/tests/sim/carrier_sharing.rs` measures both).
    ///
    /// An open stream that shares a carrier with a bulk stream also waits behind every bulk
    /// byte framed on it before its own: 15 message streams beside a 32 MiB body at
    /// 100 Mbit/s see a p99 of 323 ms with the default against 61 ms with 1. Streams that
    /// carry latency-sensitive messages beside bulk transfers want 1.
    pub streams_per_carrier: u32,
    /// Most data carriers per path and direction. Default 64.
    pub max_carriers_per_path: u32,
    /// Whether a stream's bytes may come from several servers (delegation and striping).
    /// Default true; when false, `delegate` and `stripe` fail.
    pub aggregation_enabled: bool,
    /// How a writer spreads stream frames over several paths to one peer (same-peer
    /// multipath, see `Session::add_same_peer_path`). Default [`LoadBalancing::MinRtt`].
    pub load_balancing: LoadBalancing,
    /// Interval of the health probes (`Ping`, from both ends) on each busy path. Default
    /// 250 ms. A path that carried nothing but probes for two windows is idle and is probed
    /// at the idle cadence instead (see `keep_alive_interval`).
    pub path_health_check_interval: Duration,
    /// A busy path fails after `max(3 × RTT, interval × threshold)` without an answer, an
    /// idle one after `threshold` idle intervals. Default 3.
    pub path_failure_threshold: u32,
    /// How long a failed secondary path is retried before it is removed. Default 10 s.
    /// A failed primary path ends the session with `SessionError::PathUnresponsive`.
    pub path_recovery_timeout: Duration,
    /// Whether the engine emits periodic [`Event::Metrics`](crate::Event::Metrics). Default false.
    pub metrics_enabled: bool,
    /// Period of metrics events. Default 1 s.
    pub metrics_interval: Duration,
    /// Bidirectional logical streams the peer may have open at once. Default 256.
    pub max_concurrent_bidi_streams: u64,
    /// Unidirectional logical streams the peer may have open at once. Default 256.
    pub max_concurrent_uni_streams: u64,
    /// Bytes the peer may send on one logical stream ahead of the reader. Default 4 MiB.
    pub stream_receive_window: u64,
    /// Bytes the peer may send on all logical streams ahead of the readers. Default 32 MiB.
    pub receive_window: u64,
    /// Separate out-of-order ranges one stream may buffer. Default 1024.
    pub max_reassembly_gaps: usize,
    /// Raw datagrams received and not yet read that a session holds; more are dropped
    /// (`SessionStats::raw_dropped`). Datagrams have no flow control: a reader that falls
    /// behind a burst loses what does not fit. Default [`RAW_QUEUE_LIMIT`] (1024).
    pub raw_receive_queue: usize,
    /// Control messages the peer may send per second on one path, in bursts of as many.
    /// More closes the session with `ErrorCode::ControlRate`. Default 1000.
    pub max_control_messages_per_sec: u32,
    /// Idle timeout of each path's QUIC connection (the smaller of the two sides' applies).
    /// Default 30 s. A busy KWIK path fails sooner on silence, through its health probes;
    /// a plain session has no probes: this is how long its peer may go silent.
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval; `None` sends none. Default 10 s: an idle session (KWIK or
    /// plain) then stays open for as long as both ends live. It is also the idle cadence
    /// of a KWIK path's health: an idle path is probed by QUIC's keep-alive alone when this
    /// is at most a third of `idle_timeout` (else the client sends a `Ping` every third of
    /// `idle_timeout`), and fails after `path_failure_threshold` such intervals of silence.
    /// Busy paths' own probes keep packets flowing, so it does not fire there.
    pub keep_alive_interval: Option<Duration>,
    /// Application protocols this side speaks over the session, most preferred first, named
    /// as ALPN names them (`b"h3"` for HTTP/3); at most 16 of 1 to 255 bytes. A client
    /// offers them in its Hello. A server with a list picks the first of its own that the
    /// client offered, and refuses a client that offered none of them
    /// (`ErrorCode::NoApplicationProtocol`); a server without one picks none. Either side
    /// reads the choice from its session. Default: empty.
    ///
    /// They are also TLS ALPN names: a server's ALPN list is `kwik/1` followed by these (with
    /// `accept_plain`), so that a peer that does not speak KWIK (a stock HTTP/3 client, a
    /// browser) reaches the same port as a [plain session](crate::Mode::Plain); a client
    /// offers them after `kwik/1` on its primary path, and falls back to a plain session
    /// when the server picks one of them (unless `require_kwik`).
    pub app_protocols: Vec<Vec<u8>>,
    /// Server: admits peers that do not speak KWIK, as plain sessions, when they negotiate
    /// one of `app_protocols` by ALPN. Without `app_protocols` there is nothing to
    /// negotiate and only KWIK clients are admitted. A joins-only server
    /// ([`ServerConfig::joins_only`]) never admits them. Default true.
    pub accept_plain: bool,
    /// Client: refuses to fall back to a plain session when the server picks an
    /// application protocol instead of `kwik/1`; the session then ends with
    /// `SessionError::FallbackRefused`, naming the server's choice. Default false.
    pub require_kwik: bool,
}

/// Most application protocols a side may name (see [`Config::app_protocols`]).
pub(crate) const MAX_APP_PROTOCOLS: usize = 16;

/// The server's choice among the application protocols a client offered: the first of its
/// own list the client named (its preference wins, as with ALPN), none when it has no list,
/// and a refusal when the client named none of them.
pub(crate) fn choose_app_protocol(
    ours: &[Vec<u8>],
    offered: &[Vec<u8>],
) -> Result<Option<Bytes>, ProtocolError> {
    if ours.is_empty() {
        return Ok(None);
    }
    if offered.len() > MAX_APP_PROTOCOLS {
        return Err(ProtocolError::new(
            ErrorCode::Handshake,
            "client offered too many application protocols",
        ));
    }
    match ours.iter().find(|p| offered.contains(p)) {
        Some(p) => Ok(Some(Bytes::copy_from_slice(p))),
        None => Err(ProtocolError::new(
            ErrorCode::NoApplicationProtocol,
            "no application protocol in common",
        )),
    }
}

/// The ALPN list of a connection: `kwik/1`, then the application protocols when plain
/// peers are admitted (server) or fallback is possible (a client's primary path).
fn alpn_list(config: &Config, plain: bool) -> Vec<Vec<u8>> {
    let mut list = vec![ALPN.to_vec()];
    if plain {
        list.extend(
            config
                .app_protocols
                .iter()
                .filter(|p| p[..] != *ALPN)
                .cloned(),
        );
    }
    list
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_paths_per_session: 8,
            add_path_rate: 4,
            allow_scope_escalation: false,
            join_proof_lifetime: Duration::from_secs(60),
            ticket_lifetime: Duration::from_secs(60),
            stripe_chunk_time: Duration::from_millis(100),
            stripe_depth: 3,
            streams_per_carrier: 4,
            max_carriers_per_path: 64,
            aggregation_enabled: true,
            load_balancing: LoadBalancing::MinRtt,
            path_health_check_interval: Duration::from_millis(250),
            path_failure_threshold: 3,
            path_recovery_timeout: Duration::from_secs(10),
            metrics_enabled: false,
            metrics_interval: Duration::from_secs(1),
            max_concurrent_bidi_streams: 256,
            max_concurrent_uni_streams: 256,
            stream_receive_window: 4 << 20,
            receive_window: 32 << 20,
            max_reassembly_gaps: 1024,
            raw_receive_queue: RAW_QUEUE_LIMIT,
            max_control_messages_per_sec: 1000,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            app_protocols: Vec::new(),
            accept_plain: true,
            require_kwik: false,
        }
    }
}

/// A [`Config`] field holds a value KWIK cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn check(ok: bool, field: &'static str, reason: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError { field, reason })
    }
}

impl Config {
    /// Checks every field against its valid range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.app_protocols.len() <= MAX_APP_PROTOCOLS
                && self
                    .app_protocols
                    .iter()
                    .all(|p| (1..=255).contains(&p.len())),
            "app_protocols",
            "must be at most 16 names of 1..=255 bytes",
        )?;
        check(
            (1..=1 << 20).contains(&self.raw_receive_queue),
            "raw_receive_queue",
            "must be 1..=1048576",
        )?;
        check(
            (1..=64).contains(&self.max_paths_per_session),
            "max_paths_per_session",
            "must be 1..=64",
        )?;
        check(
            (1..=256).contains(&self.streams_per_carrier),
            "streams_per_carrier",
            "must be 1..=256",
        )?;
        check(
            (1..=1024).contains(&self.max_carriers_per_path),
            "max_carriers_per_path",
            "must be 1..=1024",
        )?;
        check(
            !self.path_health_check_interval.is_zero(),
            "path_health_check_interval",
            "must be positive",
        )?;
        check(
            self.path_failure_threshold >= 1,
            "path_failure_threshold",
            "must be at least 1",
        )?;
        check(
            !self.metrics_interval.is_zero(),
            "metrics_interval",
            "must be positive",
        )?;
        check(
            self.max_concurrent_bidi_streams <= 1 << 60,
            "max_concurrent_bidi_streams",
            "must be at most 2^60",
        )?;
        check(
            self.max_concurrent_uni_streams <= 1 << 60,
            "max_concurrent_uni_streams",
            "must be at most 2^60",
        )?;
        check(
            self.stream_receive_window >= 1024 && self.stream_receive_window <= varint::MAX,
            "stream_receive_window",
            "must be 1 KiB..2^62",
        )?;
        check(
            self.receive_window >= self.stream_receive_window && self.receive_window <= varint::MAX,
            "receive_window",
            "must be at least stream_receive_window and below 2^62",
        )?;
        check(
            self.max_reassembly_gaps >= 1,
            "max_reassembly_gaps",
            "must be at least 1",
        )?;
        check(
            self.max_control_messages_per_sec >= 1,
            "max_control_messages_per_sec",
            "must be at least 1",
        )?;
        check(
            self.add_path_rate >= 1,
            "add_path_rate",
            "must be at least 1",
        )?;
        check(
            !self.join_proof_lifetime.is_zero(),
            "join_proof_lifetime",
            "must be positive",
        )?;
        check(
            self.ticket_lifetime >= Duration::from_secs(2),
            "ticket_lifetime",
            "must be at least 2 s (expiries count whole seconds)",
        )?;
        check(
            !self.stripe_chunk_time.is_zero(),
            "stripe_chunk_time",
            "must be positive",
        )?;
        check(
            (1..=16).contains(&self.stripe_depth),
            "stripe_depth",
            "must be 1..=16",
        )?;
        check(
            IdleTimeout::try_from(self.idle_timeout).is_ok() && !self.idle_timeout.is_zero(),
            "idle_timeout",
            "must be positive and fit a QUIC varint of milliseconds",
        )?;
        Ok(())
    }

    /// QUIC unidirectional streams a KWIK path lets its peer open: data carriers plus the
    /// signal carrier.
    pub(crate) fn kwik_uni_streams(&self) -> u64 {
        u64::from(self.max_carriers_per_path) + 1
    }

    /// The QUIC transport parameters of every path of a session with this config.
    ///
    /// QUIC's datagram receive buffer holds `raw_receive_queue` datagrams of up to
    /// `MAX_UDP_PAYLOAD` bytes, at least 1 MiB.
    pub(crate) fn transport(&self) -> TransportConfig {
        let mut t = TransportConfig::default();
        // Before the ALPN is known, what both modes allow (credit granted in transport
        // parameters cannot be taken back): the control stream is KWIK's only
        // bidirectional QUIC stream, and a plain peer gets no more unidirectional streams
        // than its limit. `Path::set_stream_limits` raises them once the mode is known.
        t.max_concurrent_bidi_streams(VarInt::from_u32(1));
        t.max_concurrent_uni_streams(count(
            self.kwik_uni_streams().min(self.max_concurrent_uni_streams),
        ));
        // Carriers are drained as soon as bytes arrive: logical flow control bounds the
        // memory, so QUIC's windows only need to cover the bandwidth-delay product.
        let window = self.receive_window.max(16 << 20);
        t.stream_receive_window(VarInt::from_u64(window).unwrap_or(VarInt::MAX));
        t.receive_window(VarInt::from_u64(window.saturating_mul(2)).unwrap_or(VarInt::MAX));
        t.send_window(window.saturating_mul(2));
        t.max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok());
        t.keep_alive_interval(self.keep_alive_interval);
        // Raw datagrams wait in QUIC's buffer until the next drive moves them to the
        // session's queue; between two drives a burst may fill the whole queue.
        t.datagram_receive_buffer_size(Some(
            self.raw_receive_queue
                .saturating_mul(usize::from(MAX_UDP_PAYLOAD))
                .max(1 << 20),
        ));
        t
    }
}

/// How a client dials: TLS settings plus the session [`Config`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The primary path's: ALPN `kwik/1` and the application protocols (fallback).
    pub(crate) quic: quinn_proto::ClientConfig,
    /// Every other path's: ALPN `kwik/1` alone, so that no primary can steer the client
    /// onto a server that does not speak KWIK.
    pub(crate) paths: quinn_proto::ClientConfig,
    pub(crate) config: Arc<Config>,
}

/// Failure to build a client or server configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A TLS setting was refused.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The rustls configuration cannot carry QUIC (no TLS 1.3 or no initial cipher suite).
    #[error("tls config unusable for QUIC")]
    NoInitialCipherSuite,
    /// A session knob is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClientConfig {
    /// Trusts the given root certificates (DER) and uses `config`.
    pub fn with_root_certificates(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
        config: Config,
    ) -> Result<Self, SetupError> {
        let mut store = rustls::RootCertStore::empty();
        for cert in roots {
            store.add(cert)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(store)
            .with_no_client_auth();
        Self::from_rustls(tls, config)
    }

    /// Uses a rustls configuration of the caller's making; ALPN is set to `kwik/1` followed
    /// by `Config::app_protocols` on the primary path, `kwik/1` alone on the others.
    pub fn from_rustls(mut tls: rustls::ClientConfig, config: Config) -> Result<Self, SetupError> {
        config.validate()?;
        let transport = Arc::new(config.transport());
        let mut build = |alpn: Vec<Vec<u8>>| -> Result<quinn_proto::ClientConfig, SetupError> {
            tls.alpn_protocols = alpn;
            let crypto = QuicClientConfig::try_from(tls.clone())
                .map_err(|_| SetupError::NoInitialCipherSuite)?;
            let mut quic = quinn_proto::ClientConfig::new(Arc::new(crypto));
            quic.transport_config(transport.clone());
            Ok(quic)
        };
        let quic = build(alpn_list(&config, true))?;
        let paths = build(alpn_list(&config, false))?;
        Ok(Self {
            quic,
            paths,
            config: Arc::new(config),
        })
    }

    /// The session knobs.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// How a server accepts sessions: its certificate plus the session [`Config`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// ALPN `kwik/1`, then the application protocols when plain peers are admitted.
    quic_all: Arc<quinn_proto::ServerConfig>,
    /// ALPN `kwik/1` alone: a joins-only server's.
    quic_kwik: Arc<quinn_proto::ServerConfig>,
    pub(crate) config: Arc<Config>,
    /// Most sessions this server holds at once; more are refused. Default 4096.
    pub(crate) max_sessions: usize,
    /// The deployment's group keys: with them, this server adds paths to other servers
    /// and admits the sessions of other servers as a secondary.
    pub(crate) group_key: Option<GroupKeys>,
    /// Admit only joins (see [`ServerConfig::joins_only`]).
    pub(crate) joins_only: bool,
}

impl ServerConfig {
    /// Serves with one certificate chain and its private key.
    pub fn with_single_cert(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        config: Config,
    ) -> Result<Self, SetupError> {
        let tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Self::from_rustls(tls, config)
    }

    /// Uses a rustls configuration of the caller's making; ALPN is set to `kwik/1`
    /// followed by `Config::app_protocols` when `Config::accept_plain` (server preference
    /// order: a client that offers both gets `kwik/1`).
    pub fn from_rustls(mut tls: rustls::ServerConfig, config: Config) -> Result<Self, SetupError> {
        config.validate()?;
        tls.max_early_data_size = 0;
        let transport = Arc::new(config.transport());
        let mut build = |alpn: Vec<Vec<u8>>| -> Result<_, SetupError> {
            tls.alpn_protocols = alpn;
            let crypto = QuicServerConfig::try_from(tls.clone())
                .map_err(|_| SetupError::NoInitialCipherSuite)?;
            let mut quic = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
            quic.transport_config(transport.clone());
            Ok(Arc::new(quic))
        };
        let quic_all = build(alpn_list(&config, config.accept_plain))?;
        let quic_kwik = build(alpn_list(&config, false))?;
        Ok(Self {
            quic_all,
            quic_kwik,
            config: Arc::new(config),
            max_sessions: 4096,
            group_key: None,
            joins_only: false,
        })
    }

    /// Sets the most sessions held at once (default 4096), each counted once however many
    /// paths it has; connections not yet part of a session count one each. New
    /// connections beyond are refused.
    pub fn max_sessions(&mut self, n: usize) -> &mut Self {
        self.max_sessions = n;
        self
    }

    /// Sets the group key shared by the servers of this deployment, under key id 0.
    /// Without one, a server neither adds paths nor admits joins.
    pub fn group_key(&mut self, key: GroupKey) -> &mut Self {
        self.group_key = Some(GroupKeys::new(0, key));
        self
    }

    /// Sets the group keys of this deployment: the current one and up to three earlier
    /// ones, each under an operator-chosen id (see [`GroupKeys`] for rotating them; a live
    /// endpoint takes new ones with `Endpoint::set_group_keys`).
    pub fn group_keys(&mut self, keys: GroupKeys) -> &mut Self {
        self.group_key = Some(keys);
        self
    }

    /// The group keys, if any.
    pub fn keys(&self) -> Option<&GroupKeys> {
        self.group_key.as_ref()
    }

    /// Serves only as a secondary: admits paths that join sessions of the deployment's
    /// primaries, and refuses a client's own session with `ErrorCode::JoinsOnly` before it
    /// exists. Content such a server holds then goes out only against a primary's tickets.
    /// Default off.
    ///
    /// A joins-only server offers ALPN `kwik/1` alone: a peer that does not speak KWIK is
    /// refused by TLS, before anything of a session exists.
    pub fn joins_only(&mut self, on: bool) -> &mut Self {
        self.joins_only = on;
        self
    }

    /// The QUIC configuration connections are accepted with.
    pub(crate) fn quic(&self) -> &Arc<quinn_proto::ServerConfig> {
        if self.joins_only {
            &self.quic_kwik
        } else {
            &self.quic_all
        }
    }

    /// The session knobs.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_server_picks_its_own_preference_among_what_the_client_offered() {
        let names = |l: &[&str]| l.iter().map(|n| n.as_bytes().to_vec()).collect::<Vec<_>>();
        let chosen = choose_app_protocol(&names(&["h3", "echo"]), &names(&["echo", "h3"]));
        assert_eq!(chosen.unwrap().as_deref(), Some(&b"h3"[..]));
        assert_eq!(choose_app_protocol(&[], &names(&["h3"])).unwrap(), None);
        let refused = choose_app_protocol(&names(&["h3"]), &names(&["echo"])).unwrap_err();
        assert_eq!(refused.code, ErrorCode::NoApplicationProtocol);
        let refused = choose_app_protocol(&names(&["h3"]), &[]).unwrap_err();
        assert_eq!(refused.code, ErrorCode::NoApplicationProtocol);
        let flood = vec![b"x".to_vec(); MAX_APP_PROTOCOLS + 1];
        let refused = choose_app_protocol(&names(&["h3"]), &flood).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Handshake);
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        type Case = (fn(&mut Config), &'static str);
        let cases: [Case; 8] = [
            (|c| c.streams_per_carrier = 0, "streams_per_carrier"),
            (|c| c.max_paths_per_session = 0, "max_paths_per_session"),
            (|c| c.path_failure_threshold = 0, "path_failure_threshold"),
            (|c| c.stream_receive_window = 10, "stream_receive_window"),
            (|c| c.receive_window = 2048, "receive_window"),
            (|c| c.idle_timeout = Duration::ZERO, "idle_timeout"),
            (|c| c.app_protocols = vec![Vec::new()], "app_protocols"),
            (
                |c| c.app_protocols = vec![b"h3".to_vec(); 17],
                "app_protocols",
            ),
        ];
        for (mutate, field) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            assert_eq!(c.validate().map_err(|e| e.field), Err(field));
        }
    }
}
