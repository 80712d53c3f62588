//! [`SimTdxAttester`]: an [`Attester`] producing quotes for a fixed simulated TD, with collateral embedded.

use std::time::{Duration, SystemTime};

use super::{SimTdReport, SimTdxPki};
use crate::attester::Attester;
use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;
use crate::tdx::collateral::{unix_secs, Collateral};
use crate::tdx::error::TdxError;
use crate::tdx::evidence::TdxEvidence;

/// An [`Attester`] producing `sim-tdx` evidence for a fixed TD: quotes under a simulated Intel PKI, with
/// collateral embedded (regenerated when less than a day of its 30-day validity remains).
pub struct SimTdxAttester {
    pki: std::sync::Arc<SimTdxPki>,
    /// The TD every quote describes (its `report_data` is replaced by the requested one).
    pub td: SimTdReport,
    collateral: std::sync::Mutex<Option<Collateral>>,
}

impl std::fmt::Debug for SimTdxAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTdxAttester")
            .field("pki", &self.pki)
            .field("td", &self.td)
            .finish_non_exhaustive()
    }
}

impl SimTdxAttester {
    /// An attester for `td` under `pki`.
    pub fn new(pki: std::sync::Arc<SimTdxPki>, td: SimTdReport) -> Self {
        SimTdxAttester {
            pki,
            td,
            collateral: std::sync::Mutex::new(None),
        }
    }

    fn current_collateral(&self) -> Result<Collateral, TdxError> {
        let now = SystemTime::now();
        let mut slot = self
            .collateral
            .lock()
            .map_err(|_| TdxError::SimPki("collateral lock poisoned".into()))?;
        if let Some(c) = slot.as_ref() {
            if c.window(&[])
                .is_ok_and(|w| w.fresh_at(unix_secs(now), Duration::from_secs(24 * 3600)))
            {
                return Ok(c.clone());
            }
        }
        // Issued a minute in the past so that verifiers with a slightly slow clock accept it.
        let c = self.pki.collateral(now - Duration::from_secs(60))?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

impl Attester for SimTdxAttester {
    fn platform(&self) -> Platform {
        Platform::SimTdx
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        let quote = self
            .pki
            .quote(&SimTdReport {
                report_data: *report_data.as_bytes(),
                ..self.td.clone()
            })
            .map_err(|e| AttestError::Device(e.to_string()))?;
        let collateral = self
            .current_collateral()
            .map_err(|e| AttestError::Device(e.to_string()))?;
        Ok(Evidence::Tdx(TdxEvidence {
            quote,
            collateral: Some(collateral),
        }))
    }
}
