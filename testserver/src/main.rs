//! `testserver`: the workload that tee-gateway's container tests and benchmarks run behind the agent.
//!
//! One process serves, on separate listeners:
//! - plain HTTP (`--http`, default `0.0.0.0:8080`): HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same
//!   port. Every answer names the server (its host name, which is the container name when the container is started
//!   with `--hostname`). Paths: `/ws` WebSocket echo, `/sse` server-sent events, `/bytes/N` N bytes of payload,
//!   gRPC methods `/testserver.Echo/Unary` and `/testserver.Echo/ServerStream`, `/cert.pem` the TLS listener's
//!   certificate, anything else a JSON echo of the request;
//! - TLS (`--tls`, default `0.0.0.0:8443`): the same HTTP service behind a self-signed certificate (ALPN `h2`,
//!   `http/1.1`), for TLS passthrough;
//! - raw TCP echo (`--echo`, default `0.0.0.0:9000`): every byte received is sent back unchanged.
//!
//! On the HTTP and TLS listeners a PROXY protocol header (v1 or v2) before the first byte of the connection is
//! recognised, removed and reported in the echo, so tests can check what the gateway and agent passed on.
//!
//! Standard output gets one line `listening http=ADDR tls=ADDR echo=ADDR` once all listeners are bound.

mod echo;
mod grpc;
mod http;
mod proxy_header;
mod ticks;
mod tls;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

/// A test workload: HTTP/1.1 and h2c echo, gRPC, WebSocket echo, TLS and raw TCP echo.
#[derive(Debug, Parser)]
#[command(name = "testserver", version, about)]
struct Cli {
    /// Plain HTTP listener (HTTP/1.1, h2c, WebSocket, gRPC).
    #[arg(long, default_value = "0.0.0.0:8080", env = "TESTSERVER_HTTP")]
    http: SocketAddr,
    /// TLS listener serving the same HTTP service with a self-signed certificate.
    #[arg(long, default_value = "0.0.0.0:8443", env = "TESTSERVER_TLS")]
    tls: SocketAddr,
    /// Raw TCP echo listener.
    #[arg(long, default_value = "0.0.0.0:9000", env = "TESTSERVER_ECHO")]
    echo: SocketAddr,
    /// Name reported in every answer (default: the host name).
    #[arg(long, env = "TESTSERVER_NAME")]
    name: Option<String>,
    /// Extra DNS names for the self-signed certificate (the host name and `localhost` are always included).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    edge::logging::init_with_default("info");
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let name = match cli.name {
        Some(name) => name,
        None => host_name().context("reading the host name")?,
    };
    let mut cert_names = vec![name.clone(), "localhost".to_owned()];
    cert_names.extend(cli.tls_names);
    let (acceptor, cert_pem) =
        tls::self_signed_acceptor(cert_names).context("creating the TLS certificate")?;
    let state = Arc::new(http::ServerState::new(name.clone(), cert_pem));

    let http_listener = bind(cli.http).await?;
    let tls_listener = bind(cli.tls).await?;
    let echo_listener = bind(cli.echo).await?;
    let (http, tls, echo) = (
        http_listener.local_addr()?,
        tls_listener.local_addr()?,
        echo_listener.local_addr()?,
    );
    tracing::info!(%name, %http, %tls, %echo, "testserver listening");
    // One machine-readable line for scripts and tests that pass port 0.
    println!("listening http={http} tls={tls} echo={echo}");

    tokio::select! {
        r = http::serve(http_listener, None, state.clone()) => r.context("HTTP listener"),
        r = http::serve(tls_listener, Some(acceptor), state) => r.context("TLS listener"),
        r = echo::serve(echo_listener) => r.context("echo listener"),
        r = tokio::signal::ctrl_c() => { r.context("waiting for a signal")?; Ok(()) }
        _ = terminate() => Ok(()),
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Resolves when SIGTERM arrives (`docker stop`), so the container stops at once as PID 1.
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await
        }
    }
}

/// The system host name (in a container: the name given with `--hostname`, else the short container id).
fn host_name() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes and gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}
