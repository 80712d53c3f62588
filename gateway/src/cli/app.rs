//! `gateway app ...`: an app owner's tools. `keygen` makes the owner key pair (and so the app id);
//! `sign-policy` signs the app's policy, the profiles its instances may match, with a version number.
//!
//! Both run wherever the owner keeps the key, not on the gateway: the gateway only ever sees signed policies.
//! Errors print on stderr and exit 2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use attestation::owner::{OwnerKey, ProfilesFile, SignedPolicy};
use clap::{Args, Subcommand};

/// `gateway app` subcommands.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Make an app owner key pair; prints the app id it owns.
    Keygen(KeygenArgs),
    /// Sign an app policy (profiles in the TOML profile syntax) with the owner key.
    SignPolicy(SignPolicyArgs),
}

/// Arguments of `gateway app keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The key file to write (mode 0600; an existing file is never overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `gateway app sign-policy`.
#[derive(Debug, Args)]
pub struct SignPolicyArgs {
    /// The owner key file (from `gateway app keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The policy's version: higher than every version signed before, or gateways keep the one they have.
    #[arg(long)]
    pub version: u64,
    /// The profiles, TOML: `[[profile]]` tables as in an app policy.
    #[arg(long)]
    pub profiles: PathBuf,
    /// The signed policy file to write (JSON).
    #[arg(long)]
    pub out: PathBuf,
}

/// Run an app subcommand.
pub fn run(cmd: AppCommand) -> ExitCode {
    let done = match cmd {
        AppCommand::Keygen(args) => keygen(&args),
        AppCommand::SignPolicy(args) => sign_policy(&args),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = OwnerKey::generate();
    key.write_new(&args.out)?;
    println!("{}", key.app_id());
    eprintln!(
        "app owner key written to {} (keep it secret); app id {}",
        args.out.display(),
        key.app_id()
    );
    Ok(())
}

fn sign_policy(args: &SignPolicyArgs) -> anyhow::Result<()> {
    let key = OwnerKey::read(&args.key)?;
    let text = std::fs::read_to_string(&args.profiles)
        .with_context(|| format!("reading {}", args.profiles.display()))?;
    let profiles = ProfilesFile::from_toml(&text)
        .with_context(|| format!("parsing profiles {}", args.profiles.display()))?
        .profile;
    if profiles.is_empty() {
        bail!(
            "{} lists no [[profile]]: a policy without profiles admits no instance",
            args.profiles.display()
        );
    }
    let signed = SignedPolicy::sign(&key, args.version, profiles)?;
    // Checked as a gateway will check it, so a policy that would be refused is never written.
    signed.verify_for(&key.app_id())?;
    std::fs::write(&args.out, format!("{}\n", signed.to_json()))
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "policy version {} for app {} signed into {}",
        args.version,
        key.app_id(),
        args.out.display()
    );
    Ok(())
}
