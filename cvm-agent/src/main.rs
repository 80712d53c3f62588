//! `cvm-agent`: the command-line entry point.

use clap::Parser;

/// tee-gateway's agent, run inside a confidential VM.
#[derive(Debug, Parser)]
#[command(name = "cvm-agent", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let _cli = Cli::parse();
    Ok(())
}
