//! Verification of SEV-SNP evidence: [`SnpVerifier`], which checks a report and its certificates against the
//! trusted AMD (or simulated) roots and returns [`Claims`].
//!
//! Steps, each refusing with a [`VerifyError`] that names it:
//! 1. choose the root: an ARK in the evidence must equal a trusted ARK byte for byte; without one, the root is the
//!    trusted one whose names the ASK (or VCEK) issuer matches;
//! 2. ARK signs ASK/ASVK, which signs VCEK/VLEK (RSA-PSS, SHA-384), every certificate valid at "now";
//! 3. the report's layout, its signing-key kind against the certificate kind, its ECDSA P-384 signature;
//! 4. the VCEK's hwID and TCB extensions against the report's CHIP_ID and REPORTED_TCB.
//!
//! The result of steps 1-2 (and the extensions read in 4) is cached per certificate set, so a repeated
//! verification with the same VCEK does only the ECDSA check and the comparisons.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use p384::ecdsa::VerifyingKey;
use sha2::{Digest, Sha256};

use super::cert::{self, AmdCert, Endorsement};
use super::claims::{SnpProduct, SnpTcb};
use super::evidence::{SigningKeyKind, SnpEvidence};
use super::report::Report;
use super::roots::{self, TrustedRoot};
use crate::claims::{Claims, PlatformClaims};
use crate::error::VerifyError;
use crate::platform::{Platform, PlatformFamily};
use crate::verifier::{EvidenceWindow, VerifiedEvidence};

/// How many verified chains the cache holds before it is emptied.
const CACHE_CAPACITY: usize = 1024;

