//! `cvm-agent`: the command-line entry point.

use std::path::PathBuf;
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
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/tee-gateway/agent.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/tee-gateway/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    edge::logging::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = cvm_agent::config::AgentConfig::load(&config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(cvm_agent::run::run(config, edge::signal::shutdown()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => Ok(check_config(&config)),
    }
}

/// `cvm-agent check-config`: prints a summary of a usable file, or every problem of an unusable one (one per
/// line), and returns the exit status.
fn check_config(path: &std::path::Path) -> ExitCode {
    use cvm_agent::config::{AgentConfig, ConfigError};
    match AgentConfig::load(path) {
        Ok(config) => {
            println!(
                "{}: ok (app {} with {} gateway(s) and {} port(s), backend {})",
                path.display(),
                config.app_id,
                config.gateways.len(),
                config.ports.len(),
                config.attestation.settings.backend.as_str()
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { path, problems }) => {
            eprintln!("{}: {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
