//! The byte relay between a client and an instance.
//!
//! Bytes are copied both ways without being parsed, so WebSocket, SSE, gRPC streams and anything else over TCP
//! work. Each direction reads into a small inline buffer while idle and switches to a large buffer only while
//! data flows, releasing it again after a short quiet period: an idle connection holds no large buffers. An end
//! of stream on one side is passed on as a half-close to the other; a read or write error on either side ends
//! the whole relay at once. Between two TCP sockets (passthrough),
//! a direction that carries bulk data switches to `splice(2)`, so its bytes never enter the process. The relay ends when both directions have
//! ended, when neither direction moved a byte for the idle timeout, or when the lifetime limit is reached.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// Size of the buffer each direction keeps while idle.
const IDLE_BUFFER: usize = 128;

/// Limits and sizes for one relayed connection.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// End the relay when no byte moved in either direction for this long.
    pub idle_timeout: Duration,
    /// End the relay after this long regardless of activity.
    pub lifetime: Duration,
    /// Size of the buffer a busy direction reads into.
    pub buffer_size: usize,
    /// Release a busy direction's buffer after this long without data.
    pub release_after: Duration,
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their direction.
    Closed,
    /// No data moved for the idle timeout.
    Idle,
    /// The lifetime limit was reached.
    Lifetime,
    /// Reading or writing failed on one side.
    Error(io::Error),
}

impl RelayEnd {
    /// A short stable name, used in logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            RelayEnd::Closed => "closed",
            RelayEnd::Idle => "idle_timeout",
            RelayEnd::Lifetime => "lifetime",
            RelayEnd::Error(_) => "error",
        }
    }
}

/// Byte counters a relay adds to as data moves.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Bytes from client to instance.
    pub to_upstream: AtomicU64,
    /// Bytes from instance to client.
    pub to_client: AtomicU64,
}

/// The outcome of a relay.
#[derive(Debug)]
pub struct RelayOutcome {
    /// Why it ended.
    pub end: RelayEnd,
    /// Bytes from client to instance during this relay.
    pub to_upstream: u64,
    /// Bytes from instance to client during this relay.
    pub to_client: u64,
}

struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Relays bytes between `client` and `upstream` until both close or a limit is hit.
///
/// `global` counters (for example metrics) are added to as data moves, in addition to the returned totals.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    limits: RelayLimits,
    global: &ByteCounters,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (up_r, up_w) = tokio::io::split(upstream);
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let local = ByteCounters::default();
    let up = pump(
        client_r,
        up_w,
        limits,
        &activity,
        [&local.to_upstream, &global.to_upstream],
    );
    let down = pump(
        up_r,
        client_w,
        limits,
        &activity,
        [&local.to_client, &global.to_client],
    );
    drive(up, down, limits, &activity, &local).await
}

/// Runs both directions of a relay until both have ended, one failed, neither moved a byte for the idle timeout,
/// or the lifetime is up; `local` holds this relay's byte totals.
async fn drive(
    up: impl Future<Output = io::Result<()>>,
    down: impl Future<Output = io::Result<()>>,
    limits: RelayLimits,
    activity: &Activity,
    local: &ByteCounters,
) -> RelayOutcome {
    // A failed direction ends the relay at once: its peer is gone (reset, or a TLS stream cut without
    // close_notify), and the other direction could otherwise wait for the idle timeout, holding the connection
    // and its slot in the per-app limit.
    let both = async {
        match tokio::try_join!(up, down) {
            Ok(_) => RelayEnd::Closed,
            Err(e) => RelayEnd::Error(e),
        }
    };
    let idle = async {
        loop {
            let quiet = activity.idle_for();
            if quiet >= limits.idle_timeout {
                return RelayEnd::Idle;
            }
            tokio::time::sleep(limits.idle_timeout - quiet).await;
        }
    };
    let end = tokio::select! {
        end = both => end,
        end = idle => end,
        _ = tokio::time::sleep(limits.lifetime) => RelayEnd::Lifetime,
    };
    RelayOutcome {
        end,
        to_upstream: local.to_upstream.load(Ordering::Relaxed),
        to_client: local.to_client.load(Ordering::Relaxed),
    }
}

