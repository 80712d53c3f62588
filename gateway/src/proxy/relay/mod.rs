//! The byte relay between a client and an instance.
//!
//! Bytes are copied both ways without being parsed, so WebSocket, SSE, gRPC streams and anything else over TCP
//! work. Each direction reads into a small inline buffer while idle and switches to a large buffer only while
//! data flows, releasing it again after a short quiet period: an idle connection holds no large buffers. An end
//! of stream on one side is passed on as a half-close to the other; a read or write error on either side ends
//! the whole relay at once. Between two TCP sockets (passthrough, [`tcp`]), a direction that carries bulk data
//! switches to `splice(2)`, so its bytes never enter the process. The relay ends when both directions have
//! ended, when neither direction moved a byte for the idle timeout, or when the lifetime limit is reached.

mod tcp;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use tcp::{relay_tcp, SPLICE_AFTER};

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

/// When a relay last moved a byte.
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

/// Where one direction records the bytes it moved: the relay's activity, and its own and the global counter.
#[derive(Clone, Copy)]
struct Tally<'a> {
    activity: &'a Activity,
    counters: [&'a AtomicU64; 2],
}

impl Tally<'_> {
    fn moved(&self, n: usize) {
        self.activity.touch();
        for c in self.counters {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// One relay's activity and byte totals, next to the `global` counters it adds to as well.
struct Meter<'a> {
    activity: Activity,
    local: ByteCounters,
    global: &'a ByteCounters,
}

impl<'a> Meter<'a> {
    fn new(global: &'a ByteCounters) -> Self {
        Meter {
            activity: Activity {
                start: Instant::now(),
                last_ms: AtomicU64::new(0),
            },
            local: ByteCounters::default(),
            global,
        }
    }

    /// The tally of the client-to-instance direction.
    fn to_upstream(&self) -> Tally<'_> {
        Tally {
            activity: &self.activity,
            counters: [&self.local.to_upstream, &self.global.to_upstream],
        }
    }

    /// The tally of the instance-to-client direction.
    fn to_client(&self) -> Tally<'_> {
        Tally {
            activity: &self.activity,
            counters: [&self.local.to_client, &self.global.to_client],
        }
    }

    /// Runs both directions until both have ended, one failed, neither moved a byte for the idle timeout, or
    /// the lifetime is up.
    async fn drive(
        &self,
        up: impl Future<Output = io::Result<()>>,
        down: impl Future<Output = io::Result<()>>,
        limits: RelayLimits,
    ) -> RelayOutcome {
        // A failed direction ends the relay at once: its peer is gone (reset, or a TLS stream cut without
        // close_notify), and the other direction could otherwise wait for the idle timeout, holding the
        // connection and its slot in the per-app limit.
        let both = async {
            match tokio::try_join!(up, down) {
                Ok(_) => RelayEnd::Closed,
                Err(e) => RelayEnd::Error(e),
            }
        };
        let idle = async {
            loop {
                let quiet = self.activity.idle_for();
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
            to_upstream: self.local.to_upstream.load(Ordering::Relaxed),
            to_client: self.local.to_client.load(Ordering::Relaxed),
        }
    }
}

/// A direction's read buffer: a small inline one while idle, a large one while data flows.
struct Buffer {
    small: [u8; IDLE_BUFFER],
    big: Option<Vec<u8>>,
    big_size: usize,
}

impl Buffer {
    fn new(limits: &RelayLimits) -> Self {
        Buffer {
            small: [0; IDLE_BUFFER],
            big: None,
            big_size: limits.buffer_size.max(IDLE_BUFFER),
        }
    }

    /// Whether the large buffer is in use (and should be released when the direction goes quiet).
    fn is_busy(&self) -> bool {
        self.big.is_some()
    }

    /// The buffer the next read goes to.
    fn space(&mut self) -> &mut [u8] {
        match &mut self.big {
            Some(big) => big,
            None => &mut self.small,
        }
    }

    /// Data flows: the next reads go to the large buffer.
    fn busy(&mut self) {
        if self.big.is_none() {
            self.big = Some(vec![0u8; self.big_size]);
        }
    }

    /// The direction went quiet: back to the small buffer.
    fn release(&mut self) {
        self.big = None;
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
    let meter = Meter::new(global);
    let up = pump(client_r, up_w, limits, meter.to_upstream());
    let down = pump(up_r, client_w, limits, meter.to_client());
    meter.drive(up, down, limits).await
}

/// Copies `reader` to `writer` until the end of stream, which it passes on as a half-close.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    limits: RelayLimits,
    tally: Tally<'_>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = Buffer::new(&limits);
    loop {
        let busy = buffer.is_busy();
        let n = tokio::select! {
            read = reader.read(buffer.space()) => read?,
            _ = tokio::time::sleep(limits.release_after), if busy => {
                buffer.release();
                continue;
            }
        };
        if n == 0 {
            writer.shutdown().await?;
            return Ok(());
        }
        writer.write_all(&buffer.space()[..n]).await?;
        buffer.busy();
        writer.flush().await?;
        tally.moved(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits for tests: generous timeouts, a quick buffer release.
    pub(super) fn limits() -> RelayLimits {
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
}
