//! The TUN device: opened on `/dev/net/tun` and configured (address, netmask, MTU, link up) with ioctls, so
//! the endpoint needs no external tools.
//!
//! The device is non-persistent: the kernel removes it when the last descriptor closes, so dropping [`Tun`]
//! removes the interface with its address and routes.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::error::TunnelError;
use super::offload::VNET_HDR_LEN;

/// An open, configured TUN device (layer 3, no packet-information header).
#[derive(Debug)]
pub(crate) struct Tun {
    fd: OwnedFd,
    name: String,
    /// Whether every read and write carries a `virtio_net_hdr` (offloads on).
    vnet_hdr: bool,
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size and sockaddr is plain old data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl Tun {
    /// Creates the device `name` (the kernel picks `tunN` when `name` is empty), sets `addr/prefix_len`
    /// and `mtu`, and brings the link up. With `offload`, the device hands over TCP super-segments (TSO)
    /// and packets with partial checksums, each behind a `virtio_net_hdr` (see `offload`).
    pub(crate) fn create(
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
        mtu: u16,
        offload: bool,
    ) -> Result<Tun, TunnelError> {
        let fail = |action: &'static str, source: io::Error| TunnelError::Tun {
            name: name.to_string(),
            action,
            source,
        };
        if name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            return Err(TunnelError::Config(format!(
                "TUN name {name:?} must be at most {} characters without '/', spaces or NUL",
                libc::IFNAMSIZ - 1
            )));
        }
        if prefix_len > 32 {
            return Err(TunnelError::Config(format!(
                "prefix length /{prefix_len} is longer than /32"
            )));
        }

        // SAFETY: the path is a valid NUL-terminated string; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(fail("opening /dev/net/tun", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut req = ifreq_for(name);
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if offload {
            flags |= libc::IFF_VNET_HDR;
        }
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(fail("TUNSETIFF", io::Error::last_os_error()));
        }
        // SAFETY: the kernel NUL-terminates the interface name it returns.
        let actual = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if offload {
            let features = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO_ECN;
            // SAFETY: TUNSETOFFLOAD takes its argument by value.
            if unsafe {
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETOFFLOAD,
                    features as libc::c_ulong,
                )
            } < 0
            {
                return Err(fail("TUNSETOFFLOAD", io::Error::last_os_error()));
            }
        }
        let tun = Tun {
            fd,
            name: actual,
            vnet_hdr: offload,
        };
        tun.configure(addr, prefix_len, mtu)
            .map_err(|(action, source)| TunnelError::Tun {
                name: tun.name.clone(),
                action,
                source,
            })?;
        Ok(tun)
    }

    fn configure(
        &self,
        addr: Ipv4Addr,
        prefix_len: u8,
        mtu: u16,
    ) -> Result<(), (&'static str, io::Error)> {
        // SAFETY: plain socket call, result checked.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(("opening a configuration socket", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let ioctl = |request: libc::Ioctl, req: &mut libc::ifreq, action: &'static str| {
            // SAFETY: every request used here reads or writes an ifreq, which `req` is.
            if unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
                Err((action, io::Error::last_os_error()))
            } else {
                Ok(())
            }
        };

        let mut req = ifreq_for(&self.name);
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        ioctl(libc::SIOCSIFADDR, &mut req, "setting the address")?;

        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len))
        };
        let mut req = ifreq_for(&self.name);
        req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
        ioctl(libc::SIOCSIFNETMASK, &mut req, "setting the netmask")?;

        let mut req = ifreq_for(&self.name);
        req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
        ioctl(libc::SIOCSIFMTU, &mut req, "setting the MTU")?;

        let mut req = ifreq_for(&self.name);
        ioctl(libc::SIOCGIFFLAGS, &mut req, "reading the link flags")?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ioctl(libc::SIOCSIFFLAGS, &mut req, "bringing the link up")?;
        Ok(())
    }

    /// The interface name the kernel gave the device.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet into `buf` (non-blocking: `WouldBlock` when none is queued).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Whether reads start with a `virtio_net_hdr`.
    pub(crate) fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Writes one packet (non-blocking), behind an all-zero `virtio_net_hdr` when offloads are on.
    pub(crate) fn write(&self, packet: &[u8]) -> io::Result<usize> {
        const NO_OFFLOAD: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
        if self.vnet_hdr {
            self.write_frame(&NO_OFFLOAD, packet)
        } else {
            // SAFETY: `packet` is valid for reads of its length.
            let n =
                unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }
    }

    /// Writes `hdr` and `packet` as one frame (offloads on only).
    pub(crate) fn write_frame(&self, hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        // SAFETY: both iovecs point to live buffers of the stated lengths, which writev only reads.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl std::os::fd::AsFd for Tun {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
