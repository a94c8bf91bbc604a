//! Framing of the control stream: protobuf `ControlFrame`s, each behind a varint length.
//!
//! [`ControlDecoder`] accepts the stream's bytes in whatever pieces QUIC hands them over and
//! yields whole messages; it never decodes a partial message and bounds how much it buffers.

use bytes::{Buf, BytesMut};
use kwik_proto::{ControlFrame, control_frame::Kind};
use prost::Message;

use crate::ErrorCode;

/// Largest encoded `ControlFrame` a peer may send (length prefix excluded).
pub const MAX_CONTROL_FRAME: usize = 16 * 1024;

/// Appends `kind` as one length-delimited control frame.
pub(crate) fn encode(kind: Kind, out: &mut Vec<u8>) {
    let frame = ControlFrame { kind: Some(kind) };
    // Encoding into a Vec cannot run out of space.
    let _ = frame.encode_length_delimited(out);
}

/// Reassembles length-delimited control frames from arbitrary chunks.
#[derive(Debug, Default)]
pub struct ControlDecoder {
    buf: BytesMut,
    /// Frames of unknown kinds skipped and not yet taken.
    unknown: u64,
}

/// Why the control stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A frame announced more than [`MAX_CONTROL_FRAME`] bytes.
    #[error("control frame of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// The bytes are not a valid `ControlFrame`.
    #[error("malformed control frame: {0}")]
    Malformed(String),
}

impl ControlError {
    /// The session error code this failure closes the session with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge(_) => ErrorCode::ControlFrameTooLarge,
            Self::Malformed(_) => ErrorCode::ControlDecode,
        }
    }
}

impl ControlDecoder {
    /// Appends bytes read from the control stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a whole frame.
    #[cfg_attr(not(feature = "_internal_test_exports"), allow(dead_code))]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    ///
    /// The decoder holds at most one frame's worth of bytes beyond what is pushed in one
    /// call; an announced length above the limit fails at once, before its bytes arrive.
    /// A frame of a kind this version does not know (a later version's message, which
    /// decodes as a frame without a kind) is skipped and counted: see
    /// [`ControlDecoder::take_unknown`].
    pub fn next_frame(&mut self) -> Result<Option<Kind>, ControlError> {
        loop {
            let Some((len, prefix)) = length_prefix(&self.buf)? else {
                return Ok(None);
            };
            if len > MAX_CONTROL_FRAME as u64 {
                return Err(ControlError::TooLarge(len));
            }
            let len = len as usize;
            if self.buf.len() < prefix + len {
                return Ok(None);
            }
            self.buf.advance(prefix);
            let body = self.buf.split_to(len);
            let frame = ControlFrame::decode(&body[..])
                .map_err(|e| ControlError::Malformed(e.to_string()))?;
            match frame.kind {
                Some(kind) => return Ok(Some(kind)),
                None => self.unknown += 1,
            }
        }
    }

    /// Frames of unknown kinds skipped since the last call.
    pub fn take_unknown(&mut self) -> u64 {
        std::mem::take(&mut self.unknown)
    }
}

/// Parses a protobuf varint length prefix: `Ok(None)` if incomplete.
fn length_prefix(buf: &[u8]) -> Result<Option<(u64, usize)>, ControlError> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 10 {
        return Err(ControlError::Malformed("length prefix overflows".into()));
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kwik_proto::{Hello, Limits, Ping};

    fn sample() -> Vec<Kind> {
        vec![
            Kind::Hello(Hello {
                version: 1,
                limits: Some(Limits {
                    max_data: 1 << 24,
                    max_stream_data: 1 << 20,
                    max_bidi_streams: 100,
                    max_uni_streams: 100,
                    max_paths: 8,
                }),
                app_protocols: vec![b"h3".to_vec()],
            }),
            Kind::Ping(Ping { seq: 7 }),
            Kind::Ping(Ping { seq: u64::MAX }),
        ]
    }

    #[test]
    fn frames_survive_any_chunking() {
        let mut wire = Vec::new();
        for kind in sample() {
            encode(kind, &mut wire);
        }
        for chunk in 1..wire.len() {
            let mut decoder = ControlDecoder::default();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push(piece);
                while let Some(kind) = decoder.next_frame().unwrap() {
                    out.push(kind);
                }
            }
            assert_eq!(out, sample(), "chunk size {chunk}");
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn oversized_frame_fails_before_its_body_arrives() {
        let mut decoder = ControlDecoder::default();
        let mut prefix = Vec::new();
        prost::encoding::encode_varint(MAX_CONTROL_FRAME as u64 + 1, &mut prefix);
        decoder.push(&prefix);
        assert_eq!(
            decoder.next_frame(),
            Err(ControlError::TooLarge(MAX_CONTROL_FRAME as u64 + 1))
        );
    }

    #[test]
    fn unknown_kinds_are_skipped_and_counted() {
        let mut decoder = ControlDecoder::default();
        decoder.push(&[0]); // a zero-length frame: no kind set
        // Field 18, the next kind a later version may add: an empty message in it.
        decoder.push(&[3, 0x92, 0x01, 0x00]);
        let mut ping = Vec::new();
        encode(Kind::Ping(kwik_proto::Ping { seq: 5 }), &mut ping);
        decoder.push(&ping);
        assert_eq!(
            decoder.next_frame(),
            Ok(Some(Kind::Ping(kwik_proto::Ping { seq: 5 })))
        );
        assert_eq!(decoder.take_unknown(), 2);
        assert_eq!(decoder.take_unknown(), 0);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut decoder = ControlDecoder::default();
        decoder.push(&[3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decoder.next_frame(),
            Err(ControlError::Malformed(_))
        ));
        let mut decoder = ControlDecoder::default();
        decoder.push(&[0xff; 11]);
        assert!(matches!(
            decoder.next_frame(),
            Err(ControlError::Malformed(_))
        ));
    }
}
