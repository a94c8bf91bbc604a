//! Stock quinn peers for comparisons: a quinn client endpoint and a quinn server config
//! with the same certificate, TLS 1.3 and ring as a KWIK endpoint gets.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A quinn client endpoint on loopback trusting `cert` alone, with `transport` and ALPN
/// `alpn` (if given).
pub fn quinn_client(
    cert: &rustls::pki_types::CertificateDer<'static>,
    transport: Arc<quinn::TransportConfig>,
    alpn: Option<&[u8]>,
) -> anyhow::Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(crypto));
    client_cfg.transport_config(transport);
    let mut client = quinn::Endpoint::client(LOOPBACK)?;
    client.set_default_client_config(client_cfg);
    Ok(client)
}

/// A quinn server config serving `cert` with `transport` and ALPN `alpn` (if given).
pub fn quinn_server_config(
    cert: &rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    transport: Arc<quinn::TransportConfig>,
    alpn: Option<&[u8]>,
) -> anyhow::Result<quinn::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)?;
    tls.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}
