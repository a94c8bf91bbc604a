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

/// Most earlier group keys a server holds beside its current one.
pub const MAX_EARLIER_KEYS: usize = 3;

/// A server's group keys, each under an id the operator chose: the current one, which
/// signs new tickets and derives new path secrets, and up to [`MAX_EARLIER_KEYS`] earlier
/// ones, under which what was signed before still verifies. A message that names no key
/// id names key 0.
///
/// Rotating the key of a fleet: add the new key (as an earlier one) on every server, then
/// make it current on every server (each primary re-issues its live tickets and path
/// secrets under it at once), and remove the old one no sooner than
/// `max(ticket_lifetime, join_proof_lifetime)` after the last server switched.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKeys {
    /// The current key first, then the earlier ones.
    keys: Vec<(u32, GroupKey)>,
}

/// Why a [`GroupKeys`] could not take a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupKeysError {
    /// Two keys under one id.
    #[error("key id {0} given twice")]
    DuplicateId(u32),
    /// More than [`MAX_EARLIER_KEYS`] earlier keys.
    #[error("at most {MAX_EARLIER_KEYS} earlier keys")]
    TooMany,
}

impl GroupKeys {
    /// `key` under `id`, current, with no earlier key.
    pub fn new(id: u32, key: GroupKey) -> Self {
        Self {
            keys: vec![(id, key)],
        }
    }

    /// Adds an earlier key, under which what was signed before still verifies.
    pub fn with_earlier(mut self, id: u32, key: GroupKey) -> Result<Self, GroupKeysError> {
        if self.keys.iter().any(|(i, _)| *i == id) {
            return Err(GroupKeysError::DuplicateId(id));
        }
        if self.keys.len() > MAX_EARLIER_KEYS {
            return Err(GroupKeysError::TooMany);
        }
        self.keys.push((id, key));
        Ok(self)
    }

    /// The current key and its id.
    pub fn current(&self) -> (u32, &GroupKey) {
        let (id, key) = &self.keys[0];
        (*id, key)
    }

    /// The key under `id`, current or earlier.
    pub fn get(&self, id: u32) -> Option<&GroupKey> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    /// Every key id held, the current one first.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    /// Every key with its id, the current one first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &GroupKey)> {
        self.keys.iter().map(|(id, k)| (*id, k))
    }
}

impl std::fmt::Debug for GroupKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only, never key material.
        f.debug_struct("GroupKeys")
            .field("current", &self.current().0)
            .field("earlier", &self.ids().skip(1).collect::<Vec<_>>())
            .finish()
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
    fn group_keys_hold_a_current_key_and_three_earlier_ones() {
        let k = |b: u8| GroupKey::new([b; 32]);
        let keys = GroupKeys::new(5, k(5))
            .with_earlier(4, k(4))
            .and_then(|g| g.with_earlier(3, k(3)))
            .and_then(|g| g.with_earlier(2, k(2)));
        let Ok(keys) = keys else {
            panic!("three earlier keys: {keys:?}");
        };
        assert_eq!(keys.current(), (5, &k(5)));
        assert_eq!(keys.get(3), Some(&k(3)));
        assert_eq!(keys.get(1), None);
        assert_eq!(keys.ids().collect::<Vec<_>>(), [5, 4, 3, 2]);
        assert_eq!(
            keys.clone().with_earlier(1, k(1)),
            Err(GroupKeysError::TooMany)
        );
        assert_eq!(
            GroupKeys::new(5, k(5)).with_earlier(5, k(6)),
            Err(GroupKeysError::DuplicateId(5))
        );
        // Ids only, never key material.
        let shown = format!("{keys:?}");
        assert_eq!(shown, "GroupKeys { current: 5, earlier: [4, 3, 2] }");
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
