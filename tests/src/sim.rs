//! KWIK engines over the simulated network (the `kwik-sim` crate), with the bare QUIC
//! peers of [`crate::raw`] as the world's other hosts.

use std::time::Instant;

pub use kwik_sim::{Node, NodeId, WALL_CLOCK_START, addr, drive_until};

use crate::net::{Datagram, Network};
use crate::raw::{RawPeer, RawServer};

/// A simulated world whose other hosts are bare QUIC peers and servers.
pub type Sim = kwik_sim::Sim<RawHosts>;

/// Bare QUIC peers and servers, driven alongside a [`Sim`]'s nodes.
pub struct RawHosts {
    /// Bare QUIC peers (see [`crate::raw`]).
    pub raw: Vec<RawPeer>,
    /// Bare QUIC servers (see [`crate::raw::RawServer`]).
    pub raw_servers: Vec<RawServer>,
    seed: u64,
}

impl RawHosts {
    /// Adds a bare QUIC peer at `addr`; returns its index in [`RawHosts::raw`].
    pub fn add_raw(&mut self, addr: std::net::SocketAddr) -> usize {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&(self.raw.len() as u64).to_le_bytes());
        seed[16] = 0x72;
        self.raw.push(RawPeer::new(addr, seed));
        self.raw.len() - 1
    }

    /// Adds a bare QUIC server at `addr` serving `config`; returns its index in
    /// [`RawHosts::raw_servers`].
    pub fn add_raw_server(
        &mut self,
        addr: std::net::SocketAddr,
        config: quinn_proto::ServerConfig,
    ) -> usize {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&(self.raw_servers.len() as u64).to_le_bytes());
        seed[16] = 0x73;
        self.raw_servers.push(RawServer::new(addr, config, seed));
        self.raw_servers.len() - 1
    }
}

impl kwik_sim::Hosts for RawHosts {
    fn new(seed: u64) -> Self {
        Self {
            raw: Vec::new(),
            raw_servers: Vec::new(),
            seed,
        }
    }

    fn deliver(&mut self, now: Instant, dg: Datagram) -> Option<Datagram> {
        if let Some(peer) = self.raw.iter_mut().find(|p| p.addr == dg.dst) {
            peer.handle_datagram(now, dg);
        } else if let Some(server) = self.raw_servers.iter_mut().find(|s| s.addr == dg.dst) {
            server.handle_datagram(now, dg);
        } else {
            return Some(dg);
        }
        None
    }

    fn transmit(&mut self, now: Instant, net: &mut Network) {
        for peer in &mut self.raw {
            while let Some(dg) = peer.poll_transmit(now) {
                net.send(dg);
            }
        }
        for server in &mut self.raw_servers {
            while let Some(dg) = server.poll_transmit(now) {
                net.send(dg);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        for peer in &mut self.raw {
            if peer.poll_timeout().is_some_and(|t| t <= now) {
                peer.handle_timeout(now);
            }
        }
        for server in &mut self.raw_servers {
            if server.poll_timeout().is_some_and(|t| t <= now) {
                server.handle_timeout(now);
            }
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.raw
            .iter_mut()
            .filter_map(RawPeer::poll_timeout)
            .chain(
                self.raw_servers
                    .iter_mut()
                    .filter_map(RawServer::poll_timeout),
            )
            .min()
    }
}
