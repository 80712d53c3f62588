//! `gateway`: the command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tee-gateway's gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: control listener, tunnel and client proxy.
    Run(ConfigArg),
    /// Validate a configuration file and print every problem found.
    CheckConfig(ConfigArg),
    /// Print the digest of a configuration's security-relevant settings, which the gateway binds into its RA-TLS
    /// identity (agents pin it: gateway policy `config_digest`), then the document it hashes.
    ConfigDigest(ConfigArg),
    /// Verify attestation evidence, or make a simulated PKI.
    #[command(subcommand)]
    Attestation(gateway::cli::attestation::AttestationCommand),
    /// An app owner's tools: make the owner key (and app id), sign the app's policy.
    #[command(subcommand)]
    App(gateway::cli::app::AppCommand),
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, default_value = "/etc/tee-gateway/gateway.toml")]
    config: PathBuf,
}

fn main() -> anyhow::Result<ExitCode> {
    edge::logging::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(ConfigArg { config }) => {
            let config = gateway::config::GatewayConfig::load(&config)?;
            edge::signal::run_until_signal(|stop| gateway::run::run(config, stop))??;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig(ConfigArg { config }) => Ok(gateway::config::check_config(&config)),
        Command::ConfigDigest(ConfigArg { config }) => {
            Ok(gateway::cli::config_digest::run(&config))
        }
        Command::Attestation(cmd) => Ok(gateway::cli::attestation::run(cmd)),
        Command::App(cmd) => Ok(gateway::cli::app::run(cmd)),
    }
}
