//! Striped responses: one response body whose bytes come from every server of the session.
//!
//! The primary answers a request with [`Striper::send_striped`]: h3 sends the response
//! headers as usual, then the striper writes the head of one DATA frame for the whole body
//! and hands the body's bytes to KWIK's `stripe`, under a ticket that carries a
//! [`StripedRequest`]: the method, the path and a validator of the content (a hash the
//! application computes). Every server of the session, the primary included, serves its
//! share through [`serve_stripes`], which finds the content by the request and checks the
//! validator; a server whose copy differs refuses its ranges
//! (`TicketError::Content`), and the client pulls them from the others. The client reads
//! an ordinary HTTP/3 response body.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};

use crate::Registry;
use crate::varint::put_varint;
use kwik_async::{DelegateError, Session, StripeId, WriteError};

/// Most bytes of a method, a path or a validator in a [`StripedRequest`].
const MAX_FIELD: usize = 4096;
const VERSION: u8 = 1;

/// What a striped response's ticket carries: enough for any server of the session to find
/// the same content and to check that its copy is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripedRequest {
    /// The request's method.
    pub method: String,
    /// The request's path (and query).
    pub path: String,
    /// Computed from the content by the application (a hash, say): a server serves its
    /// copy only if its own validator for it is the same.
    pub validator: Bytes,
}

/// A [`StripedRequest`] did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed striped request")]
pub struct MalformedRequest;

impl StripedRequest {
    /// The bytes a ticket carries.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(VERSION);
        for field in [
            self.method.as_bytes(),
            self.path.as_bytes(),
            &self.validator,
        ] {
            b.put_u16(field.len().min(MAX_FIELD) as u16);
            b.put_slice(&field[..field.len().min(MAX_FIELD)]);
        }
        b.freeze()
    }

    /// Reads what [`StripedRequest::encode`] wrote.
    pub fn decode(b: &[u8]) -> Result<Self, MalformedRequest> {
        let Some((&VERSION, mut rest)) = b.split_first() else {
            return Err(MalformedRequest);
        };
        let mut field = || -> Result<Vec<u8>, MalformedRequest> {
            let (len, tail) = rest.split_first_chunk::<2>().ok_or(MalformedRequest)?;
            let len = usize::from(u16::from_be_bytes(*len));
            if len > MAX_FIELD || tail.len() < len {
                return Err(MalformedRequest);
            }
            let (value, tail) = tail.split_at(len);
            rest = tail;
            Ok(value.to_vec())
        };
        let method = String::from_utf8(field()?).map_err(|_| MalformedRequest)?;
        let path = String::from_utf8(field()?).map_err(|_| MalformedRequest)?;
        let validator = Bytes::from(field()?);
        if !rest.is_empty() {
            return Err(MalformedRequest);
        }
        Ok(Self {
            method,
            path,
            validator,
        })
    }
}

/// Why a striped response could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StripeError {
    /// The request stream is not one this connection accepted, or it is gone.
    #[error("not a request stream of this connection")]
    UnknownStream,
    /// Writing the DATA frame's head failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// KWIK refused the stripe (not the primary, aggregation off, no credit...).
    #[error(transparent)]
    Stripe(#[from] DelegateError),
}

/// Sends striped responses on the request streams of one connection (see the module
/// documentation). Take it from [`crate::Connection::striper`] before handing the
/// connection to h3.
#[derive(Debug, Clone)]
pub struct Striper {
    pub(crate) registry: Arc<Registry>,
}

impl Striper {
    /// Answers the request on `stream` with a body of `len` bytes served by every server of
    /// the session: writes the head of one DATA frame of `len` bytes, then stripes the body
    /// under a ticket carrying `request`. Call it after `send_response`, then `finish` the
    /// stream (or send trailers). Returns the stripe's id.
    pub async fn send_striped<S, B>(
        &self,
        stream: &mut h3::server::RequestStream<S, B>,
        request: &StripedRequest,
        len: u64,
    ) -> Result<StripeId, StripeError>
    where
        S: h3::quic::SendStream<B>,
        B: bytes::Buf,
    {
        // Request streams are client-initiated and bidirectional: the id is the index
        // times four, in QUIC's numbering and KWIK's.
        let id = stream.send_id().index() << 2;
        let send = self
            .registry
            .send_half(id)
            .ok_or(StripeError::UnknownStream)?;
        let mut head = BytesMut::with_capacity(16);
        put_varint(&mut head, 0); // DATA
        put_varint(&mut head, len);
        let mut written = 0;
        while written < head.len() {
            written += poll_fn(|cx| {
                send.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .poll_send(cx, &head[written..])
            })
            .await?;
        }
        let mut send = send.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(send.stripe(request.encode(), len)?)
    }
}

/// A server's copy of some content, as [`serve_stripes`] needs it.
#[derive(Debug, Clone)]
pub struct Content {
    /// The bytes.
    pub bytes: Bytes,
    /// The application's validator of these bytes (the same computation as the primary's).
    pub validator: Bytes,
}

/// How [`serve_stripes`] starts a task.
pub type Spawn = fn(Pin<Box<dyn Future<Output = ()> + Send>>);

/// Serves this server's ranges of the session's striped responses until the session
/// ends: `find` looks up the content a [`StripedRequest`] names. A range whose request does
/// not decode, names no content, names content of another validator, or reaches past the
/// content is refused, and the client pulls it from another server. Each range is written
/// on a task of its own, started with `spawn`.
pub async fn serve_stripes<F>(session: Session, find: F, spawn: Spawn)
where
    F: Fn(&StripedRequest) -> Option<Content>,
{
    while let Ok((d, writer)) = session.accept_delegation().await {
        let content = StripedRequest::decode(&d.request)
            .ok()
            .and_then(|request| find(&request).filter(|c| c.validator == request.validator));
        let range = content.and_then(|c| {
            let start = usize::try_from(d.body_offset).ok()?;
            let end = start.checked_add(usize::try_from(d.len).ok()?)?;
            (end <= c.bytes.len()).then(|| c.bytes.slice(start..end))
        });
        let Some(range) = range else {
            // Nothing was written: the refusal cannot fail but for a session gone.
            let _ = writer.refuse();
            continue;
        };
        let mut writer = writer;
        spawn(Box::pin(async move {
            for start in (0..range.len()).step_by(256 * 1024) {
                let end = (start + 256 * 1024).min(range.len());
                if writer.write_chunk(range.slice(start..end)).await.is_err() {
                    return;
                }
            }
        }));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_encoding_and_garbage_does_not_decode() {
        let r = StripedRequest {
            method: "GET".into(),
            path: "/videos/a.mp4?x=1".into(),
            validator: Bytes::from_static(&[7; 32]),
        };
        assert_eq!(StripedRequest::decode(&r.encode()).unwrap(), r);
        let wire = r.encode();
        for cut in 0..wire.len() {
            assert_eq!(StripedRequest::decode(&wire[..cut]), Err(MalformedRequest));
        }
        let mut longer = wire.to_vec();
        longer.push(0);
        assert_eq!(StripedRequest::decode(&longer), Err(MalformedRequest));
        assert_eq!(StripedRequest::decode(&[2, 0, 0]), Err(MalformedRequest));
    }
}
