//! The operator's forgery of the gateway's RA-TLS identity, performed end to end and refused.
//!
//! The gateway attests its client-facing TLS key, which the operator supplies, in a public document. The operator
//! takes that evidence, wraps it in a self-signed certificate carrying the same key and the CMW extension (exactly
//! as [`RaTlsCertificate`] does), and presents it to an agent as "the gateway". Because the public document's
//! report data is made for [`Purpose::PublicTlsKey`], not [`Purpose::RaTlsKey`], the RA-TLS verifier refuses the
//! certificate and names the purpose the evidence was made for; the agent's TLS handshake fails. If both purposes
//! shared one label again, these tests would fail.

use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};

use super::{
    client_config, CertOptions, RaTlsCertificate, RaTlsError, RaTlsIdentity, RaTlsVerifier,
};
use crate::binding::{KeyOrigin, Purpose, ReportData};
use crate::config_digest::ConfigDigest;
use crate::policy::GatewayPolicy;
use crate::test_support::assert_message_names;
use crate::{Attester, SimSnpAttester, TrustAnchors, Verifier};

/// The gateway's measurement, which the agents' gateway policy allows.
const GATEWAY: [u8; 48] = [0x61; 48];

fn gateway_attester() -> SimSnpAttester {
    SimSnpAttester::new(crate::test_support::pki(), GATEWAY, [0; 32])
}

/// The verifier an agent uses for gateways: the simulated root and a policy allowing [`GATEWAY`].
fn agent_verifier() -> Arc<RaTlsVerifier> {
    agent_verifier_pinning("")
}

/// As [`agent_verifier`], with `extra` TOML at the top of the gateway policy (e.g. `config_digest = [...]`).
fn agent_verifier_pinning(extra: &str) -> Arc<RaTlsVerifier> {
    let anchors = TrustAnchors::production()
        .with_sim_snp_ark(crate::test_support::pki().ark_der())
        .expect("simulated ARK");
    let policy = GatewayPolicy::from_toml(&format!(
        "{extra}\n[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
        hex::encode(GATEWAY)
    ))
    .expect("gateway policy");
    Arc::new(RaTlsVerifier::new(
        Arc::new(Verifier::new(anchors)),
        Arc::new(policy),
    ))
}

/// What the operator builds: the evidence of the gateway's public document (report data for its operator-supplied
/// TLS key) inside a self-signed certificate for that key.
fn forged_certificate() -> RaTlsCertificate {
    let operator_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("operator key");
    let spki = rcgen::PublicKeyData::subject_public_key_info(&operator_key);
    // What the gateway attests for `gateway.<base>/v1/attestation`.
    let public_document =
        ReportData::new(Purpose::PublicTlsKey(KeyOrigin::OperatorSupplied), &spki);
    let evidence = gateway_attester()
        .attest(&public_document)
        .expect("public document evidence");
    RaTlsCertificate::build(operator_key, evidence, &CertOptions::default())
        .expect("forged certificate")
}

