//! Data-plane frames: the hand-written codec of everything that travels on carrier streams.
//!
//! A carrier is a unidirectional QUIC stream carrying a sequence of frames; each frame is a
//! varint type followed by varint fields. [`Frame::decode`] is the only place where bytes of
//! a carrier become frames, and [`FrameError`] is the only error it returns: the session
//! turns it into [`ErrorCode::FrameEncoding`](crate::ErrorCode::FrameEncoding).

use bytes::{Buf, BufMut, Bytes};

use crate::varint;
use crate::{Dir, StreamId};

/// Largest payload of one `STREAM` frame a peer may send.
pub const MAX_STREAM_FRAME_PAYLOAD: usize = 64 * 1024;

/// Largest encoded header of any frame (type + three 8-byte varints).
pub(crate) const MAX_HEADER: usize = 1 + 3 * 8;

/// Largest head [`Frame::decode_head`] can return: four varints of up to 8 bytes each
/// (a peer may encode even the type in 8 bytes).
pub const MAX_HEAD: usize = 4 * 8;

/// The start of a frame (see [`Frame::decode_head`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// A whole frame other than `STREAM`.
    Frame(Frame),
    /// A `STREAM` frame's header: its payload is the next `len` bytes.
    Stream {
        /// The logical stream.
        id: StreamId,
        /// Offset of the payload's first byte.
        offset: u64,
        /// Payload length.
        len: u64,
        /// The payload ends the stream.
        fin: bool,
    },
}

mod kind {
    pub(super) const STREAM: u64 = 0x00;
    pub(super) const STREAM_FIN: u64 = 0x01;
    pub(super) const RESET_STREAM: u64 = 0x02;
    pub(super) const STOP_SENDING: u64 = 0x03;
    pub(super) const MAX_STREAM_DATA: u64 = 0x04;
    pub(super) const MAX_DATA: u64 = 0x05;
    pub(super) const MAX_STREAMS_BIDI: u64 = 0x06;
    pub(super) const MAX_STREAMS_UNI: u64 = 0x07;
    pub(super) const DATA_ACK: u64 = 0x08;
}

/// One data-plane frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes `[offset, offset + data.len())` of a logical stream; `fin` marks the end.
    Stream {
        /// Logical stream.
        id: StreamId,
        /// Offset of the first byte of `data` in the stream.
        offset: u64,
        /// Whether the stream ends with this frame.
        fin: bool,
        /// Payload.
        data: Bytes,
    },
    /// The sender abandons a logical stream; `final_size` is how much it had sent.
    ResetStream {
        /// Logical stream.
        id: StreamId,
        /// Application error code.
        code: u64,
        /// Final size of the stream.
        final_size: u64,
    },
    /// The receiver asks the sender to stop sending on a logical stream.
    StopSending {
        /// Logical stream.
        id: StreamId,
        /// Application error code.
        code: u64,
    },
    /// The receiver allows bytes of a stream up to offset `max`.
    MaxStreamData {
        /// Logical stream.
        id: StreamId,
        /// New limit (absolute offset).
        max: u64,
    },
    /// The receiver allows `max` bytes in total over all streams of the session.
    MaxData {
        /// New limit (absolute byte count).
        max: u64,
    },
    /// The receiver allows the peer to open streams of `dir` up to a cumulative count `max`.
    MaxStreams {
        /// Direction of the streams.
        dir: Dir,
        /// New cumulative limit.
        max: u64,
    },
    /// The receiver holds every byte of the stream below `offset`.
    DataAck {
        /// Logical stream.
        id: StreamId,
        /// First byte not yet held contiguously.
        offset: u64,
    },
}

/// Why bytes failed to decode as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame type is not one this version knows.
    #[error("unknown frame type {0:#x}")]
    UnknownType(u64),
    /// A `STREAM` frame announced more payload than [`MAX_STREAM_FRAME_PAYLOAD`].
    #[error("stream frame payload of {0} bytes exceeds the limit")]
    PayloadTooLarge(u64),
    /// A field exceeds what it may hold (offset past 2^62, ...).
    #[error("field value out of range")]
    OutOfRange,
}

/// Reads one varint from `buf[*pos..]`, advancing `pos`; `None` if the bytes run out.
fn field(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let (v, n) = varint::decode(buf.get(*pos..)?)?;
    *pos += n;
    Some(v)
}

