//! Tests of TDX verification against real Intel samples and the simulated PKI.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::sim::{
    SimCollateralOptions, SIM_ADVISORY, SIM_TEE_TCB_SVN_OUT_OF_DATE, TD_ATTR_DEBUG,
    TD_ATTR_SEPT_VE_DISABLE,
};
use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/tdx")
        .join(name)
}

fn at(rfc3339: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
}

/// Inside the window of the real sample's collateral (2025-06-19T10:32Z .. 2025-07-19T10:00Z).
fn sample_now() -> SystemTime {
    at("2025-07-01T12:00:00Z")
}

fn pki() -> &'static SimTdxPki {
    static PKI: OnceLock<SimTdxPki> = OnceLock::new();
    PKI.get_or_init(|| SimTdxPki::from_seed(b"tdx unit tests").unwrap())
}

fn sim_verifier() -> TdxVerifier {
    TdxVerifier::with_root(
        pki().root_der().to_vec(),
        "simulated Intel root (unit tests)",
    )
}

fn td() -> SimTdReport {
    SimTdReport {
        mr_td: [0x11; 48],
        rtmr: [[0x20; 48], [0x21; 48], [0x22; 48], [0x23; 48]],
        mr_config_id: [0x33; 48],
        mr_owner: [0x44; 48],
        mr_owner_config: [0x55; 48],
        report_data: [0x66; 64],
        ..SimTdReport::default()
    }
}

fn verify_sim(quote: &[u8]) -> Result<TdxClaims, TdxError> {
    verify_sim_full(quote).map(|v| v.claims)
}

fn verify_sim_full(quote: &[u8]) -> Result<VerifiedQuote, TdxError> {
    let now = SystemTime::now();
    sim_verifier().verify(
        quote,
        &pki().collateral(now - Duration::from_secs(60)).unwrap(),
        now,
    )
}

#[test]
fn real_quote_verifies_inside_its_collateral_window() {
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let verified = TdxVerifier::intel()
        .verify(&quote, &collateral, sample_now())
        .unwrap();
    let parsed = TdReport::parse(&quote).unwrap();
    assert_eq!(verified.report_data, parsed.report_data);
    let claims = verified.claims;
    assert_eq!(claims.tcb_status, TcbStatus::UpToDate);
    assert_eq!(claims.quote_version, QuoteVersion::V4);
    assert_eq!(hex::encode_upper(claims.fmspc), "B0C06F000000");
    assert!(claims.td_attributes.sept_ve_disable);
    assert!(!claims.td_attributes.debug);
    // The claims are the quote's own fields.
    assert_eq!(claims.mr_td, parsed.mr_td);
    assert_eq!(claims.rtmr, parsed.rtmr);
    assert_ne!(claims.mr_td, [0; 48]);
}

#[test]
fn real_quote_is_refused_once_its_collateral_expired() {
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let err = TdxVerifier::intel()
        .verify(&quote, &collateral, SystemTime::now())
        .unwrap_err();
    match &err {
        TdxError::CollateralExpired {
            item, valid_until, ..
        } => {
            assert!(valid_until.starts_with("2025-07"), "{err}");
            assert!(!item.is_empty());
        }
        other => panic!("expected CollateralExpired, got {other}"),
    }
    assert!(err.to_string().contains("collateral expired"), "{err}");
    // And before its issue date it is not valid yet.
    let err = TdxVerifier::intel()
        .verify(&quote, &collateral, at("2025-06-01T00:00:00Z"))
        .unwrap_err();
    assert!(
        matches!(err, TdxError::CollateralNotYetValid { .. }),
        "{err}"
    );
}

