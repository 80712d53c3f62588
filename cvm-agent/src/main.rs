//! `cvm-agent`: the command-line entry point.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tee-gateway's agent, run inside a confidential VM.
#[derive(Debug, Parser)]
#[command(name = "cvm-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attest, register with the gateway and keep the tunnel up.
    Run(ConfigArg),
    /// Validate a configuration file and print every problem found.
    CheckConfig(ConfigArg),
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, default_value = "/etc/tee-gateway/agent.toml")]
    config: PathBuf,
}

fn main() -> anyhow::Result<ExitCode> {
    edge::logging::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(ConfigArg { config }) => {
            let config = cvm_agent::config::AgentConfig::load(&config)?;
            edge::signal::run_until_signal(|stop| cvm_agent::run::run(config, stop))??;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig(ConfigArg { config }) => Ok(check_config(&config)),
    }
}

/// `cvm-agent check-config`: prints a summary of a usable file, or every problem of an unusable one (one per
/// line), and returns the exit status.
fn check_config(path: &Path) -> ExitCode {
    use cvm_agent::config::AgentConfig;
    edge::config::check_report(path, AgentConfig::load(path), |config| {
        format!(
            "app {} with {} gateway(s) and {} port(s), backend {}",
            config.app_id,
            config.gateways.len(),
            config.ports.len(),
            config.attestation.settings.backend.as_str()
        )
    })
}
