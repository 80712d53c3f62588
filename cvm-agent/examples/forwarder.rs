//! Runs the agent's port forwarder alone, without registration or tunnel, for benchmarks and manual trials:
//!
//! ```text
//! forwarder --listen 127.0.0.1 --port 8080=docker:web:8080 --port 9000=docker-label
//! ```
//!
//! Prints `ready` on standard output once every listener is bound and, when a port has a Docker target, once the
//! first container listing is in. Stops on SIGINT or SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use cvm_agent::docker::{DiscoveryConfig, DiscoveryTask, EngineState};
use cvm_agent::forward::{ForwardConfig, Forwarder, PortRule};
use cvm_agent::target::Target;

/// The agent's port forwarder on its own.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (the tunnel address in the agent).
    #[arg(long)]
    listen: IpAddr,
    /// A declared port: `PORT=TARGET` (repeatable).
    #[arg(long = "port", required = true)]
    ports: Vec<String>,
    /// The Docker Engine API socket.
    #[arg(long, default_value = cvm_agent::docker::DEFAULT_SOCKET)]
    docker_socket: PathBuf,
}

fn parse_port(spec: &str) -> anyhow::Result<PortRule> {
    let (port, target) = spec
        .split_once('=')
        .with_context(|| format!("--port {spec}: expected PORT=TARGET"))?;
    let port =
        cvm_agent::target::parse_port(port).with_context(|| format!("--port {spec}: bad port"))?;
    let target: Target = target.parse().with_context(|| format!("--port {spec}"))?;
    Ok(PortRule {
        port,
        target,
        proxy_protocol: false,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    edge::logging::init_with_default("warn");
    let args = Args::parse();
    let rules = args
        .ports
        .iter()
        .map(|s| parse_port(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let needs_docker = rules
        .iter()
        .any(|r| !matches!(r.target, Target::Address { .. }));
    let discovery = needs_docker.then(|| {
        DiscoveryTask::spawn(DiscoveryConfig {
            socket: args.docker_socket.clone(),
            ..DiscoveryConfig::default()
        })
    });
    if let Some(task) = &discovery {
        let d = task.discovery();
        let mut changes = d.subscribe();
        while d.engine_state() == EngineState::Connecting {
            if changes.changed().await.is_err() {
                bail!("Docker discovery stopped");
            }
        }
        if let EngineState::Unreachable { error } = d.engine_state() {
            tracing::warn!(%error, "starting without the Docker engine");
        }
    }
    let forwarder = Forwarder::start(
        ForwardConfig::new(args.listen, rules),
        discovery.as_ref().map(DiscoveryTask::discovery),
    )
    .await?;
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    forwarder.shutdown().await;
    Ok(())
}
