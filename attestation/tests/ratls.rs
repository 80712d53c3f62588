//! RA-TLS certificates and mutual RA-TLS over tokio-rustls on loopback, both sides `sim-snp`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns set up fixtures

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use attestation::policy::{ClaimsPolicy, GatewayPolicy};
use attestation::ratls::{
    client_config, encode_cmw, parse_certificate, server_config, CertOptions, RaTlsCertificate,
    RaTlsError, RaTlsIdentity, RaTlsVerifier, CMW_OID,
};
use attestation::{
    Attester, Platform, SimSnpAttester, SimSnpPki, TrustAnchors, Verifier, VerifyError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

const APP: &str = "deadbeef11111111";

fn pki() -> Arc<SimSnpPki> {
    static PKI: OnceLock<Arc<SimSnpPki>> = OnceLock::new();
    PKI.get_or_init(|| Arc::new(SimSnpPki::generate_small("ratls tests").unwrap()))
        .clone()
}

fn attester(measurement: u8) -> Arc<dyn Attester> {
    Arc::new(SimSnpAttester::new(pki(), [measurement; 48], [0; 32]))
}

fn verifier() -> Arc<Verifier> {
    Arc::new(Verifier::new(
        TrustAnchors::production()
            .with_sim_snp_ark(pki().ark_der())
            .unwrap(),
    ))
}

fn app_policy(measurement: u8) -> Arc<dyn ClaimsPolicy> {
    common::snp_app_policy(APP, [measurement; 48])
}

fn gateway_policy(measurement: u8) -> Arc<dyn ClaimsPolicy> {
    let text = format!(
        "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
        hex::encode([measurement; 48])
    );
    Arc::new(GatewayPolicy::from_toml(&text).unwrap())
}

/// Captures log output of the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Outcome {
    server: common::Side,
    client: common::Side,
}

/// Gateway (server, measurement 0xAA) and agent (client, measurement 0xBB) handshake with the given policies.
async fn handshake(server_accepts: u8, client_accepts: u8, client_options: CertOptions) -> Outcome {
    let server_id = Arc::new(RaTlsIdentity::new(attester(0xAA), CertOptions::default()).unwrap());
    let client_id = Arc::new(RaTlsIdentity::new(attester(0xBB), client_options).unwrap());
    let server_peers = Arc::new(RaTlsVerifier::new(verifier(), app_policy(server_accepts)));
    let client_peers = Arc::new(RaTlsVerifier::new(
        verifier(),
        gateway_policy(client_accepts),
    ));
    let (server, client) =
        common::handshake(server_id, server_peers, client_id, client_peers).await;
    Outcome { server, client }
}

/// `text` holds the log field `key` with `value`, quoted or not.
fn assert_logged(text: &str, key: &str, value: &str) {
    assert!(
        text.contains(&format!("{key}=\"{value}\"")) || text.contains(&format!("{key}={value}")),
        "{text}"
    );
}

fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let w = logs.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(sub))
}

/// The logs of a handshake that both sides fail, with the server and the client accepting the given
/// measurements; they report a refused peer.
async fn refusal_logs(server_accepts: u8, client_accepts: u8) -> String {
    let (logs, _g) = capture();
    let out = handshake(server_accepts, client_accepts, CertOptions::default()).await;
    assert!(out.server.is_err());
    assert!(out.client.is_err());
    let text = logs.text();
    assert!(text.contains("RA-TLS peer refused"), "{text}");
    text
}

#[tokio::test]
async fn mutual_ra_tls_succeeds_and_each_side_reads_the_others_claims() {
    let out = handshake(0xBB, 0xAA, CertOptions::default()).await;
    let server_saw = out.server.unwrap().expect("server has the client's claims");
    let client_saw = out.client.unwrap().expect("client has the server's claims");
    assert_eq!(server_saw.platform, Platform::SimSnp);
    assert_eq!(server_saw.snp().unwrap().measurement, [0xBB; 48]);
    assert_eq!(client_saw.snp().unwrap().measurement, [0xAA; 48]);
}

#[tokio::test]
async fn server_refuses_a_client_with_a_disallowed_measurement_and_logs_why() {
    let text = refusal_logs(0xCC, 0xAA).await;
    assert_logged(&text, "peer", "client");
    assert_logged(&text, "check", "policy");
    assert!(
        text.contains(&format!("app {APP}: measurement not allowed")),
        "{text}"
    );
}

#[tokio::test]
async fn client_refuses_a_server_with_a_disallowed_measurement_and_logs_why() {
    let text = refusal_logs(0xBB, 0xCC).await;
    assert_logged(&text, "peer", "server");
    assert!(text.contains("gateway: measurement not allowed"), "{text}");
}

