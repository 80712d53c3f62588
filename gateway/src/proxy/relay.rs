//! The byte relay between a client and an instance.
//!
//! Bytes are copied both ways without being parsed, so WebSocket, SSE, gRPC streams and anything else over TCP
//! work. Each direction reads into a small inline buffer while idle and switches to a large buffer only while
//! data flows, releasing it again after a short quiet period: an idle connection holds no large buffers. An end
//! of stream on one side is passed on as a half-close to the other. The relay ends when both directions have
//! ended, when neither direction moved a byte for the idle timeout, or when the lifetime limit is reached.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    let both = async {
        let (a, b) = tokio::join!(up, down);
        match (a, b) {
            (Err(e), _) | (_, Err(e)) => RelayEnd::Error(e),
            _ => RelayEnd::Closed,
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

#[cfg(test)]
mod tests {
    use super::*;

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
