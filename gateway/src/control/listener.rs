//! The control listener's accept loop: TCP accept, per-source and total connection limits, TLS handshake with
//! a deadline, an idle timeout on every connection, and the peer's identity handed to the HTTP server with each
//! connection.
//!
//! One task (owned by [`TlsListener`], aborted when it is dropped) accepts TCP connections; each handshake runs in
//! its own task, bounded by the handshake timeout and owned by the accept task (aborted with it), and a finished
//! connection is queued for the HTTP server. A semaphore permit and a per-source slot travel with every
//! connection (inside [`LimitedIo`]) and are released when the connection closes, so at most `max_connections`
//! are open or handshaking at once, and at most `max_connections_per_source` of them from one source. A
//! connection over either limit is accepted and closed at once (the client sees the connection end before any
//! TLS, and retries later) rather than left waiting in the kernel's backlog, and counted in
//! [`crate::accept::closed_at_accept`]. A connection on which no byte moved either way for `idle_timeout` fails
//! its next read or write with [`io::ErrorKind::TimedOut`], which ends it.
//!
//! The HTTP server keeps connections open across requests, but a peer's claims were verified only at its handshake:
//! so a connection ends when the peer's certificate does. Once the client certificate's notAfter has passed, the
//! next read fails with [`io::ErrorKind::ConnectionAborted`] (an idle connection wakes for it), and the peer must
//! connect again, which verifies its certificate, evidence and collateral afresh at that time.
//!
//! Transient accept errors are waited out; an error that means the socket is gone (see [`crate::accept`]) or a
//! panic ends the accept task, and [`TlsListener::failure`] reports why, so the listener's owner can stop instead
//! of serving from a listener that accepts nothing.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::future::Future as _;

use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::peer::{ControlPeer, PeerAttestation};
use crate::accept::{closed_at_accept, ClosedReason, ListenerKind, SourceLimits, SourceSlot};

/// Derives a peer's attestation from its finished TLS connection (for RA-TLS: from the verified client
/// certificate).
pub type Identify =
    Arc<dyn Fn(&rustls::ServerConnection) -> Option<Arc<dyn PeerAttestation>> + Send + Sync>;

/// The limits of a [`TlsListener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Most connections open or handshaking at once.
    pub max_connections: usize,
    /// Most connections open or handshaking at once from one source (see [`SourceLimits`]).
    pub max_connections_per_source: usize,
    /// A connection on which no byte moved either way for this long is ended.
    pub idle_timeout: Duration,
}

/// A TLS stream that holds its connection-limit permit and per-source slot until it is dropped, fails once it has
/// been idle for longer than its idle timeout, and stops reading once the peer's certificate has ended.
#[derive(Debug)]
pub struct LimitedIo {
    inner: TlsStream<TcpStream>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    certificate_end: Option<CertificateEnd>,
    _permit: OwnedSemaphorePermit,
    _slot: SourceSlot,
}

/// When the peer's certificate ends: the wake-up and the notAfter it stands for (seconds since the Unix epoch).
#[derive(Debug)]
struct CertificateEnd {
    at: Pin<Box<Sleep>>,
    not_after: i64,
}

impl CertificateEnd {
    /// The end of the client certificate of `conn`, if it presented one that parses.
    fn of(conn: &rustls::ServerConnection) -> Option<Self> {
        let der = conn.peer_certificates()?.first()?;
        let not_after = attestation::ratls::parse_certificate(der).ok()?.not_after;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // Valid through its notAfter second, so it ends one second later.
        let left = u64::try_from(not_after.saturating_sub(now).saturating_add(1)).unwrap_or(0);
        Some(CertificateEnd {
            at: Box::pin(tokio::time::sleep(Duration::from_secs(left))),
            not_after,
        })
    }
}

