//! Runs one `protocol::tunnel` endpoint, for lab tests and benchmarks (`ip netns exec HOST tunnel-endpoint ...`).
//!
//! On start it prints one JSON line `{"public_key", "listen", "tun"}`. It then reads commands from stdin, one
//! per line, and answers each with one JSON line on stdout:
//!
//! - `add key=KEY ip=ADDR [endpoint=HOST:PORT] [keepalive-ms=N]` / `update ...` : add or change a peer;
//! - `remove KEY` : remove a peer (answers with its final counters);
//! - `stats` : the endpoint's snapshot (peers, counters, health);
//! - `filter PORT,PORT...` / `filter none` : let only those TCP ports (and ICMP echo) in from the tunnel, or
//!   everything (see `--inbound-tcp-ports`).
//!
//! Errors are answered as `{"error": "..."}`. End of stdin does not stop it; SIGTERM or SIGINT does.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use protocol::tunnel::{
    Endpoint, EndpointConfig, InboundFilter, PeerConfig, PrivateKey, PublicKey,
};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(about = "Run a tee-gateway WireGuard endpoint (for lab tests and benchmarks)")]
struct Args {
    /// File holding the private key in base64 (as written by `wg genkey`).
    #[arg(long)]
    private_key_file: PathBuf,
    /// UDP port to listen on (0: any free port).
    #[arg(long, default_value_t = 51820)]
    listen_port: u16,
    /// Tunnel address with prefix length, e.g. 10.0.0.1/24.
    #[arg(long)]
    address: String,
    /// TUN device name (empty: the kernel picks one).
    #[arg(long, default_value = "")]
    tun_name: String,
    /// TUN MTU.
    #[arg(long, default_value_t = protocol::tunnel::DEFAULT_MTU)]
    mtu: u16,
    /// Health window in milliseconds.
    #[arg(long)]
    health_window_ms: Option<u64>,
    /// Idle session renewal interval for keep-alive peers, in milliseconds.
    #[arg(long)]
    rekey_after_ms: Option<u64>,
    /// Turn TUN offloads off (read and write one packet per system call).
    #[arg(long)]
    no_offload: bool,
    /// Let in from the tunnel only TCP to these ports (comma-separated) and ICMP echo; SYNs to other ports are
    /// answered with a reset. Without it everything that passes the isolation checks is let in.
    #[arg(long, value_delimiter = ',')]
    inbound_tcp_ports: Option<Vec<u16>>,
    /// A peer, as `key=KEY,ip=ADDR[,endpoint=HOST:PORT][,keepalive-ms=N]` (repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
}

fn parse_peer(spec: &str) -> Result<PeerConfig> {
    let mut key = None;
    let mut ip = None;
    let mut endpoint = None;
    let mut keepalive = None;
    for part in spec.split([',', ' ']).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .with_context(|| format!("peer field {part:?} is not name=value"))?;
        match name {
            "key" => key = Some(value.parse::<PublicKey>()?),
            "ip" => ip = Some(value.parse::<Ipv4Addr>().context("peer ip")?),
            "endpoint" => endpoint = Some(value.parse::<SocketAddr>().context("peer endpoint")?),
            "keepalive-ms" => {
                keepalive = Some(Duration::from_millis(
                    value.parse().context("keepalive-ms")?,
                ))
            }
            other => bail!("unknown peer field {other:?}"),
        }
    }
    let mut peer = PeerConfig::new(
        key.context("peer needs key=")?,
        ip.context("peer needs ip=")?,
    );
    peer.endpoint = endpoint;
    peer.persistent_keepalive = keepalive;
    Ok(peer)
}

fn command(endpoint: &Endpoint, line: &str) -> Result<serde_json::Value> {
    let (verb, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    Ok(match verb {
        "add" => {
            endpoint.add_peer(parse_peer(rest)?)?;
            json!({"ok": true})
        }
        "update" => {
            endpoint.update_peer(parse_peer(rest)?)?;
            json!({"ok": true})
        }
        "remove" => {
            let stats = endpoint.remove_peer(&rest.trim().parse()?)?;
            json!({"ok": true, "stats": stats})
        }
        "stats" => serde_json::to_value(endpoint.stats())?,
        "filter" => {
            let filter = match rest.trim() {
                "none" => None,
                ports => Some(InboundFilter::new(
                    ports
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.trim().parse::<u16>().context("filter port"))
                        .collect::<Result<Vec<_>>>()?,
                    true,
                )),
            };
            endpoint.set_inbound_filter(filter);
            json!({"ok": true})
        }
        other => bail!("unknown command {other:?} (add, update, remove, stats, filter)"),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let key_text = std::fs::read_to_string(&args.private_key_file)
        .with_context(|| format!("reading {}", args.private_key_file.display()))?;
    let private_key: PrivateKey = key_text.parse()?;
    let (addr, prefix) = args
        .address
        .split_once('/')
        .context("--address needs a prefix length, e.g. 10.0.0.1/24")?;
    let mut config = EndpointConfig::new(
        private_key,
        args.listen_port,
        addr.parse().context("--address")?,
        prefix.parse().context("--address prefix length")?,
    );
    config.tun_name = args.tun_name;
    config.mtu = args.mtu;
    config.offload = !args.no_offload;
    config.inbound_filter = args
        .inbound_tcp_ports
        .map(|ports| InboundFilter::new(ports, true));
    if let Some(ms) = args.health_window_ms {
        config.health_window = Duration::from_millis(ms);
    }
    if let Some(ms) = args.rekey_after_ms {
        config.rekey_after = Duration::from_millis(ms);
    }
    let endpoint = Endpoint::start(config).await?;
    for spec in &args.peers {
        endpoint.add_peer(parse_peer(spec)?)?;
    }
    println!(
        "{}",
        json!({"public_key": endpoint.public_key(), "listen": endpoint.local_addr(), "tun": endpoint.tun_name()})
    );

    // Stdin is read on a plain thread: a blocking read inside the runtime would hold up its shutdown.
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = endpoint.stopped() => bail!("the endpoint stopped on its own (see the log)"),
            line = lines.recv(), if stdin_open => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    let answer = command(&endpoint, &line)
                        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
                    println!("{answer}");
                }
                None => stdin_open = false,
            },
        }
    }
    endpoint.shutdown().await;
    Ok(())
}
