//! Reading a client's TLS ClientHello before deciding where the connection goes.
//!
//! The bytes are fed to rustls's [`Acceptor`], which reassembles a ClientHello spread over any number of TLS
//! records and TCP segments. Every byte read from the client is kept, so a passthrough route can replay the
//! ClientHello verbatim to the instance and a terminating route can hand it to the TLS server. Reading stops at
//! a size cap and at a deadline, so a slow or oversized client cannot hold a connection open.

use std::time::Duration;

use rustls::server::{Accepted, Acceptor};
use tokio::io::{AsyncRead, AsyncReadExt};

/// TLS alert descriptions the gateway sends when it refuses a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AlertDescription {
    /// `handshake_failure` (40).
    HandshakeFailure = 40,
    /// `decode_error` (50).
    DecodeError = 50,
    /// `internal_error` (80).
    InternalError = 80,
    /// `unrecognized_name` (112).
    UnrecognizedName = 112,
}

/// The bytes of a fatal TLS alert record (TLS 1.2 record version, as TLS 1.3 also uses for alerts).
pub fn fatal_alert(description: AlertDescription) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description as u8]
}

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientHelloError {
    /// The client sent no complete ClientHello before the deadline.
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    /// The client sent more than the cap without completing a ClientHello.
    #[error("ClientHello exceeds {cap} bytes")]
    TooLarge {
        /// The cap in bytes.
        cap: usize,
    },
    /// The client closed the connection before completing a ClientHello.
    #[error("connection closed after {0} bytes, before a complete ClientHello")]
    Closed(usize),
    /// The bytes are not a valid TLS ClientHello.
    #[error("malformed ClientHello: {0}")]
    Malformed(rustls::Error),
    /// Reading from the client failed.
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientHelloError {
    /// A short stable name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ClientHelloError::Timeout(_) => "client_hello_timeout",
            ClientHelloError::TooLarge { .. } => "client_hello_too_large",
            ClientHelloError::Closed(_) => "client_hello_closed",
            ClientHelloError::Malformed(_) => "client_hello_malformed",
            ClientHelloError::Io(_) => "client_hello_io",
        }
    }

    /// The alert to send the client, if one is worth sending.
    pub fn alert(&self) -> Option<AlertDescription> {
        match self {
            ClientHelloError::TooLarge { .. } | ClientHelloError::Malformed(_) => {
                Some(AlertDescription::DecodeError)
            }
            ClientHelloError::Timeout(_)
            | ClientHelloError::Closed(_)
            | ClientHelloError::Io(_) => None,
        }
    }
}

/// A ClientHello that has been read completely.
pub struct ReadClientHello {
    /// rustls's view of the ClientHello, ready to become a server connection.
    pub accepted: Accepted,
    /// Every byte read from the client so far, starting with the first record of the ClientHello.
    pub raw: Vec<u8>,
}

impl std::fmt::Debug for ReadClientHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadClientHello")
            .field("server_name", &self.accepted.client_hello().server_name())
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// Reads a complete ClientHello from `reader`, keeping the raw bytes, within `deadline` and `cap` bytes.
pub async fn read_client_hello<R>(
    reader: &mut R,
    cap: usize,
    deadline: Duration,
) -> Result<ReadClientHello, ClientHelloError>
where
    R: AsyncRead + Unpin,
{
    match tokio::time::timeout(deadline, read_unbounded_in_time(reader, cap)).await {
        Ok(result) => result,
        Err(_) => Err(ClientHelloError::Timeout(deadline)),
    }
}

