//! The examples' servers on real loopback sockets.

mod dialing;
mod prometheus;
