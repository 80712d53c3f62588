//! The control listener's accept loop: TCP accept, TLS handshake with a deadline, a connection limit, and the
//! peer's identity handed to axum with each connection.
//!
//! One task (owned by [`TlsListener`], aborted when it is dropped) accepts TCP connections; each handshake runs in
//! its own task, bounded by the handshake timeout, and a finished connection is queued for axum. A semaphore
//! permit travels with every connection (inside [`LimitedIo`]) and is released when the connection closes, so at
//! most `max_connections` are open or handshaking at once. A connection arriving while all permits are taken is
//! accepted and closed at once (the client sees the connection end before any TLS, and retries later) rather than
//! left waiting in the kernel's backlog.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::peer::{ControlPeer, PeerAttestation};

/// Derives a peer's attestation from its finished TLS connection (for RA-TLS: from the verified client
/// certificate).
pub type Identify =
    Arc<dyn Fn(&rustls::ServerConnection) -> Option<Arc<dyn PeerAttestation>> + Send + Sync>;

/// A TLS stream that holds a connection-limit permit until it is dropped.
#[derive(Debug)]
pub struct LimitedIo {
    inner: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// An axum [`Listener`] that yields finished TLS connections with their [`ControlPeer`].
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(LimitedIo, ControlPeer)>,
    local: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `tcp`.
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        identify: Identify,
        handshake_timeout: Duration,
        max_connections: usize,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let limit = Arc::new(Semaphore::new(max_connections.max(1)));
        let accept_task = tokio::spawn(accept_loop(
            tcp,
            acceptor,
            identify,
            handshake_timeout,
            limit,
            tx,
        ));
        Ok(Self {
            ready,
            local,
            accept_task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    identify: Identify,
    handshake_timeout: Duration,
    limit: Arc<Semaphore>,
    tx: mpsc::Sender<(LimitedIo, ControlPeer)>,
) {
    let mut at_limit = false;
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => {
                at_limit = false;
                p
            }
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Once per episode at the limit, not once per connection.
                if !at_limit {
                    tracing::warn!(%remote, "control connection limit reached; closing new connections");
                }
                at_limit = true;
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, identify, tx) = (acceptor.clone(), identify.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let attestation = identify(tls.get_ref().1);
                    let peer = ControlPeer {
                        remote,
                        attestation,
                    };
                    let _ = tx
                        .send((
                            LimitedIo {
                                inner: tls,
                                _permit: permit,
                            },
                            peer,
                        ))
                        .await;
                }
                Ok(Err(e)) => tracing::info!(%remote, error = %e, "control TLS handshake refused"),
                Err(_) => {
                    tracing::info!(%remote, timeout = ?handshake_timeout, "control TLS handshake timed out")
                }
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = LimitedIo;
    type Addr = ControlPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(next) => next,
            // The accept task only ends when the semaphore closes, which never happens while we hold it; wait
            // forever rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ControlPeer {
            remote: self.local,
            attestation: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ControlPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
