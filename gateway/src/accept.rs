//! Accept errors: which ones a listener waits out and retries, and which ones mean its socket is gone.
//!
//! `accept(2)` fails for two kinds of reasons. Some concern one connection or a passing shortage (the connection
//! was reset before it was accepted, the process is out of descriptors or memory, a firewall refused it); the
//! listener keeps working and tries again after [`RETRY_AFTER`]. Others mean the listening socket itself is
//! unusable (it was closed or shut down, or is no listening socket at all); retrying would spin for ever on a
//! listener that never accepts again, so the accept loop ends and reports the error, and whoever supervises it
//! stops the process.

use std::io;
use std::time::Duration;

/// How long an accept loop waits after a transient error before it tries again (instead of spinning, for
/// example while out of descriptors).
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(50);

/// Whether `error`, returned by `accept`, means the listening socket can never accept again.
pub(crate) fn is_fatal(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_or_shut_down_socket_is_fatal_and_shortages_are_not() {
        for fatal in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK] {
            assert!(is_fatal(&io::Error::from_raw_os_error(fatal)), "{fatal}");
        }
        for transient in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::ECONNABORTED,
            libc::EPERM,
            libc::EINTR,
            libc::EOPNOTSUPP,
        ] {
            assert!(
                !is_fatal(&io::Error::from_raw_os_error(transient)),
                "{transient}"
            );
        }
        assert!(!is_fatal(&io::Error::other("no errno")));
    }
}
