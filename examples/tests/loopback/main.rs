//! The examples' servers on real loopback sockets.

mod browser;
mod dialing;
mod drain;
mod prometheus;
