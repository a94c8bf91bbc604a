//! Real UDP sockets on loopback, on both runtimes (tokio and smol). One module per
//! scenario.

mod loopback_striping;
mod qlog_files;
mod runtime_suite;
