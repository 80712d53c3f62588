//! TDX evidence inside the crate-wide [`crate::Verifier`]: root selection, collateral, result cache, and the
//! mapping of [`TdxError`] onto [`VerifyError`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::claims::{Claims, PlatformClaims};
use crate::error::VerifyError;
use crate::platform::{Platform, PlatformFamily};

use super::collateral::{
    rfc3339, unix_secs, Collateral, CollateralKey, CollateralSource, ValidityWindow,
};
use super::error::{SignedPart, TdxError};
use super::evidence::TdxEvidence;
use super::sim::SIM_ORGANIZATION;
use super::verify::{quote_pck_chain, TdxVerifier, INTEL_SGX_ROOT_CA_DER};
use crate::verifier::{EvidenceWindow, VerifiedEvidence};

/// How many verified quotes the cache holds before it is emptied.
const CACHE_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
struct CachedClaims {
    claims: Claims,
    window: ValidityWindow,
}

/// Verifies TDX evidence against Intel's root and any trusted simulated roots.
///
/// Collateral: the verifier's own (from its [`CollateralSource`]) is preferred. Collateral carried in the evidence is
/// used only when the verifier has none for the platform or when the carried collateral is newer; carried collateral
/// older than the verifier's (a lower `tcbEvaluationDataNumber`, or the same number issued earlier) is refused, so
/// that a peer cannot roll verification back to collateral from before a TCB recovery. Whatever collateral is used
/// must reach the configured minimum evaluation data number.
#[derive(Debug)]
pub(crate) struct TdxEvidenceVerifier {
    intel: TdxVerifier,
    simulated: Vec<TdxVerifier>,
    collateral: Option<Arc<CollateralSource>>,
    min_evaluation: Option<u32>,
    cache: Mutex<HashMap<[u8; 32], CachedClaims>>,
}

/// Parse a trusted simulated TDX root (PEM or DER).
pub(crate) fn simulated_root(root: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let der_bytes = match pem::parse(root) {
        Ok(p) if p.tag() == "CERTIFICATE" => p.into_contents(),
        _ => root.to_vec(),
    };
    let subject = subject_of(&der_bytes).ok_or_else(|| VerifyError::Malformed {
        part: "simulated TDX root certificate",
        reason: "not an X.509 certificate (PEM or DER)".into(),
    })?;
    if der_bytes == INTEL_SGX_ROOT_CA_DER {
        return Err(VerifyError::Malformed {
            part: "simulated TDX root certificate",
            reason: "this is Intel's real root, which is always trusted".into(),
        });
    }
    tracing::debug!(%subject, "trusting a simulated TDX root");
    Ok(der_bytes)
}

fn subject_of(der_bytes: &[u8]) -> Option<String> {
    use der::Decode as _;
    x509_cert::Certificate::from_der(der_bytes)
        .ok()
        .map(|c| c.tbs_certificate.subject.to_string())
}

