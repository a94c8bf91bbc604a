//! The capsules of a WebTransport session's CONNECT stream (RFC 9297's capsule protocol,
//! draft-ietf-webtrans-http3's CLOSE_WEBTRANSPORT_SESSION and DRAIN_WEBTRANSPORT_SESSION),
//! and the HTTP/3 frames that carry them on a stream read as raw bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::{get_varint, put_varint};

/// CLOSE_WEBTRANSPORT_SESSION.
const CLOSE: u64 = 0x2843;
/// DRAIN_WEBTRANSPORT_SESSION.
#[cfg(test)]
const DRAIN: u64 = 0x78ae;
/// HTTP/3 DATA.
const DATA: u64 = 0x0;
/// Longest close reason, in bytes (the draft's limit).
pub const MAX_CLOSE_REASON: usize = 1024;

/// How a WebTransport session ended, as its CONNECT stream told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The application's code (0 when the stream ended without a close capsule).
    pub code: u32,
    /// The application's reason, UTF-8.
    pub reason: String,
}

/// A CONNECT stream carried bytes that are not well-formed capsules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapsuleError {
    /// A close capsule shorter than its code, or with a reason over 1,024 bytes or not
    /// UTF-8.
    #[error("malformed CLOSE_WEBTRANSPORT_SESSION capsule")]
    MalformedClose,
    /// The stream ended inside a capsule or an HTTP/3 frame.
    #[error("the CONNECT stream ended inside a capsule or frame")]
    Truncated,
}

/// Encodes a close capsule. The reason is cut to [`MAX_CLOSE_REASON`] bytes, at a
/// character boundary.
pub(crate) fn close_capsule(code: u32, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut b = BytesMut::with_capacity(16 + reason.len());
    put_varint(&mut b, CLOSE);
    put_varint(&mut b, 4 + reason.len() as u64);
    b.put_u32(code);
    b.put_slice(reason);
    b.freeze()
}

/// Wraps `payload` in one HTTP/3 DATA frame.
pub(crate) fn data_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + payload.len());
    put_varint(&mut b, DATA);
    put_varint(&mut b, payload.len() as u64);
    b.put_slice(payload);
    b.freeze()
}

/// Takes bytes off `data` into `head` until it holds a type and a length (two varints, as
/// both HTTP/3 frames and capsules begin); returns them and empties `head`, or `None` once
/// `data` runs out first (the rest comes with the next bytes).
fn read_head(head: &mut BytesMut, data: &mut &[u8]) -> Option<(u64, u64)> {
    while let Some((&byte, rest)) = data.split_first() {
        *data = rest;
        head.put_u8(byte);
        if let Some((ty, n)) = get_varint(head)
            && let Some((len, _)) = get_varint(&head[n..])
        {
            head.clear();
            return Some((ty, len));
        }
    }
    None
}

/// Reads capsules from a byte stream (the payload of a CONNECT stream's DATA frames) until
/// a close capsule. Other capsules (DRAIN_WEBTRANSPORT_SESSION, unknown ones) are skipped as
/// their bytes pass, so a peer cannot make it hold more than one close capsule.
#[derive(Debug, Default)]
pub(crate) struct CapsuleReader {
    /// The type and length of the next capsule, as far as they have come.
    head: BytesMut,
    /// Bytes of a skipped capsule still to come.
    skip: u64,
    /// A close capsule being read: its length and the bytes so far.
    close: Option<(usize, BytesMut)>,
}

impl CapsuleReader {
    /// Feeds `data`; returns the close capsule once it is complete.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<Option<Closed>, CapsuleError> {
        loop {
            if let Some((len, body)) = &mut self.close {
                let n = (*len - body.len()).min(data.len());
                body.extend_from_slice(&data[..n]);
                if body.len() < *len {
                    return Ok(None);
                }
                let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let reason = std::str::from_utf8(&body[4..])
                    .map_err(|_| CapsuleError::MalformedClose)?
                    .to_owned();
                return Ok(Some(Closed { code, reason }));
            }
            if self.skip > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                data = &data[n..];
            }
            let Some((ty, len)) = read_head(&mut self.head, &mut data) else {
                return Ok(None);
            };
            if ty == CLOSE {
                if !(4..=(4 + MAX_CLOSE_REASON) as u64).contains(&len) {
                    return Err(CapsuleError::MalformedClose);
                }
                self.close = Some((len as usize, BytesMut::with_capacity(len as usize)));
            } else {
                // DRAIN_WEBTRANSPORT_SESSION asks for nothing this side must do; unknown
                // capsules are ignored, as RFC 9297 says.
                self.skip = len;
            }
        }
    }

    /// The stream ended: fine between capsules, not inside one.
    pub(crate) fn finish(&self) -> Result<(), CapsuleError> {
        if self.head.is_empty() && self.skip == 0 && self.close.is_none() {
            Ok(())
        } else {
            Err(CapsuleError::Truncated)
        }
    }
}

