//! The decoders: data-plane frames (`frame_decode`) and control messages
//! (`control_decode`).

use bytes::Bytes;
use kwik_core::control::{ControlDecoder, MAX_CONTROL_FRAME};
use kwik_core::frame::Frame;

// ---------------------------------------------------------------------------------------
// frame_decode

/// Decodes data-plane frames from `data` until it runs out or fails; every decoded frame
/// must re-encode to at most the bytes it took, decode back to itself, and every strict
/// prefix of its encoding must be "incomplete" rather than an error or a frame.
pub fn frame_decode(data: &[u8]) {
    let mut buf = Bytes::copy_from_slice(data);
    loop {
        let before = buf.len();
        match Frame::decode(&mut buf) {
            Ok(Some(frame)) => {
                let consumed = before - buf.len();
                assert!(consumed > 0, "a decoded frame takes bytes");
                let mut wire = Vec::new();
                frame.encode(&mut wire);
                assert!(
                    wire.len() <= consumed,
                    "re-encoding of {frame:?} takes {} bytes, the input {consumed}",
                    wire.len()
                );
                let cuts = (0..wire.len().min(32)).chain([wire.len() - 1]);
                for cut in cuts {
                    let mut part = Bytes::copy_from_slice(&wire[..cut]);
                    assert_eq!(Frame::decode(&mut part), Ok(None), "prefix of {cut} bytes");
                    assert_eq!(part.len(), cut, "an incomplete frame takes nothing");
                }
                let mut again = Bytes::from(wire);
                assert_eq!(Frame::decode(&mut again), Ok(Some(frame)));
                assert!(again.is_empty(), "a re-encoded frame decodes whole");
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame takes nothing");
                break;
            }
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------------------
// control_decode

/// The chunk size the first input byte selects: 1..=128, or multiples of 256 up to 32 KiB.
pub fn control_chunk_size(first: u8) -> usize {
    if first < 128 {
        usize::from(first) + 1
    } else {
        usize::from(first - 127) * 256
    }
}

/// Pushes `data[1..]` into a [`ControlDecoder`] in chunks of the size `data[0]` selects and
/// pulls messages after each; the decoder's buffer stays bounded.
pub fn control_decode(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = control_chunk_size(first);
    let bound = MAX_CONTROL_FRAME + 10 + chunk;
    let mut decoder = ControlDecoder::default();
    for piece in rest.chunks(chunk) {
        decoder.push(piece);
        assert!(
            decoder.buffered() <= bound,
            "{} buffered",
            decoder.buffered()
        );
        loop {
            match decoder.next_frame() {
                Ok(Some(_kind)) => {
                    assert!(
                        decoder.buffered() <= bound,
                        "{} buffered",
                        decoder.buffered()
                    );
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // What is left is less than one frame: a prefix of at most 10 bytes and a body
        // shorter than the limit.
        assert!(
            decoder.buffered() < MAX_CONTROL_FRAME + 10,
            "{} buffered after a drain",
            decoder.buffered()
        );
    }
}
