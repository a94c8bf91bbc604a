//! The checks behind every fuzz target (`fuzz/fuzz_targets`).
//!
//! Each function takes the raw fuzz input and panics on a failed check. The fuzz targets
//! call them, and the virtual-time tier replays the committed corpora (`fuzz/corpus`) with
//! the same checks (`tests/tests/sim_hostile/fuzz_corpus.rs` and `fuzz_peer_corpus.rs`).
//! The engine harnesses here drive kwik-core directly; [`peer`] plays a hostile
//! established peer over the test support's simulator.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kwik_core::{
    CertificateDer, ClientConfig, Config, PrivateKeyDer, PrivatePkcs8KeyDer, ServerConfig, StreamId,
};

mod decode;
mod input;
mod multi;
pub mod peer;
mod streams;

pub use decode::{control_chunk_size, control_decode, frame_decode};
pub use input::engine_input;
pub use multi::{engine_multi, engine_multi_report};
pub use streams::engine_streams;

/// Self-signed certificate for `localhost` (DER), generated once with rcgen.
pub const CERT_DER: &[u8] = include_bytes!("cert.der");
/// Its PKCS#8 private key (DER).
pub const KEY_DER: &[u8] = include_bytes!("key.der");

/// The fixed clock origin of the engine harnesses: captured once per process, so that a
/// run's timeline depends on the input only.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn fuzz_config(bits: u8) -> Config {
    let mut c = Config::default();
    // Time only advances as the input says: no idle timeout within one run.
    c.idle_timeout = Duration::from_secs(3600);
    // Health probes would keep timers due forever; the simulated link never dies here.
    c.path_health_check_interval = Duration::from_secs(3600);
    c.stream_receive_window = if bits & 1 != 0 { 1024 } else { 64 << 10 };
    c.receive_window = if bits & 2 != 0 {
        c.stream_receive_window
    } else {
        1 << 20
    };
    let streams = if bits & 4 != 0 { 2 } else { 64 };
    c.max_concurrent_bidi_streams = streams;
    c.max_concurrent_uni_streams = streams;
    c.streams_per_carrier = if bits & 8 != 0 { 1 } else { 4 };
    c.max_carriers_per_path = if bits & 16 != 0 { 1 } else { 8 };
    c
}

/// A server config with the committed certificate.
pub fn server_config(config: Config) -> ServerConfig {
    ServerConfig::with_single_cert(
        vec![CertificateDer::from(CERT_DER)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY_DER)),
        config,
    )
    .expect("the committed certificate and key make a server config")
}

/// A client config trusting only the committed certificate.
pub fn client_config(config: Config) -> ClientConfig {
    ClientConfig::with_root_certificates([CertificateDer::from(CERT_DER)], config)
        .expect("the committed certificate makes a client config")
}

/// Most datagrams one drain may produce before the endpoint is deemed to loop.
const MAX_DRAIN: usize = 10_000;

/// The byte at `offset` of logical stream `id`, in either direction.
pub fn pattern(id: StreamId, offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8) ^ id.0.wrapping_mul(131)) as u8
}

fn pattern_bytes(id: StreamId, offset: u64, n: usize) -> Vec<u8> {
    (0..n as u64).map(|i| pattern(id, offset + i)).collect()
}

/// What a run of [`engine_multi`] reached; the corpus test checks the seeds with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MultiReport {
    /// `PathActive` events on the primary for secondary paths.
    pub secondaries_joined: u64,
    /// `PathActive` events on the primary for same-peer paths.
    pub same_peer_joined: u64,
    /// Stripes started.
    pub stripes: u64,
    /// `StripeFinished` events.
    pub stripes_finished: u64,
    /// Delegations made with `delegate`.
    pub delegations: u64,
    /// Body bytes the secondaries wrote.
    pub secondary_bytes: u64,
    /// `PathFailed` events on the client.
    pub path_failures: u64,
    /// `DelegationFinished` events with a failed outcome (the primary serves the rest).
    pub delegations_failed: u64,
    /// Streams read to the fin.
    pub completed: usize,
    /// The sessions were alive at the end, so every stream had to complete.
    pub completion_checked: bool,
}
