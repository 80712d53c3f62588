//! `gateway`: the command-line entry point.

use clap::Parser;

/// tee-gateway's gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let _cli = Cli::parse();
    Ok(())
}
