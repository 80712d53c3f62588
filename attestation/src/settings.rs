//! The `[attestation]` settings every binary shares, as domain types, and what they build: the attester, the trust
//! anchors and the verifier.
//!
//! [`AttestationSettings`] holds the keys the gateway's and the agent's sections have in common. A binary embeds
//! it with `#[serde(flatten)]` beside its own keys (the gateway's app policy and PCCS URL, the agent's gateway
//! policy) and keeps `#[serde(deny_unknown_fields)]` on its own struct, which then refuses unknown keys for both:
//!
//! ```
//! # use std::path::PathBuf;
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Section {
//!     gateway_policy: PathBuf,
//!     #[serde(flatten)]
//!     settings: attestation::AttestationSettings,
//! }
//! let s: Section = toml::from_str("gateway_policy = \"/p.toml\"\nbackend = \"sim-snp\"\nsim_pki = \"/pki\"")
//!     .unwrap();
//! assert!(s.settings.backend.is_simulated());
//! assert!(toml::from_str::<Section>("gateway_policy = \"/p.toml\"\nbakend = \"tdx\"").is_err());
//! ```
//!
//! Values are checked while parsing (a measurement is 48 bytes of hex, a certificate lifetime at least a minute),
//! so a configuration that parses builds; [`AttestationSettings::problems`] adds what needs the file system or
//! several keys at once, for a binary's `check-config`.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::attester::select::{self, Backend, SelectError};
use crate::attester::Attester;
use crate::policy::ClaimsPolicy;
use crate::ratls::{CertOptions, RaTlsVerifier};
use crate::tdx::{CollateralConfig, CollateralSource, TdxError};
use crate::verifier::{TrustAnchors, Verifier};

/// The `[attestation]` keys the binaries share. See the [module documentation](self) for how to embed it. An
/// absent key takes its value from [`AttestationSettings::auto`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AttestationSettings {
    /// Which attester produces one's own evidence (`auto`, `tdx`, `sev-snp`, `sim-tdx`, `sim-snp`).
    pub backend: Backend,
    /// Directories of simulated vendor PKIs whose roots are trusted. Empty: only the real vendor roots.
    pub trusted_sim_roots: Vec<PathBuf>,
    /// The simulated PKI that signs one's own evidence (required with a `sim-*` backend).
    pub sim_pki: Option<PathBuf>,
    /// Lifetime of one's RA-TLS certificate (key `certificate_validity_secs`, at least 60; default one hour).
    #[serde(rename = "certificate_validity_secs")]
    pub certificate_validity: CertificateValidity,
    /// The measurement a simulated backend reports (SNP MEASUREMENT or TDX MRTD, 96 hex characters); zeros when
    /// absent.
    pub sim_measurement: Option<Measurement>,
    /// A directory of Intel TDX collateral files (`tdx-<FMSPC>-<ca>.json`) used to verify peers' TDX evidence that
    /// carries no collateral of its own, and preferred over collateral the evidence carries.
    pub tdx_collateral_dir: Option<PathBuf>,
    /// The longest lifetime (notAfter - notBefore) of a peer's RA-TLS certificate that is accepted (key
    /// `max_certificate_lifetime_secs`, at least 60; default 24 hours).
    #[serde(rename = "max_certificate_lifetime_secs")]
    pub max_certificate_lifetime: MaxCertificateLifetime,
    /// The lowest `tcbEvaluationDataNumber` of TDX collateral (TCB info and QE identity) that is accepted, the
    /// verifier's own or carried in evidence; none by default.
    pub tdx_min_tcb_evaluation_data_number: Option<u32>,
}

/// A 48-byte launch measurement (SNP MEASUREMENT, TDX MRTD), written as 96 hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement(pub [u8; 48]);

impl std::str::FromStr for Measurement {
    type Err = SelectError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        select::sim_measurement_bytes(Some(text)).map(Measurement)
    }
}

impl<'de> Deserialize<'de> for Measurement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A certificate lifetime setting: at least [`CertificateValidity::MIN`], written in seconds. `K` says which
/// setting it is ([`CertificateValidity`] or [`MaxCertificateLifetime`]): its default and how a value below the
/// minimum is refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LifetimeSetting<K>(Duration, PhantomData<K>);