impl Frame {
    /// Decodes the frame at the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (nothing is consumed), and
    /// otherwise removes the frame's bytes from `buf`. A `STREAM` payload is a zero-copy
    /// slice of `buf`.
    #[cfg_attr(not(feature = "_internal_test_exports"), allow(dead_code))]
    pub fn decode(buf: &mut Bytes) -> Result<Option<Self>, FrameError> {
        let mut rest = buf.clone();
        let frame = match Self::decode_head(&mut rest)? {
            None => return Ok(None),
            Some(Head::Frame(frame)) => frame,
            Some(Head::Stream {
                id,
                offset,
                len,
                fin,
            }) => {
                if rest.len() < len as usize {
                    return Ok(None);
                }
                Self::Stream {
                    id,
                    offset,
                    fin,
                    data: rest.split_to(len as usize),
                }
            }
        };
        *buf = rest;
        Ok(Some(frame))
    }

    /// Decodes the start of the frame at the front of `buf`: a whole frame, or of a
    /// `STREAM` frame only its header, whose payload is the next `len` bytes (which need
    /// not have arrived). A reader can then take the payload in whatever pieces it comes
    /// in, without gathering it.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of the head (nothing is consumed), and
    /// otherwise removes the head's bytes from `buf`. A head is at most [`MAX_HEAD`] bytes.
    #[cfg_attr(not(feature = "_internal_test_exports"), allow(dead_code))]
    pub fn decode_head(buf: &mut Bytes) -> Result<Option<Head>, FrameError> {
        let decoded = Self::parse_head(buf)?;
        if let Some((_, used)) = decoded {
            buf.advance(used);
        }
        Ok(decoded.map(|(head, _)| head))
    }

    /// [`Frame::decode_head`] on a slice: the head and how many bytes it took, or `None`
    /// when `buf` holds only part of it.
    pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, FrameError> {
        let mut pos = 0;
        let Some(ty) = field(buf, &mut pos) else {
            return Ok(None);
        };
        macro_rules! next {
            () => {
                match field(buf, &mut pos) {
                    Some(v) => v,
                    None => return Ok(None),
                }
            };
        }
        let head = match ty {
            kind::STREAM | kind::STREAM_FIN => {
                let id = StreamId(next!());
                let offset = next!();
                let len = next!();
                if len > MAX_STREAM_FRAME_PAYLOAD as u64 {
                    return Err(FrameError::PayloadTooLarge(len));
                }
                if offset.checked_add(len).is_none_or(|end| end > varint::MAX) {
                    return Err(FrameError::OutOfRange);
                }
                Head::Stream {
                    id,
                    offset,
                    len,
                    fin: ty == kind::STREAM_FIN,
                }
            }
            kind::RESET_STREAM => Head::Frame(Self::ResetStream {
                id: StreamId(next!()),
                code: next!(),
                final_size: next!(),
            }),
            kind::STOP_SENDING => Head::Frame(Self::StopSending {
                id: StreamId(next!()),
                code: next!(),
            }),
            kind::MAX_STREAM_DATA => Head::Frame(Self::MaxStreamData {
                id: StreamId(next!()),
                max: next!(),
            }),
            kind::MAX_DATA => Head::Frame(Self::MaxData { max: next!() }),
            kind::MAX_STREAMS_BIDI => Head::Frame(Self::MaxStreams {
                dir: Dir::Bi,
                max: next!(),
            }),
            kind::MAX_STREAMS_UNI => Head::Frame(Self::MaxStreams {
                dir: Dir::Uni,
                max: next!(),
            }),
            kind::DATA_ACK => Head::Frame(Self::DataAck {
                id: StreamId(next!()),
                offset: next!(),
            }),
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok(Some((head, pos)))
    }

    /// Appends the frame's encoding to `buf`.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Self::Stream {
                id,
                offset,
                fin,
                data,
            } => {
                encode_stream_header(*id, *offset, data.len(), *fin, buf);
                buf.put_slice(data);
            }
            Self::ResetStream {
                id,
                code,
                final_size,
            } => fields(buf, &[kind::RESET_STREAM, id.0, *code, *final_size]),
            Self::StopSending { id, code } => fields(buf, &[kind::STOP_SENDING, id.0, *code]),
            Self::MaxStreamData { id, max } => fields(buf, &[kind::MAX_STREAM_DATA, id.0, *max]),
            Self::MaxData { max } => fields(buf, &[kind::MAX_DATA, *max]),
            Self::MaxStreams { dir, max } => {
                let ty = match dir {
                    Dir::Bi => kind::MAX_STREAMS_BIDI,
                    Dir::Uni => kind::MAX_STREAMS_UNI,
                };
                fields(buf, &[ty, *max]);
            }
            Self::DataAck { id, offset } => fields(buf, &[kind::DATA_ACK, id.0, *offset]),
        }
    }
}

