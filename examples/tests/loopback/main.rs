//! The examples' servers on real loopback sockets.

mod prometheus;
