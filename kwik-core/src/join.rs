//! Joining a secondary server to a session: secrets, proofs and address scopes.
//!
//! Servers of one deployment share a 32-byte group key. For each path it adds, the primary
//! derives a per-path secret
//! `path_secret = HMAC-SHA256(group_key, "kwik path" | session_id | path_id | expiry)` and
//! hands it to the client over its TLS-protected control stream. The client connects to the
//! secondary and proves knowledge of the secret, bound to that very TLS connection:
//! `proof = HMAC-SHA256(path_secret, exporter)`, where `exporter` is 32 bytes of TLS keying
//! material exported with [`EXPORTER_LABEL`]. The secondary recomputes both from the group
//! key and its own view of the connection, so it holds no state for a session before a
//! valid proof, and a proof replayed on another connection fails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ring::hmac;

/// TLS exporter label of the join proof.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-kwik-join";

/// Bytes of exported keying material a proof covers.
pub const EXPORTER_LEN: usize = 32;

/// The key the servers of one deployment share; it lets them admit each other's sessions.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey([u8; 32]);

impl GroupKey {
    /// A group key from 32 secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupKey(..)")
    }
}

/// The secret of one path of one session, valid until `expiry` (Unix seconds).
pub fn path_secret(key: &GroupKey, session_id: u64, path_id: u32, expiry: u64) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key.0);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"kwik path");
    ctx.update(&session_id.to_be_bytes());
    ctx.update(&path_id.to_be_bytes());
    ctx.update(&expiry.to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// The proof a client sends on the connection whose keying material is `exporter`.
pub fn proof(path_secret: &[u8], exporter: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, path_secret);
    hmac::sign(&key, exporter).as_ref().to_vec()
}

/// Checks a proof in constant time.
pub fn verify(path_secret: &[u8], exporter: &[u8], proof: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, path_secret);
    hmac::verify(&key, exporter, proof).is_ok()
}

/// How far an address reaches, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// This host.
    Loopback,
    /// One link (169.254/16, fe80::/10).
    LinkLocal,
    /// A private network (RFC 1918, 100.64/10 shared space, fc00::/7).
    Private,
    /// Everything else.
    Global,
}

/// The scope of an address. Unspecified and multicast addresses count as loopback, the
/// narrowest, so nothing can be pointed at them from wider scopes.
pub fn scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => scope_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => scope_v4(v4),
            None => scope_v6(v6),
        },
    }
}

fn scope_v4(ip: Ipv4Addr) -> Scope {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        Scope::Loopback
    } else if ip.is_link_local() {
        Scope::LinkLocal
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Scope::Private
    } else {
        Scope::Global
    }
}

fn scope_v6(ip: Ipv6Addr) -> Scope {
    let first = ip.segments()[0];
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        Scope::Loopback
    } else if first & 0xffc0 == 0xfe80 {
        Scope::LinkLocal
    } else if first & 0xfe00 == 0xfc00 {
        Scope::Private
    } else {
        Scope::Global
    }
}

/// Whether a session whose primary is at `primary` may be pointed at `target`: never at a
/// narrower scope than its own (a session reached over the internet cannot reach into the
/// client's private network or host).
pub fn scope_allows(primary: IpAddr, target: IpAddr) -> bool {
    scope(target) >= scope(primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn scopes() {
        let cases = [
            ("127.0.0.1", Scope::Loopback),
            ("0.0.0.0", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("::ffff:127.0.0.2", Scope::Loopback),
            ("169.254.1.1", Scope::LinkLocal),
            ("fe80::1", Scope::LinkLocal),
            ("10.1.2.3", Scope::Private),
            ("192.168.0.1", Scope::Private),
            ("172.16.5.5", Scope::Private),
            ("100.64.0.1", Scope::Private),
            ("fd00::1", Scope::Private),
            ("8.8.8.8", Scope::Global),
            ("2001:db8::1", Scope::Global),
        ];
        for (addr, want) in cases {
            assert_eq!(scope(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn no_escalation() {
        let cases = [
            ("127.0.0.1", "127.0.0.2", true),
            ("127.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", true),
            ("10.0.0.1", "127.0.0.1", false),
            ("8.8.8.8", "10.0.0.1", false),
            ("8.8.8.8", "127.0.0.1", false),
            ("8.8.8.8", "169.254.0.1", false),
            ("8.8.8.8", "1.1.1.1", true),
        ];
        for (primary, target, want) in cases {
            assert_eq!(
                scope_allows(ip(primary), ip(target)),
                want,
                "{primary}->{target}"
            );
        }
    }

    #[test]
    fn proofs_bind_every_input() {
        let key = GroupKey::new([7; 32]);
        let secret = path_secret(&key, 1, 2, 3);
        let exporter = [9u8; EXPORTER_LEN];
        let p = proof(&secret, &exporter);
        assert!(verify(&secret, &exporter, &p));
        assert!(!verify(&secret, &[8u8; EXPORTER_LEN], &p));
        for other in [
            path_secret(&GroupKey::new([6; 32]), 1, 2, 3),
            path_secret(&key, 9, 2, 3),
            path_secret(&key, 1, 9, 3),
            path_secret(&key, 1, 2, 9),
        ] {
            assert!(!verify(&other, &exporter, &p));
        }
        assert!(!verify(&secret, &exporter, &p[..31]));
        assert_eq!(
            GroupKey::from_hex(&"07".repeat(32)),
            Some(GroupKey::new([7; 32]))
        );
        assert_eq!(GroupKey::from_hex("zz"), None);
    }
}
