//! `cvm-agent`: the command-line entry point.

use std::path::PathBuf;

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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = cvm_agent::config::AgentConfig::load(&config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(cvm_agent::run::run(config, shutdown_signal()))?;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = cvm_agent::config::AgentConfig::load(&config)?;
            println!(
                "ok: app {} with {} gateway(s) and {} port(s)",
                config.app_id,
                config.gateways.len(),
                config.ports.len()
            );
            Ok(())
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