#[test]
fn real_collateral_window_matches_its_published_dates() {
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let w = collateral.window(&[]).unwrap();
    let (from, until) = (
        collateral::rfc3339(w.starts.not_before),
        collateral::rfc3339(w.ends.not_after),
    );
    assert!(
        from.starts_with("2025-06-19T10:32"),
        "{from} ({})",
        w.starts.item
    );
    assert!(
        until.starts_with("2025-07-19T10:00"),
        "{until} ({})",
        w.ends.item
    );
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let just = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let v = TdxVerifier::intel();
    assert!(v
        .verify(&quote, &collateral, just(w.starts.not_before))
        .is_ok());
    assert!(v
        .verify(&quote, &collateral, just(w.ends.not_after - 1))
        .is_ok());
    assert!(matches!(
        v.verify(&quote, &collateral, just(w.starts.not_before - 1)),
        Err(TdxError::CollateralNotYetValid { .. })
    ));
    assert!(matches!(
        v.verify(&quote, &collateral, just(w.ends.not_after)),
        Err(TdxError::CollateralExpired { .. })
    ));
}

#[test]
fn outdated_real_quote_is_refused_for_its_tcb() {
    let quote = std::fs::read(testdata("tdx_quote_outdated")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_outdated_collateral.json")).unwrap();
    let window = collateral.window(&[]).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(window.starts.not_before + 60);
    let err = TdxVerifier::intel()
        .verify(&quote, &collateral, now)
        .unwrap_err();
    assert!(matches!(err, TdxError::TcbRefused(_)), "{err}");
    assert!(err.to_string().contains("TCB level"), "{err}");
}

#[test]
fn real_quote_is_refused_under_a_simulated_root() {
    let quote = std::fs::read(testdata("tdx_quote")).unwrap();
    let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
    let err = sim_verifier()
        .verify(&quote, &collateral, sample_now())
        .unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
}

#[test]
fn sim_quotes_round_trip_v4_and_v5() {
    for version in [QuoteVersion::V4, QuoteVersion::V5] {
        let input = SimTdReport { version, ..td() };
        let quote = pki().quote(&input).unwrap();
        let verified = verify_sim_full(&quote).unwrap();
        assert_eq!(verified.report_data, input.report_data);
        let claims = verified.claims;
        assert_eq!(claims.quote_version, version);
        assert_eq!(claims.mr_td, input.mr_td);
        assert_eq!(claims.rtmr, input.rtmr);
        assert_eq!(claims.mr_config_id, input.mr_config_id);
        assert_eq!(claims.mr_owner, input.mr_owner);
        assert_eq!(claims.mr_owner_config, input.mr_owner_config);
        assert_eq!(claims.tcb_status, TcbStatus::UpToDate);
        assert!(claims.advisory_ids.is_empty());
        assert_eq!(claims.fmspc, sim::SIM_FMSPC);
    }
}

#[test]
fn td15_bodies_in_v5_quotes_carry_the_current_tcb() {
    let td15 = SimTdReport {
        version: QuoteVersion::V5,
        tee_tcb_svn2: Some(sim::SIM_TEE_TCB_SVN_UP_TO_DATE),
        ..td()
    };
    let claims = verify_sim(&pki().quote(&td15).unwrap()).unwrap();
    assert_eq!(claims.quote_version, QuoteVersion::V5);
    assert_eq!(claims.mr_td, [0x11; 48]);
    assert_eq!(claims.tcb_status, TcbStatus::UpToDate);

    // Launched on an out-of-date module, updated in place since: relaunch advised.
    let updated = SimTdReport {
        tee_tcb_svn: SIM_TEE_TCB_SVN_OUT_OF_DATE,
        ..td15.clone()
    };
    let claims = verify_sim(&pki().quote(&updated).unwrap()).unwrap();
    assert_eq!(claims.tcb_status, TcbStatus::TDRelaunchAdvised);

    // A v4 quote cannot carry a TD 1.5 body.
    let v4 = SimTdReport {
        version: QuoteVersion::V4,
        ..td15
    };
    assert!(matches!(pki().quote(&v4), Err(TdxError::SimPki(_))));
}

#[test]
fn sim_quote_is_refused_by_the_intel_root() {
    let quote = pki().quote(&td()).unwrap();
    let now = SystemTime::now();
    let err = TdxVerifier::intel()
        .verify(&quote, &pki().collateral(now).unwrap(), now)
        .unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
    assert!(err.to_string().contains("Intel SGX Root CA"), "{err}");
}

#[test]
fn sim_quote_is_refused_under_another_seed() {
    let other = SimTdxPki::from_seed(b"another seed").unwrap();
    assert_ne!(other.root_der(), pki().root_der());
    let quote = other.quote(&td()).unwrap();
    let err = verify_sim(&quote).unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
}

#[test]
fn same_seed_gives_the_same_pki_and_quotes() {
    let again = SimTdxPki::from_seed(b"tdx unit tests").unwrap();
    assert_eq!(again.root_der(), pki().root_der());
    assert_eq!(again.pck_chain_pem(), pki().pck_chain_pem());
    assert_eq!(again.quote(&td()).unwrap(), pki().quote(&td()).unwrap());
}

/// Offsets inside a v4 sim quote.
const TD_REPORT_AT: usize = 48;
const MR_TD_AT: usize = TD_REPORT_AT + 16 + 48 + 48 + 8 + 8 + 8;
const AUTH_AT: usize = 48 + 584 + 4;
const AK_SIG_AT: usize = AUTH_AT;
const AK_AT: usize = AUTH_AT + 64;
const QE_REPORT_AT: usize = AUTH_AT + 64 + 64 + 2 + 4;
const QE_SIG_AT: usize = QE_REPORT_AT + 384;

fn flipped(at: usize) -> Vec<u8> {
    let mut quote = pki().quote(&td()).unwrap();
    quote[at] ^= 0x01;
    quote
}

#[test]
fn a_flipped_bit_in_the_td_report_is_refused() {
    for at in [MR_TD_AT, TD_REPORT_AT + 583, 10] {
        let err = verify_sim(&flipped(at)).unwrap_err();
        assert!(
            matches!(
                err,
                TdxError::SignatureInvalid(SignedPart::TdReport) | TdxError::UnsupportedQuote(_)
            ),
            "offset {at}: {err}"
        );
    }
    let err = verify_sim(&flipped(MR_TD_AT)).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::TdReport)),
        "{err}"
    );
}

