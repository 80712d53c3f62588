//! `gateway attestation ...`: verify evidence and make simulated PKIs.
//!
//! `verify` prints the verified claims as JSON on stdout and exits 0, or prints the refusal on stderr and exits 1;
//! input that cannot be read or understood exits 2. With `--policy` the policy's profiles decide; without one,
//! evidence of a debuggable TEE (SEV-SNP guest policy DEBUG, TDX attribute DEBUG), whose memory the host can read,
//! is still refused unless `--allow-debug` says otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use attestation::owner::SignedPolicy;
use attestation::policy::{ClaimsPolicy, GatewayPolicy, PolicyFn, Violation};
use attestation::ratls::{RaTlsError, RaTlsVerifier};
use attestation::tdx::{Collateral, SimTdxPki, TdxEvidence};
use attestation::{Claims, Evidence, SimSnpPki, SnpEvidence, TrustAnchors, Verifier, VerifyError};
use clap::{Args, Subcommand, ValueEnum};

/// `gateway attestation` subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestationCommand {
    /// Verify evidence (an SNP report, a TDX quote or an RA-TLS certificate) and print its claims as JSON.
    Verify(VerifyArgs),
    /// Write a simulated AMD (and Intel) PKI derived from a seed, for tests and demos.
    SimPki(SimPkiArgs),
}

/// The format of the evidence file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvidenceFormat {
    /// A raw 1184-byte SEV-SNP attestation report (needs --vcek).
    SnpReport,
    /// The same report as hex text.
    SnpReportHex,
    /// An Intel TDX DCAP quote (needs --collateral).
    TdxQuote,
    /// An RA-TLS certificate (PEM or DER): evidence, key binding and validity are checked.
    RaTlsCert,
}

/// Arguments of `gateway attestation verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The evidence file.
    #[arg(long)]
    pub evidence: PathBuf,
    /// Its format; guessed from the content when absent.
    #[arg(long, value_enum)]
    pub format: Option<EvidenceFormat>,
    /// The VCEK or VLEK certificate (PEM or DER) of an SNP report.
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// The ASK/ASVK and ARK certificates (PEM bundle or DER) of an SNP report; AMD's built-in ones are used when
    /// absent.
    #[arg(long)]
    pub chain: Option<PathBuf>,
    /// The collateral of a TDX quote (`QuoteCollateralV3` JSON).
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// Verify as of this time (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,
    /// A policy file: an app owner's signed policy (the JSON `gateway app sign-policy` writes, checked as the
    /// gateway admits instances under it), or `[[profile]]` tables (an agents' gateway policy, or the owner's
    /// profiles before signing).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// With a signed policy: the app id it must be for (refused if it is another app's).
    #[arg(long, requires = "policy")]
    pub app: Option<String>,
    /// Without --policy, accept evidence of a debuggable TEE (refused by default; with --policy, a profile's
    /// `allow_debug` decides).
    #[arg(long, conflicts_with = "policy")]
    pub allow_debug: bool,
    /// Trust this simulated root (a `sim-pki` ARK or Intel root CA, PEM or DER); may be repeated.
    #[arg(long)]
    pub trust_sim_root: Vec<PathBuf>,
}

/// Arguments of `gateway attestation sim-pki`.
#[derive(Debug, Args)]
pub struct SimPkiArgs {
    /// The seed: the same seed gives the same keys.
    #[arg(long)]
    pub seed: String,
    /// The output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Use RSA-2048 instead of RSA-4096 for the simulated ARK and ASK (much faster to generate).
    #[arg(long)]
    pub small: bool,
}