async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    limits: RelayLimits,
    activity: &Activity,
    counters: [&AtomicU64; 2],
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; IDLE_BUFFER];
    let mut big: Option<Vec<u8>> = None;
    loop {
        let n = match big.as_mut() {
            Some(buf) => {
                let read = tokio::select! {
                    r = reader.read(buf) => Some(r?),
                    _ = tokio::time::sleep(limits.release_after) => None,
                };
                match read {
                    Some(n) if n > 0 => {
                        writer.write_all(&buf[..n]).await?;
                        n
                    }
                    Some(n) => n,
                    None => {
                        big = None;
                        continue;
                    }
                }
            }
            None => {
                let n = reader.read(&mut small).await?;
                if n > 0 {
                    writer.write_all(&small[..n]).await?;
                    big = Some(vec![0u8; limits.buffer_size.max(IDLE_BUFFER)]);
                }
                n
            }
        };
        if n == 0 {
            writer.shutdown().await?;
            return Ok(());
        }
        writer.flush().await?;
        activity.touch();
        for c in counters {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Bytes a direction moves through user space before a TCP-to-TCP relay switches it to `splice(2)`.
///
/// Short exchanges (requests and answers) stay on the buffered path; bulk transfers move between the two
/// sockets through a kernel pipe without being copied into the process.
pub const SPLICE_AFTER: u64 = 64 * 1024;

/// Relays bytes between two TCP sockets (passthrough), switching each direction to `splice(2)` once it has
/// moved [`SPLICE_AFTER`] bytes. Limits and counters as for [`relay`]; `spliced` counts the bytes moved by
/// `splice`.
pub async fn relay_tcp(
    client: &TcpStream,
    upstream: &TcpStream,
    limits: RelayLimits,
    global: &ByteCounters,
    spliced: &AtomicU64,
) -> RelayOutcome {
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let local = ByteCounters::default();
    let up = pump_tcp(
        client,
        upstream,
        limits,
        &activity,
        [&local.to_upstream, &global.to_upstream],
        spliced,
    );
    let down = pump_tcp(
        upstream,
        client,
        limits,
        &activity,
        [&local.to_client, &global.to_client],
        spliced,
    );
    drive(up, down, limits, &activity, &local).await
}

async fn write_all_ref(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn shutdown_write(s: &TcpStream) -> io::Result<()> {
    // SAFETY: the descriptor is owned by `s`, which outlives the call.
    let rc = unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        // The peer may already be gone; the relay ends through the other direction.
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            Ok(())
        } else {
            Err(e)
        }
    }
}

async fn pump_tcp(
    src: &TcpStream,
    dst: &TcpStream,
    limits: RelayLimits,
    activity: &Activity,
    counters: [&AtomicU64; 2],
    spliced: &AtomicU64,
) -> io::Result<()> {
    let mut small = [0u8; IDLE_BUFFER];
    let mut big: Option<Vec<u8>> = None;
    let mut moved = 0u64;
    loop {
        if moved >= SPLICE_AFTER {
            drop(big.take());
            return splice_loop(src, dst, activity, counters, spliced).await;
        }
        let n = match big.as_mut() {
            Some(buf) => {
                let ready = tokio::select! {
                    r = src.readable() => { r?; true }
                    _ = tokio::time::sleep(limits.release_after) => false,
                };
                if !ready {
                    big = None;
                    continue;
                }
                match src.try_read(buf) {
                    Ok(n) => {
                        write_all_ref(dst, &buf[..n]).await?;
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            None => {
                src.readable().await?;
                match src.try_read(&mut small) {
                    Ok(n) => {
                        if n > 0 {
                            write_all_ref(dst, &small[..n]).await?;
                            big = Some(vec![0u8; limits.buffer_size.max(IDLE_BUFFER)]);
                        }
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        if n == 0 {
            return shutdown_write(dst);
        }
        moved += n as u64;
        activity.touch();
        for c in counters {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// A pipe's two ends, closed on drop.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        Ok(unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }
}

/// Bytes asked of one `splice` call (the default pipe capacity).
const SPLICE_CHUNK: usize = 64 * 1024;

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and null offsets (sockets and pipes have no offset).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

async fn splice_loop(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    counters: [&AtomicU64; 2],
    spliced: &AtomicU64,
) -> io::Result<()> {
    let pipe = Pipe::new()?;
    loop {
        src.readable().await?;
        let n = match src.try_io(Interest::READABLE, || {
            splice(src.as_raw_fd(), pipe.write.as_raw_fd(), SPLICE_CHUNK)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return shutdown_write(dst);
        }
        let mut in_pipe = n;
        while in_pipe > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), in_pipe)
            }) {
                Ok(m) => in_pipe -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        activity.touch();
        for c in counters.iter().chain([&spliced]) {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits() -> RelayLimits {
        RelayLimits {
            idle_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(10),
            buffer_size: 16 * 1024,
            release_after: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (client, mut client_far) = tokio::io::duplex(4096);
        let (upstream, mut upstream_far) = tokio::io::duplex(4096);
        let relay = tokio::spawn(async move {
            let g = ByteCounters::default();
            let out = relay(client, upstream, limits(), &g).await;
            (out, g.to_upstream.load(Ordering::Relaxed))
        });
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client_far.write_all(&p2).await.unwrap();
            client_far.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_far.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        upstream_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        // The client's half-close arrived; the instance can still answer.
        tokio::time::sleep(Duration::from_millis(120)).await; // let the busy buffer be released
        upstream_far
            .write_all(b"answer after a pause")
            .await
            .unwrap();
        upstream_far.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"answer after a pause");
        let (out, counted) = relay.await.unwrap();
        assert!(matches!(out.end, RelayEnd::Closed), "{:?}", out.end);
        assert_eq!(out.to_upstream, 200_000);
        assert_eq!(out.to_client, 20);
        assert_eq!(counted, 200_000);
    }

    /// A stream whose reads fail the way a TLS stream cut without `close_notify` does.
    struct CutStream(tokio::io::DuplexStream);

    impl AsyncRead for CutStream {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
        }
    }

    impl AsyncWrite for CutStream {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_failed_direction_ends_the_relay_at_once() {
        let (client, _client_far) = tokio::io::duplex(1024);
        // The instance stays silent and never closes: only the client side's failure can end the relay.
        let (upstream, _upstream_far) = tokio::io::duplex(1024);
        let started = Instant::now();
        let out = relay(
            CutStream(client),
            upstream,
            limits(),
            &ByteCounters::default(),
        )
        .await;
        assert!(
            matches!(&out.end, RelayEnd::Error(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{:?}",
            out.end
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn ends_on_idle_timeout() {
        let (client, _client_far) = tokio::io::duplex(1024);
        let (upstream, _upstream_far) = tokio::io::duplex(1024);
        let l = RelayLimits {
            idle_timeout: Duration::from_millis(200),
            ..limits()
        };
        let started = Instant::now();
        let out = relay(client, upstream, l, &ByteCounters::default()).await;
        assert!(matches!(out.end, RelayEnd::Idle), "{:?}", out.end);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn ends_at_lifetime_even_when_busy() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (upstream, mut upstream_far) = tokio::io::duplex(1 << 20);
        let l = RelayLimits {
            lifetime: Duration::from_millis(300),
            ..limits()
        };
        let chatter = tokio::spawn(async move {
            while client_far.write_all(b"tick").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let drain = tokio::spawn(async move {
            let mut b = [0u8; 64];
            while matches!(upstream_far.read(&mut b).await, Ok(n) if n > 0) {}
        });
        let out = relay(client, upstream, l, &ByteCounters::default()).await;
        assert!(matches!(out.end, RelayEnd::Lifetime), "{:?}", out.end);
        assert!(out.to_upstream > 0);
        chatter.abort();
        drain.abort();
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn tcp_relay_splices_bulk_data_intact_and_keeps_short_exchanges_buffered() {
        let (mut client_far, client) = tcp_pair().await;
        let (upstream, mut upstream_far) = tcp_pair().await;
        let spliced = Arc::new(AtomicU64::new(0));
        let sp = spliced.clone();
        let relay = tokio::spawn(async move {
            let out = relay_tcp(&client, &upstream, limits(), &ByteCounters::default(), &sp).await;
            out
        });
        // A short request and answer: buffered.
        client_far.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        upstream_far.read_exact(&mut buf).await.unwrap();
        upstream_far.write_all(b"world").await.unwrap();
        client_far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");
        assert_eq!(spliced.load(Ordering::Relaxed), 0);
        // 8 MB upstream to client: spliced after the first SPLICE_AFTER bytes.
        let payload: Vec<u8> = (0..8_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let p = payload.clone();
        let sender = tokio::spawn(async move {
            upstream_far.write_all(&p).await.unwrap();
            upstream_far.shutdown().await.unwrap();
            upstream_far
        });
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), payload.len());
        assert!(got == payload, "bytes changed in transit");
        let spliced_bytes = spliced.load(Ordering::Relaxed);
        assert!(
            spliced_bytes >= 8_000_000 - SPLICE_AFTER - 16 * 1024,
            "{spliced_bytes}"
        );
        client_far.shutdown().await.unwrap();
        let _upstream_far = sender.await.unwrap();
        let out = relay.await.unwrap();
        assert!(matches!(out.end, RelayEnd::Closed), "{:?}", out.end);
        assert_eq!(out.to_client, 8_000_005);
        assert_eq!(out.to_upstream, 5);
    }
}
