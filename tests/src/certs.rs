//! Self-signed test certificates and ready-made KWIK configs.

use kwik_core::{
    CertificateDer, ClientConfig, Config, PrivateKeyDer, PrivatePkcs8KeyDer, ServerConfig,
};

/// A certificate for `names`, with its key.
pub struct TestCert {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    /// DER PKCS#8 key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl TestCert {
    /// A self-signed certificate for `localhost`.
    pub fn localhost() -> Self {
        Self::for_names(&["localhost"])
    }

    /// A self-signed certificate for the given names.
    pub fn for_names(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let certified =
            rcgen::generate_simple_self_signed(names).expect("rcgen generates a certificate");
        Self {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        }
    }

    /// A server config serving this certificate.
    pub fn server(&self, config: Config) -> ServerConfig {
        ServerConfig::with_single_cert(
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
            config,
        )
        .expect("valid server config")
    }

    /// A client config trusting only this certificate.
    pub fn client(&self, config: Config) -> ClientConfig {
        ClientConfig::with_root_certificates([self.cert.clone()], config)
            .expect("valid client config")
    }
}
