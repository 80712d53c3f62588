//! Mutual RA-TLS between a `sim-tdx` side and a `sim-snp` side over tokio-rustls on loopback, and RA-TLS
//! certificates carrying TDX evidence that must be refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns set up fixtures

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use attestation::policy::{ClaimsPolicy, GatewayPolicy};
use attestation::ratls::{
    parse_certificate, CertOptions, RaTlsCertificate, RaTlsError, RaTlsIdentity, RaTlsVerifier,
};
use attestation::tdx::sim::{TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE};
use attestation::{
    AttestError, Attester, Evidence, Platform, SimSnpAttester, SimSnpPki, SimTdReport,
    SimTdxAttester, SimTdxPki, TrustAnchors, Verifier,
};

mod common;

const APP: &str = "deadbeef22222222";
const GATEWAY_MR_TD: [u8; 48] = [0x7d; 48];
const AGENT_MEASUREMENT: [u8; 48] = [0xbb; 48];

fn snp_pki() -> Arc<SimSnpPki> {
    static PKI: OnceLock<Arc<SimSnpPki>> = OnceLock::new();
    PKI.get_or_init(|| Arc::new(SimSnpPki::generate_small("ratls tdx tests").unwrap()))
        .clone()
}

fn tdx_pki() -> Arc<SimTdxPki> {
    static PKI: OnceLock<Arc<SimTdxPki>> = OnceLock::new();
    PKI.get_or_init(|| Arc::new(SimTdxPki::from_seed(b"ratls tdx tests").unwrap()))
        .clone()
}

fn tdx_attester(td_attributes: u64) -> Arc<dyn Attester> {
    Arc::new(SimTdxAttester::new(
        tdx_pki(),
        SimTdReport {
            mr_td: GATEWAY_MR_TD,
            rtmr: [[1; 48], [2; 48], [3; 48], [4; 48]],
            td_attributes,
            ..SimTdReport::default()
        },
    ))
}

fn snp_attester() -> Arc<dyn Attester> {
    Arc::new(SimSnpAttester::new(snp_pki(), AGENT_MEASUREMENT, [0; 32]))
}

fn verifier(trust_tdx: bool) -> Arc<Verifier> {
    let mut anchors = TrustAnchors::production()
        .with_sim_snp_ark(snp_pki().ark_der())
        .unwrap();
    if trust_tdx {
        anchors = anchors.with_sim_tdx_root(tdx_pki().root_der()).unwrap();
    }
    Arc::new(Verifier::new(anchors))
}

/// The gateway's policy for the agent's app: the SNP measurement.
fn app_policy() -> Arc<dyn ClaimsPolicy> {
    common::snp_app_policy(APP, AGENT_MEASUREMENT)
}

/// The agent's policy for gateways: a `sim-tdx` profile on MRTD and RTMR0-3.
fn gateway_policy(mr_td: [u8; 48]) -> Arc<dyn ClaimsPolicy> {
    let [r0, r1, r2, r3] = [1u8, 2, 3, 4].map(|b| hex::encode([b; 48]));
    let text = format!(
        "[[profile]]\nplatform = \"sim-tdx\"\nmr_td = [\"{}\"]\nrtmr0 = [\"{r0}\"]\nrtmr1 = [\"{r1}\"]\n\
         rtmr2 = [\"{r2}\"]\nrtmr3 = [\"{r3}\"]\n",
        hex::encode(mr_td),
    );
    Arc::new(GatewayPolicy::from_toml(&text).unwrap())
}

/// A `sim-tdx` gateway (server) and a `sim-snp` agent (client) handshake and exchange a message.
async fn handshake(
    gateway: Arc<dyn Attester>,
    agent_trusts_tdx: bool,
    agent_policy: Arc<dyn ClaimsPolicy>,
) -> (common::Side, common::Side) {
    let server_id = Arc::new(RaTlsIdentity::new(gateway, CertOptions::default()).unwrap());
    let client_id = Arc::new(RaTlsIdentity::new(snp_attester(), CertOptions::default()).unwrap());
    let server_peers = Arc::new(RaTlsVerifier::new(verifier(true), app_policy()));
    let client_peers = Arc::new(RaTlsVerifier::new(verifier(agent_trusts_tdx), agent_policy));
    common::handshake(server_id, server_peers, client_id, client_peers).await
}

/// Why the agent refused a `sim-tdx` gateway with `td_attributes` under a policy on `mr_td` (the gateway fails
/// too).
async fn agent_refusal(td_attributes: u64, agent_trusts_tdx: bool, mr_td: [u8; 48]) -> String {
    let (server, client) = handshake(
        tdx_attester(td_attributes),
        agent_trusts_tdx,
        gateway_policy(mr_td),
    )
    .await;
    assert!(server.is_err());
    client.unwrap_err()
}

