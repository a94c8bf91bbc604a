//! KWIK control-plane messages.
//!
//! The types are generated at build time from `control.proto` by prost, using protox as
//! the protobuf compiler, so no `protoc` binary is needed. Framing (length prefixes, size
//! bounds) lives in `kwik-core`, next to the state machine that consumes the messages.
#![forbid(unsafe_code)]
#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Version 1 of the control protocol (`package kwik.control.v1`).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/kwik.control.v1.rs"));
}

pub use v1::*;

/// The control protocol version this crate speaks.
pub const VERSION: u32 = 1;
