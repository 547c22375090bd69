//! Write progress of one connection: the bound on a client that stops reading.
//!
//! hyper's header timer runs only while it waits for a request head; while it writes a
//! response nothing bounds it, so a client that pipelines requests (or opens a stream) and
//! never reads holds its connection for ever. [`Progress`] wraps the socket (below TLS, so
//! handshake and record writes count too) and notes since when a write has been waiting for
//! room in the socket's send buffer; [`Stall::stalled`] resolves once that has lasted the
//! given time, and the connection is then dropped (closed).
//!
//! A write that waits is the only thing measured: a held LL-HLS request or a quiet stream
//! between heartbeats writes nothing and is not stalled.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Since when a write has waited, shared between the socket and the connection's watchdog.
#[derive(Debug)]
pub struct Stall {
    epoch: Instant,
    /// Milliseconds after `epoch` plus one when the current wait began; 0: no write waits.
    since_ms: AtomicU64,
}

impl Stall {
    fn new() -> Arc<Stall> {
        Arc::new(Stall {
            epoch: Instant::now(),
            since_ms: AtomicU64::new(0),
        })
    }

    fn waiting(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let _ = self
            .since_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn progressed(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    /// When the write that waits now began waiting.
    fn since(&self) -> Option<Instant> {
        match self.since_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    /// Resolves once one write has waited `limit` without a byte going out.
    pub async fn stalled(&self, limit: Duration) {
        loop {
            match self.since() {
                Some(t) if t.elapsed() >= limit => return,
                Some(t) => tokio::time::sleep_until(t + limit).await,
                // Nothing waits now: look again in a second (a stall is noticed at most 1 s late).
                None => tokio::time::sleep(limit.min(Duration::from_secs(1))).await,
            }
        }
    }
}

/// A socket whose writes are watched ([`Stall`]).
#[derive(Debug)]
pub struct Progress<S> {
    inner: S,
    stall: Arc<Stall>,
}

impl<S> Progress<S> {
    pub fn new(inner: S) -> (Progress<S>, Arc<Stall>) {
        let stall = Stall::new();
        (
            Progress {
                inner,
                stall: stall.clone(),
            },
            stall,
        )
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn note<T>(&self, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &p {
            Poll::Pending => self.stall.waiting(),
            Poll::Ready(_) => self.stall.progressed(),
        }
        p
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Progress<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Progress<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_does_not_read_stalls_the_writer_and_one_that_reads_does_not() {
        // Why: a client that never read its pipelined answers held its connection for ever.
        let (a, mut b) = tokio::io::duplex(1024);
        let (mut a, stall) = Progress::new(a);
        let limit = Duration::from_millis(200);
        let writer = tokio::spawn(async move {
            let chunk = [7u8; 512];
            loop {
                if a.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(2), stall.stalled(limit))
            .await
            .expect("a writer whose peer never reads is reported stalled");
        // Reading makes progress: the stall clears.
        let mut buf = vec![0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut b, &mut buf).await;
        tokio::task::yield_now().await;
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            while tokio::io::AsyncReadExt::read(&mut b, &mut buf)
                .await
                .is_ok_and(|n| n > 0)
            {}
        });
        let r = tokio::time::timeout(Duration::from_millis(600), stall.stalled(limit)).await;
        assert!(r.is_err(), "a peer that reads is not stalled");
        assert!(start.elapsed() >= Duration::from_millis(600));
        writer.abort();
        reader.abort();
    }
}
