//! One TLS record, and one `send`, per flush of the HTTP/2 connection.
//!
//! Over TLS every write is a record and a `send` of its own. `h2` keeps a
//! message apart from its buffer, written after it, when the message is
//! over 256 bytes on a stream that takes vectored writes (TLS's does), or
//! over 1 KiB on one that does not; and it flushes before it queues the
//! next frame. So a unary reply of a few hundred bytes went out in two
//! records (headers and message, then the trailers): two system calls,
//! two encryptions, two wake-ups of the peer.
//!
//! [`Coalesced`] takes writes one buffer at a time, so `h2` copies messages
//! under 1 KiB into its buffer and writes a reply whole; and it holds what
//! is written until `h2` flushes (it always does, after each batch of
//! frames), so the pieces of one flush (a larger message written apart
//! from its frame header) make one record too. A reply whose message is
//! over 1 KiB still takes two: `h2` flushes before queuing its trailers.
//!
//! It sits between `h2` and TLS, not under TLS: what TLS writes on its own
//! (handshake messages, alerts) goes out unchanged.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Held at most this much; a larger write first sends what is held, then
/// goes through as it is (a record holds 16 KiB).
const MAX_HELD: usize = 16 * 1024;

/// A stream whose writes reach the inner stream at the next flush.
pub struct Coalesced<S> {
    inner: S,
    /// Written and not yet handed on. Empty (no allocation) between
    /// flushes, so an idle connection holds nothing here.
    held: Vec<u8>,
}

impl<S> Coalesced<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Coalesced {
            inner,
            held: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Hands everything held to the inner stream. What it took is never
    /// handed again, whatever happens next.
    fn poll_hand_on(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let outcome = loop {
            if sent == self.held.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.held[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if sent == self.held.len() {
            self.held = Vec::new();
        } else {
            self.held.drain(..sent);
        }
        outcome
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() + buf.len() > MAX_HELD {
            ready!(this.poll_hand_on(cx))?;
            if buf.len() >= MAX_HELD {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_hand_on(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_hand_on(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The inner stream's connection info (TLS peer certificates, address).
impl<S: Connected> Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write it takes; takes at most `per_write` bytes a call,
    /// answers every other call `Pending` when `stalls` is set, and fails
    /// once `fails_after` more bytes are taken.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
        per_write: Option<usize>,
        stalls: bool,
        stalled: bool,
        fails_after: Option<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.stalls {
                self.stalled = !self.stalled;
                if self.stalled {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let mut n = self.per_write.map_or(buf.len(), |m| m.min(buf.len()));
            if let Some(left) = self.fails_after {
                if left == 0 {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                n = n.min(left);
                self.fails_after = Some(left - n);
            }
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_before_a_flush_reach_the_inner_stream_as_one() {
        let mut s = Coalesced::new(Recorder::default());
        s.write_all(&[1u8; 609]).await.expect("write");
        s.write_all(&[2u8; 32]).await.expect("write");
        assert!(s.inner.writes.is_empty(), "nothing goes on before a flush");
        s.flush().await.expect("flush");
        assert_eq!(s.inner.writes.len(), 1);
        assert_eq!(s.inner.writes[0].len(), 641);
        assert_eq!(s.inner.writes[0][608..610], [1, 2]);
        assert_eq!(s.inner.flushes, 1);
        assert_eq!(s.held.capacity(), 0, "nothing is kept between flushes");
    }

    #[tokio::test]
    async fn partial_and_stalled_inner_writes_lose_and_reorder_nothing() {
        let inner = Recorder {
            per_write: Some(100),
            stalls: true,
            ..Recorder::default()
        };
        let mut s = Coalesced::new(inner);
        let data: Vec<u8> = (0..2_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(300) {
            s.write_all(chunk).await.expect("write");
        }
        s.flush().await.expect("flush");
        assert_eq!(s.inner.writes.concat(), data);
    }

    #[tokio::test]
    async fn bytes_taken_before_a_failed_write_are_not_sent_again() {
        let inner = Recorder {
            fails_after: Some(3),
            ..Recorder::default()
        };
        let mut s = Coalesced::new(inner);
        s.write_all(b"abcdef").await.expect("held");
        assert!(s.flush().await.is_err());
        s.inner.fails_after = None;
        s.flush().await.expect("flush");
        assert_eq!(
            s.inner.writes.concat(),
            b"abcdef",
            "nothing twice, nothing lost"
        );
    }

    #[tokio::test]
    async fn a_large_write_goes_through_after_what_is_held() {
        let mut s = Coalesced::new(Recorder::default());
        s.write_all(b"head").await.expect("write");
        let big = vec![7u8; MAX_HELD + 1];
        s.write_all(&big).await.expect("write");
        assert_eq!(s.inner.writes.len(), 2);
        assert_eq!(s.inner.writes[0], b"head");
        assert_eq!(s.inner.writes[1].len(), MAX_HELD + 1);
        s.write_all(b"tail").await.expect("write");
        s.shutdown().await.expect("shutdown");
        assert_eq!(s.inner.writes[2], b"tail", "shutdown sends what is held");
        assert!(s.inner.shut);
    }
}
