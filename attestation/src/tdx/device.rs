//! Quote generation through `/dev/tdx_guest`, for kernels without configfs-tsm.
//!
//! The preferred interface is configfs-tsm ([`crate::attester::ConfigfsTsm`] with provider `tdx_guest`, Linux
//! 6.7 and later). Older TDX guest kernels expose only the `/dev/tdx_guest` character device; this module
//! speaks its two ioctls directly:
//!
//! 1. `TDX_CMD_GET_REPORT0` (`_IOWR('T', 1, struct tdx_report_req)`): 64 bytes of report data in, the
//!    1024-byte TDREPORT out (a MAC'd report only the local platform can check);
//! 2. `TDX_CMD_GET_QUOTE` (`_IOWR('T', 4, struct tdx_quote_req)`, `'T', 2` in early kernels): a shared buffer
//!    with the GetQuote header (`version`, `status`, `in_len`, `out_len`) followed by a 4-byte big-endian
//!    length and a quote-generation-service (QGS) `GET_QUOTE_REQ` message carrying the TDREPORT. The host's
//!    QGS answers in place with a `GET_QUOTE_RESP` message carrying the quote.
//!
//! Intel's `tdx-attest-rs` crate offers the same through Intel's C library `libtdx_attest`; it is not
//! published on crates.io and links that C library, so this crate implements the ioctl protocol itself.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::TdxError;
use crate::attester::Attester;
use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;

/// Where the TDX guest driver exposes its device.
pub const DEFAULT_TDX_GUEST_DEVICE: &str = "/dev/tdx_guest";

/// Length of a TDREPORT.
pub const TDREPORT_LEN: usize = 1024;
/// Size of the GetQuote buffer (the kernel's limit is four pages).
const QUOTE_BUF_LEN: usize = 4 * 4096;
/// GetQuote header: version (8), status (8), in_len (4), out_len (4).
const GET_QUOTE_HEADER_LEN: usize = 24;
/// QGS message header: major (2), minor (2), type (4), size (4), error code (4).
const QGS_HEADER_LEN: usize = 16;
const QGS_GET_QUOTE_REQ: u32 = 0;
const QGS_GET_QUOTE_RESP: u32 = 1;
const GET_QUOTE_SUCCESS: u64 = 0;
const GET_QUOTE_IN_FLIGHT: u64 = u64::MAX;
const GET_QUOTE_SERVICE_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;

