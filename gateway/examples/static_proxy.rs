//! Runs the client-facing proxy alone, over a fixed table of instances instead of the registry.
//!
//! For benchmarks and manual trials:
//!
//! ```text
//! static_proxy --base-domain apps.test --cert wildcard.crt --key wildcard.key \
//!     --listen 127.0.0.1:8443 --instance aaaaaaaa:11111111:127.0.0.1:8080
//! ```
//!
//! `--instance APP:INSTANCE:IP:PORT[:proxy]` may repeat; `:proxy` asks for a PROXY v2 header on that port.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use gateway::proxy::config::{AdminConfig, ProxyConfig};
use gateway::proxy::directory::StaticDirectory;
use gateway::proxy::server::Proxy;
use gateway::proxy::tls::CertificateFiles;

/// The gateway's client-facing proxy over a static instance table.
#[derive(Debug, Parser)]
struct Args {
    /// Client listener (repeatable).
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// Base domain (repeatable).
    #[arg(long, required = true)]
    base_domain: Vec<String>,
    /// Certificate chain PEM for terminated routes.
    #[arg(long)]
    cert: PathBuf,
    /// Private key PEM for `--cert`.
    #[arg(long)]
    key: PathBuf,
    /// An instance: `APP:INSTANCE:IP:PORT[:proxy]` (repeatable).
    #[arg(long, required = true)]
    instance: Vec<String>,
    /// Admin listener address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// File holding the admin bearer token.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Maximum connections per app.
    #[arg(long, default_value_t = 100_000)]
    max_connections_per_app: usize,
}

fn parse_instance(s: &str) -> anyhow::Result<(String, String, IpAddr, u16, bool)> {
    let parts: Vec<&str> = s.split(':').collect();
    let proxy = match parts.get(4) {
        None => false,
        Some(&"proxy") => true,
        Some(other) => bail!("--instance {s}: unknown flag {other:?} (only \"proxy\")"),
    };
    if parts.len() < 4 || parts.len() > 5 {
        bail!("--instance {s}: expected APP:INSTANCE:IP:PORT[:proxy]");
    }
    let ip = parts[2]
        .parse()
        .with_context(|| format!("--instance {s}: bad IP"))?;
    let port = parts[3]
        .parse()
        .with_context(|| format!("--instance {s}: bad port"))?;
    Ok((parts[0].into(), parts[1].into(), ip, port, proxy))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    edge::logging::init_with_default("error");
    let args = Args::parse();
    let directory = Arc::new(StaticDirectory::new());
    let mut table: std::collections::BTreeMap<(String, String, IpAddr), Vec<(u16, bool)>> =
        Default::default();
    for spec in &args.instance {
        let (app, instance, ip, port, proxy) = parse_instance(spec)?;
        table
            .entry((app, instance, ip))
            .or_default()
            .push((port, proxy));
    }
    for ((app, instance, ip), ports) in table {
        directory.upsert(&app, &instance, ip, ports);
    }
    let config = ProxyConfig {
        listen: args.listen,
        certificates: vec![CertificateFiles {
            cert: args.cert,
            key: args.key,
        }],
        max_connections_per_app: args.max_connections_per_app,
        admin: AdminConfig {
            listen: args.admin_listen,
            token: None,
            token_file: args.admin_token_file,
        },
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(
        config,
        &args.base_domain,
        Duration::from_secs(300),
        directory,
    )?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = gateway::proxy::service::start(proxy, &shutdown).await?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal?,
        // A part that stopped by itself has cancelled the service's token; `wait` says which and why.
        () = running.stopped() => {}
    }
    shutdown.cancel();
    running.wait().await?;
    Ok(())
}
