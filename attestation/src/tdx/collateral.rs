//! TDX collateral: the signed TCB info, QE identity, CRLs and issuer chains a quote is verified against.
//!
//! [`Collateral`] is `dcap-qvl`'s `QuoteCollateralV3` with its JSON file format (byte fields in hex), plus the
//! validity window of everything in it. [`CollateralSource`] finds collateral for a quote through a chain of
//! sources: a memory cache, a directory of collateral files (which doubles as the on-disk cache), then (with the
//! `pccs` feature) a PCCS or Intel PCS URL. Collateral is refreshed a configurable margin before its first `nextUpdate` or expiry;
//! when no source can provide valid collateral the error lists what each source said.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcap_qvl::QuoteCollateralV3;
use der::Decode as _;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::TdxError;

/// Default time before collateral expires at which it is fetched again.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Collateral for verifying TDX quotes of one platform family (FMSPC and PCK CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collateral(pub(crate) QuoteCollateralV3);

/// One dated piece of collateral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedItem {
    /// What it is, e.g. `TCB info` or `PCK CRL`.
    pub item: String,
    /// Start of validity (seconds since the Unix epoch).
    pub not_before: u64,
    /// End of validity (seconds since the Unix epoch).
    pub not_after: u64,
}

/// When a set of collateral is usable: from the latest start to the earliest end of its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidityWindow {
    /// The item that becomes valid last.
    pub starts: DatedItem,
    /// The item that expires first.
    pub ends: DatedItem,
}

impl ValidityWindow {
    /// Check that `now` (seconds since the epoch) lies within the window.
    pub fn check(&self, now: u64) -> Result<(), TdxError> {
        if now < self.starts.not_before {
            return Err(TdxError::CollateralNotYetValid {
                item: self.starts.item.clone(),
                valid_from: rfc3339(self.starts.not_before),
                now: rfc3339(now),
            });
        }
        // The end is exclusive, as for CRLs in path validation.
        if now >= self.ends.not_after {
            return Err(TdxError::CollateralExpired {
                item: self.ends.item.clone(),
                valid_until: rfc3339(self.ends.not_after),
                now: rfc3339(now),
            });
        }
        Ok(())
    }

    /// True if the collateral is valid at `now` and stays valid for at least `margin`.
    pub fn fresh_at(&self, now: u64, margin: Duration) -> bool {
        now >= self.starts.not_before && now.saturating_add(margin.as_secs()) < self.ends.not_after
    }
}

/// Format seconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} s after the epoch"))
}

/// Seconds since the epoch of a `SystemTime` (0 before the epoch).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_rfc3339(item: &str, text: &str) -> Result<u64, TdxError> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| TdxError::MalformedCollateral(format!("{item}: bad date {text:?}: {e}")))?;
    u64::try_from(t.unix_timestamp())
        .map_err(|_| TdxError::MalformedCollateral(format!("{item}: date {text:?} before 1970")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dated {
    issue_date: String,
    next_update: String,
    #[serde(default)]
    fmspc: Option<String>,
    #[serde(default)]
    tcb_evaluation_data_number: Option<u32>,
}

/// How recent one signed collateral item (TCB info or QE identity) is. Ordered by evaluation data number, then
/// by issue date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ItemVersion {
    /// `tcbEvaluationDataNumber`: Intel raises it with every TCB recovery.
    pub evaluation_data_number: u32,
    /// `issueDate`, seconds since the Unix epoch.
    pub issue_date: u64,
}

/// How recent a set of collateral is: the versions of its TCB info and of its QE identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollateralVersion {
    /// The TCB info's version.
    pub tcb_info: ItemVersion,
    /// The QE identity's version.
    pub qe_identity: ItemVersion,
}

