//! QUIC variable-length integers (RFC 9000, section 16), as HTTP/3 frames, stream headers
//! and capsules carry them.

use bytes::{BufMut, BytesMut};

/// Writes `v` (below 2^62) in its shortest form.
pub(crate) fn put_varint(b: &mut BytesMut, v: u64) {
    debug_assert!(v < 1 << 62, "{v} does not fit a varint");
    if v < 1 << 6 {
        b.put_u8(v as u8);
    } else if v < 1 << 14 {
        b.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        b.put_u32(0x8000_0000 | v as u32);
    } else {
        b.put_u64(0xc000_0000_0000_0000 | v);
    }
}

/// Reads the varint at the start of `b`: its value and length, or `None` if `b` ends first.
pub(crate) fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for &byte in &bytes[1..] {
        v = (v << 8) | u64::from(byte);
    }
    Some((v, len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varints_take_the_shortest_form_and_read_back() {
        for (v, len) in [
            (0u64, 1),
            (63, 1),
            (64, 2),
            (16383, 2),
            (16384, 4),
            (1 << 30, 8),
            ((1 << 62) - 1, 8),
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), len, "{v}");
            assert_eq!(b[0] >> 6, [0, 0, 1, 0, 2, 0, 0, 0, 3][len], "{v}");
            assert_eq!(get_varint(&b), Some((v, len)));
            for cut in 0..len {
                assert_eq!(get_varint(&b[..cut]), None, "{v} cut at {cut}");
            }
        }
    }
}