impl LimitedIo {
    /// The error a read gets once the peer's certificate has ended; `None` before (the wake-up is registered).
    fn certificate_ended(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let end = self.certificate_end.as_mut()?;
        end.at.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "the peer's certificate ended (notAfter {} s after the epoch); it must connect again",
                    end.not_after
                ),
            )
        })
    }

    /// Bytes moved: the idle deadline starts again.
    fn active(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    /// Turns a pending read or write into a timeout once the idle deadline has passed.
    fn pending_or_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("control connection idle for {:?}", self.idle_timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Applies the idle rule to the outcome of a read or write: bytes `moved` start the idle deadline again, and a
    /// pending one becomes a timeout once the deadline has passed.
    fn after_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        moved: bool,
    ) -> Poll<io::Result<T>> {
        if moved {
            self.active();
        }
        match polled {
            Poll::Pending => self.pending_or_idle(cx),
            ready => ready,
        }
    }

    /// Applies the idle rule to the outcome of a write.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.after_io(cx, polled, moved)
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(ended) = self.certificate_ended(cx) {
            return Poll::Ready(Err(ended));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let moved = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        self.after_io(cx, polled, moved)
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, polled)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_io(cx, polled, false)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.after_io(cx, polled, false)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why the accept task of a [`TlsListener`] ended.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Accepting failed in a way that retrying cannot mend.
    #[error("accepting control connections on {addr}")]
    Accept {
        /// The listening address.
        addr: SocketAddr,
        /// The error of `accept`.
        #[source]
        source: io::Error,
    },
    /// The accept task panicked.
    #[error("the accept task of the control listener on {addr} panicked: {message}")]
    Panicked {
        /// The listening address.
        addr: SocketAddr,
        /// The panic's message.
        message: String,
    },
}

/// The outcome of the accept task, once it ended on its own; `None` while it runs.
type Failure = Option<Arc<ListenerError>>;

/// An axum [`Listener`] that yields finished TLS connections with their [`ControlPeer`].
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(LimitedIo, ControlPeer)>,
    local: SocketAddr,
    accept_task: JoinHandle<()>,
    failure: watch::Receiver<Failure>,
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
        limits: ListenerLimits,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let limit = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let per_source = SourceLimits::new(limits.max_connections_per_source);
        let (report, failure) = watch::channel(None);
        let handshaker = Handshaker {
            acceptor,
            identify,
            timeout: limits.handshake_timeout,
            idle_timeout: limits.idle_timeout,
            ready: tx,
        };
        let accept = accept_loop(tcp, limit, per_source, handshaker);
        let accept_task = tokio::spawn(async move {
            let error = match std::panic::AssertUnwindSafe(accept).catch_unwind().await {
                Ok(source) => ListenerError::Accept {
                    addr: local,
                    source,
                },
                Err(panic) => ListenerError::Panicked {
                    addr: local,
                    message: crate::report::panic_message(panic.as_ref()),
                },
            };
            tracing::error!(error = %crate::report::error_chain(&error), "control listener stopped accepting");
            report.send_replace(Some(Arc::new(error)));
        });
        Ok(Self {
            ready,
            local,
            accept_task,
            failure,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Completes when the accept task has ended on its own (a fatal accept error or a panic), with the reason; it
    /// never completes while the listener accepts, nor after the listener was dropped.
    pub fn failure(
        &self,
    ) -> impl std::future::Future<Output = Arc<ListenerError>> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            // Dropped with the listener (which aborts the task) without a failure: nothing failed.
            let failed = failure
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|failed| failed.clone());
            match failed {
                Some(error) => error,
                None => std::future::pending().await,
            }
        }
    }
}

/// What every handshake task needs.
#[derive(Clone)]
struct Handshaker {
    acceptor: TlsAcceptor,
    identify: Identify,
    timeout: Duration,
    idle_timeout: Duration,
    ready: mpsc::Sender<(LimitedIo, ControlPeer)>,
}

impl Handshaker {
    /// Runs one TLS handshake within the timeout and queues the finished connection for axum.
    async fn run(
        self,
        stream: TcpStream,
        remote: SocketAddr,
        permit: OwnedSemaphorePermit,
        slot: SourceSlot,
    ) {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let attestation = (self.identify)(tls.get_ref().1);
                let certificate_end = CertificateEnd::of(tls.get_ref().1);
                let peer = ControlPeer {
                    remote,
                    attestation,
                };
                let io = LimitedIo {
                    inner: tls,
                    idle_timeout: self.idle_timeout,
                    idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
                    certificate_end,
                    _permit: permit,
                    _slot: slot,
                };
                let _ = self.ready.send((io, peer)).await;
            }
            Ok(Err(e)) => tracing::info!(%remote, error = %e, "control TLS handshake refused"),
            Err(_) => {
                tracing::info!(%remote, timeout = ?self.timeout, "control TLS handshake timed out")
            }
        }
    }
}

