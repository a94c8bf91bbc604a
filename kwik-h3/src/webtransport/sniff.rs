//! What a stream the server opened is, read from its first bytes, and the WebTransport
//! settings the client's SETTINGS frame gains.

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use kwik_async::ReadError;

use super::{SETTINGS_ENABLE_WEBTRANSPORT, SETTINGS_WEBTRANSPORT_MAX_SESSIONS, WT_BIDI, WT_UNI};
use crate::varint::{get_varint, put_varint};

/// Reads the type (and, for WebTransport, the session id) at the start of a stream the
/// server opened.
#[derive(Debug)]
pub(crate) struct Sniff {
    stream: Option<kwik_async::RecvStream>,
    head: BytesMut,
    webtransport: u64,
}

/// A stream whose type is known.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// A WebTransport stream of the session on this CONNECT stream id, its header consumed.
    WebTransport(u64, crate::RecvStream),
    /// Anything else, with the bytes read so far in front.
    Other(crate::RecvStream),
}

impl Sniff {
    pub(crate) fn uni(stream: kwik_async::RecvStream) -> Self {
        Self::new(stream, WT_UNI)
    }

    pub(crate) fn bidi(stream: kwik_async::RecvStream) -> Self {
        Self::new(stream, WT_BIDI)
    }

    fn new(stream: kwik_async::RecvStream, webtransport: u64) -> Self {
        Self {
            stream: Some(stream),
            head: BytesMut::with_capacity(16),
            webtransport,
        }
    }

    /// Ready once the type is known; poll no more after that.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Sniffed> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Pending;
            };
            if let Some((ty, n)) = get_varint(&self.head) {
                if ty != self.webtransport {
                    return Poll::Ready(Sniffed::Other(self.other(None)));
                }
                if let Some((session, m)) = get_varint(&self.head[n..]) {
                    let rest = self.head.split_off(n + m).freeze();
                    let Some(stream) = self.stream.take() else {
                        return Poll::Pending;
                    };
                    return Poll::Ready(Sniffed::WebTransport(
                        session,
                        crate::RecvStream::with_prefix(stream, Some(rest), None),
                    ));
                }
            }
            // Two varints take at most 16 bytes: read no further than that.
            match stream.poll_read_chunk(cx, 16 - self.head.len()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(b))) => self.head.extend_from_slice(&b),
                Poll::Ready(Ok(None)) => {
                    return Poll::Ready(Sniffed::Other(self.other(Some(Ok(())))));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Sniffed::Other(self.other(Some(Err(e)))));
                }
            }
        }
    }

    fn other(&mut self, end: Option<Result<(), ReadError>>) -> crate::RecvStream {
        let head = std::mem::take(&mut self.head).freeze();
        match self.stream.take() {
            Some(stream) => crate::RecvStream::with_prefix(stream, Some(head), end),
            None => unreachable!("a sniffed stream is polled no more"),
        }
    }
}

/// Adds the WebTransport settings to the SETTINGS frame of a control stream's first bytes
/// (stream type 0, then the frame); any other bytes pass unchanged.
pub(crate) fn announce_in_settings(bytes: Bytes) -> Bytes {
    let parse = || {
        let (ty, a) = get_varint(&bytes)?;
        let (frame, b) = get_varint(&bytes[a..])?;
        let (len, c) = get_varint(&bytes[a + b..])?;
        let start = a + b + c;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        (ty == 0 && frame == 0x4 && end <= bytes.len()).then_some((start, end))
    };
    let Some((start, end)) = parse() else {
        return bytes;
    };
    // The pairs as they are, WebTransport's set to 1 (h3 sends them as 0).
    let mut pairs = Vec::new();
    let mut rest = &bytes[start..end];
    while !rest.is_empty() {
        let pair = get_varint(rest)
            .and_then(|(id, a)| get_varint(&rest[a..]).map(|(value, b)| ((id, value), a + b)));
        let Some(((id, value), n)) = pair else {
            return bytes;
        };
        pairs.push((id, value));
        rest = &rest[n..];
    }
    for id in [
        SETTINGS_ENABLE_WEBTRANSPORT,
        SETTINGS_WEBTRANSPORT_MAX_SESSIONS,
    ] {
        match pairs.iter_mut().find(|(i, _)| *i == id) {
            Some(pair) => pair.1 = 1,
            None => pairs.push((id, 1)),
        }
    }
    let mut settings = BytesMut::new();
    for (id, value) in pairs {
        put_varint(&mut settings, id);
        put_varint(&mut settings, value);
    }
    let mut out = BytesMut::with_capacity(bytes.len() + 16);
    put_varint(&mut out, 0);
    put_varint(&mut out, 0x4);
    put_varint(&mut out, settings.len() as u64);
    out.extend_from_slice(&settings);
    out.extend_from_slice(&bytes[end..]);
    out.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_gain_webtransport_and_other_bytes_pass() {
        // Stream type 0, SETTINGS of one pair (H3_DATAGRAM = 1), then nothing.
        let control = Bytes::from_static(&[0x00, 0x04, 0x03, 0x40, 0x33, 0x01]);
        let out = announce_in_settings(control);
        let (len, _) = get_varint(&out[2..]).unwrap();
        let mut pairs = Vec::new();
        let mut rest = &out[3..3 + len as usize];
        while !rest.is_empty() {
            let (id, a) = get_varint(rest).unwrap();
            let (v, b) = get_varint(&rest[a..]).unwrap();
            pairs.push((id, v));
            rest = &rest[a + b..];
        }
        assert_eq!(
            pairs,
            [
                (0x33, 1),
                (SETTINGS_ENABLE_WEBTRANSPORT, 1),
                (SETTINGS_WEBTRANSPORT_MAX_SESSIONS, 1)
            ]
        );
        // Settings h3 sent as 0 are set to 1, not repeated.
        let mut control = BytesMut::new();
        for v in [0, 4, 7] {
            put_varint(&mut control, v);
        }
        for (id, v) in [(0x33, 1), (SETTINGS_ENABLE_WEBTRANSPORT, 0)] {
            put_varint(&mut control, id);
            put_varint(&mut control, v);
        }
        let out = announce_in_settings(control.freeze());
        let (len, n) = get_varint(&out[2..]).unwrap();
        assert_eq!(out.len(), 2 + n + len as usize);
        // The same 7 bytes with the value set, and SETTINGS_WEBTRANSPORT_MAX_SESSIONS.
        assert_eq!(len, 7 + 5);
        assert_eq!(out[2 + n + 6], 1);
        // A QPACK stream, a truncated frame, a cut pair and garbage are left alone.
        for other in [
            &[0x02][..],
            &[0x00, 0x04, 0x09, 0x01],
            &[0x00, 0x04, 0x01, 0x40],
            &[0xff],
        ] {
            let b = Bytes::copy_from_slice(other);
            assert_eq!(announce_in_settings(b.clone()), b);
        }
    }
}