impl CollateralVersion {
    /// The items by name, TCB info first.
    pub fn items(&self) -> [(&'static str, ItemVersion); 2] {
        [
            ("TCB info", self.tcb_info),
            ("QE identity", self.qe_identity),
        ]
    }

    /// The first item of `self` older than the same item of `other`, with both versions; `None` when neither item
    /// is older.
    pub fn older_than(&self, other: &Self) -> Option<(&'static str, ItemVersion, ItemVersion)> {
        self.items()
            .into_iter()
            .zip(other.items())
            .find(|((_, mine), (_, theirs))| mine < theirs)
            .map(|((item, mine), (_, theirs))| (item, mine, theirs))
    }

    /// Refuse the collateral when an item's evaluation data number is below `minimum`.
    pub fn check_minimum(&self, minimum: u32) -> Result<(), TdxError> {
        match self
            .items()
            .into_iter()
            .find(|(_, v)| v.evaluation_data_number < minimum)
        {
            Some((item, v)) => Err(TdxError::EvaluationBelowMinimum {
                item,
                number: v.evaluation_data_number,
                minimum,
            }),
            None => Ok(()),
        }
    }
}

/// Parse PEM certificates (a chain) into DER.
pub(crate) fn pem_certs(item: &str, text: &[u8]) -> Result<Vec<Vec<u8>>, TdxError> {
    let blocks =
        pem::parse_many(text).map_err(|e| TdxError::MalformedCollateral(format!("{item}: {e}")))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}

fn cert_item(der_bytes: &[u8], chain: &str) -> Result<DatedItem, TdxError> {
    let cert = x509_cert::Certificate::from_der(der_bytes)
        .map_err(|e| TdxError::MalformedCollateral(format!("{chain} certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    Ok(DatedItem {
        item: format!("certificate \"{}\" ({chain})", tbs.subject),
        not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
        not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
    })
}

fn crl_item(der_bytes: &[u8], item: &str) -> Result<DatedItem, TdxError> {
    let crl = x509_cert::crl::CertificateList::from_der(der_bytes)
        .map_err(|e| TdxError::MalformedCollateral(format!("{item}: {e}")))?;
    let tbs = &crl.tbs_cert_list;
    let next = tbs
        .next_update
        .ok_or_else(|| TdxError::MalformedCollateral(format!("{item} has no nextUpdate")))?;
    Ok(DatedItem {
        item: item.to_string(),
        not_before: tbs.this_update.to_unix_duration().as_secs(),
        not_after: next.to_unix_duration().as_secs(),
    })
}

impl Collateral {
    /// Wrap collateral produced by `dcap-qvl` or by the simulated PKI.
    pub fn new(inner: QuoteCollateralV3) -> Self {
        Collateral(inner)
    }

    /// The underlying `dcap-qvl` structure.
    pub fn inner(&self) -> &QuoteCollateralV3 {
        &self.0
    }

    /// Parse the JSON file format (`QuoteCollateralV3`, byte fields hex-encoded).
    pub fn from_json(bytes: &[u8]) -> Result<Self, TdxError> {
        let inner: QuoteCollateralV3 = serde_json::from_slice(bytes)
            .map_err(|e| TdxError::MalformedCollateral(e.to_string()))?;
        let collateral = Collateral(inner);
        // Reject files whose dates cannot be read now rather than at verification time.
        collateral.items()?;
        Ok(collateral)
    }

    /// Serialise to the JSON file format.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and byte vectors cannot fail.
        serde_json::to_vec_pretty(&self.0).unwrap_or_default()
    }

    /// Read a collateral JSON file.
    pub fn load(path: &Path) -> Result<Self, TdxError> {
        let bytes = std::fs::read(path).map_err(|e| TdxError::io("reading", path, e))?;
        Self::from_json(&bytes).map_err(|e| match e {
            TdxError::MalformedCollateral(m) => {
                TdxError::MalformedCollateral(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// Write a collateral JSON file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), TdxError> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_json()).map_err(|e| TdxError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| TdxError::io("renaming into", path, e))
    }

    /// The FMSPC the TCB info is for (upper-case hex), if the TCB info names one.
    pub fn fmspc(&self) -> Option<String> {
        serde_json::from_str::<Dated>(&self.0.tcb_info)
            .ok()
            .and_then(|d| d.fmspc)
            .map(|f| f.to_ascii_uppercase())
    }

    /// The evaluation data numbers and issue dates of the TCB info and the QE identity.
    pub fn version(&self) -> Result<CollateralVersion, TdxError> {
        let item = |name: &str, json: &str| -> Result<ItemVersion, TdxError> {
            let dated: Dated = serde_json::from_str(json)
                .map_err(|e| TdxError::MalformedCollateral(format!("{name}: {e}")))?;
            let number = dated.tcb_evaluation_data_number.ok_or_else(|| {
                TdxError::MalformedCollateral(format!("{name} has no tcbEvaluationDataNumber"))
            })?;
            Ok(ItemVersion {
                evaluation_data_number: number,
                issue_date: parse_rfc3339(name, &dated.issue_date)?,
            })
        };
        Ok(CollateralVersion {
            tcb_info: item("TCB info", &self.0.tcb_info)?,
            qe_identity: item("QE identity", &self.0.qe_identity)?,
        })
    }

    /// Every dated item: TCB info, QE identity, both CRLs and every certificate of the issuer chains.
    pub fn items(&self) -> Result<Vec<DatedItem>, TdxError> {
        let c = &self.0;
        let mut items = Vec::new();
        for (name, json) in [("TCB info", &c.tcb_info), ("QE identity", &c.qe_identity)] {
            let dated: Dated = serde_json::from_str(json)
                .map_err(|e| TdxError::MalformedCollateral(format!("{name}: {e}")))?;
            items.push(DatedItem {
                item: name.to_string(),
                not_before: parse_rfc3339(name, &dated.issue_date)?,
                not_after: parse_rfc3339(name, &dated.next_update)?,
            });
        }
        items.push(crl_item(&c.root_ca_crl, "root CA CRL")?);
        items.push(crl_item(&c.pck_crl, "PCK CRL")?);
        let mut chains = vec![
            ("TCB info issuer chain", c.tcb_info_issuer_chain.as_str()),
            (
                "QE identity issuer chain",
                c.qe_identity_issuer_chain.as_str(),
            ),
            ("PCK CRL issuer chain", c.pck_crl_issuer_chain.as_str()),
        ];
        if let Some(chain) = &c.pck_certificate_chain {
            chains.push(("PCK certificate chain", chain.as_str()));
        }
        for (chain, pem_text) in chains {
            for der_bytes in pem_certs(chain, pem_text.as_bytes())? {
                items.push(cert_item(&der_bytes, chain)?);
            }
        }
        Ok(items)
    }

    /// The validity window over [`Self::items`] plus the certificates in `extra_chain` (the PCK chain a quote
    /// carries).
    pub fn window(&self, extra_chain: &[Vec<u8>]) -> Result<ValidityWindow, TdxError> {
        let mut items = self.items()?;
        for der_bytes in extra_chain {
            items.push(cert_item(der_bytes, "PCK certificate chain in the quote")?);
        }
        let starts = items
            .iter()
            .max_by_key(|i| i.not_before)
            .cloned()
            .ok_or_else(|| TdxError::MalformedCollateral("no dated items".into()))?;
        let ends = items
            .iter()
            .min_by_key(|i| i.not_after)
            .cloned()
            .ok_or_else(|| TdxError::MalformedCollateral("no dated items".into()))?;
        Ok(ValidityWindow { starts, ends })
    }
}

/// Which collateral a quote needs: its platform's FMSPC and the CA that issued its PCK certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CollateralKey {
    /// FMSPC, upper-case hex.
    pub fmspc: String,
    /// `processor` or `platform`.
    pub ca: &'static str,
}

impl CollateralKey {
    /// Read the key from a quote's embedded PCK certificate.
    pub fn for_quote(quote: &[u8]) -> Result<Self, TdxError> {
        type Cfg = dcap_qvl::configs::RustCryptoConfig;
        let parsed = dcap_qvl::quote::Quote::parse(quote)
            .map_err(|e| TdxError::MalformedQuote(format!("{e:#}")))?;
        let fmspc = dcap_qvl::intel::quote_fmspc_with::<Cfg>(&parsed).map_err(|e| {
            TdxError::UnsupportedQuote(format!("reading the PCK certificate's FMSPC: {e:#}"))
        })?;
        let ca = dcap_qvl::intel::quote_ca_with::<Cfg>(&parsed).map_err(|e| {
            TdxError::UnsupportedQuote(format!("reading the PCK certificate's issuer: {e:#}"))
        })?;
        Ok(CollateralKey {
            fmspc: hex::encode_upper(fmspc),
            ca: ca.as_id_str(),
        })
    }

    /// The name of this collateral's file in a collateral directory: `tdx-<FMSPC>-<ca>.json`.
    pub fn file_name(&self) -> String {
        format!("tdx-{}-{}.json", self.fmspc, self.ca)
    }
}

/// Where [`CollateralSource`] looks for collateral, in order.
#[derive(Debug, Clone, Default)]
pub struct CollateralConfig {
    /// A directory of collateral files named `tdx-<FMSPC>-<ca>.json`. Fetched collateral is written here too.
    pub cache_dir: Option<PathBuf>,
    /// A PCCS or Intel PCS base URL, e.g. `https://api.trustedservices.intel.com` (no path suffix needed).
    #[cfg(feature = "pccs")]
    pub pccs_url: Option<String>,
    /// Fetch again when the cached collateral expires within this margin (default one day).
    pub refresh_margin: Option<Duration>,
    /// Timeout of each HTTP request (default 30 s).
    #[cfg(feature = "pccs")]
    pub http_timeout: Option<Duration>,
}

impl CollateralConfig {
    /// Whether a source following this configuration fetches from a PCCS (always false without the `pccs`
    /// feature).
    pub fn fetches(&self) -> bool {
        #[cfg(feature = "pccs")]
        return self.pccs_url.is_some();
        #[cfg(not(feature = "pccs"))]
        return false;
    }
}

/// Finds collateral for quotes: memory cache, then the collateral directory, then the PCCS/PCS URL.
#[derive(Debug)]
pub struct CollateralSource {
    config: CollateralConfig,
    memory: Mutex<HashMap<CollateralKey, (Collateral, ValidityWindow)>>,
    wanted: Mutex<HashSet<CollateralKey>>,
    #[cfg(feature = "pccs")]
    http: Option<super::pcs::PcsClient>,
}

impl CollateralSource {
    /// A source following `config`.
    pub fn new(config: CollateralConfig) -> Result<Self, TdxError> {
        #[cfg(feature = "pccs")]
        let http = match &config.pccs_url {
            Some(url) => Some(super::pcs::PcsClient::new(
                url,
                config.http_timeout.unwrap_or(Duration::from_secs(30)),
            )?),
            None => None,
        };
        Ok(CollateralSource {
            config,
            memory: Mutex::new(HashMap::new()),
            wanted: Mutex::new(HashSet::new()),
            #[cfg(feature = "pccs")]
            http,
        })
    }

    /// Whether this source fetches missing or expiring collateral from a PCCS: then its owner must call
    /// [`Self::refresh_all`] periodically.
    pub fn fetches(&self) -> bool {
        self.config.fetches()
    }

    fn margin(&self) -> Duration {
        self.config.refresh_margin.unwrap_or(DEFAULT_REFRESH_MARGIN)
    }

    /// Put collateral into the memory cache (e.g. collateral given on the command line). Collateral whose dates
    /// cannot be read is refused.
    pub fn insert(&self, key: CollateralKey, collateral: Collateral) -> Result<(), TdxError> {
        let window = collateral.window(&[])?;
        if let Ok(mut memory) = self.memory.lock() {
            memory.insert(key, (collateral, window));
        }
        Ok(())
    }

    /// Collateral from the memory cache or the collateral directory, without network access, if it is valid at
    /// `now`. Collateral inside the refresh margin is still returned here. A miss is remembered, so that the next
    /// [`Self::refresh_all`] fetches collateral for that platform.
    pub fn cached(&self, key: &CollateralKey, now: SystemTime) -> Option<Collateral> {
        let found = self.cached_quietly(key, now);
        if found.is_none() {
            if let Ok(mut wanted) = self.wanted.lock() {
                wanted.insert(key.clone());
            }
        }
        found
    }

    fn cached_quietly(&self, key: &CollateralKey, now: SystemTime) -> Option<Collateral> {
        let now = unix_secs(now);
        if let Ok(memory) = self.memory.lock() {
            if let Some((c, _)) = memory.get(key).filter(|(_, w)| w.check(now).is_ok()) {
                return Some(c.clone());
            }
        }
        let dir = self.config.cache_dir.as_ref()?;
        let c = Collateral::load(&dir.join(key.file_name())).ok()?;
        let window = c.window(&[]).ok()?;
        if window.check(now).is_err() {
            return None;
        }
        if let Ok(mut memory) = self.memory.lock() {
            memory.insert(key.clone(), (c.clone(), window));
        }
        Some(c)
    }

    /// Bring the collateral of every platform seen so far (cached, or missed by [`Self::cached`]) up to date:
    /// whatever expires within the refresh margin is fetched again. Meant to run periodically (e.g. hourly) so that
    /// verification never waits for the network. Returns each platform's outcome.
    pub async fn refresh_all(&self, now: SystemTime) -> Vec<(CollateralKey, Result<(), TdxError>)> {
        let mut keys: HashSet<CollateralKey> = self
            .memory
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Ok(mut wanted) = self.wanted.lock() {
            keys.extend(wanted.drain());
        }
        let mut outcomes = Vec::with_capacity(keys.len());
        for key in keys {
            let outcome = self.collateral_for_key(&key, now).await.map(|_| ());
            if let Err(e) = &outcome {
                tracing::warn!(fmspc = %key.fmspc, ca = key.ca, error = %e, "TDX collateral refresh failed");
                if let Ok(mut wanted) = self.wanted.lock() {
                    wanted.insert(key.clone());
                }
            }
            outcomes.push((key, outcome));
        }
        outcomes
    }

    /// Collateral for `quote` valid at `now`: from the caches while it is fresh, otherwise fetched (and cached).
    /// If fetching fails but cached collateral is still valid, that is returned and the failure logged.
    pub async fn collateral_for(
        &self,
        quote: &[u8],
        now: SystemTime,
    ) -> Result<Collateral, TdxError> {
        let key = CollateralKey::for_quote(quote)?;
        self.collateral_for_key(&key, now).await
    }

    /// As [`Self::collateral_for`], by key.
    pub async fn collateral_for_key(
        &self,
        key: &CollateralKey,
        now: SystemTime,
    ) -> Result<Collateral, TdxError> {
        let secs = unix_secs(now);
        let margin = self.margin();
        let mut attempts = Vec::new();
        let fresh = |c: &Collateral| {
            c.window(&[])
                .map(|w| w.fresh_at(secs, margin))
                .unwrap_or(false)
        };

        let memory_hit = self.memory.lock().ok().and_then(|m| m.get(key).cloned());
        if let Some((c, _)) = memory_hit.filter(|(_, w)| w.fresh_at(secs, margin)) {
            return Ok(c);
        }
        if let Some(dir) = &self.config.cache_dir {
            let path = dir.join(key.file_name());
            match Collateral::load(&path) {
                Ok(c) if fresh(&c) => {
                    self.insert(key.clone(), c.clone())?;
                    return Ok(c);
                }
                Ok(c) => attempts.push(format!(
                    "{}: expires {} (refresh margin {} s)",
                    path.display(),
                    c.window(&[])
                        .map(|w| rfc3339(w.ends.not_after))
                        .unwrap_or_else(|e| e.to_string()),
                    margin.as_secs()
                )),
                Err(e) => attempts.push(e.to_string()),
            }
        } else {
            attempts.push("no collateral directory configured".into());
        }
        #[cfg(feature = "pccs")]
        if let Some(c) = self.fetch(key, secs, &mut attempts).await? {
            return Ok(c);
        }
        #[cfg(not(feature = "pccs"))]
        attempts.push("built without the PCCS client".into());
        if let Some(c) = self.cached_quietly(key, now) {
            tracing::warn!(
                fmspc = %key.fmspc,
                problems = %attempts.join("; "),
                "TDX collateral could not be refreshed; using cached collateral that is still valid"
            );
            return Ok(c);
        }
        Err(TdxError::CollateralUnavailable {
            fmspc: key.fmspc.clone(),
            ca: key.ca.to_string(),
            attempts,
        })
    }

    /// Fetch collateral from the PCCS and cache it if it is valid at `secs`; what went wrong is added to
    /// `attempts`.
    #[cfg(feature = "pccs")]
    async fn fetch(
        &self,
        key: &CollateralKey,
        secs: u64,
        attempts: &mut Vec<String>,
    ) -> Result<Option<Collateral>, TdxError> {
        let Some(client) = &self.http else {
            attempts.push("no PCCS/PCS URL configured".into());
            return Ok(None);
        };
        match client.fetch(&key.fmspc, key.ca).await {
            Ok(c) => match c.window(&[]).and_then(|w| w.check(secs)) {
                Ok(()) => {
                    if let Some(dir) = &self.config.cache_dir {
                        let path = dir.join(key.file_name());
                        if let Err(e) = std::fs::create_dir_all(dir)
                            .map_err(|e| TdxError::io("creating", dir, e))
                            .and_then(|()| c.save(&path))
                        {
                            tracing::warn!(error = %e, "could not cache TDX collateral");
                        }
                    }
                    self.insert(key.clone(), c.clone())?;
                    tracing::info!(fmspc = %key.fmspc, ca = key.ca, "fetched TDX collateral");
                    return Ok(Some(c));
                }
                Err(e) => attempts.push(format!(
                    "{}: fetched collateral unusable: {e}",
                    client.base_url()
                )),
            },
            Err(e) => attempts.push(e.to_string()),
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