/// Accepts until the socket fails for good; returns that error. Handshakes run in tasks owned by this loop.
async fn accept_loop(
    tcp: TcpListener,
    limit: Arc<Semaphore>,
    per_source: Arc<SourceLimits>,
    handshaker: Handshaker,
) -> io::Error {
    let mut at_limit = false;
    let mut handshakes = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(s) => s,
            Err(e) if crate::accept::is_fatal(&e) => return e,
            Err(e) => {
                tracing::warn!(error = %e, "control listener accept failed");
                tokio::time::sleep(crate::accept::RETRY_AFTER).await;
                continue;
            }
        };
        let Some(slot) = per_source.try_acquire(remote.ip()) else {
            tracing::debug!(%remote, max = per_source.max(), "control connections per source at the limit; closed");
            closed_at_accept().count(ListenerKind::Control, ClosedReason::PerSourceLimit);
            drop(stream);
            continue;
        };
        // The semaphore is never closed, so the only refusal is "no permit left".
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            closed_at_accept().count(ListenerKind::Control, ClosedReason::ListenerLimit);
            // Once per episode at the limit, not once per connection.
            if !at_limit {
                tracing::warn!(%remote, "control connection limit reached; closing new connections");
            }
            at_limit = true;
            drop(stream);
            continue;
        };
        at_limit = false;
        let _ = stream.set_nodelay(true);
        handshakes.spawn(handshaker.clone().run(stream, remote, permit, slot));
    }
}

impl Listener for TlsListener {
    type Io = LimitedIo;
    type Addr = ControlPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(next) => next,
            // The accept task ended ([`TlsListener::failure`] says why); wait for ever rather than spin.
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use attestation::policy::PolicyFn;
    use attestation::ratls::{self, CertOptions, RaTlsIdentity, RaTlsVerifier};
    use attestation::{Claims, SimTdReport, SimTdxAttester, SimTdxPki, TrustAnchors, Verifier};
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An RA-TLS identity under `pki` whose certificates live `validity`.
    fn identity(pki: &Arc<SimTdxPki>, validity: Duration) -> Arc<RaTlsIdentity> {
        let attester = Arc::new(SimTdxAttester::new(pki.clone(), SimTdReport::default()));
        let options = CertOptions {
            validity,
            backdate: Duration::ZERO,
            ..CertOptions::default()
        };
        Arc::new(RaTlsIdentity::new(attester, options).unwrap())
    }

    fn verifier(pki: &SimTdxPki) -> Arc<RaTlsVerifier> {
        let anchors = TrustAnchors::production()
            .with_sim_tdx_root(pki.root_der())
            .unwrap();
        Arc::new(RaTlsVerifier::new(
            Arc::new(Verifier::new(anchors)),
            Arc::new(PolicyFn(|_: &Claims| Ok(()))),
        ))
    }

    #[tokio::test]
    async fn a_kept_connection_stops_reading_when_the_peers_certificate_ends() {
        let pki = Arc::new(SimTdxPki::from_seed(b"control listener tests").unwrap());
        let server =
            ratls::server_config(identity(&pki, Duration::from_secs(3600)), verifier(&pki))
                .unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = TlsListener::new(
            tcp,
            TlsAcceptor::from(Arc::new(server)),
            Arc::new(|_: &rustls::ServerConnection| -> Option<Arc<dyn PeerAttestation>> { None }),
            ListenerLimits {
                handshake_timeout: Duration::from_secs(5),
                max_connections: 4,
                max_connections_per_source: 4,
                idle_timeout: Duration::from_secs(60),
            },
        )
        .unwrap();
        // The agent's certificate lives three seconds; the connection is kept open past it.
        let agent = identity(&pki, Duration::from_secs(3));
        let not_after = agent.certificate().not_after();
        let client = ratls::client_config(agent, verifier(&pki)).unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("gateway.test").unwrap();
        let mut conn = connector.connect(name, tcp).await.unwrap();
        let (mut io, _peer) = listener.accept().await;

        let mut buf = [0u8; 16];
        conn.write_all(b"first").await.unwrap();
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"first", "read while the certificate is valid");

        // An idle connection is woken when the certificate ends, without waiting for the peer.
        let waited = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf))
            .await
            .expect("woken at the certificate's end");
        let err = waited.unwrap_err();
        assert!(SystemTime::now() > not_after, "ended only after notAfter");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
        assert!(err.to_string().contains("certificate ended"), "{err}");
        // What the peer sends afterwards is not read.
        conn.write_all(b"after").await.unwrap();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    }
}