#[test]
fn a_flipped_bit_in_the_qe_report_is_refused() {
    let err = verify_sim(&flipped(QE_REPORT_AT + 300)).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::QeReport)),
        "{err}"
    );
}

#[test]
fn a_flipped_bit_in_a_signature_is_refused() {
    let err = verify_sim(&flipped(AK_SIG_AT + 5)).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::TdReport)),
        "{err}"
    );
    let err = verify_sim(&flipped(QE_SIG_AT + 40)).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::QeReport)),
        "{err}"
    );
}

#[test]
fn a_substituted_attestation_key_is_refused() {
    let err = verify_sim(&flipped(AK_AT + 63)).unwrap_err();
    assert!(matches!(err, TdxError::AttestationKeyNotBound), "{err}");
}

#[test]
fn truncated_or_garbage_quotes_are_malformed() {
    let quote = pki().quote(&td()).unwrap();
    for bad in [
        &quote[..100],
        &quote[..quote.len() - 10],
        &b"not a quote"[..],
        &[][..],
    ] {
        let err = verify_sim(bad).unwrap_err();
        assert!(matches!(err, TdxError::MalformedQuote(_)), "{err}");
    }
}

#[test]
fn tampered_collateral_is_refused() {
    let quote = pki().quote(&td()).unwrap();
    let now = SystemTime::now();
    let good = pki().collateral(now - Duration::from_secs(60)).unwrap();

    let mut c = good.clone();
    c.0.tcb_info = c.0.tcb_info.replace("OutOfDate", "UpToDate");
    let err = sim_verifier().verify(&quote, &c, now).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::TcbInfo)),
        "{err}"
    );

    let mut c = good.clone();
    c.0.qe_identity_signature[3] ^= 1;
    let err = sim_verifier().verify(&quote, &c, now).unwrap_err();
    assert!(
        matches!(err, TdxError::SignatureInvalid(SignedPart::QeIdentity)),
        "{err}"
    );

    let mut c = good;
    let last = c.0.pck_crl.len() - 3;
    c.0.pck_crl[last] ^= 1;
    let err = sim_verifier().verify(&quote, &c, now).unwrap_err();
    assert!(matches!(err, TdxError::CertificateChain { .. }), "{err}");
}

