//! Fuzz harnesses of kwik-core. The checks live in [`harness`] so that
//! `kwik-core/tests/fuzz_corpus.rs` replays the committed corpora with exactly the same code.
#![forbid(unsafe_code)]

pub mod harness;
