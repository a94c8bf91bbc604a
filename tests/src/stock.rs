//! Endpoints of a QUIC stack not written here (quinn) for the interop suites: a server and
//! a client that speak one application protocol by ALPN and nothing of KWIK. Their TLS
//! settings are the raw peers' ([`crate::raw`]); quinn's configs are quinn-proto's.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::certs::TestCert;
use crate::raw::{client_config_for, server_config_for};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A quinn server on loopback serving `cert`, speaking `alpn`, with `transport` if given.
pub fn quinn_server(
    cert: &TestCert,
    alpn: &[u8],
    transport: Option<Arc<quinn::TransportConfig>>,
) -> quinn::Endpoint {
    let mut config = server_config_for(cert, alpn);
    if let Some(t) = transport {
        config.transport_config(t);
    }
    quinn::Endpoint::server(config, loopback()).expect("a quinn server")
}

/// A quinn client on loopback trusting `cert` alone, offering `alpn`, with `transport` if
/// given. Call it inside a tokio runtime.
pub fn quinn_client(
    cert: &TestCert,
    alpn: &[u8],
    transport: Option<Arc<quinn::TransportConfig>>,
) -> quinn::Endpoint {
    let mut config = client_config_for(std::slice::from_ref(&cert.cert), alpn);
    if let Some(t) = transport {
        config.transport_config(t);
    }
    let mut endpoint = quinn::Endpoint::client(loopback()).expect("a quinn client");
    endpoint.set_default_client_config(config);
    endpoint
}
