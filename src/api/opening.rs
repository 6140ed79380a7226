//! A deadline on a new connection's HTTP/2 preface. HTTP/2 sets none (its pings begin only after
//! the preface), so a client that connects and says nothing would hold its connection slot for
//! good. The deadline is counted on the bytes HTTP/2 reads: over TLS, the decrypted ones, so that
//! finishing the handshake and then going silent doesn't pass for an opening.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// A new connection must finish its TLS handshake, if any, and send the 24-byte HTTP/2 preface
/// within this of being accepted.
pub const OPENING_DEADLINE: Duration = Duration::from_secs(10);
/// The HTTP/2 client preface's length.
const PREFACE_BYTES: usize = 24;

/// A connection that fails with `TimedOut` if it hasn't sent its preface by the deadline.
pub struct Opening<T> {
    inner: T,
    /// Until the preface has come.
    waiting: Option<Waiting>,
}

struct Waiting {
    deadline: Pin<Box<Sleep>>,
    read: usize,
}

impl<T> Opening<T> {
    /// `inner` must have sent its preface by `deadline`.
    pub fn until(inner: T, deadline: Instant) -> Self {
        Opening {
            inner,
            waiting: Some(Waiting {
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                read: 0,
            }),
        }
    }
}

impl<T: Connected> Connected for Opening<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Opening<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(waiting) = &mut this.waiting else {
            return polled;
        };
        waiting.read += buf.filled().len() - before;
        if waiting.read >= PREFACE_BYTES {
            this.waiting = None;
            return polled;
        }
        if polled.is_pending() && waiting.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent no HTTP/2 preface in time",
            )));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Opening<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_silent_past_the_deadline_fails_and_one_that_sent_its_preface_does_not() {
        let soon = Duration::from_millis(200);
        let (mut client, server) = tokio::io::duplex(64);
        let mut silent = Opening::until(server, Instant::now() + soon);
        client.write_all(b"PRI * HTTP/2.0").await.unwrap(); // 14 of the 24 bytes
        let mut buf = [0u8; 64];
        assert_eq!(silent.read(&mut buf).await.unwrap(), 14);
        let e = tokio::time::timeout(10 * soon, silent.read(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut opened = Opening::until(server, Instant::now() + soon);
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        assert_eq!(opened.read(&mut buf).await.unwrap(), PREFACE_BYTES);
        // Past the deadline, an opened connection just waits for its next bytes.
        let next = tokio::time::timeout(3 * soon, opened.read(&mut buf)).await;
        assert!(next.is_err(), "an opened connection was given up on: {next:?}");
    }
}
