//! Endpoints of a QUIC stack not written here (quinn) for the interop suites: a server and
//! a client that speak one application protocol by ALPN and nothing of KWIK.

use std::net::SocketAddr;
use std::sync::Arc;

use kwik_core::{PrivateKeyDer, rustls};

use crate::certs::TestCert;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A quinn server on loopback serving `cert`, speaking `alpn`, with `transport` if given.
pub fn quinn_server(
    cert: &TestCert,
    alpn: &[u8],
    transport: Option<Arc<quinn::TransportConfig>>,
) -> quinn::Endpoint {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.clone()],
            PrivateKeyDer::Pkcs8(cert.key.clone_key()),
        )
        .expect("a valid certificate");
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
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
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.clone()).expect("a valid root");
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    if let Some(t) = transport {
        config.transport_config(t);
    }
    let mut endpoint = quinn::Endpoint::client(loopback()).expect("a quinn client");
    endpoint.set_default_client_config(config);
    endpoint
}
