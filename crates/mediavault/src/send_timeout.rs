//! A connection that fails a write which makes no progress for too long. A
//! client that stops reading would otherwise hold its connection, and what
//! the server buffered for it, for as long as it liked: hyper has no write
//! timeout of its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// `inner`, whose writes fail with `TimedOut` once the socket has accepted
/// nothing for `limit`. The clock runs only while a write waits: a client
/// that reads slowly but reads is never cut, and neither is an idle one.
/// Once the server's drain time is over (`interrupted`), a write that waits
/// fails at once: a download whose client is not reading would otherwise
/// hold the process past its shutdown, where the body can no longer be cut
/// (hyper polls it only when the socket takes more).
pub struct SendTimeout<T> {
    inner: T,
    limit: Duration,
    /// Armed while a write waits for the socket.
    stalled: Option<Pin<Box<Sleep>>>,
    interrupted: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<T> SendTimeout<T> {
    pub fn new(inner: T, limit: Duration, interrupted: CancellationToken) -> SendTimeout<T> {
        SendTimeout {
            inner,
            limit,
            stalled: None,
            interrupted: Box::pin(interrupted.cancelled_owned()),
        }
    }

    /// Passes on a write's outcome; while it waits, runs the clock.
    fn watch<R>(&mut self, cx: &mut Context<'_>, write: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if write.is_ready() {
            self.stalled = None;
            return write;
        }
        if self.interrupted.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server is stopping",
            )));
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        self.stalled = None;
        metrics::counter!("mediavault_send_timeouts_total").increment(1);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client accepted nothing for {limit:?}"),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let write = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, write)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let write = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, write)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flush = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, flush)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A peer that reads nothing fills the pipe; the next write fails after
    /// the limit. A peer that reads, slowly, keeps the writer going.
    #[tokio::test]
    async fn a_write_that_waits_past_the_limit_fails() {
        let limit = Duration::from_millis(200);
        let (near, _far) = tokio::io::duplex(1024);
        let mut near = SendTimeout::new(near, limit, CancellationToken::new());
        near.write_all(&[0; 1024]).await.unwrap();
        let error = near.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        let (near, mut far) = tokio::io::duplex(1024);
        let mut near = SendTimeout::new(near, limit, CancellationToken::new());
        let reader = tokio::spawn(async move {
            let mut buf = [0; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(limit / 2).await;
                total += far.read(&mut buf).await.unwrap();
            }
        });
        near.write_all(&[0; 8192]).await.unwrap();
        reader.await.unwrap();
    }

    /// Once interrupted, a write that waits fails at once, however long
    /// the limit; one the socket takes still succeeds.
    #[tokio::test]
    async fn a_waiting_write_fails_once_interrupted() {
        let interrupted = CancellationToken::new();
        let (near, _far) = tokio::io::duplex(1024);
        let mut near = SendTimeout::new(near, Duration::from_secs(3600), interrupted.clone());
        near.write_all(&[0; 1024]).await.unwrap();
        let waiting = tokio::spawn(async move { near.write_all(&[0; 1]).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        interrupted.cancel();
        let error = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting write ends")
            .unwrap()
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);

        let (near, _far) = tokio::io::duplex(1024);
        let mut near = SendTimeout::new(near, Duration::from_secs(3600), interrupted);
        near.write_all(&[0; 1024]).await.unwrap();
    }
}