fn collateral_digest(quote: &[u8], c: &Collateral) -> [u8; 32] {
    let c = c.inner();
    let mut h = Sha256::new();
    for part in [
        quote,
        c.tcb_info.as_bytes(),
        &c.tcb_info_signature,
        c.qe_identity.as_bytes(),
        &c.qe_identity_signature,
        &c.root_ca_crl,
        &c.pck_crl,
        c.tcb_info_issuer_chain.as_bytes(),
        c.qe_identity_issuer_chain.as_bytes(),
        c.pck_crl_issuer_chain.as_bytes(),
        c.pck_certificate_chain.as_deref().unwrap_or("").as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

impl TdxEvidenceVerifier {
    /// A verifier trusting Intel's root and the given simulated roots (DER).
    pub(crate) fn new(simulated: &[Vec<u8>], collateral: Option<Arc<CollateralSource>>) -> Self {
        TdxEvidenceVerifier {
            intel: TdxVerifier::intel(),
            simulated: simulated
                .iter()
                .map(|der_bytes| {
                    let label = subject_of(der_bytes).unwrap_or_else(|| "simulated root".into());
                    TdxVerifier::with_root(der_bytes.clone(), format!("simulated root {label}"))
                })
                .collect(),
            collateral,
            min_evaluation: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Look up collateral for evidence without its own (and compare carried collateral with it) in `source`.
    pub(crate) fn set_collateral(&mut self, source: Arc<CollateralSource>) {
        self.collateral = Some(source);
    }

    /// Refuse collateral whose TCB info or QE identity has a `tcbEvaluationDataNumber` below `minimum`.
    pub(crate) fn set_min_evaluation(&mut self, minimum: Option<u32>) {
        self.min_evaluation = minimum;
    }

    /// How many verified quotes are cached.
    pub(crate) fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Choose the root the quote's PCK chain claims, refusing chains that end anywhere untrusted.
    fn choose(&self, quote: &[u8]) -> Result<(&TdxVerifier, Platform), VerifyError> {
        let parsed = dcap_qvl::quote::Quote::parse(quote).map_err(|e| VerifyError::Malformed {
            part: "TDX quote",
            reason: format!("{e:#}"),
        })?;
        let Ok(chain) = parsed.raw_cert_chain() else {
            // No embedded chain: the collateral must carry it, and only Intel's root applies.
            return Ok((&self.intel, Platform::Tdx));
        };
        let certs = super::collateral::pem_certs("PCK certificate chain in the quote", chain)
            .map_err(tdx_error)?;
        let Some(top) = certs.last() else {
            return Err(VerifyError::Malformed {
                part: "TDX quote",
                reason: "the PCK certificate chain is empty".into(),
            });
        };
        if top.as_slice() == self.intel.root_der() {
            return Ok((&self.intel, Platform::Tdx));
        }
        if let Some(v) = self
            .simulated
            .iter()
            .find(|v| v.root_der() == top.as_slice())
        {
            return Ok((v, Platform::SimTdx));
        }
        let subject = subject_of(top).unwrap_or_else(|| "an unparsable certificate".into());
        if subject.contains(SIM_ORGANIZATION) && self.simulated.is_empty() {
            return Err(VerifyError::SimulatedRootNotTrusted {
                family: PlatformFamily::Tdx,
            });
        }
        Err(VerifyError::UntrustedRoot {
            detail: format!(
                "the quote's PCK certificate chain ends in \"{subject}\", which is neither Intel's SGX Root CA nor a \
                 trusted simulated root"
            ),
        })
    }

    /// Verify TDX evidence at `now`: its claims and the window in which its collateral and PCK chain are valid.
    pub(crate) fn verify(
        &self,
        ev: &TdxEvidence,
        now: SystemTime,
    ) -> Result<VerifiedEvidence, VerifyError> {
        let (verifier, platform) = self.choose(&ev.quote)?;
        let collateral = self.select_collateral(ev, now)?;
        if let Some(minimum) = self.min_evaluation {
            collateral
                .version()
                .and_then(|v| v.check_minimum(minimum))
                .map_err(tdx_error)?;
        }
        let parsed =
            dcap_qvl::quote::Quote::parse(&ev.quote).map_err(|e| VerifyError::Malformed {
                part: "TDX quote",
                reason: format!("{e:#}"),
            })?;
        let window = quote_pck_chain(&parsed, &collateral)
            .and_then(|chain| collateral.window(&chain))
            .map_err(tdx_error)?;
        let key = collateral_digest(&ev.quote, &collateral);
        let secs = unix_secs(now);
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            if hit.window.check(secs).is_ok() && hit.claims.platform == platform {
                return Ok(dated(hit.claims, &hit.window));
            }
        }
        let verified = verifier
            .verify(&ev.quote, &collateral, now)
            .map_err(tdx_error)?;
        let claims = Claims {
            platform,
            report_data: verified.report_data,
            debug: verified.claims.td.td_attributes.debug,
            config_digest: None,
            details: PlatformClaims::Tdx(verified.claims),
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(
                key,
                CachedClaims {
                    claims: claims.clone(),
                    window: window.clone(),
                },
            );
        }
        Ok(dated(claims, &window))
    }

    /// The collateral to verify `ev` with: the verifier's own unless the evidence carries newer collateral; carried
    /// collateral older than the verifier's is refused.
    fn select_collateral(
        &self,
        ev: &TdxEvidence,
        now: SystemTime,
    ) -> Result<Collateral, VerifyError> {
        let Some(carried) = &ev.collateral else {
            return self.lookup_collateral(&ev.quote, now);
        };
        // The verifier's own collateral for the quote's platform, if it has any (a quote without an embedded PCK
        // chain names no platform, and is checked with what it carries).
        let own = match (&self.collateral, CollateralKey::for_quote(&ev.quote)) {
            (Some(source), Ok(key)) => source.cached(&key, now),
            _ => None,
        };
        let Some(own) = own else {
            return Ok(carried.clone());
        };
        let (carried_version, own_version) = carried
            .version()
            .and_then(|c| own.version().map(|o| (c, o)))
            .map_err(tdx_error)?;
        if let Some((item, carried_item, own_item)) = carried_version.older_than(&own_version) {
            return Err(tdx_error(TdxError::CollateralRollback {
                item,
                carried: carried_item.evaluation_data_number,
                carried_issued: rfc3339(carried_item.issue_date),
                verifier: own_item.evaluation_data_number,
                verifier_issued: rfc3339(own_item.issue_date),
            }));
        }
        if own_version.older_than(&carried_version).is_some() {
            // Newer than the verifier's (which has not been refreshed yet): signed by the same root, so usable.
            return Ok(carried.clone());
        }
        Ok(own)
    }

    fn lookup_collateral(&self, quote: &[u8], now: SystemTime) -> Result<Collateral, VerifyError> {
        let key = CollateralKey::for_quote(quote).map_err(tdx_error)?;
        let source = self.collateral.as_ref().ok_or_else(|| VerifyError::Collateral {
            reason: format!(
                "the evidence carries no collateral and no TDX collateral source is configured (FMSPC {}, {} CA)",
                key.fmspc, key.ca
            ),
        })?;
        source.cached(&key, now).ok_or_else(|| VerifyError::Collateral {
            reason: format!(
                "no valid TDX collateral cached for FMSPC {} ({} CA); put a collateral file in the collateral \
                 directory or let the PCCS fetch refresh it",
                key.fmspc, key.ca
            ),
        })
    }
}

/// `claims` with the collateral window as the window of the verdict.
fn dated(claims: Claims, window: &ValidityWindow) -> VerifiedEvidence {
    VerifiedEvidence {
        claims,
        valid: EvidenceWindow {
            not_before: window.starts.not_before,
            not_after: window.ends.not_after,
            ends_with: window.ends.item.clone(),
        },
    }
}

/// Map a TDX verification error onto the crate-wide error, keeping the check and the detail.
pub(crate) fn tdx_error(e: TdxError) -> VerifyError {
    match e {
        TdxError::MalformedQuote(reason) | TdxError::UnsupportedQuote(reason) => {
            VerifyError::Malformed {
                part: "TDX quote",
                reason,
            }
        }
        TdxError::MalformedCollateral(reason) => VerifyError::Malformed {
            part: "TDX collateral",
            reason,
        },
        TdxError::CollateralExpired {
            item,
            valid_until,
            now,
        } => VerifyError::CollateralExpired {
            item,
            valid_until,
            now,
        },
        TdxError::CertificateChain { chain, detail, .. } => VerifyError::CertificateChain {
            chain,
            reason: detail,
        },
        TdxError::SignatureInvalid(part) => VerifyError::Signature {
            part: match part {
                SignedPart::TdReport => "TDX TD report",
                SignedPart::QeReport => "TDX QE report",
                SignedPart::TcbInfo => "TDX TCB info",
                SignedPart::QeIdentity => "TDX QE identity",
            },
            reason: format!("invalid signature over the {part}"),
        },
        e @ TdxError::AttestationKeyNotBound => VerifyError::Signature {
            part: "TDX QE report",
            reason: e.to_string(),
        },
        e @ (TdxError::TcbRefused(_) | TdxError::TcbRevoked) => VerifyError::Refused {
            check: "tcb",
            reason: e.to_string(),
        },
        e @ TdxError::QeIdentityMismatch(_) => VerifyError::Refused {
            check: "qe-identity",
            reason: e.to_string(),
        },
        e @ TdxError::TdAttributes(_) => VerifyError::Refused {
            check: "td-attributes",
            reason: e.to_string(),
        },
        e @ (TdxError::CollateralRollback { .. } | TdxError::EvaluationBelowMinimum { .. }) => {
            VerifyError::Refused {
                check: "collateral-version",
                reason: e.to_string(),
            }
        }
        e @ TdxError::Rejected(_) => VerifyError::Refused {
            check: "tdx-quote",
            reason: e.to_string(),
        },
        e => VerifyError::Collateral {
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