/// `_IOWR(type, nr, size)` of Linux's generic ioctl encoding.
const fn iowr(ty: u8, nr: u8, size: usize) -> u64 {
    (3u64 << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `TDX_CMD_GET_REPORT0`.
pub const TDX_CMD_GET_REPORT0: u64 = iowr(b'T', 1, 64 + TDREPORT_LEN);
/// `TDX_CMD_GET_QUOTE` as merged with the TDX guest driver's quote support.
pub const TDX_CMD_GET_QUOTE: u64 = iowr(b'T', 4, 16);
/// `TDX_CMD_GET_QUOTE` of early TDX guest kernels.
pub const TDX_CMD_GET_QUOTE_EARLY: u64 = iowr(b'T', 2, 16);

#[repr(C)]
struct ReportReq {
    report_data: [u8; 64],
    td_report: [u8; TDREPORT_LEN],
}

#[repr(C)]
struct QuoteReq {
    buf: u64,
    len: u64,
}

/// The GetQuote buffer for `td_report`: header, big-endian message length, QGS `GET_QUOTE_REQ`.
pub fn get_quote_request(td_report: &[u8; TDREPORT_LEN]) -> Vec<u8> {
    let msg_len = QGS_HEADER_LEN + 8 + TDREPORT_LEN;
    let mut buf = vec![0u8; QUOTE_BUF_LEN];
    buf[0..8].copy_from_slice(&1u64.to_le_bytes()); // version
    buf[8..16].copy_from_slice(&0u64.to_le_bytes()); // status
    buf[16..20].copy_from_slice(&((4 + msg_len) as u32).to_le_bytes()); // in_len
    buf[20..24].copy_from_slice(&0u32.to_le_bytes()); // out_len
    let mut at = GET_QUOTE_HEADER_LEN;
    buf[at..at + 4].copy_from_slice(&(msg_len as u32).to_be_bytes());
    at += 4;
    let mut msg = Vec::with_capacity(msg_len);
    msg.extend_from_slice(&1u16.to_le_bytes()); // major version
    msg.extend_from_slice(&0u16.to_le_bytes()); // minor version
    msg.extend_from_slice(&QGS_GET_QUOTE_REQ.to_le_bytes());
    msg.extend_from_slice(&(msg_len as u32).to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes()); // error code
    msg.extend_from_slice(&(TDREPORT_LEN as u32).to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes()); // no id list
    msg.extend_from_slice(td_report);
    buf[at..at + msg_len].copy_from_slice(&msg);
    buf
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Extract the quote from a GetQuote buffer the host has answered.
pub fn parse_get_quote_response(buf: &[u8]) -> Result<Vec<u8>, TdxError> {
    let bad = |what: &str| TdxError::Device(format!("GetQuote response: {what}"));
    let header = buf
        .get(..GET_QUOTE_HEADER_LEN)
        .ok_or_else(|| bad("shorter than its header"))?;
    let status = u64::from_le_bytes(header[8..16].try_into().map_err(|_| bad("header"))?);
    match status {
        GET_QUOTE_SUCCESS => {}
        GET_QUOTE_IN_FLIGHT => {
            return Err(bad(
                "the host did not finish the request (status IN_FLIGHT)",
            ))
        }
        GET_QUOTE_SERVICE_UNAVAILABLE => {
            return Err(bad(
                "the host has no quote generation service (status SERVICE_UNAVAILABLE)",
            ))
        }
        other => return Err(bad(&format!("the host reported error status {other:#x}"))),
    }
    let out_len = le_u32(header, 20).ok_or_else(|| bad("header"))? as usize;
    let payload = buf
        .get(GET_QUOTE_HEADER_LEN..GET_QUOTE_HEADER_LEN + out_len)
        .ok_or_else(|| bad("out_len exceeds the buffer"))?;
    if payload.len() < 4 {
        return Err(bad("empty (out_len < 4)"));
    }
    let msg_len = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    let msg = payload
        .get(4..4 + msg_len)
        .ok_or_else(|| bad("message length exceeds out_len"))?;
    if msg.len() < QGS_HEADER_LEN + 8 {
        return Err(bad("QGS message shorter than its header"));
    }
    let major = u16::from_le_bytes([msg[0], msg[1]]);
    let ty = le_u32(msg, 4).ok_or_else(|| bad("QGS header"))?;
    let error_code = le_u32(msg, 12).ok_or_else(|| bad("QGS header"))?;
    if major != 1 {
        return Err(bad(&format!(
            "QGS message major version {major} (expected 1)"
        )));
    }
    if ty != QGS_GET_QUOTE_RESP {
        return Err(bad(&format!(
            "QGS message type {ty} (expected GET_QUOTE_RESP)"
        )));
    }
    if error_code != 0 {
        return Err(bad(&format!(
            "the quote generation service failed with error {error_code:#x}"
        )));
    }
    let id_len = le_u32(msg, QGS_HEADER_LEN).ok_or_else(|| bad("QGS body"))? as usize;
    let quote_len = le_u32(msg, QGS_HEADER_LEN + 4).ok_or_else(|| bad("QGS body"))? as usize;
    let start = QGS_HEADER_LEN + 8 + id_len;
    let quote = msg
        .get(start..start + quote_len)
        .ok_or_else(|| bad("quote length exceeds the message"))?;
    if quote.is_empty() {
        return Err(bad("empty quote"));
    }
    Ok(quote.to_vec())
}

/// Attester over `/dev/tdx_guest`.
#[derive(Debug)]
pub struct TdxGuestDevice {
    path: PathBuf,
    file: File,
}

impl TdxGuestDevice {
    /// Open [`DEFAULT_TDX_GUEST_DEVICE`].
    pub fn open() -> Result<Self, AttestError> {
        Self::open_path(DEFAULT_TDX_GUEST_DEVICE)
    }

    /// Open the device at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self, AttestError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| AttestError::Unavailable(format!("{}: {e}", path.display())))?;
        Ok(TdxGuestDevice { path, file })
    }

    fn ioctl<T>(&self, request: u64, arg: &mut T) -> std::io::Result<()> {
        // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` value whose size is the one encoded in
        // `request`; the driver reads and writes only within it (and, for GetQuote, within the buffer whose
        // address and length the argument carries, which the caller keeps alive for the duration of the call).
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, arg as *mut T) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The TDREPORT for `report_data` (`TDX_CMD_GET_REPORT0`).
    pub fn td_report(&self, report_data: &[u8; 64]) -> Result<[u8; TDREPORT_LEN], AttestError> {
        let mut req = Box::new(ReportReq {
            report_data: *report_data,
            td_report: [0; TDREPORT_LEN],
        });
        self.ioctl(TDX_CMD_GET_REPORT0, &mut *req).map_err(|e| {
            AttestError::Device(format!(
                "TDX_CMD_GET_REPORT0 on {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(req.td_report)
    }

    /// A quote for `report_data`: TDREPORT, then GetQuote through the host's quote generation service.
    /// Inside this crate only: callers go through [`Attester::attest`], which never takes raw bytes.
    pub(crate) fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        let td_report = self.td_report(report_data)?;
        let mut buf = get_quote_request(&td_report);
        let mut req = QuoteReq {
            buf: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
        };
        let result = match self.ioctl(TDX_CMD_GET_QUOTE, &mut req) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)) => {
                self.ioctl(TDX_CMD_GET_QUOTE_EARLY, &mut req)
            }
            other => other,
        };
        result.map_err(|e| {
            AttestError::Device(format!("TDX_CMD_GET_QUOTE on {}: {e}", self.path.display()))
        })?;
        parse_get_quote_response(&buf).map_err(|e| AttestError::Device(e.to_string()))
    }
}

impl Attester for TdxGuestDevice {
    fn platform(&self) -> Platform {
        Platform::Tdx
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        Ok(Evidence::Tdx(super::TdxEvidence {
            quote: self.quote(report_data.as_bytes())?,
            collateral: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(TDX_CMD_GET_REPORT0, 0xc440_5401);
        assert_eq!(TDX_CMD_GET_QUOTE, 0xc010_5404);
        assert_eq!(TDX_CMD_GET_QUOTE_EARLY, 0xc010_5402);
        assert_eq!(std::mem::size_of::<ReportReq>(), 1088);
        assert_eq!(std::mem::size_of::<QuoteReq>(), 16);
    }

    /// Answer a request the way a host's quote generation service does.
    fn answer(request: &mut [u8], status: u64, error_code: u32, quote: &[u8]) {
        let msg_len = QGS_HEADER_LEN + 8 + quote.len();
        request[8..16].copy_from_slice(&status.to_le_bytes());
        request[20..24].copy_from_slice(&((4 + msg_len) as u32).to_le_bytes());
        let at = GET_QUOTE_HEADER_LEN;
        request[at..at + 4].copy_from_slice(&(msg_len as u32).to_be_bytes());
        let m = at + 4;
        request[m..m + 2].copy_from_slice(&1u16.to_le_bytes());
        request[m + 4..m + 8].copy_from_slice(&QGS_GET_QUOTE_RESP.to_le_bytes());
        request[m + 8..m + 12].copy_from_slice(&(msg_len as u32).to_le_bytes());
        request[m + 12..m + 16].copy_from_slice(&error_code.to_le_bytes());
        request[m + 16..m + 20].copy_from_slice(&0u32.to_le_bytes());
        request[m + 20..m + 24].copy_from_slice(&(quote.len() as u32).to_le_bytes());
        request[m + 24..m + 24 + quote.len()].copy_from_slice(quote);
    }

    #[test]
    fn request_carries_the_td_report_in_a_qgs_message() {
        let report = [0x5a; TDREPORT_LEN];
        let buf = get_quote_request(&report);
        assert_eq!(buf.len(), QUOTE_BUF_LEN);
        assert_eq!(u64::from_le_bytes(buf[0..8].try_into().unwrap()), 1);
        let in_len = le_u32(&buf, 16).unwrap() as usize;
        assert_eq!(in_len, 4 + QGS_HEADER_LEN + 8 + TDREPORT_LEN);
        let msg = &buf[GET_QUOTE_HEADER_LEN + 4..GET_QUOTE_HEADER_LEN + in_len];
        assert_eq!(le_u32(msg, 4), Some(QGS_GET_QUOTE_REQ));
        assert_eq!(le_u32(msg, QGS_HEADER_LEN), Some(TDREPORT_LEN as u32));
        assert_eq!(&msg[QGS_HEADER_LEN + 8..], &report[..]);
    }

    #[test]
    fn responses_are_parsed_and_failures_reported() {
        let mut buf = get_quote_request(&[0; TDREPORT_LEN]);
        answer(&mut buf, GET_QUOTE_SUCCESS, 0, b"QUOTE BYTES");
        assert_eq!(parse_get_quote_response(&buf).unwrap(), b"QUOTE BYTES");

        for (status, code, needle) in [
            (GET_QUOTE_SERVICE_UNAVAILABLE, 0, "SERVICE_UNAVAILABLE"),
            (GET_QUOTE_IN_FLIGHT, 0, "IN_FLIGHT"),
            (0x8000_0000_0000_0000, 0, "error status"),
            (GET_QUOTE_SUCCESS, 0x12, "error 0x12"),
        ] {
            let mut buf = get_quote_request(&[0; TDREPORT_LEN]);
            answer(&mut buf, status, code, b"Q");
            let err = parse_get_quote_response(&buf).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let mut buf = get_quote_request(&[0; TDREPORT_LEN]);
        answer(&mut buf, GET_QUOTE_SUCCESS, 0, b"Q");
        buf[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_get_quote_response(&buf).is_err());
        assert!(parse_get_quote_response(&buf[..10]).is_err());
        let mut empty = get_quote_request(&[0; TDREPORT_LEN]);
        answer(&mut empty, GET_QUOTE_SUCCESS, 0, b"");
        assert!(parse_get_quote_response(&empty).is_err());
    }

    #[test]
    fn a_missing_device_is_unavailable() {
        let err = TdxGuestDevice::open_path("/nonexistent/tdx_guest").unwrap_err();
        assert!(matches!(err, AttestError::Unavailable(_)), "{err}");
    }
}
