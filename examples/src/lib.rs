//! Shared set-up of the example programs: certificates and configs.

use std::path::Path;

use kwik_core::{
    CertificateDer, ClientConfig, Config, PrivateKeyDer, PrivatePkcs8KeyDer, ServerConfig,
};

/// A self-signed certificate for `localhost` and `127.0.0.1`, with its key.
pub fn self_signed() -> anyhow::Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    Ok((cert, key))
}

/// A server config for `cert`.
pub fn server_config(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    config: Config,
) -> anyhow::Result<ServerConfig> {
    Ok(ServerConfig::with_single_cert(
        vec![cert.clone()],
        key.clone_key(),
        config,
    )?)
}

/// A client config trusting exactly `cert`.
pub fn client_config(
    cert: &CertificateDer<'static>,
    config: Config,
) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::with_root_certificates(
        [cert.clone()],
        config,
    )?)
}

/// Reads a DER certificate written by the `server` example.
pub fn read_cert(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    Ok(CertificateDer::from(std::fs::read(path)?))
}

/// Formats a byte rate.
pub fn rate(bytes: u64, secs: f64) -> String {
    format!("{:.1} Mbit/s", bytes as f64 * 8.0 / secs.max(1e-9) / 1e6)
}
