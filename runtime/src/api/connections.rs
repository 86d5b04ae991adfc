//! Client connections as the gRPC server accepts them, bounded: at most
//! `MAX_CONNECTIONS_PER_CLIENT` open per client address (more are closed
//! at once), each closed when the client has sent nothing for
//! `CONNECTION_IDLE_TIMEOUT` (`CONNECTION_HANDSHAKE_TIMEOUT` before its
//! first bytes), so idle and half-open connections cannot pile up. When the
//! process runs out of file descriptors, accepting pauses briefly (instead
//! of spinning on the error) and the log says what ran out.

use crate::limits::{
    CONNECTION_HANDSHAKE_TIMEOUT, CONNECTION_IDLE_TIMEOUT, MAX_CONNECTIONS_PER_CLIENT,
};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// How long accepting pauses after the process ran out of file descriptors.
const FD_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections per client address.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The accepted connections of a listener, bounded as the module says.
pub struct Connections {
    incoming: TcpIncoming,
    counts: Counts,
    pause: Option<Pin<Box<Sleep>>>,
}

impl Connections {
    /// Bounds the connections `incoming` accepts.
    pub fn new(incoming: TcpIncoming) -> Self {
        Connections {
            incoming,
            counts: Arc::default(),
            pause: None,
        }
    }
}

impl Stream for Connections {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(p) = self.pause.as_mut() {
                ready!(p.as_mut().poll(cx));
                self.pause = None;
            }
            let stream = match ready!(Pin::new(&mut self.incoming).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(s)) => s,
                Some(Err(e)) if out_of_fds(&e) => {
                    tracing::warn!(error = %e, "out of file descriptors: not accepting connections for {FD_BACKOFF:?}; raise the open-files limit (ulimit -n) or close idle clients");
                    self.pause = Some(Box::pin(tokio::time::sleep(FD_BACKOFF)));
                    continue;
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            };
            let Ok(peer) = stream.peer_addr() else {
                continue;
            };
            let ip = peer.ip();
            {
                let mut counts = self.counts.lock().expect("connection counts");
                let n = counts.entry(ip).or_default();
                if *n >= MAX_CONNECTIONS_PER_CLIENT {
                    tracing::warn!(client = %ip, "client already has {MAX_CONNECTIONS_PER_CLIENT} connections open; closing a new one");
                    continue;
                }
                *n += 1;
            }
            return Poll::Ready(Some(Ok(Conn {
                stream,
                ip,
                counts: self.counts.clone(),
                idle: Box::pin(tokio::time::sleep(CONNECTION_HANDSHAKE_TIMEOUT)),
            })));
        }
    }
}

fn out_of_fds(e: &io::Error) -> bool {
    // EMFILE (the process's limit) and ENFILE (the system's).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// One accepted connection: closed once its client has been silent too
/// long; counted against its client address while open.
pub struct Conn {
    stream: TcpStream,
    ip: IpAddr,
    counts: Counts,
    idle: Pin<Box<Sleep>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("connection counts");
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let at = Instant::now() + CONNECTION_IDLE_TIMEOUT;
                    self.idle.as_mut().reset(at);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
