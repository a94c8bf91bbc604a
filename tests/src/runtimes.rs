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