/// Which certificate lifetime a [`LifetimeSetting`] holds.
pub trait LifetimeKey {
    /// The name the setting's type is written with in `Debug` output.
    const TYPE_NAME: &'static str;
    /// The lifetime when none is configured.
    const DEFAULT: Duration;
    /// Why a value below the minimum is refused (it names the key).
    type TooShort;
    /// The refusal of `secs` seconds.
    const TOO_SHORT: fn(u64) -> Self::TooShort;
}

/// The lifetime of one's own RA-TLS certificate (key `certificate_validity_secs`).
pub type CertificateValidity = LifetimeSetting<ValidityKey>;

/// The longest accepted lifetime of a peer's RA-TLS certificate (key `max_certificate_lifetime_secs`).
pub type MaxCertificateLifetime = LifetimeSetting<MaxLifetimeKey>;

/// The key of [`CertificateValidity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValidityKey {}

impl LifetimeKey for ValidityKey {
    const TYPE_NAME: &'static str = "CertificateValidity";
    const DEFAULT: Duration = Duration::from_secs(3600);
    type TooShort = ValidityTooShort;
    const TOO_SHORT: fn(u64) -> ValidityTooShort = ValidityTooShort;
}

/// The key of [`MaxCertificateLifetime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MaxLifetimeKey {}

impl LifetimeKey for MaxLifetimeKey {
    const TYPE_NAME: &'static str = "MaxCertificateLifetime";
    const DEFAULT: Duration = crate::ratls::DEFAULT_MAX_LIFETIME;
    type TooShort = LifetimeTooShort;
    const TOO_SHORT: fn(u64) -> LifetimeTooShort = LifetimeTooShort;
}

/// Why a certificate lifetime is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate_validity_secs = {0} is below {min}", min = CertificateValidity::MIN.as_secs())]
pub struct ValidityTooShort(pub u64);

/// Why a maximum certificate lifetime is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("max_certificate_lifetime_secs = {0} is below {min}", min = CertificateValidity::MIN.as_secs())]
pub struct LifetimeTooShort(pub u64);

impl<K: LifetimeKey> LifetimeSetting<K> {
    /// The shortest accepted lifetime.
    pub const MIN: Duration = Duration::from_secs(60);
    /// The lifetime when none is configured.
    pub const DEFAULT: Duration = K::DEFAULT;

    /// A lifetime of `secs` seconds, refused below [`Self::MIN`].
    pub fn from_secs(secs: u64) -> Result<Self, K::TooShort> {
        if secs < Self::MIN.as_secs() {
            return Err(K::TOO_SHORT(secs));
        }
        Ok(LifetimeSetting(Duration::from_secs(secs), PhantomData))
    }

    /// The lifetime.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl<K: LifetimeKey> Default for LifetimeSetting<K> {
    fn default() -> Self {
        LifetimeSetting(K::DEFAULT, PhantomData)
    }
}

impl<K: LifetimeKey> fmt::Debug for LifetimeSetting<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(K::TYPE_NAME).field(&self.0).finish()
    }
}

impl<'de, K: LifetimeKey> Deserialize<'de> for LifetimeSetting<K>
where
    K::TooShort: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let secs = u64::deserialize(deserializer)?;
        Self::from_secs(secs).map_err(D::Error::custom)
    }
}

