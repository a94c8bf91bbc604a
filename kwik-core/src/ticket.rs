//! Delegation tickets: the primary's signed authority for what any server of a session may
//! send.
//!
//! The primary decides *what* a server may send; the client decides *when* and *from whom*
//! it pulls it. A ticket names the session, one logical stream and a range of it, the
//! request bytes the serving application sees, where the range falls in the body, the
//! scope (one path for a plain delegation, every server of the session for a stripe), an
//! expiry and a budget of bytes one server may send under it. The primary signs it:
//!
//! ```text
//! K_deleg = HKDF-SHA256(salt = "", ikm = group key, info = "kwik delegation")
//! mac     = HMAC-SHA256(K_deleg, "kwik ticket v1" | id | session | stream | offset | len
//!                       | body_offset | scope | path | expiry | budget | len(request) | request
//!                       [| 0x01 | key_id, when it is not 0])
//! ```
//!
//! A server holds up to four group keys, each under an operator-chosen id (see
//! [`GroupKeys`]): the current one signs, and a ticket verifies under the key its `key_id`
//! names, or is refused with [`TicketError::UnknownKey`].
//!
//! The client relays tickets in its pulls ([`kwik_proto::Pull`]); it cannot forge, alter,
//! widen, extend or move one to another session, because every field is under the MAC and
//! only servers hold the group key. A server serves a pull only when [`check`] accepts it:
//! the MAC verifies, the ticket has not expired, it names the session the connection's join
//! proved (and, for a plain delegation, this very path), and the pulled range lies inside
//! it. Budgets are kept by the server ([`Budgets`]) across the session's reconnections.

use std::collections::BTreeMap;

use ring::{hkdf, hmac};

use crate::join::{GroupKey, GroupKeys};

/// Domain separation of the ticket MAC.
const MAC_LABEL: &[u8] = b"kwik ticket v1";

/// Bytes of a ticket MAC.
pub const MAC_LEN: usize = 32;

/// The key tickets are signed with, derived from the group key.
#[derive(Clone)]
pub struct TicketKey(hmac::Key);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// `K_deleg = HKDF-SHA256(group key, "kwik delegation")`.
    pub fn derive(group: &GroupKey) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(group.secret());
        let info: [&[u8]; 1] = [b"kwik delegation"];
        let key = match prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // 32 bytes is always a valid HKDF-SHA256 output length.
            Err(_) => hmac::Key::new(hmac::HMAC_SHA256, group.secret()),
        };
        Self(key)
    }

    /// The bytes the MAC covers.
    fn message(t: &kwik_proto::Ticket) -> Vec<u8> {
        let mut m = Vec::with_capacity(MAC_LABEL.len() + 11 * 8 + t.request.len());
        m.extend_from_slice(MAC_LABEL);
        for v in [
            t.id,
            t.session_id,
            t.stream,
            t.offset,
            t.len,
            t.body_offset,
            u64::from(t.any_path),
            u64::from(t.path_id),
            t.expiry,
            t.budget,
            t.request.len() as u64,
        ] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m.extend_from_slice(&t.request);
        // A new field is covered only when set, tagged: tickets of servers that do not
        // know it still verify.
        if t.key_id != 0 {
            m.push(0x01);
            m.extend_from_slice(&t.key_id.to_be_bytes());
        }
        m
    }

    /// Signs `ticket` in place.
    pub fn sign(&self, ticket: &mut kwik_proto::Ticket) {
        ticket.mac = hmac::sign(&self.0, &Self::message(ticket))
            .as_ref()
            .to_vec();
    }

    /// Whether `ticket`'s MAC is this key's over its fields (constant time).
    pub fn verifies(&self, ticket: &kwik_proto::Ticket) -> bool {
        hmac::verify(&self.0, &Self::message(ticket), &ticket.mac).is_ok()
    }
}

/// The ticket keys of a server, one per group key it holds, by key id: the current one
/// signs, any of them verifies what names its id.
#[derive(Debug, Clone)]
pub struct TicketKeys {
    /// The current key first.
    keys: Vec<(u32, TicketKey)>,
}

