//! Client for the collateral endpoints of a PCCS or of Intel's Provisioning Certification Service (API v4).

use std::collections::HashMap;
use std::time::Duration;

use dcap_qvl::QuoteCollateralV3;
use serde_json::value::RawValue;

use super::collateral::Collateral;
use super::error::TdxError;

/// Intel's Provisioning Certification Service.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";

/// Where Intel publishes the CRL of its SGX root CA (used when a service has no `rootcacrl` endpoint).
pub const INTEL_ROOT_CA_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// Largest response body accepted from a collateral service (4 MiB; a PCK CRL, the largest item, is well under
/// 100 KiB). A body is read in chunks and the request abandoned as soon as it grows past this.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// An HTTP client for one PCCS/PCS.
#[derive(Debug, Clone)]
pub struct PcsClient {
    base: String,
    http: reqwest::Client,
}

/// The exact text of the JSON object under top-level `key` and the string under `"signature"` in a signed
/// collateral response (`{"tcbInfo":{...},"signature":"..."}`). The signature covers the object's bytes as
/// served, so they are kept as raw JSON rather than re-serialised.
fn signed_json(body: &[u8], key: &str) -> Result<(String, String), String> {
    let fields: HashMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON object: {e}"))?;
    let signature = fields
        .get("signature")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .ok_or("no \"signature\" string")?;
    let object = fields
        .get(key)
        .map(|raw| raw.get())
        .filter(|text| text.starts_with('{'))
        .ok_or_else(|| format!("no \"{key}\" object"))?;
    Ok((object.to_string(), signature))
}

struct Response {
    url: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, names: &[&str]) -> Result<String, TdxError> {
        let value = names
            .iter()
            .find_map(|n| self.headers.get(*n))
            .ok_or_else(|| TdxError::Fetch {
                url: self.url.clone(),
                detail: format!("response lacks the {} header", names.join(" or ")),
            })?;
        let text = value.to_str().map_err(|e| TdxError::Fetch {
            url: self.url.clone(),
            detail: format!("header {}: {e}", names[0]),
        })?;
        percent_decode(text).ok_or_else(|| TdxError::Fetch {
            url: self.url.clone(),
            detail: format!("header {} is not valid percent-encoding", names[0]),
        })
    }
}

/// Decode `%XX` escapes (the issuer chain headers are URL-encoded PEM).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex_digits = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex_digits).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A CRL as PCCS serves it: DER, or hex text of the DER.
fn crl_bytes(body: Vec<u8>) -> Vec<u8> {
    if body.first() == Some(&0x30) {
        return body;
    }
    std::str::from_utf8(&body)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .unwrap_or(body)
}