/// Something in the settings that the file system or another key contradicts (see
/// [`AttestationSettings::problems`]). It displays as a line of `check-config` output, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsProblem {
    /// A `sim-*` backend without `sim_pki`.
    #[error("attestation.sim_pki is required with a sim-* backend")]
    SimPkiMissing,
    /// `sim_pki` with a real backend.
    #[error("attestation.sim_pki is only used with a sim-* backend; remove it")]
    SimPkiUnused,
    /// `sim_measurement` with a real backend.
    #[error("attestation.sim_measurement is only used with a sim-* backend; remove it")]
    SimMeasurementUnused,
    /// The `sim_pki` directory does not exist.
    #[error("attestation.sim_pki: {} does not exist", .0.display())]
    SimPkiAbsent(PathBuf),
    /// A `trusted_sim_roots` directory does not exist.
    #[error("attestation.trusted_sim_roots: {} does not exist", .0.display())]
    SimRootAbsent(PathBuf),
    /// A `trusted_sim_roots` directory holds no simulated root.
    #[error("attestation.trusted_sim_roots: {} holds neither {} nor {}", .dir.display(), .snp.display(),
        .tdx.display())]
    SimRootEmpty {
        /// The directory.
        dir: PathBuf,
        /// The SNP root file looked for.
        snp: PathBuf,
        /// The TDX root file looked for.
        tdx: PathBuf,
    },
    /// One's own certificates would live longer than peers with the same settings accept.
    #[error(
        "attestation.certificate_validity_secs = {validity} plus {backdate} s of backdating exceeds \
         attestation.max_certificate_lifetime_secs = {max}: peers with that limit refuse this certificate"
    )]
    ValidityAboveMaxLifetime {
        /// `certificate_validity_secs`.
        validity: u64,
        /// How far certificates are backdated, in seconds.
        backdate: u64,
        /// `max_certificate_lifetime_secs`.
        max: u64,
    },
    /// `tdx_collateral_dir` is not a directory.
    #[error("attestation.tdx_collateral_dir: {} is not a directory", .0.display())]
    CollateralDirAbsent(PathBuf),
}

/// Why the settings could not build what was asked of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The attester or the trust anchors.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The TDX collateral source.
    #[error("TDX collateral source{}: {source}", dir.as_ref().map(|d| format!(" {}", d.display())).unwrap_or_default())]
    Collateral {
        /// The collateral directory, when one is configured.
        dir: Option<PathBuf>,
        /// Why the source could not be built.
        source: TdxError,
    },
}

/// A verifier and the TDX collateral source it consults, if any.
#[derive(Debug)]
pub struct VerifierSetup {
    /// The verifier of peers' evidence.
    pub verifier: Verifier,
    /// The collateral source for TDX evidence without collateral. When it fetches from a PCCS
    /// ([`CollateralSource::fetches`]), its owner must call [`CollateralSource::refresh_all`] periodically.
    pub collateral: Option<Arc<CollateralSource>>,
    /// The fingerprints of the simulated roots the verifier trusts ([`TrustAnchors::simulated_root_fingerprints`]),
    /// from the same reading of the files as the verifier's anchors.
    pub simulated_roots: Vec<String>,
}

impl AttestationSettings {
    /// Settings with every key at its default: detect the platform, trust only the real vendor roots.
    pub fn auto() -> Self {
        AttestationSettings {
            backend: Backend::Auto,
            trusted_sim_roots: Vec::new(),
            sim_pki: None,
            certificate_validity: CertificateValidity::default(),
            sim_measurement: None,
            tdx_collateral_dir: None,
            max_certificate_lifetime: MaxCertificateLifetime::default(),
            tdx_min_tcb_evaluation_data_number: None,
        }
    }

    /// The measurement a simulated backend reports (zeros when none is configured).
    pub fn measurement(&self) -> [u8; 48] {
        self.sim_measurement.map_or([0; 48], |m| m.0)
    }

    /// What the file system or the combination of keys contradicts, in the order of the keys. Empty when the
    /// settings can be used.
    pub fn problems(&self) -> Vec<SettingsProblem> {
        let mut problems = Vec::new();
        let simulated = self.backend.is_simulated();
        match (&self.sim_pki, simulated) {
            (None, true) => problems.push(SettingsProblem::SimPkiMissing),
            (Some(_), false) => problems.push(SettingsProblem::SimPkiUnused),
            (Some(dir), true) if !dir.exists() => {
                problems.push(SettingsProblem::SimPkiAbsent(dir.clone()))
            }
            _ => {}
        }
        if self.sim_measurement.is_some() && !simulated {
            problems.push(SettingsProblem::SimMeasurementUnused);
        }
        for dir in &self.trusted_sim_roots {
            if !dir.exists() {
                problems.push(SettingsProblem::SimRootAbsent(dir.clone()));
                continue;
            }
            let (snp, tdx) = select::sim_root_files(dir);
            if !snp.is_file() && !tdx.is_file() {
                problems.push(SettingsProblem::SimRootEmpty {
                    dir: dir.clone(),
                    snp,
                    tdx,
                });
            }
        }
        if let Some(dir) = &self.tdx_collateral_dir {
            if !dir.is_dir() {
                problems.push(SettingsProblem::CollateralDirAbsent(dir.clone()));
            }
        }
        let backdate = CertOptions::default().backdate;
        if self.certificate_validity.duration() + backdate
            > self.max_certificate_lifetime.duration()
        {
            problems.push(SettingsProblem::ValidityAboveMaxLifetime {
                validity: self.certificate_validity.duration().as_secs(),
                backdate: backdate.as_secs(),
                max: self.max_certificate_lifetime.duration().as_secs(),
            });
        }
        problems
    }