impl TicketKeys {
    /// The ticket keys of `group`'s keys.
    pub fn derive(group: &GroupKeys) -> Self {
        Self {
            keys: group
                .iter()
                .map(|(id, k)| (id, TicketKey::derive(k)))
                .collect(),
        }
    }

    /// One key, under id 0.
    pub fn single(key: TicketKey) -> Self {
        Self {
            keys: vec![(0, key)],
        }
    }

    /// The id of the key that signs.
    pub fn current_id(&self) -> u32 {
        self.keys[0].0
    }

    /// Signs `ticket` in place under the current key, naming its id.
    pub fn sign(&self, ticket: &mut kwik_proto::Ticket) {
        let (id, key) = &self.keys[0];
        ticket.key_id = *id;
        key.sign(ticket);
    }

    /// The key `ticket` names.
    pub fn key_of(&self, ticket: &kwik_proto::Ticket) -> Option<&TicketKey> {
        self.keys
            .iter()
            .find(|(id, _)| *id == ticket.key_id)
            .map(|(_, k)| k)
    }
}

/// Why a server refused a pull. The client sees it as [`kwik_proto::PullRefused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The MAC does not verify: the ticket was forged or altered.
    #[error("ticket MAC does not verify")]
    BadMac,
    /// The ticket's expiry has passed.
    #[error("ticket expired")]
    Expired,
    /// The ticket belongs to another session than the one this connection joined.
    #[error("ticket of another session")]
    WrongSession,
    /// The ticket is scoped to another path.
    #[error("ticket scoped to another path")]
    WrongPath,
    /// The pull asks for no bytes, or for bytes outside the ticket's range.
    #[error("pull outside the ticket's range")]
    OutOfRange,
    /// This server already sent the ticket's budget of bytes.
    #[error("ticket budget spent")]
    BudgetSpent,
    /// Too many pulls outstanding, a pull id in use, or the server's record of spent
    /// budgets is full of tickets that have not expired yet.
    #[error("too many pulls")]
    Limit,
    /// The stream is not one this server may send on.
    #[error("stream not sendable")]
    BadStream,
    /// The server's application refused the range: its copy of the content does not
    /// match the request (see `Delegated::refuse`).
    #[error("content refused by the server's application")]
    Content,
    /// The server is draining: it serves the pulls it accepted before it began, no new
    /// ones. The range goes to the other servers at once; it is not a copy, since the
    /// draining server never sent it.
    #[error("server draining")]
    Draining,
    /// The ticket names a group key this server does not hold (never had, or removed).
    #[error("ticket under an unknown group key")]
    UnknownKey,
    /// The server named a refusal this side does not know.
    #[error("refused for an unknown reason")]
    Unknown,
}

impl TicketError {
    /// The wire code.
    pub fn to_wire(self) -> kwik_proto::RefusalCode {
        use kwik_proto::RefusalCode as C;
        match self {
            Self::BadMac => C::BadMac,
            Self::Expired => C::Expired,
            Self::WrongSession => C::WrongSession,
            Self::WrongPath => C::WrongPath,
            Self::OutOfRange => C::OutOfRange,
            Self::BudgetSpent => C::BudgetSpent,
            Self::Limit => C::Limit,
            Self::BadStream => C::BadStream,
            Self::Content => C::Content,
            Self::Draining => C::Draining,
            Self::UnknownKey => C::UnknownKey,
            Self::Unknown => C::Unspecified,
        }
    }

    /// From the wire code; unknown codes are [`TicketError::Unknown`].
    pub fn from_wire(code: i32) -> Self {
        use kwik_proto::RefusalCode as C;
        match C::try_from(code) {
            Ok(C::BadMac) => Self::BadMac,
            Ok(C::Expired) => Self::Expired,
            Ok(C::WrongSession) => Self::WrongSession,
            Ok(C::WrongPath) => Self::WrongPath,
            Ok(C::Draining) => Self::Draining,
            Ok(C::UnknownKey) => Self::UnknownKey,
            Ok(C::OutOfRange) => Self::OutOfRange,
            Ok(C::BudgetSpent) => Self::BudgetSpent,
            Ok(C::Limit) => Self::Limit,
            Ok(C::BadStream) => Self::BadStream,
            Ok(C::Content) => Self::Content,
            Ok(C::Unspecified) | Err(_) => Self::Unknown,
        }
    }
}