#[test]
fn a_revoked_pck_certificate_is_refused() {
    let now = SystemTime::now();
    let collateral = pki()
        .collateral_with(&SimCollateralOptions {
            issued: now - Duration::from_secs(60),
            validity: Duration::from_secs(3600),
            revoke_pck: true,
        })
        .unwrap();
    let err = sim_verifier()
        .verify(&pki().quote(&td()).unwrap(), &collateral, now)
        .unwrap_err();
    assert!(
        matches!(err, TdxError::CertificateChain { chain: "PCK", .. }),
        "{err}"
    );
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
}

#[test]
fn expired_sim_collateral_is_refused() {
    let issued = SystemTime::now() - Duration::from_secs(7200);
    let collateral = pki()
        .collateral_with(&SimCollateralOptions {
            issued,
            validity: Duration::from_secs(3600),
            revoke_pck: false,
        })
        .unwrap();
    let err = sim_verifier()
        .verify(&pki().quote(&td()).unwrap(), &collateral, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, TdxError::CollateralExpired { .. }), "{err}");
}

#[test]
fn debug_tds_verify_with_the_debug_flag_set() {
    let quote = pki()
        .quote(&SimTdReport {
            td_attributes: TD_ATTR_SEPT_VE_DISABLE | TD_ATTR_DEBUG,
            ..td()
        })
        .unwrap();
    let claims = verify_sim(&quote).unwrap();
    assert!(claims.td_attributes.debug);
    let normal = verify_sim(&pki().quote(&td()).unwrap()).unwrap();
    assert!(!normal.td_attributes.debug);
}

#[test]
fn a_td_without_sept_ve_disable_is_refused() {
    let quote = pki()
        .quote(&SimTdReport {
            td_attributes: 0,
            ..td()
        })
        .unwrap();
    let err = verify_sim(&quote).unwrap_err();
    assert!(matches!(err, TdxError::TdAttributes(_)), "{err}");
}

#[test]
fn tcb_levels_are_reported_or_refused() {
    let quote = pki()
        .quote(&SimTdReport {
            tee_tcb_svn: SIM_TEE_TCB_SVN_OUT_OF_DATE,
            ..td()
        })
        .unwrap();
    let claims = verify_sim(&quote).unwrap();
    assert_eq!(claims.tcb_status, TcbStatus::OutOfDate);
    assert_eq!(claims.advisory_ids, vec![SIM_ADVISORY.to_string()]);

    let mut too_old = SIM_TEE_TCB_SVN_OUT_OF_DATE;
    too_old[0] -= 1;
    let err = verify_sim(
        &pki()
            .quote(&SimTdReport {
                tee_tcb_svn: too_old,
                ..td()
            })
            .unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, TdxError::TcbRefused(_)), "{err}");
}

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