/// A certificate chain that has been verified up to a trusted root.
#[derive(Debug)]
struct VerifiedChain {
    platform: Platform,
    product: SnpProduct,
    vek_kind: SigningKeyKind,
    vek_key: VerifyingKey,
    endorsement: Endorsement,
    /// (role, not_before, not_after) of every certificate in the chain.
    validity: Vec<(&'static str, i64, i64)>,
}

/// Verifies SNP evidence against a fixed set of roots, caching verified chains.
#[derive(Debug)]
pub(crate) struct SnpVerifier {
    roots: Vec<TrustedRoot>,
    cache: Mutex<HashMap<[u8; 32], Arc<VerifiedChain>>>,
}

impl SnpVerifier {
    /// A verifier trusting AMD's roots and, if given, simulated roots.
    pub(crate) fn new(simulated: Vec<TrustedRoot>) -> Self {
        let mut roots = roots::amd_roots().to_vec();
        roots.extend(simulated);
        SnpVerifier {
            roots,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Number of cached chains (for tests and metrics).
    pub(crate) fn cached_chains(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Verify evidence at `now`, returning its claims (report data not yet compared, policy not applied) and the
    /// window in which every certificate of the chain (ARK, ASK/ASVK, VCEK/VLEK) is valid.
    pub(crate) fn verify_dated(
        &self,
        ev: &SnpEvidence,
        now: SystemTime,
    ) -> Result<VerifiedEvidence, VerifyError> {
        // Parse the report first: it is cheap and a malformed one needs no chain work.
        let report = Report::parse(&ev.report)?;
        let chain = self.chain(ev)?;
        for (role, nb, na) in &chain.validity {
            cert::check_validity(role, *nb, *na, now)?;
        }
        let kind = report.signing_key()?;
        if kind != chain.vek_kind {
            return Err(VerifyError::SigningKeyKind {
                expected: chain.vek_kind,
                actual: kind,
            });
        }
        report.verify_signature(&chain.vek_key)?;
        check_endorsement(&chain, &report)?;
        let claims = Claims {
            platform: chain.platform,
            report_data: report.parsed.report_data,
            debug: report.debug(),
            config_digest: None,
            details: PlatformClaims::Snp(report.claims(chain.product, kind)),
        };
        Ok(VerifiedEvidence {
            claims,
            valid: chain_window(&chain.validity),
        })
    }

    fn chain(&self, ev: &SnpEvidence) -> Result<Arc<VerifiedChain>, VerifyError> {
        let key = chain_key(ev);
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let chain = Arc::new(self.verify_chain(ev)?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key, chain.clone());
        }
        Ok(chain)
    }

    fn verify_chain(&self, ev: &SnpEvidence) -> Result<VerifiedChain, VerifyError> {
        let (vek_role, ask_role) = match ev.vek_kind {
            SigningKeyKind::Vcek => ("VCEK", "ASK"),
            SigningKeyKind::Vlek => ("VLEK", "ASVK"),
        };
        let vek = AmdCert::from_der(vek_role, &ev.vek)?;
        let ask = ev
            .ask
            .as_deref()
            .map(|d| AmdCert::from_der(ask_role, d))
            .transpose()?;
        let ark = ev
            .ark
            .as_deref()
            .map(|d| AmdCert::from_der("ARK", d))
            .transpose()?;

        let candidates: Vec<&TrustedRoot> = match (&ark, &ask) {
            (Some(ark), _) => self.roots.iter().filter(|r| r.ark.der == ark.der).collect(),
            (None, Some(ask)) => self
                .roots
                .iter()
                .filter(|r| r.ark.subject == ask.issuer)
                .collect(),
            (None, None) => self
                .roots
                .iter()
                .filter(|r| r.ask.as_ref().is_some_and(|a| a.subject == vek.issuer))
                .collect(),
        };
        if candidates.is_empty() {
            let simulated = vek.looks_simulated()
                || ask.as_ref().is_some_and(|a| a.looks_simulated())
                || ark.as_ref().is_some_and(|a| a.looks_simulated());
            if simulated && !self.roots.iter().any(|r| r.simulated) {
                return Err(VerifyError::SimulatedRootNotTrusted {
                    family: PlatformFamily::Snp,
                });
            }
            let detail = match (&ark, &ask) {
                (Some(ark), _) => format!(
                    "the ARK in the evidence ({}) is not a trusted root",
                    ark.subject_text
                ),
                (None, Some(ask)) => format!(
                    "no trusted ARK issued the {ask_role} ({})",
                    ask.subject_text
                ),
                (None, None) => format!(
                    "no trusted ASK issued the {vek_role} ({})",
                    vek.subject_text
                ),
            };
            return Err(VerifyError::UntrustedRoot { detail });
        }

        let mut last_err = None;
        for root in candidates {
            match verify_under(root, &vek, ask.as_ref(), ev.vek_kind) {
                Ok(chain) => return Ok(chain),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| VerifyError::UntrustedRoot {
            detail: "no candidate root".into(),
        }))
    }
}

/// Verify VCEK/VLEK (and ASK/ASVK) under one trusted root.
fn verify_under(
    root: &TrustedRoot,
    vek: &AmdCert,
    ask: Option<&AmdCert>,
    kind: SigningKeyKind,
) -> Result<VerifiedChain, VerifyError> {
    let ask = match (ask, kind) {
        (Some(a), _) => a,
        (None, SigningKeyKind::Vcek) => {
            root.ask.as_ref().ok_or_else(|| VerifyError::Malformed {
                part: "SNP evidence",
                reason: "the ASK is missing and the root has no built-in ASK".into(),
            })?
        }
        (None, SigningKeyKind::Vlek) => {
            return Err(VerifyError::Malformed {
                part: "SNP evidence",
                reason: "a VLEK must come with its ASVK".into(),
            })
        }
    };
    root.ark.check_signed(ask)?;
    ask.check_signed(vek)?;
    let endorsement = cert::endorsement(vek)?;
    if kind == SigningKeyKind::Vcek && endorsement.hw_id.is_none() {
        return Err(VerifyError::Malformed {
            part: "VCEK certificate",
            reason: "missing hwID extension".into(),
        });
    }
    let vek_key = VerifyingKey::from_sec1_bytes(vek.sev.public_key_sec1()).map_err(|e| {
        VerifyError::Malformed {
            part: "VCEK certificate",
            reason: format!("public key is not a P-384 key: {e}"),
        }
    })?;
    Ok(VerifiedChain {
        platform: if root.simulated {
            Platform::SimSnp
        } else {
            Platform::SevSnp
        },
        product: root.product,
        vek_kind: kind,
        vek_key,
        endorsement,
        validity: [&root.ark, ask, vek]
            .iter()
            .map(|c| (c.role, c.not_before, c.not_after))
            .collect(),
    })
}

/// The window in which every certificate of a chain is valid. A certificate is valid through its notAfter second,
/// so the window ends one second later.
fn chain_window(validity: &[(&'static str, i64, i64)]) -> EvidenceWindow {
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    let starts = validity
        .iter()
        .map(|(_, nb, _)| secs(*nb))
        .max()
        .unwrap_or(0);
    let ends = validity.iter().min_by_key(|(_, _, na)| *na);
    EvidenceWindow {
        not_before: starts,
        not_after: ends.map_or(0, |(_, _, na)| secs(*na).saturating_add(1)),
        ends_with: ends.map_or_else(String::new, |(role, _, _)| format!("{role} certificate")),
    }
}

/// Compare what the VCEK/VLEK certificate endorses with what the report says.
fn check_endorsement(chain: &VerifiedChain, report: &Report<'_>) -> Result<(), VerifyError> {
    let cert = match chain.vek_kind {
        SigningKeyKind::Vcek => "VCEK",
        SigningKeyKind::Vlek => "VLEK",
    };
    let e = &chain.endorsement;
    if let Some(hw_id) = &e.hw_id {
        let chip = &report.parsed.chip_id;
        // Turin VCEKs carry the 8-byte chip id; earlier generations the full 64 bytes.
        let matches = match hw_id.len() {
            64 => hw_id[..] == chip[..],
            8 => hw_id[..] == chip[..8],
            _ => false,
        };
        if !matches {
            return Err(VerifyError::EndorsementMismatch {
                cert,
                field: "hwID",
                expected: hex::encode(hw_id),
                actual: hex::encode(&chip[..hw_id.len().min(64)]),
            });
        }
    }
    let tcb: SnpTcb = report.parsed.reported_tcb.into();
    let fields: [(&'static str, u8, u8); 4] = [
        ("TCB bootloader SPL", e.tcb.bootloader, tcb.bootloader),
        ("TCB TEE SPL", e.tcb.tee, tcb.tee),
        ("TCB SNP SPL", e.tcb.snp, tcb.snp),
        ("TCB microcode SPL", e.tcb.microcode, tcb.microcode),
    ];
    for (field, expected, actual) in fields {
        if expected != actual {
            return Err(VerifyError::EndorsementMismatch {
                cert,
                field,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    if let (Some(expected), Some(actual)) = (e.tcb.fmc, tcb.fmc) {
        if expected != actual {
            return Err(VerifyError::EndorsementMismatch {
                cert,
                field: "TCB FMC SPL",
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    if let Some(name) = &e.product_name {
        if !name.starts_with(chain.product.as_str()) {
            return Err(VerifyError::EndorsementMismatch {
                cert,
                field: "productName",
                expected: chain.product.as_str().to_owned(),
                actual: name.clone(),
            });
        }
    }
    Ok(())
}

/// Cache key: a hash over the certificates that make up the chain.
fn chain_key(ev: &SnpEvidence) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [Some(&ev.vek), ev.ask.as_ref(), ev.ark.as_ref()] {
        match part {
            Some(der) => {
                h.update((der.len() as u64).to_be_bytes());
                h.update(der);
            }
            None => h.update(u64::MAX.to_be_bytes()),
        }
    }
    h.update([ev.vek_kind as u8]);
    h.finalize().into()
}
