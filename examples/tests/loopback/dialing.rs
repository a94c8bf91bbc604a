//! How the examples reach a server named by a URL: the host is resolved, its addresses are
//! tried in order, and the certificate is checked against a pinned one or the platform's
//! roots.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use kwik_examples::{
    bulk_config, dial_first, resolve, self_signed, serve, server_config, trusting,
};

/// A KWIK server on loopback with the examples' self-signed certificate (for `localhost`),
/// and that certificate written to a file, as `h3_server` writes it.
fn server() -> (SocketAddr, TempCert) {
    let (cert, key) = self_signed().unwrap();
    let endpoint = kwik_tokio::listen(
        "127.0.0.1:0".parse().unwrap(),
        server_config(&cert, &key, bulk_config()).unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(serve(endpoint, Vec::new(), "localhost".to_owned()));
    (addr, TempCert::write(cert.as_ref()))
}

/// A certificate file, removed when dropped.
struct TempCert(std::path::PathBuf);

impl TempCert {
    fn write(der: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "kwik-dialing-{}-{}.der",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, der).unwrap();
        Self(path)
    }
}

impl Drop for TempCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn urls_resolve_names_and_literals() {
    let (host, addrs) = resolve(&"https://localhost:4433/f".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(host, "localhost");
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 4433),
        "{addrs:?}"
    );

    let (host, addrs) = resolve(&"https://127.0.0.1/f".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(host, "127.0.0.1");
    assert_eq!(addrs, vec!["127.0.0.1:443".parse::<SocketAddr>().unwrap()]);

    let (host, addrs) = resolve(&"https://[::1]:8443/".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(host, "::1");
    assert_eq!(addrs, vec!["[::1]:8443".parse::<SocketAddr>().unwrap()]);

    assert!(resolve(&"/no-host".parse().unwrap()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_tried_in_order_until_one_answers() {
    let (addr, cert) = server();
    // A socket that takes datagrams and never answers: the first address times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addrs = [silent.local_addr().unwrap(), addr];
    let config = trusting(Some(&cert.0), bulk_config()).unwrap();
    let (_endpoint, session) = dial_first(&config, &addrs, "localhost", Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(session.remote_address(), addr);

    // None answers: the error names every address.
    let err = dial_first(
        &config,
        &addrs[..1],
        "localhost",
        Duration::from_millis(300),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains(&addrs[0].to_string()) && err.contains("no answer"),
        "{err}"
    );
}

/// Why dialing `addr` as `name` with `config` failed (it must fail).
async fn refusal(config: &kwik_tokio::ClientConfig, addr: SocketAddr, name: &str) -> String {
    dial_first(config, &[addr], name, Duration::from_secs(5))
        .await
        .err()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_checked_against_the_name_and_the_roots() {
    let (addr, cert) = server();
    let pinned = trusting(Some(&cert.0), bulk_config()).unwrap();
    // The pinned certificate is for `localhost`: another name is refused in the handshake.
    let err = refusal(&pinned, addr, "example.com").await;
    assert!(err.contains("not valid for name"), "{err}");
    // The platform's roots do not hold the self-signed certificate (or the machine has no
    // roots, which `trusting` reports).
    match trusting(None, bulk_config()) {
        Ok(platform) => {
            let err = refusal(&platform, addr, "localhost").await;
            assert!(err.contains("UnknownIssuer"), "{err}");
        }
        Err(e) => assert!(e.to_string().contains("root certificates"), "{e}"),
    }
}