impl PcsClient {
    /// A client for `base_url` (a trailing `/sgx/certification/v4` or `/tdx/certification/v4` is ignored).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, TdxError> {
        let base = base_url
            .trim_end_matches('/')
            .trim_end_matches("/sgx/certification/v4")
            .trim_end_matches("/tdx/certification/v4")
            .to_string();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| TdxError::Fetch {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        Ok(PcsClient { base, http })
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn get(&self, url: String) -> Result<Response, TdxError> {
        self.get_limited(url, MAX_RESPONSE_BYTES).await
    }

    /// GET `url`, refusing a body larger than `limit` bytes before reading more than that.
    async fn get_limited(&self, url: String, limit: usize) -> Result<Response, TdxError> {
        let fail = |detail: String| TdxError::Fetch {
            url: url.clone(),
            detail,
        };
        let too_large = || TdxError::ResponseTooLarge {
            url: url.clone(),
            limit,
        };
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            url: url.clone(),
            headers,
            body,
        })
    }

    /// Fetch the collateral for TDX platforms with `fmspc` whose PCK certificates `ca` (`processor` or
    /// `platform`) issued.
    pub async fn fetch(&self, fmspc: &str, ca: &str) -> Result<Collateral, TdxError> {
        let base = &self.base;
        let pck_crl = self
            .get(format!(
                "{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
            ))
            .await?;
        let pck_crl_issuer_chain = pck_crl.header(&["SGX-PCK-CRL-Issuer-Chain"])?;

        let tcb = self
            .get(format!("{base}/tdx/certification/v4/tcb?fmspc={fmspc}"))
            .await?;
        let tcb_info_issuer_chain =
            tcb.header(&["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"])?;
        let (tcb_info, tcb_info_sig) =
            signed_json(&tcb.body, "tcbInfo").map_err(|e| TdxError::Fetch {
                url: tcb.url.clone(),
                detail: format!("not a TCB info response: {e}"),
            })?;

        let qe = self
            .get(format!("{base}/tdx/certification/v4/qe/identity"))
            .await?;
        let qe_identity_issuer_chain = qe.header(&["SGX-Enclave-Identity-Issuer-Chain"])?;
        let (qe_identity, qe_identity_sig) =
            signed_json(&qe.body, "enclaveIdentity").map_err(|e| TdxError::Fetch {
                url: qe.url.clone(),
                detail: format!("not a QE identity response: {e}"),
            })?;

        // A PCCS serves the root CA CRL itself; Intel's PCS leaves it to the CRL distribution point.
        let root_ca_crl = if base.starts_with(INTEL_PCS_URL) {
            self.get(INTEL_ROOT_CA_CRL_URL.to_string()).await?.body
        } else {
            crl_bytes(
                self.get(format!("{base}/sgx/certification/v4/rootcacrl"))
                    .await?
                    .body,
            )
        };

        let hex_sig = |url: &str, sig: &str| {
            hex::decode(sig).map_err(|e| TdxError::Fetch {
                url: url.to_string(),
                detail: format!("signature is not hex: {e}"),
            })
        };
        let collateral = QuoteCollateralV3 {
            pck_crl_issuer_chain,
            root_ca_crl,
            pck_crl: crl_bytes(pck_crl.body.clone()),
            tcb_info_issuer_chain,
            tcb_info,
            tcb_info_signature: hex_sig(&tcb.url, &tcb_info_sig)?,
            qe_identity_issuer_chain,
            qe_identity,
            qe_identity_signature: hex_sig(&qe.url, &qe_identity_sig)?,
            pck_certificate_chain: None,
        };
        let collateral = Collateral::new(collateral);
        collateral.items()?;
        Ok(collateral)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%0A-").as_deref(), Some("a b\n-"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }

    #[test]
    fn signed_json_cuts_out_the_exact_object() {
        let body = br#"{"tcbInfo":{"a":"}\"{","b":{"c":[1,2]}} ,"signature":"abcd"}"#;
        let (obj, sig) = signed_json(body, "tcbInfo").unwrap();
        assert_eq!(obj, r#"{"a":"}\"{","b":{"c":[1,2]}}"#);
        assert_eq!(sig, "abcd");
        assert!(signed_json(br#"{"tcbInfo":{}}"#, "tcbInfo").is_err());
        assert!(signed_json(br#"{"other":{},"signature":"00"}"#, "tcbInfo").is_err());
    }

    /// A service on loopback that answers every request with `200 OK` and `body_len` bytes, announced with a
    /// content-length or (without one) sent chunked, as a misbehaving or hostile PCCS might.
    /// Also returns how many body bytes the service got to send.
    async fn serve_oversized(
        body_len: usize,
        announce: bool,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent_total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent_total.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head = if announce {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\nconnection: close\r\n\r\n")
                } else {
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                        .into()
                };
                if stream.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < body_len {
                    let part = &chunk[..chunk.len().min(body_len - sent)];
                    let written = if announce {
                        stream.write_all(part).await
                    } else {
                        let framed =
                            [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
                        stream.write_all(&framed).await
                    };
                    if written.is_err() {
                        break;
                    }
                    sent += part.len();
                    counter.fetch_add(part.len(), std::sync::atomic::Ordering::SeqCst);
                }
                if !announce {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                }
            }
        });
        (url, sent_total)
    }

    #[tokio::test]
    async fn a_response_larger_than_the_limit_is_refused_naming_it() {
        for announce in [true, false] {
            let (url, _) = serve_oversized(MAX_RESPONSE_BYTES + 1, announce).await;
            let client = PcsClient::new(&url, Duration::from_secs(10)).unwrap();
            let err = client.fetch("00906ED50000", "processor").await.unwrap_err();
            assert!(
                matches!(
                    err,
                    TdxError::ResponseTooLarge {
                        limit: MAX_RESPONSE_BYTES,
                        ..
                    }
                ),
                "announce {announce}: {err}"
            );
            assert!(
                err.to_string()
                    .contains("exceeds the limit of 4194304 bytes"),
                "{err}"
            );
        }
        // A body without a length is not read beyond the limit (and the socket buffers): the service cannot send
        // 256 MiB.
        let (url, sent) = serve_oversized(256 << 20, false).await;
        let client = PcsClient::new(&url, Duration::from_secs(10)).unwrap();
        let err = client.fetch("00906ED50000", "processor").await.unwrap_err();
        assert!(matches!(err, TdxError::ResponseTooLarge { .. }), "{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            sent < 8 * MAX_RESPONSE_BYTES,
            "the client read {sent} bytes"
        );
        // Within the limit the body is read whole.
        let (url, _) = serve_oversized(1000, false).await;
        let client = PcsClient::new(&url, Duration::from_secs(10)).unwrap();
        let body = client
            .get_limited(format!("{url}/x"), 1000)
            .await
            .unwrap()
            .body;
        assert_eq!(body.len(), 1000);
        let Err(err) = client.get_limited(format!("{url}/x"), 999).await else {
            panic!("a body of 1000 bytes passed a limit of 999")
        };
        assert!(
            matches!(err, TdxError::ResponseTooLarge { limit: 999, .. }),
            "{err}"
        );
    }

    #[test]
    fn crl_in_hex_or_der() {
        assert_eq!(crl_bytes(vec![0x30, 1]), vec![0x30, 1]);
        assert_eq!(crl_bytes(b"3001\n".to_vec()), vec![0x30, 1]);
    }
}
