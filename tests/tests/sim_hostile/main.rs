//! Hostile peers in virtual time: raw QUIC peers that break KWIK's protocol, its limits or
//! its tickets, and the replay of every fuzz corpus. One module per scenario.

mod control_rate;
mod fuzz_corpus;
mod fuzz_findings;
mod fuzz_peer_corpus;
mod hostile_control;
mod hostile_frames;
mod hostile_primary;
mod join_auth;
mod peer_limits;
mod ticket_forgery;
