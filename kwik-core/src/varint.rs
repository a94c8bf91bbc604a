//! QUIC variable-length integers (RFC 9000 §16), the integer encoding of every
//! data-plane frame.

use bytes::BufMut;

/// Largest value a variable-length integer can hold (2^62 - 1).
pub(crate) const MAX: u64 = (1 << 62) - 1;

/// Number of bytes `v` takes on the wire.
pub(crate) fn size(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Appends `v`; values above [`MAX`] are a caller bug and are clamped.
pub(crate) fn encode<B: BufMut>(v: u64, buf: &mut B) {
    let v = v.min(MAX);
    match size(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Reads a variable-length integer from the front of `buf`.
///
/// Returns the value and the number of bytes it took, or `None` if `buf` ends first.
pub(crate) fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_every_boundary() {
        for v in [0, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30, MAX] {
            let mut buf = Vec::new();
            encode(v, &mut buf);
            assert_eq!(buf.len(), size(v));
            assert_eq!(decode(&buf), Some((v, buf.len())));
            assert_eq!(decode(&buf[..buf.len() - 1]), None);
        }
    }

    #[test]
    fn rfc9000_examples() {
        assert_eq!(
            decode(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Some((151_288_809_941_952_652, 8))
        );
        assert_eq!(decode(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494_878_333, 4)));
        assert_eq!(decode(&[0x7b, 0xbd]), Some((15_293, 2)));
        assert_eq!(decode(&[0x25]), Some((37, 1)));
    }
}
