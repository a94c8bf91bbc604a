//! Test support for KWIK integration tests.
//!
//! - [`net`]: the `kwik-sim` crate's deterministic, virtual-time, in-process network
//!   (links with rate, delay, jitter, loss, reordering, MTU and drop-tail queues);
//! - [`sim`]: KWIK engines driven over that network, with bare QUIC peers beside them;
//! - [`pair`]: the usual scenario of one server and one client on one link;
//! - [`certs`]: self-signed certificates and configs;
//! - [`raw`]: a bare QUIC peer for hostile scenarios;
//! - [`fuzz`]: the checks behind every fuzz target: the engine harnesses and, in
//!   [`fuzz::peer`], scenarios with hostile established peers;
//! - [`cluster`], [`failover`]: the multi-server scenarios (a client, a primary and
//!   secondaries);
//! - [`runtimes`]: runners for the suites run on both async runtimes;
//! - [`soak`]: many sessions, faults and hostile peers over a virtual minute;
//! - [`app`]: small application behaviours (echo servers, bulk readers) for scenarios;
//! - [`stock`]: quinn endpoints that speak an application protocol and no KWIK, for the
//!   interop suites.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod certs;
pub mod cluster;
pub mod failover;
pub mod fuzz;
pub use kwik_sim::net;
pub mod pair;
pub mod raw;
pub mod raw_session;
pub mod runtimes;
pub mod sim;
pub mod soak;
pub mod stock;
