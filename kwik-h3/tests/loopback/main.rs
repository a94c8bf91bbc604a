//! HTTP/3 and WebTransport over KWIK sessions on real loopback sockets, on both runtimes.
//! One module per scenario.

mod h3_datagrams;
mod h3_interop;
mod h3_loopback;
mod h3_striped;
mod support;
mod webtransport;