async fn read_unbounded_in_time<R>(
    reader: &mut R,
    cap: usize,
) -> Result<ReadClientHello, ClientHelloError>
where
    R: AsyncRead + Unpin,
{
    let mut acceptor = Acceptor::default();
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let room = cap.saturating_sub(raw.len());
        if room == 0 {
            return Err(ClientHelloError::TooLarge { cap });
        }
        let want = room.min(chunk.len());
        let n = reader.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(ClientHelloError::Closed(raw.len()));
        }
        raw.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            // Reading from a slice only fails when rustls's own message buffer is full. `accept` must run
            // after every read so that rustls lets a large handshake message grow its buffer.
            if acceptor.read_tls(&mut fresh).is_err() {
                return Err(ClientHelloError::TooLarge { cap });
            }
            match acceptor.accept() {
                // Any bytes after the ClientHello are already in `raw`, which is replayed whole.
                Ok(Some(accepted)) => return Ok(ReadClientHello { accepted, raw }),
                Ok(None) => {}
                Err((
                    rustls::Error::InvalidMessage(rustls::InvalidMessage::HandshakePayloadTooLarge),
                    _,
                )) => return Err(ClientHelloError::TooLarge { cap }),
                Err((error, _alert)) => return Err(ClientHelloError::Malformed(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::tls::{client_hello_message, records};
    use tokio::io::AsyncWriteExt;

    async fn feed(bytes: Vec<u8>, segment: usize) -> Result<ReadClientHello, ClientHelloError> {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            for part in bytes.chunks(segment) {
                if client.write_all(part).await.is_err() {
                    break;
                }
                client.flush().await.ok();
                tokio::task::yield_now().await;
            }
            client
        });
        let result = read_client_hello(&mut server, 64 * 1024 + 4096, Duration::from_secs(5)).await;
        drop(writer);
        result
    }

    /// Feeds `wire` in segments of `segment` bytes; the hello read must name `sni` and keep every byte.
    async fn assert_reads(wire: Vec<u8>, segment: usize, sni: &str) {
        let hello = feed(wire.clone(), segment).await.unwrap();
        assert_eq!(hello.accepted.client_hello().server_name(), Some(sni));
        assert_eq!(hello.raw, wire);
    }

    #[tokio::test]
    async fn reads_a_hello_one_byte_at_a_time() {
        let wire = records(
            &client_hello_message(Some("deadbeef11.example.org"), 0),
            16384,
        );
        assert_reads(wire, 1, "deadbeef11.example.org").await;
    }

    #[tokio::test]
    async fn reads_a_hello_split_over_records_with_10k_padding() {
        let msg = client_hello_message(Some("deadbeef11s.example.org"), 10 * 1024);
        let wire = records(&msg, 1000);
        assert!(wire.len() > 10 * 1024 && wire.iter().filter(|&&b| b == 0x16).count() >= 11);
        assert_reads(wire, 777, "deadbeef11s.example.org").await;
    }

    #[tokio::test]
    async fn reads_a_60k_hello() {
        let msg = client_hello_message(Some("deadbeef11.example.org"), 60_000);
        let wire = records(&msg, 16384);
        let hello = feed(wire.clone(), 5000).await.unwrap();
        assert_eq!(hello.raw.len(), wire.len());
    }

    #[tokio::test]
    async fn refuses_a_hello_over_the_cap() {
        let wire = records(
            &client_hello_message(Some("deadbeef11.example.org"), 60_000),
            16384,
        );
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(&wire).await.unwrap();
        let err = read_client_hello(&mut server, 8192, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientHelloError::TooLarge { cap: 8192 }),
            "{err}"
        );
        assert_eq!(err.alert(), Some(AlertDescription::DecodeError));
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let started = std::time::Instant::now();
        let err = read_client_hello(&mut server, 65536, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientHelloError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn refuses_garbage_and_early_close() {
        let err = feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 64)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientHelloError::Malformed(_)), "{err}");
        let wire = records(
            &client_hello_message(Some("deadbeef11.example.org"), 0),
            16384,
        );
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client.write_all(&wire[..wire.len() / 2]).await.unwrap();
        drop(client);
        let err = read_client_hello(&mut server, 65536, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientHelloError::Closed(n) if n == wire.len() / 2),
            "{err}"
        );
    }
}