/// Reads the HTTP/3 frames of a stream read as raw bytes and hands the payload of its DATA
/// frames to a [`CapsuleReader`]; other frames (trailers, reserved types) are skipped.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    head: BytesMut,
    /// Bytes of the current frame still to come, and whether it is DATA.
    remaining: u64,
    data: bool,
    pub(crate) capsules: CapsuleReader,
}

impl FrameReader {
    /// Feeds raw stream bytes; returns the close capsule once it is complete.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<Option<Closed>, CapsuleError> {
        loop {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                let (payload, rest) = data.split_at(n);
                data = rest;
                if self.data
                    && let Some(closed) = self.capsules.push(payload)?
                {
                    return Ok(Some(closed));
                }
            }
            let Some((ty, len)) = read_head(&mut self.head, &mut data) else {
                return Ok(None);
            };
            self.data = ty == DATA;
            self.remaining = len;
        }
    }

    /// The stream ended: fine between frames and capsules, not inside one.
    pub(crate) fn finish(&self) -> Result<(), CapsuleError> {
        if self.head.is_empty() && self.remaining == 0 {
            self.capsules.finish()
        } else {
            Err(CapsuleError::Truncated)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn closed(code: u32, reason: &str) -> Closed {
        Closed {
            code,
            reason: reason.into(),
        }
    }

    /// Feeds `wire` in pieces of `step` bytes until a close comes out.
    fn first_close(
        wire: &[u8],
        step: usize,
        mut push: impl FnMut(&[u8]) -> Result<Option<Closed>, CapsuleError>,
    ) -> Option<Closed> {
        wire.chunks(step).find_map(|piece| push(piece).unwrap())
    }

    #[test]
    fn a_close_capsule_is_read_after_others_whatever_the_cuts() {
        let mut wire = BytesMut::new();
        // A drain capsule, an unknown one of 300 bytes, then the close.
        put_varint(&mut wire, DRAIN);
        put_varint(&mut wire, 0);
        put_varint(&mut wire, 0x1234_5678);
        put_varint(&mut wire, 300);
        wire.put_slice(&[9; 300]);
        wire.put_slice(&close_capsule(42, "bye now"));
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let mut r = CapsuleReader::default();
            let got = first_close(&wire, step, |piece| r.push(piece));
            assert_eq!(got, Some(closed(42, "bye now")), "step {step}");
        }
    }

    #[test]
    fn capsules_in_data_frames_among_other_frames() {
        let capsule = close_capsule(7, "done");
        let mut wire = BytesMut::new();
        // A reserved frame type, then the capsule split over two DATA frames.
        put_varint(&mut wire, 0x21);
        put_varint(&mut wire, 5);
        wire.put_slice(b"greas");
        wire.put_slice(&data_frame(&capsule[..3]));
        wire.put_slice(&data_frame(&capsule[3..]));
        for step in [1, 4, wire.len()] {
            let mut r = FrameReader::default();
            let got = first_close(&wire, step, |piece| r.push(piece));
            assert_eq!(got, Some(closed(7, "done")), "step {step}");
        }
    }

    #[test]
    fn bad_close_capsules_and_truncation_are_errors() {
        // Shorter than the code.
        let mut b = BytesMut::new();
        put_varint(&mut b, CLOSE);
        put_varint(&mut b, 3);
        assert_eq!(
            CapsuleReader::default().push(&b),
            Err(CapsuleError::MalformedClose)
        );
        // A reason over 1,024 bytes is refused before it is buffered.
        let mut b = BytesMut::new();
        put_varint(&mut b, CLOSE);
        put_varint(&mut b, 4 + 1025);
        assert_eq!(
            CapsuleReader::default().push(&b),
            Err(CapsuleError::MalformedClose)
        );
        // Not UTF-8.
        let mut b = BytesMut::new();
        put_varint(&mut b, CLOSE);
        put_varint(&mut b, 5);
        b.put_u32(1);
        b.put_u8(0xff);
        assert_eq!(
            CapsuleReader::default().push(&b),
            Err(CapsuleError::MalformedClose)
        );
        // The stream ends inside a capsule.
        let mut r = CapsuleReader::default();
        assert_eq!(r.push(&close_capsule(1, "x")[..5]), Ok(None));
        assert_eq!(r.finish(), Err(CapsuleError::Truncated));
        assert_eq!(CapsuleReader::default().finish(), Ok(()));
        // A huge unknown capsule is skipped without being held.
        let mut r = CapsuleReader::default();
        let mut b = BytesMut::new();
        put_varint(&mut b, 0x99);
        put_varint(&mut b, 1 << 40);
        assert_eq!(r.push(&b), Ok(None));
        assert_eq!(r.push(&[0; 65536]), Ok(None));
        assert!(r.head.is_empty() && r.close.is_none());
        assert_eq!(r.finish(), Err(CapsuleError::Truncated));
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(600);
        let c = close_capsule(3, &reason);
        let got = CapsuleReader::default().push(&c).unwrap().unwrap();
        assert_eq!(got.reason.len(), MAX_CLOSE_REASON);
        assert!(reason.starts_with(&got.reason));
    }
}