/// Where a pull arrived: the session and path the connection's join proved, and the time.
#[derive(Debug, Clone, Copy)]
pub struct PullContext {
    /// The session id the join proved (the primary's own session id on path 0).
    pub session_id: u64,
    /// The path the connection joined as.
    pub path: u32,
    /// Unix seconds now.
    pub unix_now: u64,
}

/// Checks a pull of `[offset, offset + len)` under `ticket` arriving in `cx`. The MAC is
/// checked first (under the key the ticket names), so that nothing about an unsigned
/// ticket is examined further.
pub fn check(
    keys: &TicketKeys,
    ticket: &kwik_proto::Ticket,
    cx: PullContext,
    offset: u64,
    len: u64,
) -> Result<(), TicketError> {
    let key = keys.key_of(ticket).ok_or(TicketError::UnknownKey)?;
    if !key.verifies(ticket) {
        return Err(TicketError::BadMac);
    }
    if ticket.session_id != cx.session_id {
        return Err(TicketError::WrongSession);
    }
    if ticket.expiry <= cx.unix_now {
        return Err(TicketError::Expired);
    }
    if !ticket.any_path && ticket.path_id != cx.path {
        return Err(TicketError::WrongPath);
    }
    let inside = offset
        .checked_add(len)
        .zip(ticket.offset.checked_add(ticket.len))
        .is_some_and(|(end, t_end)| len > 0 && offset >= ticket.offset && end <= t_end);
    if !inside || ticket.offset.saturating_add(ticket.len) > crate::varint::MAX {
        return Err(TicketError::OutOfRange);
    }
    Ok(())
}

/// Most tickets whose spending one server remembers. An entry is kept until its ticket
/// expires, whatever comes after: a full record refuses charges under new tickets
/// (`Limit`) until entries expire, so that no sequence of pulls forgets a spent budget.
pub const MAX_BUDGET_ENTRIES: usize = 1 << 16;

/// A server's record of the bytes it sent under each ticket, by (session, ticket id), kept
/// until the ticket expires so that a client cannot reset it by rejoining or by charging
/// other tickets.
#[derive(Debug, Default)]
pub struct Budgets {
    spent: BTreeMap<(u64, u64), Spent>,
    /// The same entries by expiry: expired ones are dropped from the front, each once.
    by_expiry: std::collections::BTreeSet<(u64, (u64, u64))>,
}

#[derive(Debug, Clone, Copy)]
struct Spent {
    bytes: u64,
    expiry: u64,
}

impl Budgets {
    /// Charges `len` bytes to `ticket`, or refuses when that would exceed its budget.
    pub fn charge(
        &mut self,
        ticket: &kwik_proto::Ticket,
        len: u64,
        unix_now: u64,
    ) -> Result<(), TicketError> {
        let key = (ticket.session_id, ticket.id);
        if !self.spent.contains_key(&key) {
            if self.spent.len() >= MAX_BUDGET_ENTRIES {
                self.expire(unix_now);
            }
            if self.spent.len() >= MAX_BUDGET_ENTRIES {
                return Err(TicketError::Limit);
            }
        }
        let entry = self.spent.entry(key).or_insert_with(|| {
            self.by_expiry.insert((ticket.expiry, key));
            Spent {
                bytes: 0,
                expiry: ticket.expiry,
            }
        });
        let total = entry.bytes.saturating_add(len);
        if total > ticket.budget {
            return Err(TicketError::BudgetSpent);
        }
        entry.bytes = total;
        // A refreshed copy of the ticket expires later: the record lasts as long.
        if ticket.expiry > entry.expiry {
            self.by_expiry.remove(&(entry.expiry, key));
            self.by_expiry.insert((ticket.expiry, key));
            entry.expiry = ticket.expiry;
        }
        Ok(())
    }

    /// Forgets the tickets that expired by `unix_now`: O(log n) for each one forgotten.
    fn expire(&mut self, unix_now: u64) {
        while let Some(&(expiry, key)) = self.by_expiry.first() {
            if expiry > unix_now {
                break;
            }
            self.by_expiry.pop_first();
            self.spent.remove(&key);
        }
    }