/// Run an attestation subcommand.
pub fn run(cmd: AttestationCommand) -> ExitCode {
    match cmd {
        AttestationCommand::Verify(args) => match verify(&args) {
            Ok(Ok(claims)) => {
                let printed = serde_json::to_string_pretty(&claims)
                    .map_err(std::io::Error::other)
                    .and_then(|json| writeln!(std::io::stdout().lock(), "{json}"));
                match printed {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: printing the claims: {e}");
                        ExitCode::from(2)
                    }
                }
            }
            Ok(Err((check, reason))) => {
                eprintln!("refused ({check}): {reason}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        AttestationCommand::SimPki(args) => match sim_pki(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// A refusal: the check's name and the reason.
type Refusal = (&'static str, String);

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Certificates from PEM (any number) or a single DER file.
fn certificates(bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    if let Ok(pems) = pem::parse_many(bytes) {
        if !pems.is_empty() {
            return Ok(pems.into_iter().map(|p| p.into_contents()).collect());
        }
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes.to_vec()]);
    }
    bail!("neither PEM certificates nor a DER certificate")
}

fn guess_format(bytes: &[u8]) -> anyhow::Result<EvidenceFormat> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    if text.is_some_and(|t| t.len() == 2 * 1184 && t.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Ok(EvidenceFormat::SnpReportHex);
    }
    if text.is_some_and(|t| t.starts_with("-----BEGIN CERTIFICATE-----"))
        || bytes.starts_with(&[0x30, 0x82])
    {
        return Ok(EvidenceFormat::RaTlsCert);
    }
    if bytes.len() == 1184 {
        return Ok(EvidenceFormat::SnpReport);
    }
    // DCAP quotes start with version 4 or 5 (u16 LE) and attestation key type 2 (ECDSA P-256).
    if bytes.len() > 48 && matches!(bytes[..4], [4, 0, 2, 0] | [5, 0, 2, 0]) {
        return Ok(EvidenceFormat::TdxQuote);
    }
    bail!("cannot tell the evidence format; pass --format")
}

fn parse_now(now: Option<&str>) -> anyhow::Result<SystemTime> {
    let Some(text) = now else {
        return Ok(SystemTime::now());
    };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--now {text:?} is not an RFC 3339 time"))?;
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| anyhow!("--now is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn anchors(roots: &[PathBuf]) -> anyhow::Result<TrustAnchors> {
    let mut anchors = TrustAnchors::production();
    for path in roots {
        let bytes = read(path)?;
        let der = certificates(&bytes)
            .with_context(|| format!("{}", path.display()))?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{}: no certificate", path.display()))?;
        let (_, x) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let subject = x.subject().to_string();
        anchors = if subject.contains(attestation::snp::sim::SIM_ORGANIZATION) {
            anchors.with_sim_snp_ark(&der)
        } else if subject.contains(attestation::tdx::sim::SIM_ORGANIZATION) {
            anchors.with_sim_tdx_root(&der)
        } else {
            bail!(
                "{}: {subject} is not a simulated root made by `gateway attestation sim-pki`",
                path.display()
            )
        }
        .with_context(|| format!("{}", path.display()))?;
    }
    Ok(anchors)
}

fn policy(args: &VerifyArgs) -> anyhow::Result<Option<Arc<dyn ClaimsPolicy>>> {
    let Some(path) = &args.policy else {
        return Ok(None);
    };
    let text = String::from_utf8(read(path)?)
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if text.trim_start().starts_with('{') {
        let document = SignedPolicy::from_json(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let verified = match &args.app {
            Some(app) => document.verify_for(app),
            None => document.verify(),
        }
        .with_context(|| format!("{}: the app owner's signature", path.display()))?;
        return Ok(Some(Arc::new(PolicyFn(move |claims: &Claims| {
            verified.check(claims).map(|_| ())
        }))));
    }
    if args.app.is_some() {
        bail!(
            "{}: --app goes with an app owner's signed policy (JSON from gateway app sign-policy); profiles are \
             checked without it",
            path.display()
        );
    }
    Ok(Some(Arc::new(
        GatewayPolicy::from_toml(&text).with_context(|| format!("parsing {}", path.display()))?,
    )))
}

/// Verify as the arguments say: `Ok(Ok(claims))`, `Ok(Err(refusal))`, or `Err` for unusable input.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<Result<Claims, Refusal>> {
    let verified = verify_evidence(args)?;
    // Without a policy nothing else looks at the debug flag; a policy's profiles checked it already.
    Ok(verified.and_then(|claims| {
        if claims.debug && args.policy.is_none() && !args.allow_debug {
            Err((
                "policy",
                format!(
                    "{}: the TEE is debuggable, so its host can read and change its memory; pass --allow-debug to \
                     accept it anyway",
                    Violation::Debug
                ),
            ))
        } else {
            Ok(claims)
        }
    }))
}

/// Verify the evidence, and apply `--policy` when given.
fn verify_evidence(args: &VerifyArgs) -> anyhow::Result<Result<Claims, Refusal>> {
    let bytes = read(&args.evidence)?;
    let format = match args.format {
        Some(f) => f,
        None => guess_format(&bytes)?,
    };
    let now = parse_now(args.now.as_deref())?;
    let verifier = Arc::new(Verifier::new(anchors(&args.trust_sim_root)?));
    let policy = policy(args)?;
    let refuse_v = |e: VerifyError| (e.check(), e.to_string());

    let evidence = match format {
        EvidenceFormat::RaTlsCert => {
            let der = certificates(&bytes)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no certificate"))?;
            let policy = policy.unwrap_or_else(|| Arc::new(PolicyFn(|_: &Claims| Ok(()))));
            let v = RaTlsVerifier::new(verifier, policy);
            return Ok(v
                .verify_certificate(&der, now)
                .map(|c| (*c).clone())
                .map_err(|e: RaTlsError| (e.check(), e.to_string())));
        }
        EvidenceFormat::SnpReport | EvidenceFormat::SnpReportHex => {
            let report = if format == EvidenceFormat::SnpReportHex {
                let text = String::from_utf8(bytes).context("the hex report is not text")?;
                hex::decode(text.trim()).context("the report is not valid hex")?
            } else {
                bytes
            };
            let vcek_path = args
                .vcek
                .as_ref()
                .ok_or_else(|| anyhow!("an SNP report needs --vcek"))?;
            let vcek = certificates(&read(vcek_path)?)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("{}: no certificate", vcek_path.display()))?;
            let chain = match &args.chain {
                Some(p) => certificates(&read(p)?).with_context(|| format!("{}", p.display()))?,
                None => Vec::new(),
            };
            Evidence::Snp(SnpEvidence::from_parts(report, vcek, chain)?)
        }
        EvidenceFormat::TdxQuote => {
            let path = args
                .collateral
                .as_ref()
                .ok_or_else(|| anyhow!("a TDX quote needs --collateral"))?;
            let collateral =
                Collateral::load(path).with_context(|| format!("{}", path.display()))?;
            Evidence::Tdx(TdxEvidence {
                quote: bytes,
                collateral: Some(collateral),
            })
        }
    };
    let claims = match verifier.verify_unbound(&evidence, now) {
        Ok(c) => c,
        Err(e) => return Ok(Err(refuse_v(e))),
    };
    if let Some(p) = policy {
        if let Err(v) = p.check_claims(&claims) {
            return Ok(Err(refuse_v(VerifyError::from(v))));
        }
    }
    Ok(Ok(claims))
}

/// Write the simulated PKIs.
pub fn sim_pki(args: &SimPkiArgs) -> anyhow::Result<()> {
    let snp = if args.small {
        SimSnpPki::generate_small(&args.seed)
    } else {
        SimSnpPki::generate(&args.seed)
    }
    .context("generating the simulated AMD PKI")?;
    snp.write_pem(&args.out)
        .context("writing the simulated AMD PKI")?;
    let tdx =
        SimTdxPki::from_seed(args.seed.as_bytes()).context("generating the simulated Intel PKI")?;
    tdx.write_to(&args.out, SystemTime::now())
        .context("writing the simulated Intel PKI")?;
    eprintln!(
        "wrote the simulated PKI to {}; trust it with --trust-sim-root {} (SNP) or {} (TDX)",
        args.out.display(),
        args.out.join(attestation::snp::sim::files::ARK).display(),
        args.out
            .join(attestation::tdx::sim::files::ROOT_CA)
            .display(),
    );
    Ok(())
}
