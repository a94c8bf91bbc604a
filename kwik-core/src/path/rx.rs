//! Receiving on a path: the carriers the peer opened, decoded into data-plane frames.

use bytes::{Buf, Bytes};
use quinn_proto::StreamId as QuicStreamId;

use super::{CarrierRx, Path, PathResult, Payload};
use crate::error::{ErrorCode, ProtocolError};
use crate::frame::{self, Frame};

impl Path {
    /// Reads every readable carrier and hands its frames to `on_frame`.
    pub(crate) fn read_carriers(
        &mut self,
        mut on_frame: impl FnMut(Frame) -> PathResult<()>,
    ) -> PathResult<()> {
        let mut ids = std::mem::take(&mut self.readable);
        let result = self.read_listed(&ids, &mut on_frame);
        // The list's allocation serves the next drive (nothing lists carriers while they
        // are read).
        ids.clear();
        self.readable = ids;
        result
    }

    pub(super) fn read_listed(
        &mut self,
        ids: &[QuicStreamId],
        on_frame: &mut impl FnMut(Frame) -> PathResult<()>,
    ) -> PathResult<()> {
        let pieces = &mut self.rx_pieces;
        for &id in ids {
            let Some(carrier) = self.rx.get_mut(&id) else {
                continue;
            };
            carrier.listed = false;
            let mut stream = self.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                continue;
            };
            pieces.clear();
            let mut finished = false;
            let mut reset = false;
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => pieces.push(chunk.bytes),
                    Ok(None) => {
                        finished = true;
                        break;
                    }
                    Err(quinn_proto::ReadError::Blocked) => break,
                    Err(quinn_proto::ReadError::Reset(_)) => {
                        reset = true;
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
            for piece in pieces.drain(..) {
                self.counters.frames_received += decode_carrier(carrier, piece, &mut *on_frame)?;
            }
            if reset {
                // A writer abandoned the carrier (a cancelled delegation): the frames it
                // did not send are simply missing, as if never written; a partial frame
                // is dropped.
                self.rx.remove(&id);
                continue;
            }
            if finished {
                if carrier.inside_frame() {
                    return Err(ProtocolError::new(
                        ErrorCode::FrameEncoding,
                        "carrier ended inside a frame",
                    ));
                }
                self.rx.remove(&id);
            }
        }
        Ok(())
    }
}