    /// Gives back bytes charged for a pull that was cancelled before they were sent.
    pub fn refund(&mut self, session_id: u64, ticket_id: u64, len: u64) {
        if let Some(s) = self.spent.get_mut(&(session_id, ticket_id)) {
            s.bytes = s.bytes.saturating_sub(len);
        }
    }

    /// Tickets remembered.
    pub fn len(&self) -> usize {
        self.spent.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.spent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(key: &TicketKey) -> kwik_proto::Ticket {
        let mut t = kwik_proto::Ticket {
            id: 1,
            session_id: 7,
            stream: 3,
            offset: 1000,
            len: 5000,
            request: b"GET /a".to_vec(),
            body_offset: 0,
            any_path: true,
            path_id: 0,
            expiry: 100,
            budget: 10_000,
            mac: Vec::new(),
            key_id: 0,
        };
        key.sign(&mut t);
        t
    }

    fn cx() -> PullContext {
        PullContext {
            session_id: 7,
            path: 2,
            unix_now: 50,
        }
    }

    #[test]
    fn every_field_is_under_the_mac() {
        let key = TicketKey::derive(&GroupKey::new([1; 32]));
        let good = ticket(&key);
        assert_eq!(
            check(&TicketKeys::single(key.clone()), &good, cx(), 1000, 5000),
            Ok(())
        );
        let alterations: [fn(&mut kwik_proto::Ticket); 11] = [
            |t| t.id += 1,
            |t| t.session_id += 1,
            |t| t.stream += 4,
            |t| t.offset -= 1,
            |t| t.len += 1,
            |t| t.request.push(b'x'),
            |t| t.body_offset += 1,
            |t| t.any_path = false,
            |t| t.path_id = 2,
            |t| t.expiry += 1,
            |t| t.budget += 1,
        ];
        for alter in alterations {
            let mut t = good.clone();
            alter(&mut t);
            assert_eq!(
                check(&TicketKeys::single(key.clone()), &t, cx(), 1000, 10),
                Err(TicketError::BadMac)
            );
        }
        let other = TicketKey::derive(&GroupKey::new([2; 32]));
        assert_eq!(
            check(&TicketKeys::single(other), &good, cx(), 1000, 10),
            Err(TicketError::BadMac)
        );
    }

    #[test]
    fn a_ticket_verifies_under_the_key_it_names_while_it_is_held() {
        let (a, b) = (GroupKey::new([1; 32]), GroupKey::new([2; 32]));
        let only_a = TicketKeys::derive(&GroupKeys::new(1, a.clone()));
        let mut t = ticket(&TicketKey::derive(&a));
        only_a.sign(&mut t);
        assert_eq!(t.key_id, 1);
        let Ok(b_then_a) = GroupKeys::new(2, b.clone()).with_earlier(1, a.clone()) else {
            panic!("two keys");
        };
        let b_then_a = TicketKeys::derive(&b_then_a);
        assert_eq!(check(&b_then_a, &t, cx(), 1000, 10), Ok(()));
        let only_b = TicketKeys::derive(&GroupKeys::new(2, b));
        assert_eq!(
            check(&only_b, &t, cx(), 1000, 10),
            Err(TicketError::UnknownKey)
        );
        // The key id is under the MAC: naming another key held does not verify.
        let mut moved = t.clone();
        moved.key_id = 2;
        assert_eq!(
            check(&b_then_a, &moved, cx(), 1000, 10),
            Err(TicketError::BadMac)
        );
    }

    #[test]
    fn a_ticket_without_the_key_id_field_verifies_under_key_0() {
        use prost::Message;
        // What a server that does not know `key_id` signs and sends: the field absent,
        // the MAC over the other fields alone.
        let a = GroupKey::new([1; 32]);
        let old = ticket(&TicketKey::derive(&a));
        let wire = old.encode_to_vec();
        let decoded = kwik_proto::Ticket::decode(&wire[..]).unwrap_or_default();
        assert_eq!(decoded.key_id, 0);
        let keys = TicketKeys::derive(&GroupKeys::new(0, a));
        assert_eq!(check(&keys, &decoded, cx(), 1000, 10), Ok(()));
        // Signed by this version under key 0, the bytes on the wire are the old ones.
        let mut new = old.clone();
        keys.sign(&mut new);
        assert_eq!(new.encode_to_vec(), wire);
    }

    #[test]
    fn scope_expiry_and_range() {
        let key = TicketKey::derive(&GroupKey::new([1; 32]));
        let good = ticket(&key);
        let late = PullContext {
            unix_now: 100,
            ..cx()
        };
        assert_eq!(
            check(&TicketKeys::single(key.clone()), &good, late, 1000, 1),
            Err(TicketError::Expired)
        );
        let foreign = PullContext {
            session_id: 8,
            ..cx()
        };
        assert_eq!(
            check(&TicketKeys::single(key.clone()), &good, foreign, 1000, 1),
            Err(TicketError::WrongSession)
        );
        for (offset, len) in [(999, 2), (5999, 2), (1000, 0), (u64::MAX, 2)] {
            assert_eq!(
                check(&TicketKeys::single(key.clone()), &good, cx(), offset, len),
                Err(TicketError::OutOfRange),
                "{offset}+{len}"
            );
        }
        let mut plain = good.clone();
        plain.any_path = false;
        plain.path_id = 3;
        key.sign(&mut plain);
        assert_eq!(
            check(&TicketKeys::single(key.clone()), &plain, cx(), 1000, 1),
            Err(TicketError::WrongPath)
        );
        plain.path_id = 2;
        key.sign(&mut plain);
        assert_eq!(
            check(&TicketKeys::single(key.clone()), &plain, cx(), 5999, 1),
            Ok(())
        );
    }

    #[test]
    fn no_number_of_tickets_charged_forgets_a_spent_budget() {
        let key = TicketKey::derive(&GroupKey::new([1; 32]));
        let spent = ticket(&key);
        let mut b = Budgets::default();
        assert_eq!(b.charge(&spent, spent.budget, 50), Ok(()));
        // Fill the record with live tickets of the same session, expiring sooner.
        let mut other = spent.clone();
        other.expiry = spent.expiry - 1;
        for id in 2..MAX_BUDGET_ENTRIES as u64 + 1 {
            other.id = id;
            assert_eq!(b.charge(&other, 1, 50), Ok(()), "ticket {id}");
        }
        assert_eq!(b.len(), MAX_BUDGET_ENTRIES);
        // One more ticket is refused, and the spent one stays spent.
        other.id = MAX_BUDGET_ENTRIES as u64 + 1;
        assert_eq!(b.charge(&other, 1, 50), Err(TicketError::Limit));
        assert_eq!(b.charge(&spent, 1, 50), Err(TicketError::BudgetSpent));
        // Once the others expired, new tickets are charged again, and the spent one,
        // still live, is still spent.
        let now = other.expiry;
        assert_eq!(b.charge(&other, 1, now), Ok(()));
        assert_eq!(b.len(), 2);
        assert_eq!(b.charge(&spent, 1, now), Err(TicketError::BudgetSpent));
    }

    #[test]
    fn budgets_bound_what_one_server_sends() {
        let key = TicketKey::derive(&GroupKey::new([1; 32]));
        let t = ticket(&key);
        let mut b = Budgets::default();
        assert_eq!(b.charge(&t, 6000, 50), Ok(()));
        assert_eq!(b.charge(&t, 4000, 50), Ok(()));
        assert_eq!(b.charge(&t, 1, 50), Err(TicketError::BudgetSpent));
        b.refund(7, 1, 500);
        assert_eq!(b.charge(&t, 500, 50), Ok(()));
        assert_eq!(b.len(), 1);
        // A copy refreshed to expire later keeps the same record.
        let mut later = t.clone();
        later.expiry += 100;
        assert_eq!(b.charge(&later, 1, 50), Err(TicketError::BudgetSpent));
        assert_eq!(b.len(), 1);
        for code in 0..10 {
            let e = TicketError::from_wire(code);
            if e != TicketError::Unknown {
                assert_eq!(e.to_wire() as i32, code);
            }
        }
    }
}