#[tokio::test]
async fn an_expired_client_certificate_fails_the_handshake() {
    let (logs, _g) = capture();
    let expired = CertOptions {
        issued_at: Some(SystemTime::now() - Duration::from_secs(7200)),
        ..CertOptions::default()
    };
    let out = handshake(0xBB, 0xAA, expired).await;
    assert!(out.server.is_err());
    let text = logs.text();
    assert!(text.contains("certificate-validity"), "{text}");
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let v = RaTlsVerifier::new(verifier(), app_policy(0xBB));
    let cert =
        RaTlsCertificate::generate(attester(0xBB).as_ref(), &CertOptions::default()).unwrap();
    let now = SystemTime::now();
    v.verify_certificate(cert.cert_der(), now).unwrap();
    // Cached now, but the cache does not outlive the certificate.
    let later = now + Duration::from_secs(3600 + 60);
    let err = v.verify_certificate(cert.cert_der(), later).unwrap_err();
    assert!(matches!(err, RaTlsError::Validity { .. }), "{err}");
    let earlier = now - Duration::from_secs(3600);
    assert!(matches!(
        v.verify_certificate(cert.cert_der(), earlier),
        Err(RaTlsError::Validity { .. })
    ));
}

#[test]
fn key_swap_is_refused() {
    // Evidence taken from certificate A and placed in a certificate with key B.
    let a = RaTlsCertificate::generate(attester(0xBB).as_ref(), &CertOptions::default()).unwrap();
    let evidence = parse_certificate(a.cert_der()).unwrap().evidence;
    let key_b = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            CMW_OID,
            encode_cmw(evidence.media_type(), &evidence.encode()).unwrap(),
        ));
    let b = params.self_signed(&key_b).unwrap();
    let v = RaTlsVerifier::new(verifier(), app_policy(0xBB));
    v.verify_certificate(a.cert_der(), SystemTime::now())
        .unwrap();
    let err = v
        .verify_certificate(b.der(), SystemTime::now())
        .unwrap_err();
    common::assert_binding_refused(&err);
}

#[test]
fn certificates_without_trusted_evidence_are_refused() {
    let plain = rcgen::generate_simple_self_signed(vec!["x.test".to_string()]).unwrap();
    let v = RaTlsVerifier::new(verifier(), app_policy(0xBB));
    assert!(matches!(
        v.verify_certificate(plain.cert.der(), SystemTime::now()),
        Err(RaTlsError::NoEvidence)
    ));
    let sim = RaTlsCertificate::generate(attester(0xBB).as_ref(), &CertOptions::default()).unwrap();
    let production = RaTlsVerifier::new(Arc::new(Verifier::default()), app_policy(0xBB));
    let err = production
        .verify_certificate(sim.cert_der(), SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(
            err,
            RaTlsError::Verify(VerifyError::SimulatedRootNotTrusted { .. })
        ),
        "{err}"
    );
}

#[test]
fn verified_claims_are_remembered_and_the_identity_renews() {
    let v = RaTlsVerifier::new(verifier(), app_policy(0xBB));
    let id = RaTlsIdentity::new(attester(0xBB), CertOptions::default()).unwrap();
    let first = id.certificate();
    assert!(v.claims_for(first.cert_der()).is_none());
    v.verify_certificate(first.cert_der(), SystemTime::now())
        .unwrap();
    assert_eq!(
        v.claims_for(first.cert_der())
            .unwrap()
            .snp()
            .unwrap()
            .measurement,
        [0xBB; 48]
    );
    let now = SystemTime::now();
    assert!(!id.renew_if_due(now).unwrap());
    assert!(id.time_to_renewal(now) > Duration::from_secs(2400));
    assert!(id.renew_if_due(now + Duration::from_secs(2800)).unwrap());
    let second = id.certificate();
    assert_ne!(first.cert_der(), second.cert_der());
    v.verify_certificate(second.cert_der(), SystemTime::now())
        .unwrap();
}

/// No session is ever resumed: with the same configurations, every connection is a full handshake that verifies
/// the peer's certificate again, so a policy changed between two connections applies to the second one.
#[tokio::test]
async fn sessions_are_never_resumed_so_a_changed_policy_applies_to_the_next_connection() {
    use attestation::policy::PolicyFn;
    let server_id = Arc::new(RaTlsIdentity::new(attester(0xAA), CertOptions::default()).unwrap());
    let client_id = Arc::new(RaTlsIdentity::new(attester(0xBB), CertOptions::default()).unwrap());
    let current = Arc::new(Mutex::new(gateway_policy(0xAA)));
    let policy = current.clone();
    let client_peers = Arc::new(RaTlsVerifier::new(
        verifier(),
        Arc::new(PolicyFn(move |c: &attestation::Claims| {
            let p = policy.lock().unwrap().clone();
            p.check_claims(c)
        })),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(
            server_id,
            Arc::new(RaTlsVerifier::new(verifier(), app_policy(0xBB))),
        )
        .unwrap(),
    ));
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(client_id, client_peers).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4];
                    if tls.read_exact(&mut buf).await.is_ok() {
                        let _ = tls.write_all(b"pong").await;
                    }
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    let connect = || async {
        let tls = common::ping(&connector, addr).await?;
        Ok::<_, String>(tls.get_ref().1.handshake_kind())
    };
    for i in 0..3 {
        assert_eq!(
            connect().await.unwrap(),
            Some(rustls::HandshakeKind::Full),
            "connection {i} was not a full handshake"
        );
    }
    *current.lock().unwrap() = gateway_policy(0xCC);
    let refused = connect().await;
    assert!(
        refused.is_err(),
        "the changed policy was not applied: {refused:?}"
    );
    *current.lock().unwrap() = gateway_policy(0xAA);
    assert_eq!(connect().await.unwrap(), Some(rustls::HandshakeKind::Full));
    server.abort();
}
