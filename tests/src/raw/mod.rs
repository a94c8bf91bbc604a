//! A raw QUIC peer for hostile scenarios: a bare `quinn_proto` client that speaks as much
//! KWIK as a test wants (TLS with the KWIK ALPN, a Hello on the control stream) and then
//! writes whatever bytes it likes on its streams.
//!
//! Register one with [`RawHosts::add_raw`](crate::sim::RawHosts::add_raw); the simulation loop
//! delivers its datagrams and fires its timers like those of any node.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kwik_core::frame::Frame;
use kwik_core::{CertificateDer, PrivateKeyDer, rustls};
use kwik_proto::control_frame::Kind;
use kwik_proto::{ControlFrame, Limits};
use prost::Message;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{Connection, ConnectionHandle, Dir, StreamId};

use crate::certs::TestCert;
use crate::net::Datagram;

mod client;
mod server;

pub use client::RawPeer;
pub use server::RawServer;

/// A QUIC client config with the KWIK ALPN that trusts only `roots` (TLS 1.3, ring).
pub fn client_config(roots: &[CertificateDer<'static>]) -> quinn_proto::ClientConfig {
    client_config_for(roots, kwik_core::ALPN)
}

/// A QUIC client config offering the ALPN `alpn` alone that trusts only `roots`: with
/// another protocol than KWIK's, a plain QUIC client.
pub fn client_config_for(
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
) -> quinn_proto::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone()).expect("valid root certificate");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3 is supported")
    .with_root_certificates(store)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("TLS 1.3 config usable for QUIC");
    quinn_proto::ClientConfig::new(Arc::new(crypto))
}

/// Generous limits for a raw peer's Hello.
pub fn default_limits() -> Limits {
    Limits {
        max_data: 1 << 24,
        max_stream_data: 1 << 22,
        max_bidi_streams: 100,
        max_uni_streams: 100,
        max_paths: 1,
    }
}

/// `kind` as one length-delimited control frame.
pub fn control_frame(kind: Option<Kind>) -> Vec<u8> {
    ControlFrame { kind }.encode_length_delimited_to_vec()
}

/// The encoding of data-plane `frames`, back to back.
pub fn frames(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// Bytes queued for one QUIC stream.
#[derive(Default)]
struct Outgoing {
    data: VecDeque<Bytes>,
    fin: bool,
}

/// Hands queued bytes (and fins) to QUIC as far as its credit allows; forgets streams
/// whose every byte was taken.
fn flush_outgoing(conn: &mut Connection, outgoing: &mut BTreeMap<StreamId, Outgoing>) {
    let mut done = Vec::new();
    for (&id, out) in outgoing.iter_mut() {
        let mut stream = conn.send_stream(id);
        while !out.data.is_empty() {
            match stream.write_chunks(out.data.make_contiguous()) {
                Ok(written) => {
                    out.data.drain(..written.chunks);
                    if written.bytes == 0 {
                        break;
                    }
                }
                Err(_) => {
                    // Stopped or reset: nothing more goes out on it.
                    out.data.clear();
                    out.fin = false;
                }
            }
        }
        if out.data.is_empty() {
            if out.fin {
                let _ = stream.finish();
            }
            done.push(id);
        }
    }
    for id in done {
        outgoing.remove(&id);
    }
}

/// One bare quinn-proto endpoint with at most one connection, on the simulated network:
/// the plumbing a raw client and a raw server share.
struct Quic {
    addr: SocketAddr,
    endpoint: quinn_proto::Endpoint,
    conn: Option<(ConnectionHandle, Connection)>,
    /// Datagrams the endpoint answered on its own.
    responses: VecDeque<Datagram>,
    /// Bytes queued on streams this end opened (or the control stream of a client).
    outgoing: BTreeMap<StreamId, Outgoing>,
    buf: Vec<u8>,
}

impl Quic {
    fn new(addr: SocketAddr, endpoint: quinn_proto::Endpoint) -> Self {
        Self {
            addr,
            endpoint,
            conn: None,
            responses: VecDeque::new(),
            outgoing: BTreeMap::new(),
            buf: Vec::with_capacity(2048),
        }
    }

    fn conn(&mut self) -> Option<&mut Connection> {
        self.conn.as_mut().map(|(_, c)| c)
    }

    fn open(&mut self, dir: Dir) -> Option<StreamId> {
        self.conn()?.streams().open(dir)
    }

    fn write(&mut self, id: StreamId, data: Bytes) {
        let out = self.outgoing.entry(id).or_default();
        if !data.is_empty() {
            out.data.push_back(data);
        }
    }

    fn finish(&mut self, id: StreamId) {
        self.outgoing.entry(id).or_default().fin = true;
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn()?.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(conn) = self.conn()
            && conn.poll_timeout().is_some_and(|t| t <= now)
        {
            conn.handle_timeout(now);
        }
    }

    /// An answer of the endpoint's own, else the connection's next datagram.
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        if let Some(dg) = self.responses.pop_front() {
            return Some(dg);
        }
        let (_, conn) = self.conn.as_mut()?;
        self.buf.clear();
        let t = conn.poll_transmit(now, 1, &mut self.buf)?;
        Some(Datagram {
            src: self.addr,
            dst: t.destination,
            ecn: t.ecn.map(|e| e as u8),
            data: self.buf[..t.size].to_vec(),
        })
    }
}

/// A QUIC server config with the KWIK ALPN serving `cert` (TLS 1.3, ring).
pub fn server_config(cert: &TestCert) -> quinn_proto::ServerConfig {
    server_config_for(cert, kwik_core::ALPN)
}

/// A QUIC server config speaking the ALPN `alpn` alone, serving `cert`: with another
/// protocol than KWIK's, a plain QUIC server.
pub fn server_config_for(cert: &TestCert, alpn: &[u8]) -> quinn_proto::ServerConfig {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3 is supported")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.cert.clone()],
        PrivateKeyDer::Pkcs8(cert.key.clone_key()),
    )
    .expect("valid certificate and key");
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).expect("TLS 1.3 config usable for QUIC");
    quinn_proto::ServerConfig::with_crypto(Arc::new(crypto))
}

/// The first connection id of a client's QUIC v1 Initial packet in `datagram`, if the
/// datagram starts with one: every connection attempt picks a fresh one and keeps it for
/// its retransmissions, so distinct ids count distinct attempts.
pub fn initial_dcid(datagram: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = datagram.split_first()?;
    // Long header, fixed bit, packet type Initial (0b00).
    if first & 0xf0 != 0xc0 || rest.get(..4)? != [0, 0, 0, 1] {
        return None;
    }
    let len = usize::from(*rest.get(4)?);
    rest.get(5..5 + len)
}
