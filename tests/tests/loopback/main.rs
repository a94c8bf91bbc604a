//! Real UDP sockets on loopback, on both runtimes (tokio and smol). One module per
//! scenario.

mod qlog_files;
mod runtime_suite;
