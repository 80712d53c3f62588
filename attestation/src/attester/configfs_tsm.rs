//! The kernel's configfs-tsm report interface.
//!
//! Protocol (Linux `Documentation/ABI/testing/configfs-tsm`): create a directory under the report root; the kernel
//! fills it with attributes. Read `provider` (`sev_guest`, `tdx_guest`) and `generation`; write the 64 bytes of
//! report data to `inblob`; read `outblob` (the report or quote) and `auxblob` (SNP: the certificate table); read
//! `generation` again. Every write increments `generation`, so a value other than the first plus one means another
//! writer raced with us and the output may not be ours: the request is refused. The directory is removed afterwards.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use super::Attester;
use crate::binding::ReportData;
use crate::error::AttestError;
use crate::evidence::Evidence;
use crate::platform::Platform;
use crate::sealing::SealingRootError;

/// Where the kernel mounts the report interface.
pub const DEFAULT_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";

/// The TEE driver behind a configfs-tsm report entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsmProvider {
    /// AMD SEV-SNP (`sev_guest`).
    SevGuest,
    /// Intel TDX (`tdx_guest`).
    TdxGuest,
}

impl TsmProvider {
    fn parse(text: &str) -> Result<Self, AttestError> {
        match text.trim() {
            "sev_guest" => Ok(TsmProvider::SevGuest),
            "tdx_guest" => Ok(TsmProvider::TdxGuest),
            other => Err(AttestError::Unavailable(format!(
                "unknown configfs-tsm provider {other:?}"
            ))),
        }
    }
}

/// The raw output of one configfs-tsm request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TsmReport {
    /// Which driver produced it.
    pub provider: TsmProvider,
    /// `outblob`: the SNP report or the TDX quote.
    pub outblob: Vec<u8>,
    /// `auxblob`: the SNP certificate table (empty when absent).
    pub auxblob: Vec<u8>,
}

/// A test's stand-in for the kernel: run on each report entry right after it is created.
#[cfg(test)]
pub(crate) struct MkdirHook(Box<dyn Fn(&Path) + Send + Sync>);

#[cfg(test)]
impl std::fmt::Debug for MkdirHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MkdirHook")
    }
}

/// Attester over configfs-tsm.
#[derive(Debug)]
pub struct ConfigfsTsm {
    root: PathBuf,
    provider: TsmProvider,
    #[cfg(test)]
    on_mkdir: Option<MkdirHook>,
}

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the report entry when dropped.
struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove configfs-tsm report entry");
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AttestError + 'a {
    move |source| AttestError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl ConfigfsTsm {
    /// Open the interface at `root` (normally [`DEFAULT_TSM_ROOT`]) and detect its provider.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, AttestError> {
        Self::open_inner(
            root.as_ref().to_path_buf(),
            #[cfg(test)]
            None,
        )
    }

    #[cfg(test)]
    pub(crate) fn open_with_hook(root: &Path, hook: MkdirHook) -> Result<Self, AttestError> {
        Self::open_inner(root.to_path_buf(), Some(hook))
    }

    fn open_inner(
        root: PathBuf,
        #[cfg(test)] on_mkdir: Option<MkdirHook>,
    ) -> Result<Self, AttestError> {
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(AttestError::Unavailable(format!(
                    "{} is not a directory",
                    root.display()
                )))
            }
            Err(e) => return Err(AttestError::Unavailable(format!("{}: {e}", root.display()))),
        }
        let mut me = ConfigfsTsm {
            root,
            provider: TsmProvider::SevGuest,
            #[cfg(test)]
            on_mkdir,
        };
        let entry = me.create_entry()?;
        me.provider = read_provider(&entry.0)?;
        Ok(me)
    }

    /// The detected provider.
    pub fn provider(&self) -> TsmProvider {
        self.provider
    }

    fn create_entry(&self) -> Result<Entry, AttestError> {
        let n = ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(format!("tee-gateway-{}-{n}", std::process::id()));
        fs::create_dir(&path).map_err(io("create", &path))?;
        #[cfg(test)]
        if let Some(hook) = &self.on_mkdir {
            (hook.0)(&path);
        }
        Ok(Entry(path))
    }

    /// Run one request and return the raw output (inside this crate only: callers go through
    /// [`Attester::attest`], which takes report data made for a purpose, never raw bytes).
    pub(crate) fn request(&self, report_data: &[u8; 64]) -> Result<TsmReport, AttestError> {
        let entry = self.create_entry()?;
        let dir = &entry.0;
        let provider = read_provider(dir)?;
        if provider != self.provider {
            return Err(AttestError::Protocol(format!(
                "provider changed from {:?} to {provider:?}",
                self.provider
            )));
        }
        let before = read_generation(dir)?;
        let inblob = dir.join("inblob");
        fs::write(&inblob, report_data).map_err(io("write", &inblob))?;
        let outblob_path = dir.join("outblob");
        let outblob = fs::read(&outblob_path).map_err(io("read", &outblob_path))?;
        let auxblob_path = dir.join("auxblob");
        let auxblob = match fs::read(&auxblob_path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read", &auxblob_path)(e)),
        };
        let after = read_generation(dir)?;
        if after != before + 1 {
            return Err(AttestError::Protocol(format!(
                "generation went from {before} to {after} around our single write: another writer used the \
                 report entry {}, so the output cannot be trusted to be ours",
                dir.display()
            )));
        }
        if outblob.is_empty() {
            return Err(AttestError::Malformed("outblob is empty".into()));
        }
        Ok(TsmReport {
            provider,
            outblob,
            auxblob,
        })
    }
}

