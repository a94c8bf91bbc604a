//! HTTP datagrams (RFC 9297) over a KWIK session: `h3-datagram`'s traits on KWIK's raw
//! datagrams. They travel on the session's primary path unless the application picks
//! another with [`crate::Connection::with_datagram_path`]; they are received from any path.

use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3_datagram::datagram::EncodedDatagram;
use h3_datagram::quic_traits::{
    DatagramConnectionExt, RecvDatagram, SendDatagram, SendDatagramErrorIncoming,
};
use kwik_async::{PathId, RawSendError, Session};

use crate::Connection;

/// Sends a connection's HTTP datagrams on one path.
#[derive(Debug, Clone)]
pub struct SendDatagramHandler {
    session: Session,
    path: PathId,
}

impl<B: Buf> SendDatagram<B> for SendDatagramHandler {
    fn send_datagram<T: Into<EncodedDatagram<B>>>(
        &mut self,
        data: T,
    ) -> Result<(), SendDatagramErrorIncoming> {
        let mut data: EncodedDatagram<B> = data.into();
        let data = data.copy_to_bytes(data.remaining());
        self.session.send_raw(self.path, data).map_err(|e| match e {
            RawSendError::TooLarge { .. } => SendDatagramErrorIncoming::TooLarge,
            RawSendError::SessionLost(e) => {
                SendDatagramErrorIncoming::ConnectionError(crate::connection_error(e))
            }
            _ => SendDatagramErrorIncoming::NotAvailable,
        })
    }
}

/// Receives a connection's HTTP datagrams, from any of its paths.
#[derive(Debug, Clone)]
pub struct RecvDatagramHandler {
    session: Session,
}

impl RecvDatagram for RecvDatagramHandler {
    type Buffer = Bytes;

    fn poll_incoming_datagram(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Buffer, h3::quic::ConnectionErrorIncoming>> {
        self.session
            .poll_read_raw(cx)
            .map_ok(|(_, data)| data)
            .map_err(crate::connection_error)
    }
}

impl<B: Buf> DatagramConnectionExt<B> for Connection {
    type SendDatagramHandler = SendDatagramHandler;
    type RecvDatagramHandler = RecvDatagramHandler;

    fn send_datagram_handler(&self) -> Self::SendDatagramHandler {
        SendDatagramHandler {
            session: self.session.clone(),
            path: self.datagram_path,
        }
    }

    fn recv_datagram_handler(&self) -> Self::RecvDatagramHandler {
        RecvDatagramHandler {
            session: self.session.clone(),
        }
    }
}