#[test]
fn sim_pki_files_round_trip() {
    let dir = tempdir("pki-files");
    pki().write_to(&dir, SystemTime::now()).unwrap();
    let loaded = SimTdxPki::load(&dir).unwrap();
    assert_eq!(loaded.root_der(), pki().root_der());
    let collateral = Collateral::load(&dir.join(sim::files::COLLATERAL)).unwrap();
    sim_verifier()
        .verify(
            &loaded.quote(&td()).unwrap(),
            &collateral,
            SystemTime::now(),
        )
        .unwrap();
    // A root that does not belong to the seed is refused.
    let other = SimTdxPki::from_seed(b"x").unwrap();
    std::fs::write(dir.join(sim::files::ROOT_CA), other.root_pem()).unwrap();
    assert!(matches!(SimTdxPki::load(&dir), Err(TdxError::SimPki(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quote_parser_reads_the_fields_without_verifying() {
    let quote = pki()
        .quote(&SimTdReport {
            version: QuoteVersion::V5,
            ..td()
        })
        .unwrap();
    let report = TdReport::parse(&quote).unwrap();
    assert_eq!(report.quote_version, QuoteVersion::V5);
    assert_eq!(report.mr_config_id, [0x33; 48]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mr_td"], hex::encode([0x11; 48]));
    assert_eq!(json["rtmr"][3], hex::encode([0x23; 48]));
    let back: TdReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

pub(crate) fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tee-gateway-tdx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

mod collateral_source {
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
                let (header, body): (String, Vec<u8>) =
                    if path.starts_with("/sgx/certification/v4/pckcrl") {
                        (
                            format!(
                                "SGX-PCK-CRL-Issuer-Chain: {}\r\n",
                                pem_header(&c.pck_crl_issuer_chain)
                            ),
                            c.pck_crl.clone(),
                        )
                    } else if path.starts_with("/tdx/certification/v4/tcb") {
                        (
                            format!(
                                "TCB-Info-Issuer-Chain: {}\r\n",
                                pem_header(&c.tcb_info_issuer_chain)
                            ),
                            format!(
                                "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                                c.tcb_info,
                                hex::encode(&c.tcb_info_signature)
                            )
                            .into_bytes(),
                        )
                    } else if path.starts_with("/tdx/certification/v4/qe/identity") {
                        (
                            format!(
                                "SGX-Enclave-Identity-Issuer-Chain: {}\r\n",
                                pem_header(&c.qe_identity_issuer_chain)
                            ),
                            format!(
                                "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                                c.qe_identity,
                                hex::encode(&c.qe_identity_signature)
                            )
                            .into_bytes(),
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

mod through_the_crate_verifier {
    use std::sync::Arc;

    use super::*;
    use crate::policy::{AppPolicy, Profile, TdxProfile, Violation};
    use crate::{Attester, Claims, Evidence, PlatformClaims, TrustAnchors, Verifier, VerifyError};

    fn attester(td: SimTdReport) -> SimTdxAttester {
        static PKI: OnceLock<Arc<SimTdxPki>> = OnceLock::new();
        let pki = PKI.get_or_init(|| Arc::new(SimTdxPki::from_seed(b"tdx unit tests").unwrap()));
        SimTdxAttester::new(pki.clone(), td)
    }

    fn trusting() -> Verifier {
        Verifier::new(
            TrustAnchors::production()
                .with_sim_tdx_root(pki().root_pem().as_bytes())
                .unwrap(),
        )
    }

    fn claims_of(td: SimTdReport) -> Claims {
        let rd = [7u8; 64];
        let ev = attester(td).attest(&rd).unwrap();
        trusting().verify(&ev, &rd, SystemTime::now()).unwrap()
    }

    #[test]
    fn sim_tdx_evidence_verifies_as_sim_tdx() {
        let rd = [9u8; 64];
        let ev = attester(td()).attest(&rd).unwrap();
        // Through the media-type encoding, as RA-TLS carries it.
        let ev = Evidence::decode(ev.media_type(), &ev.encode()).unwrap();
        let v = trusting();
        let claims = v.verify(&ev, &rd, SystemTime::now()).unwrap();
        assert_eq!(claims.platform, crate::Platform::SimTdx);
        assert_eq!(claims.report_data, rd);
        assert!(!claims.debug);
        let tdx = claims.tdx().unwrap();
        assert_eq!(tdx.mr_td, [0x11; 48]);
        assert_eq!(tdx.tcb_status, TcbStatus::UpToDate);
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["kind"], "tdx");
        assert_eq!(json["platform"], "sim-tdx");
        assert_eq!(json["mr_td"], hex::encode([0x11; 48]));
        assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), claims);
        // The second verification is served from the cache.
        let cached = v.cached_chains();
        assert!(cached >= 1);
        v.verify(&ev, &rd, SystemTime::now()).unwrap();
        assert_eq!(v.cached_chains(), cached);
    }

    #[test]
    fn sim_tdx_evidence_is_refused_without_trusting_the_simulated_root() {
        let rd = [1u8; 64];
        let ev = attester(td()).attest(&rd).unwrap();
        let err = Verifier::default()
            .verify(&ev, &rd, SystemTime::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::SimulatedRootNotTrusted {
                    family: crate::PlatformFamily::Tdx
                }
            ),
            "{err}"
        );
        // Trusting another simulated root does not help.
        let other = SimTdxPki::from_seed(b"other").unwrap();
        let v = Verifier::new(
            TrustAnchors::production()
                .with_sim_tdx_root(other.root_der())
                .unwrap(),
        );
        let err = v.verify(&ev, &rd, SystemTime::now()).unwrap_err();
        assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
        assert_eq!(err.check(), "root-of-trust");
    }

    #[test]
    fn report_data_that_does_not_match_is_refused() {
        let ev = attester(td()).attest(&[1u8; 64]).unwrap();
        let err = trusting()
            .verify(&ev, &[2u8; 64], SystemTime::now())
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::ReportDataMismatch { .. }),
            "{err}"
        );
        assert_eq!(err.check(), "binding");
    }

    #[test]
    fn evidence_without_collateral_uses_the_collateral_source() {
        let rd = [3u8; 64];
        let Evidence::Tdx(mut ev) = attester(td()).attest(&rd).unwrap() else {
            panic!("not TDX")
        };
        let collateral = ev.collateral.take().unwrap();
        let ev = Evidence::Tdx(ev);
        let err = trusting().verify(&ev, &rd, SystemTime::now()).unwrap_err();
        assert!(matches!(err, VerifyError::Collateral { .. }), "{err}");

        let dir = tempdir("verifier-collateral");
        let source = Arc::new(
            CollateralSource::new(CollateralConfig {
                cache_dir: Some(dir.clone()),
                ..Default::default()
            })
            .unwrap(),
        );
        let v = trusting().with_tdx_collateral(source.clone());
        let err = v.verify(&ev, &rd, SystemTime::now()).unwrap_err();
        assert!(
            err.to_string().contains("no valid TDX collateral cached"),
            "{err}"
        );
        let key = CollateralKey::for_quote(&match &ev {
            Evidence::Tdx(t) => t.quote.clone(),
            _ => unreachable!(),
        })
        .unwrap();
        collateral
            .save(&dir.join(format!("tdx-{}-{}.json", key.fmspc, key.ca)))
            .unwrap();
        assert_eq!(
            v.verify(&ev, &rd, SystemTime::now()).unwrap().report_data,
            rd
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn real_evidence_verifies_as_tdx_then_expires() {
        let quote = std::fs::read(testdata("tdx_quote")).unwrap();
        let collateral = Collateral::load(&testdata("tdx_quote_collateral.json")).unwrap();
        let rd = TdReport::parse(&quote).unwrap().report_data;
        let ev = Evidence::Tdx(TdxEvidence {
            quote,
            collateral: Some(collateral),
        });
        let claims = Verifier::default().verify(&ev, &rd, sample_now()).unwrap();
        assert_eq!(claims.platform, crate::Platform::Tdx);
        let err = Verifier::default()
            .verify(&ev, &rd, SystemTime::now())
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::CollateralExpired { .. }),
            "{err}"
        );
        assert_eq!(err.check(), "collateral");
        assert!(err.to_string().starts_with("collateral expired"), "{err}");
    }

    #[test]
    fn outdated_real_evidence_is_refused_as_tcb() {
        let quote = std::fs::read(testdata("tdx_quote_outdated")).unwrap();
        let collateral = Collateral::load(&testdata("tdx_quote_outdated_collateral.json")).unwrap();
        let now = UNIX_EPOCH
            + Duration::from_secs(collateral.window(&[]).unwrap().starts.not_before + 60);
        let ev = Evidence::Tdx(TdxEvidence {
            quote,
            collateral: Some(collateral),
        });
        let err = Verifier::default().verify_unbound(&ev, now).unwrap_err();
        assert_eq!(err.check(), "tcb", "{err}");
    }

    fn profile() -> TdxProfile {
        TdxProfile::with_mr_td([0x11; 48])
    }

    #[test]
    fn default_profile_refuses_debug_tds() {
        let debug = claims_of(SimTdReport {
            td_attributes: TD_ATTR_SEPT_VE_DISABLE | TD_ATTR_DEBUG,
            ..td()
        });
        assert!(debug.debug);
        assert_eq!(profile().check(&debug), Err(Violation::Debug));
        let allowing = TdxProfile {
            allow_debug: true,
            ..profile()
        };
        assert_eq!(allowing.check(&debug), Ok(()));
        assert_eq!(profile().check(&claims_of(td())), Ok(()));
    }

    #[test]
    fn mismatches_name_the_field_with_expected_and_actual_hex() {
        let claims = claims_of(td());
        let err = TdxProfile::with_mr_td([0xaa; 48])
            .check(&claims)
            .unwrap_err();
        assert_eq!(
            err,
            Violation::Mismatch {
                field: "MRTD",
                expected: hex::encode([0xaa; 48]),
                actual: hex::encode([0x11; 48]),
            }
        );
        let p = TdxProfile {
            rtmr2: Some(vec![[1; 48], [2; 48]]),
            ..profile()
        };
        let text = p.check(&claims).unwrap_err().to_string();
        assert!(
            text.starts_with("RTMR2 not allowed: expected one of "),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("got {}", hex::encode([0x22; 48]))),
            "{text}"
        );
        let p = TdxProfile {
            mr_config_id: Some(vec![[9; 48]]),
            ..profile()
        };
        assert!(matches!(
            p.check(&claims),
            Err(Violation::Mismatch {
                field: "MRCONFIGID",
                ..
            })
        ));
        let p = TdxProfile {
            rtmr0: Some(vec![[0x20; 48]]),
            rtmr1: Some(vec![[0x21; 48]]),
            rtmr2: Some(vec![[0x22; 48]]),
            rtmr3: Some(vec![[0x23; 48]]),
            mr_config_id: Some(vec![[0x33; 48]]),
            ..profile()
        };
        assert_eq!(p.check(&claims), Ok(()));
    }

    #[test]
    fn tcb_status_must_be_allowed() {
        let outdated = claims_of(SimTdReport {
            tee_tcb_svn: SIM_TEE_TCB_SVN_OUT_OF_DATE,
            ..td()
        });
        let err = profile().check(&outdated).unwrap_err();
        assert!(matches!(err, Violation::TcbStatus { .. }), "{err}");
        assert!(err.to_string().contains(SIM_ADVISORY), "{err}");
        let p = TdxProfile {
            tcb_statuses: vec![TcbStatus::UpToDate, TcbStatus::OutOfDate],
            ..profile()
        };
        assert_eq!(p.check(&outdated), Ok(()));
    }

    #[test]
    fn app_policy_toml_with_tdx_profiles() {
        let toml_text = format!(
            r#"
            [[apps.deadbeef11111111.profile]]
            platform = "sim-tdx"
            mr_td = ["{}"]
            rtmr3 = ["{}"]
            tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
            "#,
            hex::encode([0x11; 48]),
            hex::encode([0x23; 48])
        );
        let policy = AppPolicy::from_toml(&toml_text).unwrap();
        let claims = claims_of(td());
        let matched = policy.check("deadbeef11111111", &claims).unwrap();
        assert!(matches!(matched, Profile::SimTdx(_)));
        // A real-TDX profile does not accept sim-tdx claims.
        let real = toml_text.replace("\"sim-tdx\"", "\"tdx\"");
        let err = AppPolicy::from_toml(&real)
            .unwrap()
            .check("deadbeef11111111", &claims)
            .unwrap_err();
        assert!(
            err.to_string().contains("no profile for platform sim-tdx"),
            "{err}"
        );
        // Empty allow lists, unknown keys and unknown statuses are errors.
        assert!(AppPolicy::from_toml(&toml_text.replace(&hex::encode([0x23; 48]), "")).is_err());
        let empty = toml_text.replace(&format!("[\"{}\"]", hex::encode([0x23; 48])), "[]");
        assert!(AppPolicy::from_toml(&empty)
            .unwrap_err()
            .to_string()
            .contains("at least one"));
        assert!(AppPolicy::from_toml(&format!("{toml_text}\nrtmr4 = []")).is_err());
        assert!(AppPolicy::from_toml(&toml_text.replace("SWHardeningNeeded", "Fine")).is_err());
        let _ = PlatformClaims::Tdx(claims.tdx().unwrap().clone());
    }
}
