//! Tests of collateral files and of [`CollateralSource`] with a PCCS on loopback.

use std::time::SystemTime;

use crate::tdx::test_support::*;
use crate::tdx::*;

#[test]
fn collateral_json_round_trips_and_rejects_garbage() {
    let c = pki().collateral(SystemTime::now()).unwrap();
    assert_eq!(Collateral::from_json(&c.to_json()).unwrap(), c);
    assert!(matches!(
        Collateral::from_json(b"{}"),
        Err(TdxError::MalformedCollateral(_))
    ));
    assert!(matches!(
        Collateral::from_json(b"nonsense"),
        Err(TdxError::MalformedCollateral(_))
    ));
    let real = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    assert_eq!(real.fmspc().as_deref(), Some("B0C06F000000"));
}

#[cfg(feature = "pccs")]
mod collateral_source {
    use std::time::Duration;

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pem_header(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// The `<name>-Issuer-Chain` response header a PCCS sends with `chain`.
    fn issuer_header(name: &str, chain: &str) -> String {
        format!("{name}-Issuer-Chain: {}\r\n", pem_header(chain))
    }

    /// A PCCS body: the signed JSON object under `key` and its hex signature.
    fn signed_json(key: &str, json: &str, signature: &[u8]) -> Vec<u8> {
        format!(
            "{{\"{key}\":{json},\"signature\":\"{}\"}}",
            hex::encode(signature)
        )
        .into_bytes()
    }

    /// A minimal PCCS on loopback serving the simulated collateral; returns its URL and a request counter.
    async fn serve_pccs(c: Collateral) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                let c = &c.0;
                let (header, body): (String, Vec<u8>) = if path
                    .starts_with("/sgx/certification/v4/pckcrl")
                {
                    (
                        issuer_header("SGX-PCK-CRL", &c.pck_crl_issuer_chain),
                        c.pck_crl.clone(),
                    )
                } else if path.starts_with("/tdx/certification/v4/tcb") {
                    (
                        issuer_header("TCB-Info", &c.tcb_info_issuer_chain),
                        signed_json("tcbInfo", &c.tcb_info, &c.tcb_info_signature),
                    )
                } else if path.starts_with("/tdx/certification/v4/qe/identity") {
                    (
                        issuer_header("SGX-Enclave-Identity", &c.qe_identity_issuer_chain),
                        signed_json("enclaveIdentity", &c.qe_identity, &c.qe_identity_signature),
                    )
                } else if path.starts_with("/sgx/certification/v4/rootcacrl") {
                    (String::new(), hex::encode(&c.root_ca_crl).into_bytes())
                } else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    continue;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\n{header}content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn fetches_from_pccs_then_serves_from_the_caches() {
        let now = SystemTime::now();
        let served = pki().collateral(now - Duration::from_secs(60)).unwrap();
        let (url, hits) = serve_pccs(served.clone()).await;
        let dir = tempdir("collateral-cache");
        let quote = pki().quote(&td()).unwrap();
        let config = CollateralConfig {
            cache_dir: Some(dir.clone()),
            pccs_url: Some(url),
            refresh_margin: Some(Duration::from_secs(3600)),
            http_timeout: Some(Duration::from_secs(5)),
        };
        let source = CollateralSource::new(config.clone()).unwrap();
        let fetched = source.collateral_for(&quote, now).await.unwrap();
        assert_eq!(fetched, served);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);
        sim_verifier().verify(&quote, &fetched, now).unwrap();

        // Memory cache: no more requests.
        source.collateral_for(&quote, now).await.unwrap();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);

        // A new source without a PCCS finds it in the directory.
        let offline = CollateralSource::new(CollateralConfig {
            pccs_url: None,
            ..config.clone()
        })
        .unwrap();
        assert_eq!(offline.collateral_for(&quote, now).await.unwrap(), served);
        let key = CollateralKey::for_quote(&quote).unwrap();
        assert!(offline.cached(&key, now).is_some());

        // Inside the refresh margin with no PCCS: still valid, so returned; past expiry: a clear error.
        let late = now + Duration::from_secs(30 * 24 * 3600 - 1800);
        assert!(offline.collateral_for(&quote, late).await.is_ok());
        let expired = now + Duration::from_secs(31 * 24 * 3600);
        let err = offline.collateral_for(&quote, expired).await.unwrap_err();
        match &err {
            TdxError::CollateralUnavailable {
                fmspc, attempts, ..
            } => {
                assert_eq!(fmspc, &hex::encode_upper(sim::SIM_FMSPC));
                assert_eq!(attempts.len(), 2, "{err}");
            }
            other => panic!("expected CollateralUnavailable, got {other}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn intel_collateral_fetched_from_a_pccs_keeps_its_signed_bytes() {
        let real = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
        let (url, _) = serve_pccs(real.clone()).await;
        let quote = std::fs::read(testdata("tdx_quote")).unwrap();
        let key = CollateralKey::for_quote(&quote).unwrap();
        assert_eq!(key.fmspc, "B0C06F000000");
        assert_eq!(key.ca, "platform");
        let source = CollateralSource::new(CollateralConfig {
            pccs_url: Some(url),
            http_timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        })
        .unwrap();
        let fetched = source.collateral_for(&quote, sample_now()).await.unwrap();
        assert_eq!(fetched.inner().tcb_info, real.inner().tcb_info);
        assert_eq!(fetched.inner().qe_identity, real.inner().qe_identity);
        let verified = TdxVerifier::intel()
            .verify(&quote, &fetched, sample_now())
            .unwrap();
        assert_eq!(verified.claims.tcb_status, TcbStatus::UpToDate);
    }

    #[tokio::test]
    async fn verifier_misses_are_fetched_by_the_next_refresh() {
        use crate::{Evidence, TrustAnchors, Verifier, VerifyError};
        let now = SystemTime::now();
        let (url, hits) =
            serve_pccs(pki().collateral(now - Duration::from_secs(60)).unwrap()).await;
        let source = std::sync::Arc::new(
            CollateralSource::new(CollateralConfig {
                pccs_url: Some(url),
                http_timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            })
            .unwrap(),
        );
        let verifier = Verifier::new(
            TrustAnchors::production()
                .with_sim_tdx_root(pki().root_der())
                .unwrap(),
        )
        .with_tdx_collateral(source.clone());
        let rd = [5u8; 64];
        let ev = Evidence::Tdx(TdxEvidence {
            quote: pki()
                .quote(&SimTdReport {
                    report_data: rd,
                    ..td()
                })
                .unwrap(),
            collateral: None,
        });
        // The handshake path never waits for the network: a miss is an error, and is remembered.
        let err = verifier.verify(&ev, &rd, now).unwrap_err();
        assert!(matches!(err, VerifyError::Collateral { .. }), "{err}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        let outcomes = source.refresh_all(now).await;
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0].1);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(verifier.verify(&ev, &rd, now).unwrap().report_data, rd);
        // A second refresh finds fresh collateral and fetches nothing.
        source.refresh_all(now).await;
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_unreachable_pccs_is_reported() {
        // Bind and drop to get a closed loopback port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let source = CollateralSource::new(CollateralConfig {
            cache_dir: None,
            pccs_url: Some(format!("http://127.0.0.1:{port}")),
            refresh_margin: None,
            http_timeout: Some(Duration::from_secs(2)),
        })
        .unwrap();
        let err = source
            .collateral_for(&pki().quote(&td()).unwrap(), SystemTime::now())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, TdxError::CollateralUnavailable { .. }),
            "{text}"
        );
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }
}
