//! A connection's byte stream: the first request head, read before the connection
//! is admitted, and the IO hyper serves on, which replays that head, reports
//! progress to the admission policy and fails writes that make no progress for
//! [`WRITE_TIMEOUT`].

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf},
    time::Sleep,
};

use super::{MAX_REQUEST_HEAD, admission::ConnState};

/// How long a response write may make no progress before the connection fails.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first request head of a connection, as read before admission.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstHead {
    /// Every byte read, up to and including a complete head (and whatever followed
    /// it in the same reads).
    Complete(Vec<u8>),
    /// More than [`MAX_REQUEST_HEAD`] bytes without the end of a head.
    Oversized,
    /// The client closed the connection first.
    Closed,
}

/// Reads until the end of a request head (an empty line), at most
/// [`MAX_REQUEST_HEAD`] bytes of head.
pub async fn read_first_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<FirstHead> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(FirstHead::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            return Ok(if end > MAX_REQUEST_HEAD {
                FirstHead::Oversized
            } else {
                FirstHead::Complete(buf)
            });
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(FirstHead::Oversized);
        }
    }
}

/// Where the head in `buf` ends (just past its empty line), if it does.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    crlf.into_iter().chain(lf).min()
}

/// The IO of an admitted connection.
#[derive(Debug)]
pub struct ConnIo<S> {
    inner: S,
    /// Bytes read before admission, served first.
    replay: Vec<u8>,
    replayed: usize,
    state: Arc<ConnState>,
    /// Armed while a write makes no progress.
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> ConnIo<S> {
    /// `inner`, after `replay` was read from it.
    pub fn new(inner: S, replay: Vec<u8>, state: Arc<ConnState>) -> Self {
        Self {
            inner,
            replay,
            replayed: 0,
            state,
            write_deadline: None,
        }
    }

    fn progressed(&mut self) {
        self.write_deadline = None;
        self.state.wrote();
    }

    /// A write is pending: fails it once it has been pending for [`WRITE_TIMEOUT`].
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        self.state.write_blocked();
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.state.write_timed_out();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {WRITE_TIMEOUT:?}"),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_ready() {
            this.state.read(buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.blocked(cx),
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.blocked(cx),
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.blocked(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_head(input: &[u8]) -> FirstHead {
        let mut input = input;
        crate::watch::http::block_on(read_first_head(&mut input)).unwrap()
    }

    #[test]
    fn heads_up_to_8_kib_are_complete_longer_ones_oversized() {
        let head = |len: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
            h.resize(len - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        assert!(matches!(
            first_head(&head(MAX_REQUEST_HEAD)),
            FirstHead::Complete(_)
        ));
        assert_eq!(
            first_head(&head(MAX_REQUEST_HEAD + 1)),
            FirstHead::Oversized
        );
        assert_eq!(first_head(&[b'a'; 20_000]), FirstHead::Oversized);
        assert_eq!(first_head(b"GET / HT"), FirstHead::Closed);
        assert!(matches!(
            first_head(b"GET / HTTP/1.0\n\n"),
            FirstHead::Complete(_)
        ));
    }
}