#[test]
fn forged_certificate_from_the_public_tls_key_evidence_is_refused_naming_its_purpose() {
    let verifier = agent_verifier();
    // The gateway's own RA-TLS certificate passes, so the refusal below is about the purpose alone.
    let genuine = RaTlsCertificate::generate(&gateway_attester(), &CertOptions::default())
        .expect("genuine certificate");
    let claims = verifier
        .verify_certificate(genuine.cert_der(), SystemTime::now())
        .expect("the gateway's RA-TLS certificate is accepted");
    assert_eq!(claims.snp().map(|s| s.measurement), Some(GATEWAY));

    let forged = forged_certificate();
    let err = refused(
        &verifier,
        &forged,
        "a certificate carrying the public document's evidence must be refused",
    );
    assert!(
        matches!(
            err,
            RaTlsError::WrongPurpose {
                expected: Purpose::RaTlsKey,
                found: Purpose::PublicTlsKey(KeyOrigin::OperatorSupplied),
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.check(), "binding");
    assert_message_names(&err, &["public-tls-key/operator-supplied", "ra-tls-key"]);
}

#[test]
fn agent_handshake_with_the_operators_forged_gateway_fails() {
    let forged = forged_certificate();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .and_then(|b| {
        b.with_no_client_auth()
            .with_single_cert(vec![forged.cert_der().clone()], forged.key_der())
    })
    .expect("the operator's server");
    let agent = RaTlsIdentity::new(
        Arc::new(SimSnpAttester::new(
            crate::test_support::pki(),
            [0x71; 48],
            [0; 32],
        )),
        CertOptions::default(),
    )
    .expect("agent identity");
    let client = client_config(Arc::new(agent), agent_verifier()).expect("agent client config");

    let name = rustls::pki_types::ServerName::try_from("gateway.example").expect("server name");
    let mut c = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
    let mut s = rustls::ServerConnection::new(Arc::new(server)).expect("server");
    let err = handshake(&mut c, &mut s).expect_err("the agent must refuse the forged gateway");
    // The refusal is the RA-TLS verifier's, for the purpose of the evidence.
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = &err else {
        panic!("not a certificate refusal: {err:?}")
    };
    assert!(
        matches!(
            other.0.downcast_ref::<RaTlsError>(),
            Some(RaTlsError::WrongPurpose { .. })
        ),
        "{other:?}"
    );
    assert!(c.is_handshaking(), "no session with the operator's gateway");
}

/// The configuration digest the gateway publishes and agents pin.
const PUBLISHED: ConfigDigest = ConfigDigest([0x5a; 32]);

/// The gateway's certificate binding `digest` with its key.
fn configured_certificate(digest: ConfigDigest) -> RaTlsCertificate {
    let options = CertOptions {
        config_digest: Some(digest),
        ..CertOptions::default()
    };
    RaTlsCertificate::generate(&gateway_attester(), &options).expect("configured certificate")
}

/// The operator's edit of the gateway's configuration behind its back, presented with the gateway's own key and
/// evidence: a certificate whose extension claims `claimed` while the evidence binds `bound` (or no digest).
fn relabelled_certificate(
    bound: Option<ConfigDigest>,
    claimed: Option<ConfigDigest>,
) -> RaTlsCertificate {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let evidence = gateway_attester()
        .attest(&super::report_data_for_key(&spki, bound.as_ref()))
        .expect("evidence");
    let options = CertOptions {
        config_digest: claimed,
        ..CertOptions::default()
    };
    RaTlsCertificate::build(key, evidence, &options).expect("relabelled certificate")
}

#[test]
fn configuration_digest_is_bound_with_the_key_and_reaches_the_claims() {
    let cert = configured_certificate(PUBLISHED);
    let claims = agent_verifier()
        .verify_certificate(cert.cert_der(), SystemTime::now())
        .expect("a configured certificate verifies");
    assert_eq!(claims.config_digest, Some(PUBLISHED));
    // A certificate without a digest has none in its claims.
    let plain = RaTlsCertificate::generate(&gateway_attester(), &CertOptions::default()).unwrap();
    let claims = agent_verifier()
        .verify_certificate(plain.cert_der(), SystemTime::now())
        .unwrap();
    assert_eq!(claims.config_digest, None);
}

#[test]
fn a_digest_the_evidence_does_not_bind_is_refused() {
    let verifier = agent_verifier();
    let other = ConfigDigest([0x66; 32]);
    // The operator swaps the digest in the extension of a configured gateway's certificate...
    let swapped = relabelled_certificate(Some(other), Some(PUBLISHED));
    let err = refused(&verifier, &swapped, "a swapped digest must be refused");
    assert_eq!(err.check(), "binding", "{err}");
    // ...or adds the published digest to a certificate that binds none...
    let added = relabelled_certificate(None, Some(PUBLISHED));
    let err = refused(&verifier, &added, "an added digest must be refused");
    assert!(
        matches!(
            err,
            RaTlsError::WrongPurpose {
                expected: Purpose::RaTlsKeyConfigured,
                found: Purpose::RaTlsKey
            }
        ),
        "{err:?}"
    );
    // ...or strips the digest from one that binds it.
    let stripped = relabelled_certificate(Some(other), None);
    let err = refused(&verifier, &stripped, "a stripped digest must be refused");
    assert_eq!(err.check(), "binding", "{err}");
}

#[test]
fn an_agent_pinning_the_published_digest_refuses_another_configuration() {
    let pinned = agent_verifier_pinning(&format!("config_digest = [\"{PUBLISHED}\"]"));
    let claims = pinned
        .verify_certificate(
            configured_certificate(PUBLISHED).cert_der(),
            SystemTime::now(),
        )
        .expect("the published configuration is accepted");
    assert_eq!(claims.config_digest, Some(PUBLISHED));
    let changed = ConfigDigest([0x66; 32]);
    let err = pinned
        .verify_certificate(
            configured_certificate(changed).cert_der(),
            SystemTime::now(),
        )
        .expect_err("another configuration must be refused");
    assert_message_names(&err, &[&changed.to_string(), &PUBLISHED.to_string()]);
    let plain = RaTlsCertificate::generate(&gateway_attester(), &CertOptions::default()).unwrap();
    let err = refused(
        &pinned,
        &plain,
        "a gateway binding no digest must be refused",
    );
    assert_message_names(&err, &["none bound"]);
}

/// `verifier`'s refusal of `cert`, which must come (`why` says why).
fn refused(verifier: &RaTlsVerifier, cert: &RaTlsCertificate, why: &str) -> RaTlsError {
    match verifier.verify_certificate(cert.cert_der(), SystemTime::now()) {
        Ok(claims) => panic!("{why}; accepted with {}", claims.summary()),
        Err(e) => e,
    }
}

/// Runs a handshake in memory; the client's error, if any.
fn handshake(
    c: &mut rustls::ClientConnection,
    s: &mut rustls::ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..10 {
        transfer(|b| c.write_tls(b), |r| s.read_tls(r));
        // The server's view does not matter here; the agent's refusal does.
        let _ = s.process_new_packets();
        transfer(|b| s.write_tls(b), |r| c.read_tls(r));
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    Ok(())
}

/// Moves every pending TLS byte from one side to the other.
fn transfer(
    mut write: impl FnMut(&mut Vec<u8>) -> std::io::Result<usize>,
    mut read: impl FnMut(&mut &[u8]) -> std::io::Result<usize>,
) {
    let mut buf = Vec::new();
    while write(&mut buf).expect("write_tls") > 0 {}
    let mut rest = buf.as_slice();
    while !rest.is_empty() {
        read(&mut rest).expect("read_tls");
    }
}
