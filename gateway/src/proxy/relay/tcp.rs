//! The relay between two TCP sockets (passthrough): buffered like any other relay for short exchanges, then
//! `splice(2)` through a kernel pipe once a direction carries bulk data, so those bytes never enter the process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Buffer, ByteCounters, Meter, RelayLimits, RelayOutcome, Tally};

/// Bytes a direction moves through user space before a TCP-to-TCP relay switches it to `splice(2)`.
///
/// Short exchanges (requests and answers) stay on the buffered path; bulk transfers move between the two
/// sockets through a kernel pipe without being copied into the process.
pub const SPLICE_AFTER: u64 = 64 * 1024;

/// Relays bytes between two TCP sockets (passthrough), switching each direction to `splice(2)` once it has
/// moved [`SPLICE_AFTER`] bytes. Limits and counters as for [`super::relay`]; `spliced` counts the bytes moved by
/// `splice`.
pub async fn relay_tcp(
    client: &TcpStream,
    upstream: &TcpStream,
    limits: RelayLimits,
    global: &ByteCounters,
    spliced: &AtomicU64,
) -> RelayOutcome {
    let meter = Meter::new(global);
    let up = pump_tcp(client, upstream, limits, meter.to_upstream(), spliced);
    let down = pump_tcp(upstream, client, limits, meter.to_client(), spliced);
    meter.drive(up, down, limits).await
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

/// Copies `src` to `dst` through a buffer, then through `splice` once [`SPLICE_AFTER`] bytes have moved, until
/// the end of stream, which it passes on as a half-close.
async fn pump_tcp(
    src: &TcpStream,
    dst: &TcpStream,
    limits: RelayLimits,
    tally: Tally<'_>,
    spliced: &AtomicU64,
) -> io::Result<()> {
    let mut buffer = Buffer::new(&limits);
    let mut moved = 0u64;
    loop {
        if moved >= SPLICE_AFTER {
            drop(buffer);
            return splice_loop(src, dst, tally, spliced).await;
        }
        let busy = buffer.is_busy();
        tokio::select! {
            ready = src.readable() => ready?,
            _ = tokio::time::sleep(limits.release_after), if busy => {
                buffer.release();
                continue;
            }
        }
        let n = match src.try_read(buffer.space()) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return shutdown_write(dst);
        }
        write_all_ref(dst, &buffer.space()[..n]).await?;
        buffer.busy();
        moved += n as u64;
        tally.moved(n);
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
    tally: Tally<'_>,
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
        tally.moved(n);
        spliced.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::relay::tests::limits;
    use crate::proxy::relay::RelayEnd;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
