//! The minimum rate at which a download's client must take its body. A
//! client that reads, however slowly, is not cut by `server.send_timeout`,
//! and a download holds one of the replica's download slots (and one of its
//! app's) until its body is sent: a client reading a large file a few bytes
//! at a time, by token or by a signed link, held them for as long as it
//! liked. Below `server.min_download_rate` over a window the body is cut.
//!
//! Only the client's time counts: from a piece handed to the server's
//! writer until the writer asks for the next, which it does once the socket
//! has taken what came before. Time the body waits on the blob store is the
//! store's, not the client's to make up.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use bytes::Bytes;
use futures::Stream;
use tokio::time::Instant;

use crate::slots::MinRate;

/// A download cut for its client's pace.
#[derive(Debug, thiserror::Error)]
#[error("the client took {taken} bytes in {window:?} of its own time, less than {bytes_per_second} bytes/s")]
pub(crate) struct TooSlow {
    taken: u64,
    window: Duration,
    bytes_per_second: u64,
}

/// `body`, cut (ending in a `TooSlow` error) once its client takes less
/// than `rate` over a window of its own time; as it is without a rate.
pub(crate) fn paced<S, E>(body: S, rate: Option<MinRate>) -> Paced<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    Paced {
        body,
        rate,
        handed_at: None,
        client_time: Duration::ZERO,
        taken: 0,
        cut: false,
    }
}

pub(crate) struct Paced<S> {
    body: S,
    rate: Option<MinRate>,
    /// When the last piece was handed over, if the writer has not asked
    /// for the next since.
    handed_at: Option<Instant>,
    /// The client's time in the window under way, and the bytes it took.
    client_time: Duration,
    taken: u64,
    cut: bool,
}

impl<S> Paced<S> {
    /// Counts the client's time since the last piece; at the end of a
    /// window, cuts a client that took less than the minimum in it, or
    /// starts the next window.
    fn check(&mut self) -> Result<(), TooSlow> {
        let (Some(rate), Some(handed_at)) = (self.rate, self.handed_at.take()) else {
            return Ok(());
        };
        self.client_time += handed_at.elapsed();
        if self.client_time < rate.window {
            return Ok(());
        }
        if self.taken < rate.per_window() {
            return Err(TooSlow {
                taken: self.taken,
                window: self.client_time,
                bytes_per_second: rate.bytes_per_second,
            });
        }
        self.client_time = Duration::ZERO;
        self.taken = 0;
        Ok(())
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cut {
            return Poll::Ready(None);
        }
        if let Err(slow) = self.check() {
            self.cut = true;
            metrics::counter!("mediavault_downloads_cut_total", "reason" => "slow").increment(1);
            tracing::info!("download cut short: {slow}");
            return Poll::Ready(Some(Err(slow.into())));
        }
        let next = Pin::new(&mut self.body).poll_next(cx);
        if let Poll::Ready(Some(Ok(piece))) = &next {
            self.taken += piece.len() as u64;
            self.handed_at = Some(Instant::now());
        }
        next.map(|piece| piece.map(|piece| piece.map_err(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    const RATE: MinRate = MinRate {
        bytes_per_second: 1000,
        window: Duration::from_secs(10),
    };

    fn pieces(count: usize, size: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter((0..count).map(move |_| Ok(Bytes::from(vec![0u8; size]))))
    }

    /// Reads `body` to its end, `pause` of the client's own between pieces:
    /// the bytes taken, and whether it ended cut.
    async fn read(
        mut body: impl Stream<Item = Result<Bytes, BoxError>> + Unpin,
        pause: Duration,
    ) -> (usize, bool) {
        let mut taken = 0;
        while let Some(piece) = body.next().await {
            match piece {
                Ok(piece) => taken += piece.len(),
                Err(error) => {
                    assert!(error.is::<TooSlow>(), "{error}");
                    assert!(body.next().await.is_none(), "nothing after the cut");
                    return (taken, true);
                }
            }
            tokio::time::sleep(pause).await;
        }
        (taken, false)
    }

    /// A client that takes 1,000 bytes a second over a window keeps its
    /// download; one that takes 900 is cut at the end of its first window.
    #[tokio::test(start_paused = true)]
    async fn a_client_below_the_rate_is_cut_at_the_end_of_a_window() {
        let kept = read(paced(pieces(30, 1000), Some(RATE)), Duration::from_secs(1)).await;
        assert_eq!(kept, (30_000, false));
        let cut = read(paced(pieces(30, 900), Some(RATE)), Duration::from_secs(1)).await;
        assert_eq!(cut, (9_000, true), "cut when its client's tenth second ends");
        let unpaced = read(paced(pieces(30, 900), None), Duration::from_secs(1)).await;
        assert_eq!(unpaced, (27_000, false), "no minimum, no cut");
    }

    /// Time the body waits on the store is not the client's: a client that
    /// takes each piece at once is never cut, however slowly pieces come.
    #[tokio::test(start_paused = true)]
    async fn time_waiting_on_the_store_is_not_the_clients() {
        let slow_store = pieces(30, 10).then(|piece| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            piece
        });
        let (taken, cut) = read(paced(Box::pin(slow_store), Some(RATE)), Duration::ZERO).await;
        assert_eq!((taken, cut), (300, false));
    }
}
