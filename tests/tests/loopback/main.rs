//! Real UDP sockets on loopback, on both runtimes (tokio and smol). One module per
//! scenario.

mod plain_quic;
mod qlog_files;
mod runtime_suite;
