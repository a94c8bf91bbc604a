//! KWIK control-plane messages.
//!
//! The types are generated from `control.proto` by prost (with protox as the protobuf
//! compiler) and committed as `kwik.control.v1.rs`, so building needs no `protoc` and no
//! build script: after changing `control.proto`, run
//! `cargo run --manifest-path proto/codegen/Cargo.toml` (a source test checks the file
//! was regenerated).
//!
//! Framing (length prefixes, size bounds) lives in `kwik-core`, next to the state machine
//! that consumes the messages.
#![forbid(unsafe_code)]
#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Version 1 of the control protocol (`package kwik.control.v1`).
pub mod v1 {
    include!("kwik.control.v1.rs");
}

pub use v1::*;

/// The control protocol version this crate speaks.
pub const VERSION: u32 = 1;