    /// The RA-TLS verifier of peers' certificates: evidence checked by `verifier`, claims by `policy`, certificate
    /// lifetimes bounded by `max_certificate_lifetime_secs`.
    pub fn ratls_verifier(
        &self,
        verifier: Arc<Verifier>,
        policy: Arc<dyn ClaimsPolicy>,
    ) -> RaTlsVerifier {
        RaTlsVerifier::new(verifier, policy)
            .with_max_lifetime(self.max_certificate_lifetime.duration())
    }

    /// The attester of one's own evidence: a real one found on this machine, or a simulated one signing with the
    /// PKI in `sim_pki`.
    pub fn attester(&self) -> Result<Arc<dyn Attester>, SettingsError> {
        Ok(self
            .backend
            .attester_for(self.sim_pki.as_deref(), self.measurement())?)
    }

    /// The vendor roots plus the simulated roots of `trusted_sim_roots` (each trusted simulated root is logged as
    /// a warning).
    pub fn trust_anchors(&self) -> Result<TrustAnchors, SettingsError> {
        Ok(select::trust_anchors(&self.trusted_sim_roots)?)
    }

    /// The verifier of peers' evidence: [`Self::trust_anchors`], and for TDX evidence without collateral the
    /// files in `tdx_collateral_dir` (read on first use, kept in memory while valid).
    pub fn verifier(&self) -> Result<VerifierSetup, SettingsError> {
        self.verifier_with(CollateralConfig::default())
    }

    /// As [`Self::verifier`], also fetching TDX collateral that the directory lacks from `pccs_url` (a PCCS or
    /// Intel PCS). The returned source then fetches: its owner refreshes it in the background, so that no
    /// handshake waits for the network.
    #[cfg(feature = "pccs")]
    pub fn verifier_with_pccs(
        &self,
        pccs_url: Option<&str>,
    ) -> Result<VerifierSetup, SettingsError> {
        self.verifier_with(CollateralConfig {
            pccs_url: pccs_url.map(str::to_owned),
            ..CollateralConfig::default()
        })
    }

    /// `config` with the collateral directory of these settings; no source when it names nowhere to look.
    fn verifier_with(&self, mut config: CollateralConfig) -> Result<VerifierSetup, SettingsError> {
        let anchors = self.trust_anchors()?;
        let simulated_roots = anchors.simulated_root_fingerprints();
        let verifier =
            Verifier::new(anchors).with_tdx_min_evaluation(self.tdx_min_tcb_evaluation_data_number);
        config.cache_dir = self.tdx_collateral_dir.clone();
        if config.cache_dir.is_none() && !config.fetches() {
            return Ok(VerifierSetup {
                verifier,
                collateral: None,
                simulated_roots,
            });
        }
        tracing::info!(dir = ?config.cache_dir, pccs = config.fetches(), "TDX collateral source");
        let source = CollateralSource::new(config).map_err(|source| SettingsError::Collateral {
            dir: self.tdx_collateral_dir.clone(),
            source,
        })?;
        let source = Arc::new(source);
        Ok(VerifierSetup {
            verifier: verifier.with_tdx_collateral(source.clone()),
            collateral: Some(source),
            simulated_roots,
        })
    }
}

impl Default for AttestationSettings {
    fn default() -> Self {
        Self::auto()
    }
}

#[cfg(test)]
mod tests;
