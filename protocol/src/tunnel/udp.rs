//! The endpoint's UDP socket, with batched receive (`recvmmsg`) and send (`sendmmsg`) over preallocated
//! buffers, so the hot path makes one system call per batch and allocates nothing.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::error::TunnelError;

/// Datagrams received per system call, and the fill level at which a send batch goes out.
pub(crate) const BATCH: usize = 64;
/// Room in a send batch: one more TCP super-segment can always follow a batch of [`BATCH`] (a 64 KiB
/// super-segment at the smallest MSS the MTU range allows makes at most 128 packets).
pub(crate) const SEND_CAPACITY: usize = BATCH + 128;
/// Room for one datagram: a full 1500-byte IP packet plus WireGuard's 32 bytes, rounded up.
pub(crate) const DATAGRAM_CAP: usize = 2048;
/// Socket buffer size asked for (the kernel may cap it; as root `*BUFFORCE` lifts the cap).
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds the endpoint's socket: non-blocking, dual-stack when bound to `[::]`, large buffers.
pub(crate) fn bind(addr: SocketAddr) -> Result<Socket, TunnelError> {
    let fail = |action: &'static str, source: io::Error| TunnelError::Udp {
        addr,
        action,
        source,
    };
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| fail("creating the socket", e))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)
            .map_err(|e| fail("enabling dual-stack", e))?;
    }
    sock.set_nonblocking(true)
        .map_err(|e| fail("setting non-blocking mode", e))?;
    for (opt, name) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(sock.as_raw_fd(), opt, SOCKET_BUFFER as libc::c_int).is_err() {
            // Without CAP_NET_ADMIN the forcing variants fail; the plain ones are capped by net.core.*mem_max.
            let _ = setsockopt_int(sock.as_raw_fd(), name, SOCKET_BUFFER as libc::c_int);
        }
    }
    sock.bind(&addr.into()).map_err(|e| fail("binding", e))?;
    Ok(sock)
}

/// Registers a duplicate of `fd` with the current tokio runtime, to wait for the readiness of the open file
/// behind it (a duplicate shares the file, and with it the readiness, of the original).
pub(crate) fn watch_fd(fd: BorrowedFd<'_>) -> io::Result<AsyncFd<OwnedFd>> {
    let dup = fd.try_clone_to_owned()?;
    // SAFETY: the AsyncFd owns the duplicate, which stays open and unchanged until the AsyncFd drops it.
    unsafe { AsyncFd::register(dup) }.map_err(Into::into)
}

fn setsockopt_int(fd: RawFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            // A dual-stack socket reports IPv4 senders as mapped addresses; keep them as plain IPv4.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), port),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// Writes `addr` as the socket family `v6` expects (IPv4 becomes IPv4-mapped on an IPv6 socket).
fn to_storage(addr: SocketAddr, v6: bool, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let (ip, port) = (addr.ip(), addr.port());
    match (ip, v6) {
        (IpAddr::V4(v4), false) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from(v4).to_be();
            sin.sin_zero = [0; 8];
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        (ip, _) => {
            let ip6 = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            sin6.sin6_flowinfo = 0;
            sin6.sin6_addr.s6_addr = ip6.octets();
            sin6.sin6_scope_id = match addr {
                SocketAddr::V6(a) => a.scope_id(),
                SocketAddr::V4(_) => 0,
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Preallocated buffers and headers for one `recvmmsg` or `sendmmsg` call of up to [`BATCH`] datagrams.
pub(crate) struct Batch {
    bufs: Vec<[u8; DATAGRAM_CAP]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Number of datagrams filled (received, or queued for sending).
    len: usize,
}

// SAFETY: the raw pointers in `iovecs` and `msgs` only ever point into this batch's own buffers and are
// rebuilt before every system call; nothing is shared.
unsafe impl Send for Batch {}

impl Batch {
    /// A batch with room for `capacity` datagrams (at least [`BATCH`]).
    pub(crate) fn new(capacity: usize) -> Batch {
        let capacity = capacity.max(BATCH);
        Batch {
            bufs: vec![[0u8; DATAGRAM_CAP]; capacity],
            lens: vec![0; capacity],
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; capacity],
            addr_lens: vec![0; capacity],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ],
            // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
            msgs: vec![unsafe { std::mem::zeroed() }; capacity],
            len: 0,
        }
    }

    /// Number of datagrams in the batch.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds at least [`BATCH`] datagrams and should be sent before more are read.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= BATCH
    }

    /// Whether one more datagram fits.
    pub(crate) fn has_room(&self) -> bool {
        self.len < self.bufs.len()
    }

    /// Datagram `i` of a received batch and its sender (None for an address family we do not speak).
    pub(crate) fn received(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (
            &self.bufs[i][..self.lens[i]],
            to_socket_addr(&self.addrs[i]),
        )
    }

    /// The buffer to fill for the next datagram to send; commit it with [`Batch::commit`].
    pub(crate) fn next_buf(&mut self) -> &mut [u8; DATAGRAM_CAP] {
        &mut self.bufs[self.len]
    }

    /// Queues the first `len` bytes of the buffer from [`Batch::next_buf`] for `dest`.
    pub(crate) fn commit(&mut self, len: usize, dest: SocketAddr, v6_socket: bool) {
        let i = self.len;
        self.lens[i] = len;
        self.addr_lens[i] = to_storage(dest, v6_socket, &mut self.addrs[i]);
        self.len += 1;
    }

    fn prepare(&mut self, count: usize, receive: bool) {
        for i in 0..count {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: if receive { DATAGRAM_CAP } else { self.lens[i] },
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = if receive {
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
            } else {
                self.addr_lens[i]
            };
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }

    /// Receives up to [`BATCH`] datagrams, waiting until at least one is there.
    pub(crate) async fn recv(&mut self, sock: &AsyncFd<OwnedFd>) -> io::Result<usize> {
        self.len = 0;
        loop {
            let mut guard = sock.readable().await?;
            match guard.try_io(|s| self.recv_now(s.get_ref().as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    fn recv_now(&mut self, fd: RawFd) -> io::Result<usize> {
        self.prepare(BATCH, true);
        // SAFETY: `msgs` holds BATCH headers pointing into this batch's live buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = self.msgs[i].msg_len as usize;
            // A datagram larger than the buffer is truncated: make it fail WireGuard's parsing.
            if self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.lens[i] = 0;
            }
        }
        self.len = n;
        Ok(n)
    }

    /// Sends every queued datagram, waiting for room in the socket's buffer when it is full, then empties
    /// the batch. A datagram the kernel refuses (for example, no route to its destination) is skipped and
    /// counted in the returned number of failures.
    pub(crate) async fn send(&mut self, sock: &AsyncFd<OwnedFd>) -> io::Result<usize> {
        let count = self.len;
        self.prepare(count, false);
        let mut sent = 0;
        let mut failed = 0;
        while sent < count {
            let mut guard = sock.ready(Interest::WRITABLE).await?;
            let fd = guard.get_ref().as_raw_fd();
            // SAFETY: headers sent..count point into this batch's live buffers.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs.as_mut_ptr().add(sent),
                    (count - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready_matching(tokio::io::Ready::WRITABLE);
                    continue;
                }
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first remaining datagram cannot be sent at all: skip it and go on with the rest.
                failed += 1;
                sent += 1;
                continue;
            }
            sent += n as usize;
        }
        self.len = 0;
        Ok(failed)
    }
}