fn read_provider(dir: &Path) -> Result<TsmProvider, AttestError> {
    let p = dir.join("provider");
    TsmProvider::parse(&fs::read_to_string(&p).map_err(io("read", &p))?)
}

fn read_generation(dir: &Path) -> Result<u64, AttestError> {
    let p = dir.join("generation");
    let text = fs::read_to_string(&p).map_err(io("read", &p))?;
    text.trim().parse().map_err(|_| {
        AttestError::Malformed(format!("generation {:?} is not a number", text.trim()))
    })
}

impl Attester for ConfigfsTsm {
    fn platform(&self) -> Platform {
        match self.provider {
            TsmProvider::SevGuest => Platform::SevSnp,
            TsmProvider::TdxGuest => Platform::Tdx,
        }
    }

    /// configfs-tsm has no key request: on SEV-SNP the derived key comes from `/dev/sev-guest`; TDX has none.
    fn sealing_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, SealingRootError> {
        match self.provider {
            TsmProvider::SevGuest => crate::snp::device::open_and_derive_key().map(Some),
            TsmProvider::TdxGuest => Ok(None),
        }
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        let out = self.request(report_data.as_bytes())?;
        match out.provider {
            TsmProvider::SevGuest => Ok(Evidence::Snp(crate::snp::evidence::assemble(
                out.outblob,
                &out.auxblob,
            )?)),
            TsmProvider::TdxGuest => Ok(Evidence::Tdx(crate::tdx::TdxEvidence {
                quote: out.outblob,
                collateral: None,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The file protocol against a simulated kernel: on `mkdir` it fills the entry like configfs does, with
    //! `outblob` a FIFO whose writer produces a `sim-snp` report (provider `sev_guest`) or a `sim-tdx` quote
    //! (provider `tdx_guest`) for whatever was written to `inblob`.

    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::snp::cert_table;
    use crate::{SimReportRequest, TrustAnchors, Verifier};

    #[derive(Clone, Copy, PartialEq)]
    enum Kernel {
        Honest,
        /// Someone else writes to the entry too: the generation advances by two.
        Racing,
        /// The host installed no certificates.
        NoCerts,
    }

    fn root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tsm-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sim_tdx_pki() -> Arc<crate::SimTdxPki> {
        static PKI: std::sync::OnceLock<Arc<crate::SimTdxPki>> = std::sync::OnceLock::new();
        PKI.get_or_init(|| Arc::new(crate::SimTdxPki::from_seed(b"configfs-tsm tests").unwrap()))
            .clone()
    }

    fn fake_kernel(provider: &'static str, mode: Kernel) -> MkdirHook {
        let pki = crate::test_support::pki();
        let tdx_pki = sim_tdx_pki();
        MkdirHook(Box::new(move |dir: &Path| {
            fs::write(dir.join("provider"), format!("{provider}\n")).unwrap();
            fs::write(dir.join("generation"), "0\n").unwrap();
            fs::write(dir.join("inblob"), b"").unwrap();
            if mode != Kernel::NoCerts {
                let table = cert_table::build(&[
                    (cert_table::VCEK_GUID, pki.vcek_der()),
                    (cert_table::ASK_GUID, pki.ask_der()),
                    (cert_table::ARK_GUID, pki.ark_der()),
                ]);
                fs::write(dir.join("auxblob"), table).unwrap();
            }
            let outblob = dir.join("outblob");
            assert!(Command::new("mkfifo")
                .arg(&outblob)
                .status()
                .unwrap()
                .success());
            let dir = dir.to_path_buf();
            let pki = pki.clone();
            let tdx_pki = tdx_pki.clone();
            std::thread::spawn(move || {
                // Wait for a request; entries that only probe the provider never get one.
                let deadline = Instant::now() + Duration::from_secs(2);
                let inblob = loop {
                    let data = fs::read(dir.join("inblob")).unwrap_or_default();
                    if data.len() == 64 {
                        break data;
                    }
                    if Instant::now() > deadline {
                        let _ = fs::remove_file(&outblob);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                };
                let generation = if mode == Kernel::Racing { 2 } else { 1 };
                fs::write(dir.join("generation"), format!("{generation}\n")).unwrap();
                let report_data: [u8; 64] = inblob.try_into().unwrap();
                let report = if provider == "tdx_guest" {
                    tdx_pki
                        .quote(&crate::SimTdReport {
                            report_data,
                            mr_td: [4; 48],
                            ..Default::default()
                        })
                        .unwrap()
                } else {
                    pki.report(&SimReportRequest {
                        report_data,
                        measurement: [4; 48],
                        host_data: [5; 32],
                        ..SimReportRequest::default()
                    })
                    .unwrap()
                };
                fs::write(&outblob, report).unwrap();
            });
        }))
    }

    /// Opens configfs-tsm at a fresh root `name` whose fake kernel is `provider` (`sev_guest` or `tdx_guest`) in
    /// `mode`, checks the provider and platform it reports, and attests report data `[9; 64]`: the root (to
    /// remove) and the evidence.
    fn attest_through(name: &str, provider: &'static str, mode: Kernel) -> (PathBuf, Evidence) {
        let root = root(name);
        let tsm = ConfigfsTsm::open_with_hook(&root, fake_kernel(provider, mode)).unwrap();
        let expected = match provider {
            "sev_guest" => (TsmProvider::SevGuest, Platform::SevSnp),
            _ => (TsmProvider::TdxGuest, Platform::Tdx),
        };
        assert_eq!((tsm.provider(), tsm.platform()), expected);
        let ev = tsm.attest(&crate::ReportData::test_bytes([9; 64])).unwrap();
        (root, ev)
    }

    #[test]
    fn snp_report_through_configfs_verifies() {
        let (root, ev) = attest_through("ok", "sev_guest", Kernel::Honest);
        let v = Verifier::new(
            TrustAnchors::production()
                .with_sim_snp_ark(crate::test_support::pki().ark_der())
                .unwrap(),
        );
        let claims = v.verify(&ev, &[9; 64], SystemTime::now()).unwrap();
        assert_eq!(claims.snp().unwrap().measurement, [4; 48]);
        let Evidence::Snp(snp) = ev else {
            panic!("not SNP evidence")
        };
        assert!(snp.ask.is_some() && snp.ark.is_some());
        fs::remove_dir_all(&root).unwrap();
    }

    /// A TDX quote from configfs-tsm carries no collateral: the verifier refuses it until it is given a
    /// collateral directory, then accepts it and binds it to the report data.
    #[test]
    fn tdx_quote_through_configfs_verifies_with_a_collateral_directory() {
        use crate::tdx::{CollateralConfig, CollateralKey, CollateralSource};
        let (root, ev) = attest_through("tdx", "tdx_guest", Kernel::NoCerts);
        let Evidence::Tdx(tdx) = &ev else {
            panic!("not TDX evidence")
        };
        assert!(tdx.collateral.is_none());
        let now = SystemTime::now();
        let anchors = TrustAnchors::production()
            .with_sim_tdx_root(sim_tdx_pki().root_der())
            .unwrap();
        let err = Verifier::new(anchors.clone())
            .verify(&ev, &[9; 64], now)
            .unwrap_err();
        assert!(err.to_string().contains("collateral"), "{err}");

        let collateral_dir = root.join("collateral");
        fs::create_dir_all(&collateral_dir).unwrap();
        let key = CollateralKey::for_quote(&tdx.quote).unwrap();
        sim_tdx_pki()
            .collateral(now - Duration::from_secs(60))
            .unwrap()
            .save(&collateral_dir.join(key.file_name()))
            .unwrap();
        let source = CollateralSource::new(CollateralConfig {
            cache_dir: Some(collateral_dir),
            ..Default::default()
        })
        .unwrap();
        let v = Verifier::new(anchors).with_tdx_collateral(Arc::new(source));
        let claims = v.verify(&ev, &[9; 64], now).unwrap();
        assert_eq!(claims.platform, Platform::SimTdx);
        assert_eq!(claims.tdx().unwrap().td.mr_td, [4; 48]);
        assert!(matches!(
            v.verify(&ev, &[8; 64], now),
            Err(crate::VerifyError::ReportDataMismatch { .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    /// The error of one SNP attestation through a fake kernel behaving as `mode`, under a fresh root `name`.
    fn snp_attest_error(name: &str, mode: Kernel) -> AttestError {
        let root = root(name);
        let tsm = ConfigfsTsm::open_with_hook(&root, fake_kernel("sev_guest", mode)).unwrap();
        let err = tsm
            .attest(&crate::ReportData::test_bytes([1; 64]))
            .unwrap_err();
        fs::remove_dir_all(&root).unwrap();
        err
    }

    #[test]
    fn a_generation_jump_and_missing_certificates_are_refused() {
        let race = snp_attest_error("race", Kernel::Racing);
        let no_certs = snp_attest_error("nocerts", Kernel::NoCerts);
        assert!(
            matches!(&race, AttestError::Protocol(m) if m.contains("from 0 to 2")),
            "{race}"
        );
        assert!(
            matches!(&no_certs, AttestError::Unavailable(m) if m.contains("no VCEK certificate")),
            "{no_certs}"
        );
    }

    #[test]
    fn providers_and_roots_are_checked() {
        let root = root("providers");
        let tdx =
            ConfigfsTsm::open_with_hook(&root, fake_kernel("tdx_guest", Kernel::Honest)).unwrap();
        assert_eq!(tdx.platform(), Platform::Tdx);
        let err = ConfigfsTsm::open_with_hook(&root, fake_kernel("foo_guest", Kernel::Honest))
            .unwrap_err();
        assert!(
            matches!(&err, AttestError::Unavailable(m) if m.contains("foo_guest")),
            "{err}"
        );
        assert!(matches!(
            ConfigfsTsm::open(root.join("absent")),
            Err(AttestError::Unavailable(_))
        ));
        // A root without the kernel behind it: the entry has no attributes.
        assert!(matches!(
            ConfigfsTsm::open(&root),
            Err(AttestError::Io { op: "read", .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn entries_are_unique_per_request() {
        let root = root("unique");
        let tsm = Arc::new(
            ConfigfsTsm::open_with_hook(&root, fake_kernel("sev_guest", Kernel::Honest)).unwrap(),
        );
        let a = tsm.request(&[1; 64]).unwrap();
        let b = tsm.request(&[2; 64]).unwrap();
        assert_ne!(a.outblob, b.outblob);
        assert_eq!(&a.outblob[0x50..0x90], &[1u8; 64][..]);
        assert_eq!(&b.outblob[0x50..0x90], &[2u8; 64][..]);
        fs::remove_dir_all(&root).unwrap();
    }
}