/// Decodes the frames in the next `piece` of a carrier. A `STREAM` payload is handed on as
/// slices of the pieces it arrives in (a frame that spans packets becomes several frames
/// of the same stream, which reassembly takes alike), so no payload byte is copied; only a
/// frame's head cut off between pieces is. Returns the number of frames completed.
fn decode_carrier(
    carrier: &mut CarrierRx,
    mut piece: Bytes,
    on_frame: &mut impl FnMut(Frame) -> PathResult<()>,
) -> PathResult<u64> {
    let mut frames = 0;
    loop {
        if let Some(p) = &mut carrier.payload {
            if piece.is_empty() {
                break;
            }
            let n = p.left.min(piece.len() as u64);
            let data = piece.split_to(n as usize);
            let last = n == p.left;
            let frame = Frame::Stream {
                id: p.id,
                offset: p.offset,
                fin: p.fin && last,
                data,
            };
            p.offset += n;
            p.left -= n;
            if last {
                carrier.payload = None;
                frames += 1;
            }
            on_frame(frame)?;
            continue;
        }
        if piece.is_empty() {
            break;
        }
        // The head: from this piece alone, or after the bytes kept from the last one.
        let kept = carrier.partial.len();
        let window: &[u8] = if kept == 0 {
            &piece
        } else {
            let take = piece.len().min(frame::MAX_HEAD);
            carrier.partial.extend_from_slice(&piece[..take]);
            &carrier.partial
        };
        let head = Frame::parse_head(window)
            .map_err(|e| ProtocolError::new(ErrorCode::FrameEncoding, e.to_string()))?;
        let Some((head, head_len)) = head else {
            if kept == 0 {
                carrier.partial.extend_from_slice(&piece);
            }
            // The bytes kept so far (from this piece too) are all of it.
            if carrier.partial.len() > frame::MAX_HEAD {
                return Err(ProtocolError::new(
                    ErrorCode::FrameEncoding,
                    "incomplete frame head larger than any valid head",
                ));
            }
            break;
        };
        // Kept bytes never hold a whole head, so the head ends inside this piece.
        piece.advance(head_len - kept);
        carrier.partial.clear();
        match head {
            frame::Head::Frame(frame) => {
                frames += 1;
                on_frame(frame)?;
            }
            frame::Head::Stream {
                id,
                offset,
                len: 0,
                fin,
            } => {
                frames += 1;
                on_frame(Frame::Stream {
                    id,
                    offset,
                    fin,
                    data: Bytes::new(),
                })?;
            }
            frame::Head::Stream {
                id,
                offset,
                len,
                fin,
            } => {
                carrier.payload = Some(Payload {
                    id,
                    offset,
                    left: len,
                    fin,
                })
            }
        }
    }
    Ok(frames)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::StreamId;
    use quinn_proto::{Dir, Side};

    fn frames() -> Vec<Frame> {
        let id = StreamId::new(Side::Client, Dir::Bi, 3);
        let data = |n: usize, seed: u8| -> Bytes {
            (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
        };
        vec![
            Frame::Stream {
                id,
                offset: 0,
                fin: false,
                data: data(3000, 1),
            },
            Frame::MaxData { max: 1 << 40 },
            Frame::Stream {
                id,
                offset: 3000,
                fin: false,
                data: Bytes::new(),
            },
            Frame::DataAck { id, offset: 77 },
            Frame::Stream {
                id,
                offset: 3000,
                fin: true,
                data: data(1500, 2),
            },
        ]
    }

    /// Decodes `wire` cut into pieces of `size` bytes; returns the stream bytes by offset,
    /// the other frames, the fin offset, and whether every payload byte was a slice of a
    /// piece.
    fn decode_in_pieces(wire: &[u8], size: usize) -> (Vec<u8>, Vec<Frame>, Option<u64>, bool) {
        let mut carrier = CarrierRx::default();
        let mut stream = vec![0u8; 4500];
        let mut others = Vec::new();
        let mut fin = None;
        let mut zero_copy = true;
        let mut completed = 0;
        for chunk in wire.chunks(size) {
            let piece = Bytes::copy_from_slice(chunk);
            let range = piece.as_ptr() as usize..piece.as_ptr() as usize + piece.len();
            completed += decode_carrier(&mut carrier, piece.clone(), &mut |f| {
                match f {
                    Frame::Stream {
                        offset,
                        fin: f,
                        data,
                        ..
                    } => {
                        if !data.is_empty() {
                            zero_copy &= range.contains(&(data.as_ptr() as usize));
                        }
                        let at = offset as usize;
                        stream[at..at + data.len()].copy_from_slice(&data);
                        if f {
                            fin = Some(offset + data.len() as u64);
                        }
                    }
                    other => others.push(other),
                }
                Ok(())
            })
            .unwrap();
        }
        assert!(
            !carrier.inside_frame(),
            "pieces of {size}: stopped inside a frame"
        );
        assert_eq!(completed, 5, "pieces of {size}: frames completed");
        (stream, others, fin, zero_copy)
    }

    #[test]
    fn payloads_cut_anywhere_are_passed_on_as_slices_of_the_pieces() {
        let original = frames();
        let mut wire = Vec::new();
        for f in &original {
            f.encode(&mut wire);
        }
        let mut want = vec![0u8; 4500];
        for f in &original {
            if let Frame::Stream { offset, data, .. } = f {
                want[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
            }
        }
        for size in [
            1, 2, 3, 5, 7, 24, 25, 31, 32, 33, 100, 1200, 1500, 2999, 5000,
        ] {
            let (stream, others, fin, zero_copy) = decode_in_pieces(&wire, size);
            assert_eq!(stream, want, "pieces of {size}");
            assert_eq!(
                others,
                [original[1].clone(), original[3].clone()],
                "pieces of {size}"
            );
            assert_eq!(fin, Some(4500), "pieces of {size}");
            assert!(zero_copy, "pieces of {size}: a payload byte was copied");
        }
    }

    #[test]
    fn a_head_of_the_largest_size_is_kept_across_pieces() {
        // A STREAM frame whose type, id, offset and length are each sent as 8-byte varints
        // (valid, if wasteful): a 32-byte head, then 10 payload bytes.
        let eight = |v: u64| (v | 0xc0 << 56).to_be_bytes();
        let mut wire = Vec::new();
        for v in [0x01, 4, 100, 10] {
            wire.extend(eight(v));
        }
        assert_eq!(wire.len(), frame::MAX_HEAD);
        wire.extend(b"0123456789");
        for size in 1..=wire.len() {
            let mut carrier = CarrierRx::default();
            let mut got = Vec::new();
            let mut fin = false;
            for chunk in wire.chunks(size) {
                decode_carrier(&mut carrier, Bytes::copy_from_slice(chunk), &mut |f| {
                    if let Frame::Stream {
                        offset,
                        data,
                        fin: f,
                        ..
                    } = f
                    {
                        assert_eq!(offset, 100 + got.len() as u64);
                        got.extend_from_slice(&data);
                        fin |= f;
                    }
                    Ok(())
                })
                .unwrap();
                assert!(carrier.partial.len() <= frame::MAX_HEAD);
            }
            assert_eq!(got, b"0123456789", "pieces of {size}");
            assert!(fin, "pieces of {size}");
            assert!(!carrier.inside_frame());
        }
    }
}
