//! Verification of TDX quotes through `dcap-qvl`, against Intel's SGX root CA or a configured simulated root.

use std::time::SystemTime;

use dcap_qvl::quote::Quote;
use dcap_qvl::verify::QuoteVerifier;
use der::Decode as _;

use super::claims::{TcbStatus, TdxClaims};
use super::collateral::{pem_certs, unix_secs, Collateral};
use super::error::TdxError;
use super::quote::TdReport;

/// DER of Intel's SGX Root CA (published at
/// `https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.cer`), the root
/// of every genuine TDX quote.
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");

/// DER of Intel's SGX Root CA.
pub fn intel_root_ca_der() -> &'static [u8] {
    INTEL_SGX_ROOT_CA_DER
}

type Backend = dcap_qvl::configs::RustCryptoConfig;

/// The PCK certificates (DER) a quote is checked with beyond its collateral: none when the collateral carries the
/// PCK chain (which is then used), else the chain the quote carries.
pub(crate) fn quote_pck_chain(
    parsed: &Quote,
    collateral: &Collateral,
) -> Result<Vec<Vec<u8>>, TdxError> {
    if collateral.0.pck_certificate_chain.is_some() {
        return Ok(Vec::new());
    }
    match parsed.raw_cert_chain() {
        Ok(chain) => pem_certs("PCK certificate chain in the quote", chain),
        Err(e) => Err(TdxError::UnsupportedQuote(format!(
            "the quote does not carry its PCK certificate chain and the collateral has none: {e:#}"
        ))),
    }
}

/// A verified quote: its claims and the report data the TD put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// REPORTDATA of the TD report.
    pub report_data: [u8; 64],
    /// Everything else the quote and its collateral establish.
    pub claims: TdxClaims,
}

/// Verifies TDX quotes against one trusted root.
///
/// Verification checks, at a caller-given time: the validity of every piece of collateral (reported as
/// [`TdxError::CollateralExpired`] naming the first item to expire), the TCB signing and PCK certificate
/// chains up to the root with both CRLs, the signatures over TCB info and QE identity, the QE report's PCK
/// signature and its binding of the attestation key, the QE identity, the TD report's signature, the TDX
/// module identity and the platform's TCB level. Debug TDs pass this step with `td_attributes.debug` set in
/// the claims; refusing them is the policy's job.
#[derive(Debug, Clone)]
pub struct TdxVerifier {
    root_der: Vec<u8>,
    root_label: String,
}

impl TdxVerifier {
    /// A verifier that trusts only Intel's SGX Root CA.
    pub fn intel() -> Self {
        TdxVerifier {
            root_der: intel_root_ca_der().to_vec(),
            root_label: "Intel SGX Root CA".into(),
        }
    }

    /// A verifier that trusts `root_der` instead (a simulated Intel root). `label` names it in errors.
    pub fn with_root(root_der: Vec<u8>, label: impl Into<String>) -> Self {
        TdxVerifier {
            root_der,
            root_label: label.into(),
        }
    }

    /// The trusted root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// Verify `quote` against `collateral` at time `now`, returning its claims.
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: &Collateral,
        now: SystemTime,
    ) -> Result<VerifiedQuote, TdxError> {
        let parsed = Quote::parse(quote).map_err(|e| TdxError::MalformedQuote(format!("{e:#}")))?;
        let TdReport { td, report_data } = TdReport::from_quote(&parsed)?;
        let now = unix_secs(now);

        let quote_chain = quote_pck_chain(&parsed, collateral)?;
        collateral.window(&quote_chain)?.check(now)?;

        let report = QuoteVerifier::<Backend>::new_with_config(self.root_der.clone())
            .allow_debug(true)
            .verify(quote, &collateral.0, now)
            .map_err(|e| match TdxError::from_qvl(&e, &self.root_label) {
                TdxError::CertificateChain { root, detail, .. } => TdxError::CertificateChain {
                    chain: self.blame_chain(collateral, &quote_chain),
                    root,
                    detail,
                },
                other => other,
            })?;

        let tcb_status: TcbStatus = report
            .status
            .parse()
            .map_err(|e: String| TdxError::Rejected(format!("verifier returned {e}")))?;
        if tcb_status == TcbStatus::Revoked {
            return Err(TdxError::TcbRevoked);
        }
        let fmspc = super::collateral::CollateralKey::for_quote(quote)
            .ok()
            .and_then(|k| hex::decode(k.fmspc).ok())
            .and_then(|b| <[u8; 6]>::try_from(b.as_slice()).ok())
            .unwrap_or_default();
        Ok(VerifiedQuote {
            report_data,
            claims: TdxClaims {
                td,
                tcb_status,
                advisory_ids: report.advisory_ids,
                fmspc,
            },
        })
    }

    /// Which certificate chain a path-validation failure is about: the PCK chain if its certificate is on
    /// the PCK CRL or its root is not the trusted one, else the TCB signing chain.
    fn blame_chain(&self, collateral: &Collateral, quote_chain: &[Vec<u8>]) -> &'static str {
        let pck_chain = match &collateral.0.pck_certificate_chain {
            Some(pem_text) => {
                pem_certs("PCK certificate chain", pem_text.as_bytes()).unwrap_or_default()
            }
            None => quote_chain.to_vec(),
        };
        let serial = |der_bytes: &[u8]| {
            x509_cert::Certificate::from_der(der_bytes)
                .ok()
                .map(|c| c.tbs_certificate.serial_number.as_bytes().to_vec())
        };
        let revoked: Vec<Vec<u8>> =
            x509_cert::crl::CertificateList::from_der(&collateral.0.pck_crl)
                .ok()
                .and_then(|crl| crl.tbs_cert_list.revoked_certificates)
                .unwrap_or_default()
                .iter()
                .map(|r| r.serial_number.as_bytes().to_vec())
                .collect();
        let pck_revoked = pck_chain
            .first()
            .and_then(|leaf| serial(leaf))
            .is_some_and(|s| revoked.contains(&s));
        let pck_root_trusted = pck_chain
            .last()
            .is_some_and(|root| root.as_slice() == self.root_der.as_slice());
        let signing_root_trusted = pem_certs(
            "TCB info issuer chain",
            collateral.0.tcb_info_issuer_chain.as_bytes(),
        )
        .ok()
        .and_then(|chain| chain.last().cloned())
        .is_some_and(|root| root == self.root_der);
        if pck_revoked || (!pck_root_trusted && signing_root_trusted) {
            "PCK"
        } else {
            "TCB signing"
        }
    }
}

#[cfg(test)]
mod tests;
