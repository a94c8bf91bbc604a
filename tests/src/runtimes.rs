//! Runners for the suites that run on both async runtimes.

/// Runs `f` to completion on a two-worker tokio runtime.
pub fn tokio_run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// The session between `client` and `server` (on loopback, say), dialled with `config` to
/// "localhost": the server's side and the client's.
pub async fn session_pair(
    server: &kwik_async::Endpoint,
    client: &kwik_async::Endpoint,
    config: kwik_core::ClientConfig,
) -> (kwik_async::Session, kwik_async::Session) {
    let addr = server.local_addr().expect("the server's address");
    futures_lite::future::zip(
        async {
            server
                .accept()
                .await
                .expect("a connection")
                .await
                .expect("the server's session")
        },
        async {
            client
                .connect_with(config, addr, "localhost")
                .expect("a dial")
                .await
                .expect("the client's session")
        },
    )
    .await
}
