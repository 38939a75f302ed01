//! Request-response framing: the request is written and the stream closed, then the response
//! is read to its end. Payloads are opaque bytes, capped at a size limit.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;
use std::io;

#[derive(Clone)]
pub(crate) struct BytesCodec {
    pub(crate) max: u64,
}

/// A request or response longer than the limit (a peer that sends one misbehaves).
#[derive(Debug, thiserror::Error)]
#[error("message over the size limit of {0} bytes")]
pub(crate) struct OverLimit(u64);

/// Whether `e` is a read refused by [`BytesCodec`] for size.
pub(crate) fn is_over_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OverLimit>())
}

async fn read_capped<T: AsyncRead + Unpin + Send>(io: &mut T, max: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max + 1).read_to_end(&mut buf).await?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, OverLimit(max)));
    }
    Ok(buf)
}

impl Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    /// A request over the limit is read as an empty one (libp2p does not report requests whose
    /// read fails, and no real request is empty): the swarm task counts it against the sender.
    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_capped(io, self.max).await {
            Err(e) if is_over_limit(&e) => Ok(Vec::new()),
            r => r,
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        // A responder that refuses a request drops the stream: the asker reads nothing. Every
        // real response has bytes, so nothing is a failure, not an empty answer.
        let buf = read_capped(io, self.max).await?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the stream without a response",
            ));
        }
        Ok(buf)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}