#[tokio::test]
async fn mutual_ra_tls_between_sim_tdx_and_sim_snp() {
    let (server, client) = handshake(
        tdx_attester(TD_ATTR_SEPT_VE_DISABLE),
        true,
        gateway_policy(GATEWAY_MR_TD),
    )
    .await;
    let gateway_saw = server.unwrap().expect("gateway has the agent's claims");
    let agent_saw = client.unwrap().expect("agent has the gateway's claims");
    assert_eq!(gateway_saw.platform, Platform::SimSnp);
    assert_eq!(gateway_saw.snp().unwrap().measurement, AGENT_MEASUREMENT);
    assert_eq!(agent_saw.platform, Platform::SimTdx);
    let tdx = agent_saw.tdx().expect("TDX claims");
    assert_eq!(tdx.td.mr_td, GATEWAY_MR_TD);
    assert_eq!(tdx.td.rtmr[3], [4; 48]);
    assert!(!agent_saw.debug);
}

#[tokio::test]
async fn agent_refuses_a_sim_tdx_gateway_unless_it_trusts_the_simulated_root() {
    let err = agent_refusal(TD_ATTR_SEPT_VE_DISABLE, false, GATEWAY_MR_TD).await;
    assert!(err.contains("SimulatedRootNotTrusted"), "{err}");
}

#[tokio::test]
async fn agent_refuses_a_gateway_with_another_mr_td() {
    let err = agent_refusal(TD_ATTR_SEPT_VE_DISABLE, true, [0x01; 48]).await;
    assert!(err.contains("MRTD"), "{err}");
}

#[tokio::test]
async fn agent_refuses_a_debug_td_gateway_under_a_default_profile() {
    let err = agent_refusal(TD_ATTR_SEPT_VE_DISABLE | TD_ATTR_DEBUG, true, GATEWAY_MR_TD).await;
    assert!(err.contains("Debug"), "{err}");
}

fn verify_cert(
    cert: &RaTlsCertificate,
    mr_td: [u8; 48],
) -> Result<Arc<attestation::Claims>, RaTlsError> {
    RaTlsVerifier::new(verifier(true), gateway_policy(mr_td))
        .verify_certificate(cert.cert_der(), SystemTime::now())
}

#[test]
fn certificates_with_tdx_evidence_are_checked_field_by_field() {
    let good = RaTlsCertificate::generate(
        tdx_attester(TD_ATTR_SEPT_VE_DISABLE).as_ref(),
        &CertOptions::default(),
    )
    .unwrap();
    let parsed = parse_certificate(good.cert_der()).unwrap();
    assert!(matches!(parsed.evidence, Evidence::Tdx(_)));
    assert_eq!(
        verify_cert(&good, GATEWAY_MR_TD).unwrap().platform,
        Platform::SimTdx
    );

    let err = verify_cert(&good, [0x01; 48]).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "MRTD not allowed: expected {}",
            hex::encode([0x01; 48])
        )),
        "{err}"
    );
    assert!(err.contains(&hex::encode(GATEWAY_MR_TD)), "{err}");

    let debug = RaTlsCertificate::generate(
        tdx_attester(TD_ATTR_SEPT_VE_DISABLE | TD_ATTR_DEBUG).as_ref(),
        &CertOptions::default(),
    )
    .unwrap();
    let err = verify_cert(&debug, GATEWAY_MR_TD).unwrap_err();
    assert_eq!(err.check(), "policy", "{err}");
    assert!(err.to_string().contains("debug"), "{err}");
}

/// An attester that puts fixed report data in its quotes, whatever key it is asked to bind.
struct Unbound(Arc<dyn Attester>);

impl Attester for Unbound {
    fn platform(&self) -> Platform {
        self.0.platform()
    }

    fn attest(&self, _report_data: &attestation::ReportData) -> Result<Evidence, AttestError> {
        use attestation::{Purpose, ReportData};
        self.0
            .attest(&ReportData::new(Purpose::RaTlsKey, b"some other key"))
    }
}

#[test]
fn a_quote_whose_report_data_does_not_bind_the_key_is_refused() {
    let cert = RaTlsCertificate::generate(
        &Unbound(tdx_attester(TD_ATTR_SEPT_VE_DISABLE)),
        &CertOptions::default(),
    )
    .unwrap();
    let err = verify_cert(&cert, GATEWAY_MR_TD).unwrap_err();
    common::assert_binding_refused(&err);
}
