//! `engine_input`: UDP datagrams from the input, fed to a server endpoint.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kwik_core::{Endpoint, EndpointConfig, ServerConfig};

use super::{MAX_DRAIN, base, fuzz_config, server_config};

fn remote(choice: u8) -> SocketAddr {
    match choice & 3 {
        0 => SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 4433)),
        1 => SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 50_000)),
        2 => SocketAddr::from((Ipv6Addr::LOCALHOST, 1)),
        _ => SocketAddr::from((Ipv4Addr::new(192, 0, 2, 9), 0)),
    }
}

fn drain_endpoint(ep: &mut Endpoint, now: Instant, buf: &mut Vec<u8>) {
    let mut sent = 0;
    while let Some(t) = ep.poll_transmit(now, 1, buf) {
        assert!(t.size <= buf.len(), "transmit larger than its buffer");
        sent += 1;
        assert!(sent < MAX_DRAIN, "poll_transmit does not end");
    }
    ep.handle_timeout(now);
    let mut events = 0;
    while ep.poll_event().is_some() {
        events += 1;
        assert!(events < MAX_DRAIN, "poll_event does not end");
    }
}

/// Feeds the input as UDP datagrams to a server endpoint.
///
/// Input: a sequence of records `[len, meta, payload...]`, where `len` is the payload
/// length, or `[0xff, meta, len_lo, len_hi, payload...]` with a little-endian `u16` length
/// (QUIC Initials need 1200 bytes); the last payload is cut short at the end of the input. `meta & 3` picks the sender address, and
/// the clock advances by `(meta >> 2)^2 * 16` ms before the datagram (0..=63.5 s).
pub fn engine_input(data: &[u8]) {
    static SERVER: OnceLock<ServerConfig> = OnceLock::new();
    let server = SERVER.get_or_init(|| server_config(fuzz_config(0))).clone();
    let mut ep = Endpoint::new(
        EndpointConfig {
            seed: [7; 32],
            allow_mtud: false,
        },
        Some(server),
    );
    let mut now = base();
    let mut buf = Vec::with_capacity(1500);
    let mut rest = data;
    while let [len, meta, tail @ ..] = rest {
        let (len, tail) = match (*len, tail) {
            (0xff, [lo, hi, tail @ ..]) => (usize::from(u16::from_le_bytes([*lo, *hi])), tail),
            (0xff, _) => break,
            (len, tail) => (usize::from(len), tail),
        };
        let (datagram, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let step = u64::from(meta >> 2);
        now += Duration::from_millis(step * step * 16);
        ep.handle_datagram(now, remote(*meta), None, None, BytesMut::from(datagram));
        drain_endpoint(&mut ep, now, &mut buf);
    }
    // Let the timers run out: whatever the datagrams opened times out and drains.
    for _ in 0..64 {
        let Some(t) = ep.poll_timeout(now) else {
            break;
        };
        now = now.max(t);
        ep.handle_timeout(now);
        drain_endpoint(&mut ep, now, &mut buf);
    }
}