fn fields<B: BufMut>(buf: &mut B, values: &[u64]) {
    for v in values {
        varint::encode(*v, buf);
    }
}

/// Appends the header of a `STREAM` frame whose `len` payload bytes follow separately, so
/// that a payload can be queued on a carrier without being copied.
pub(crate) fn encode_stream_header<B: BufMut>(
    id: StreamId,
    offset: u64,
    len: usize,
    fin: bool,
    buf: &mut B,
) {
    let ty = if fin { kind::STREAM_FIN } else { kind::STREAM };
    fields(buf, &[ty, id.0, offset, len as u64]);
}

/// Bytes [`encode_stream_header`] appends for these fields.
pub(crate) fn stream_header_len(id: StreamId, offset: u64, len: usize, fin: bool) -> usize {
    let ty = if fin { kind::STREAM_FIN } else { kind::STREAM };
    [ty, id.0, offset, len as u64]
        .map(varint::size)
        .iter()
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Frame> {
        vec![
            Frame::Stream {
                id: StreamId(4),
                offset: 0,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Stream {
                id: StreamId(1 << 40),
                offset: (1 << 61) + 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::ResetStream {
                id: StreamId(3),
                code: 77,
                final_size: 1 << 33,
            },
            Frame::StopSending {
                id: StreamId(2),
                code: 0,
            },
            Frame::MaxStreamData {
                id: StreamId(9),
                max: 65_536,
            },
            Frame::MaxData { max: varint::MAX },
            Frame::MaxStreams {
                dir: Dir::Bi,
                max: 100,
            },
            Frame::MaxStreams {
                dir: Dir::Uni,
                max: 3,
            },
            Frame::DataAck {
                id: StreamId(8),
                offset: 12_345,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for frame in all_kinds() {
            let mut buf = Vec::new();
            frame.encode(&mut buf);
            let mut bytes = Bytes::from(buf);
            assert_eq!(Frame::decode(&mut bytes).unwrap(), Some(frame));
            assert!(bytes.is_empty());
        }
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let mut all = Vec::new();
        for frame in all_kinds() {
            frame.encode(&mut all);
        }
        for cut in 0..all.len() {
            let mut bytes = Bytes::copy_from_slice(&all[..cut]);
            let mut decoded = 0;
            while let Some(_frame) = Frame::decode(&mut bytes).unwrap() {
                decoded += 1;
            }
            assert!(decoded < all_kinds().len());
        }
    }

    #[test]
    fn a_stream_header_is_as_long_as_said() {
        for (id, offset, len) in [(0, 0, 0), (63, 64, 1200), (1 << 20, 1 << 40, 16383)] {
            for fin in [false, true] {
                let mut buf = Vec::new();
                encode_stream_header(StreamId(id), offset, len, fin, &mut buf);
                assert_eq!(buf.len(), stream_header_len(StreamId(id), offset, len, fin));
            }
        }
    }

    #[test]
    fn unknown_type_and_oversized_payload_are_errors() {
        let mut bytes = Bytes::from_static(&[0x3f]);
        assert_eq!(
            Frame::decode(&mut bytes),
            Err(FrameError::UnknownType(0x3f))
        );
        let mut buf = Vec::new();
        encode_stream_header(
            StreamId(0),
            0,
            MAX_STREAM_FRAME_PAYLOAD + 1,
            false,
            &mut buf,
        );
        assert_eq!(
            Frame::decode(&mut Bytes::from(buf)),
            Err(FrameError::PayloadTooLarge(
                MAX_STREAM_FRAME_PAYLOAD as u64 + 1
            ))
        );
        let mut buf = Vec::new();
        encode_stream_header(StreamId(0), varint::MAX, 1, false, &mut buf);
        buf.push(0);
        assert_eq!(
            Frame::decode(&mut Bytes::from(buf)),
            Err(FrameError::OutOfRange)
        );
    }
}
