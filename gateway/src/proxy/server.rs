//! The client listener and the life of one client connection.
//!
//! For each accepted connection: read the ClientHello (size cap, deadline), parse the SNI with the host-name
//! grammar, resolve the id and port in the instance directory, keep the healthy and undrained instances, take a
//! slot under the app's connection limit, connect to an instance ("connect top N"), then either terminate TLS
//! (ALPN `http/1.1`, or `h2` for `g`) or replay the ClientHello (passthrough), optionally after a PROXY v2
//! header, and relay bytes until either side closes or a timeout ends the connection. Every refusal is counted
//! by reason and answered with a TLS alert or a close.
//!
//! Shutdown: when the shutdown token is cancelled, listeners stop accepting, open connections get the configured
//! grace period to finish, and the ones still open after it are aborted. [`super::service::start`] is the one
//! way to start the listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::accept::{closed_at_accept, ClosedReason, ListenerKind, SourceLimits};

use super::client_hello::{fatal_alert, read_client_hello, AlertDescription, ClientHelloError};
use super::config::ProxyConfig;
use super::directory::{Candidate, InstanceDirectory, LookupError};
use super::hostname::{HostGrammar, HostNameError, Mode, Route, Target};
use super::limits::{ConnectionPermit, ConnectionTable, DrainSet};
use super::metrics::{InstanceHealth, Metrics};
use super::proxy_protocol;
use super::relay::{relay, relay_tcp, RelayOutcome};
use super::replay::Replay;
use super::self_attestation::{self, SelfAttestation, SelfAttestationError};
use super::tls::{CertError, CertStore, TerminationConfigs};
use super::upstream::{self, ConnectError};

/// Why a client connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No valid ClientHello.
    #[error(transparent)]
    ClientHello(#[from] ClientHelloError),
    /// The ClientHello carries no server name.
    #[error("ClientHello has no server name (SNI)")]
    NoServerName,
    /// The server name does not follow the grammar.
    #[error("server name {name:?}: {error}")]
    HostName {
        /// The name.
        name: String,
        /// What is wrong with it.
        error: HostNameError,
    },
    /// The reserved gateway name, and nothing is configured to answer it.
    #[error("the gateway's attestation endpoint is not available")]
    GatewayEndpointUnavailable,
    /// Unknown id or unexposed port.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Instances expose the port but none is healthy and undrained.
    #[error("no healthy instance of {id} exposes port {port}")]
    NoHealthyInstance {
        /// The id routed to.
        id: String,
        /// The port.
        port: u16,
    },
    /// The app is at its connection limit.
    #[error("app {app} is at its limit of {max} connections")]
    AppConnectionLimit {
        /// The app.
        app: String,
        /// The limit.
        max: usize,
    },
    /// No instance could be reached.
    #[error(transparent)]
    Upstream(#[from] ConnectError),
    /// The TLS handshake with the client failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The TLS handshake with the client did not finish in time.
    #[error("TLS handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// Writing to the instance failed before relaying.
    #[error("writing to the instance: {0}")]
    UpstreamWrite(std::io::Error),
    /// A refusal after the client's TLS handshake with the gateway completed (terminated routes): the client
    /// gets the session's orderly close, not an alert.
    #[error("{0} (after the TLS handshake)")]
    AfterHandshake(Box<Refusal>),
}

impl Refusal {
    /// A short stable name, the `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ClientHello(e) => e.reason(),
            Refusal::NoServerName => "no_sni",
            Refusal::HostName {
                error: HostNameError::GrpcPassthrough,
                ..
            } => "grpc_passthrough",
            Refusal::HostName {
                error: HostNameError::UnknownBaseDomain(_),
                ..
            } => "unknown_base_domain",
            Refusal::HostName { .. } => "bad_host_name",
            Refusal::GatewayEndpointUnavailable => "gateway_endpoint_unavailable",
            Refusal::Lookup(LookupError::UnknownId(_)) => "unknown_id",
            Refusal::Lookup(LookupError::PortNotExposed { .. }) => "port_not_exposed",
            Refusal::NoHealthyInstance { .. } => "no_healthy_instance",
            Refusal::AppConnectionLimit { .. } => "app_connection_limit",
            Refusal::Upstream(e) => e.reason(),
            Refusal::Handshake(_) => "tls_handshake_failed",
            Refusal::HandshakeTimeout(_) => "tls_handshake_timeout",
            Refusal::UpstreamWrite(_) => "upstream_write_failed",
            Refusal::AfterHandshake(refusal) => refusal.reason(),
        }
    }

    /// The TLS alert the client gets, if the proxy sends one itself.
    pub fn alert(&self) -> Option<AlertDescription> {
        match self {
            Refusal::ClientHello(e) => e.alert(),
            Refusal::NoServerName
            | Refusal::HostName { .. }
            | Refusal::GatewayEndpointUnavailable
            | Refusal::Lookup(_) => Some(AlertDescription::UnrecognizedName),
            Refusal::NoHealthyInstance { .. }
            | Refusal::AppConnectionLimit { .. }
            | Refusal::Upstream(_) => Some(AlertDescription::HandshakeFailure),
            // rustls has already sent its alert, or the handshake is over.
            Refusal::Handshake(_)
            | Refusal::HandshakeTimeout(_)
            | Refusal::UpstreamWrite(_)
            | Refusal::AfterHandshake(_) => None,
        }
    }
}

/// The HTTP/1.1 answer of a terminated route that cannot be served after its TLS handshake: 503, the refusal's
/// reason as the body, and the connection closed.
fn unavailable(reason: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n{reason}\n",
        reason.len() + 1
    )
    .into_bytes()
}

/// Why the proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// Certificates could not be loaded.
    #[error(transparent)]
    Certificates(#[from] CertError),
    /// No base domain to serve.
    #[error("no base domain to serve")]
    NoBaseDomain,
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The client-facing proxy: shared state of every listener and connection.
pub struct Proxy {
    config: ProxyConfig,
    health_window: Duration,
    grammar: HostGrammar,
    directory: Arc<dyn InstanceDirectory>,
    certs: Arc<CertStore>,
    tls: TerminationConfigs,
    metrics: Metrics,
    connections: Arc<ConnectionTable>,
    drains: DrainSet,
    app_policies: super::app_policy::PolicyIntakeSlot,
    self_attestation: Option<Arc<SelfAttestation>>,
    per_source: Arc<SourceLimits>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("base_domains", &self.grammar.bases())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the proxy serving names under `base_domains`, using instances whose tunnel handshake is within
    /// `health_window`: validates the configuration and loads the certificates.
    pub fn new(
        config: ProxyConfig,
        base_domains: &[String],
        health_window: Duration,
        directory: Arc<dyn InstanceDirectory>,
    ) -> Result<Arc<Self>, ProxyError> {
        Self::build(config, base_domains, health_window, directory, None)
    }

    fn build(
        config: ProxyConfig,
        base_domains: &[String],
        health_window: Duration,
        directory: Arc<dyn InstanceDirectory>,
        self_attestation: Option<Arc<SelfAttestation>>,
    ) -> Result<Arc<Self>, ProxyError> {
        config.validate()?;
        if base_domains.is_empty() {
            return Err(ProxyError::NoBaseDomain);
        }
        let certs = Arc::new(CertStore::load(config.certificates.clone())?);
        let tls = TerminationConfigs::new(certs.clone(), config.session_cache_size)?;
        Ok(Arc::new(Proxy {
            grammar: HostGrammar::new(base_domains),
            health_window,
            connections: ConnectionTable::new(config.max_connections_per_app),
            per_source: SourceLimits::new(config.max_connections_per_source),
            config,
            directory,
            certs,
            tls,
            metrics: Metrics::default(),
            drains: DrainSet::default(),
            app_policies: Default::default(),
            self_attestation,
        }))
    }

    /// Like [`Proxy::new`], and `gateway.<base>` serves the gateway's attestation produced by `attester`.
    pub fn with_attester(
        config: ProxyConfig,
        base_domains: &[String],
        health_window: Duration,
        directory: Arc<dyn InstanceDirectory>,
        attester: Arc<dyn attestation::Attester>,
    ) -> Result<Arc<Self>, ProxyError> {
        let attestation = SelfAttestation::new(attester);
        Self::with_self_attestation(config, base_domains, health_window, directory, attestation)
    }

    /// Like [`Proxy::new`], and `gateway.<base>` serves `attestation`'s document.
    pub fn with_self_attestation(
        config: ProxyConfig,
        base_domains: &[String],
        health_window: Duration,
        directory: Arc<dyn InstanceDirectory>,
        attestation: SelfAttestation,
    ) -> Result<Arc<Self>, ProxyError> {
        let attestation = Some(Arc::new(attestation));
        Self::build(config, base_domains, health_window, directory, attestation)
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Live connection counts.
    pub fn connections(&self) -> &ConnectionTable {
        &self.connections
    }

    /// The drained instances.
    pub fn drains(&self) -> &DrainSet {
        &self.drains
    }

    /// Where the admin API sends app owners' signed policies.
    pub fn app_policies(&self) -> &super::app_policy::PolicyIntakeSlot {
        &self.app_policies
    }

    /// The certificates.
    pub fn certificates(&self) -> &CertStore {
        &self.certs
    }

    /// The instance directory.
    pub fn directory(&self) -> &dyn InstanceDirectory {
        self.directory.as_ref()
    }

    /// Health of every known instance, as the proxy judges it now.
    pub fn instance_health(&self) -> Vec<InstanceHealth> {
        let window = self.health_window;
        self.directory
            .instances()
            .into_iter()
            .map(|i| InstanceHealth {
                healthy: i
                    .since_handshake_secs
                    .is_some_and(|s| Duration::from_secs(s) <= window),
                drained: self.drains.is_drained(&i.instance_id),
                app_id: i.app_id,
                instance_id: i.instance_id,
                since_handshake_secs: i.since_handshake_secs,
            })
            .collect()
    }

    /// The Prometheus text of every metric.
    pub fn render_metrics(&self) -> String {
        let mut out = self
            .metrics
            .render(&self.connections.per_app(), &self.instance_health());
        self.directory.render_metrics(&mut out);
        closed_at_accept().render(&mut out);
        out
    }

    /// Binds every configured listener.
    pub(crate) async fn bind(&self) -> std::io::Result<Vec<TcpListener>> {
        let mut listeners = Vec::new();
        for addr in &self.config.listen {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("binding client listener {addr}: {e}"))
            })?;
            listeners.push(l);
        }
        Ok(listeners)
    }

    /// Reloads changed certificates every `cert_reload_interval_secs` until `shutdown` is cancelled.
    pub(crate) async fn watch_certificates(self: Arc<Self>, shutdown: CancellationToken) {
        let period = Duration::from_secs(self.config.cert_reload_interval_secs.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                () = shutdown.cancelled() => return,
            }
            match self.certs.reload_if_changed() {
                Ok(true) => tracing::info!(names = ?self.certs.names(), "certificates reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "certificate reload failed; keeping the loaded ones")
                }
            }
        }
    }

    /// Accepts connections on one listener until `shutdown` is cancelled or the socket fails for good, then
    /// drains them; returns the socket's error in the second case.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut connections = JoinSet::new();
        let failed = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Over its source's limit, a connection is closed before any byte is read.
                        let Some(slot) = self.per_source.try_acquire(peer.ip()) else {
                            closed_at_accept().count(ListenerKind::Client, ClosedReason::PerSourceLimit);
                            drop(stream);
                            continue;
                        };
                        let proxy = self.clone();
                        connections.spawn(async move {
                            let _slot = slot;
                            proxy.handle(stream, peer).await;
                        });
                    }
                    Err(e) if crate::accept::is_fatal(&e) => break Some(e),
                    Err(e) => {
                        // Out of descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(crate::accept::RETRY_AFTER).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = shutdown.cancelled() => break None,
            }
        };
        drop(listener);
        let open = connections.len();
        if open > 0 {
            tracing::info!(open, grace = ?self.config.shutdown_grace(), "draining client connections");
        }
        let drained = tokio::time::timeout(self.config.shutdown_grace(), async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                aborted = connections.len(),
                "grace period over; closing remaining connections"
            );
            connections.shutdown().await;
        }
        failed.map_or(Ok(()), Err)
    }

    /// Serves one client connection to its end.
    pub async fn handle(self: Arc<Self>, mut client: TcpStream, peer: SocketAddr) {
        let _ = client.set_nodelay(true);
        if let Err(refusal) = self.route(&mut client, peer).await {
            self.metrics.refusal(refusal.reason());
            tracing::debug!(%peer, reason = refusal.reason(), error = %refusal, "connection refused");
            if let Some(alert) = refusal.alert() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.write_all(&fatal_alert(alert)),
                )
                .await;
            }
            let _ = client.shutdown().await;
        }
    }

    fn candidates(&self, target: &Target) -> Result<(String, Vec<Candidate>), Refusal> {
        let resolution = self.directory.resolve(target.id.as_str(), target.port)?;
        let window = self.health_window;
        let healthy: Vec<Candidate> = resolution
            .candidates
            .into_iter()
            .filter(|c| c.since_handshake.is_some_and(|d| d <= window))
            .filter(|c| !self.drains.is_drained(&c.instance_id))
            .collect();
        if healthy.is_empty() {
            return Err(Refusal::NoHealthyInstance {
                id: target.id.to_string(),
                port: target.port,
            });
        }
        Ok((resolution.app_id, healthy))
    }

    /// Takes a slot under the app's connection limit, then connects to one of `candidates`.
    async fn open_upstream(
        &self,
        app: &str,
        candidates: Vec<Candidate>,
    ) -> Result<(ConnectionPermit, TcpStream, Candidate), Refusal> {
        let permit = self
            .connections
            .acquire(app)
            .ok_or_else(|| Refusal::AppConnectionLimit {
                app: app.to_owned(),
                max: self.connections.max_per_app(),
            })?;
        let connected =
            Box::pin(upstream::connect(candidates, self.config.connect_policy())).await?;
        self.metrics.connect.observe(connected.elapsed);
        Ok((permit, connected.stream, connected.candidate))
    }

    /// The PROXY v2 header the instance wants before the client's bytes, or nothing.
    fn preamble(&self, candidate: &Candidate, client: &TcpStream, peer: SocketAddr) -> Vec<u8> {
        if candidate.proxy_protocol {
            let local = client.local_addr().unwrap_or(peer);
            proxy_protocol::encode_v2(peer, local)
        } else {
            Vec::new()
        }
    }

    async fn serve_self_attestation(
        &self,
        client: &mut TcpStream,
        raw: Vec<u8>,
        name: &str,
    ) -> Result<(), Refusal> {
        let attestation = self
            .self_attestation
            .clone()
            .ok_or(Refusal::GatewayEndpointUnavailable)?;
        let leaf = self
            .certs
            .find(name)
            .and_then(|k| k.cert.first().cloned())
            .ok_or(Refusal::GatewayEndpointUnavailable)?;
        let deadline = self.config.handshake_timeout();
        let accept = TlsAcceptor::from(self.tls.http1.clone()).accept(Replay::new(raw, client));
        let mut tls = match tokio::time::timeout(deadline, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(Refusal::Handshake(e)),
            Err(_) => return Err(Refusal::HandshakeTimeout(deadline)),
        };
        self.metrics.connection("gateway", "attestation");
        // Producing evidence talks to the platform's attestation device: keep it off the async workers.
        // Every certificate of the store is loaded from the operator's PEM files.
        let origin = attestation::KeyOrigin::OperatorSupplied;
        let document =
            tokio::task::spawn_blocking(move || attestation.document(leaf.as_ref(), origin))
                .await
                .unwrap_or_else(|e| Err(SelfAttestationError::Task(e)));
        if let Err(e) = &document {
            tracing::error!(error = %e, "gateway attestation failed");
        }
        let _ = self_attestation::serve_one(&mut tls, document, self.config.client_hello_timeout())
            .await;
        Ok(())
    }

    async fn route(&self, client: &mut TcpStream, peer: SocketAddr) -> Result<(), Refusal> {
        // Boxed, like the other one-off steps below, so that their state does not stay in the connection's
        // task for its whole life (an idle connection should cost little memory).
        let hello = Box::pin(read_client_hello(
            client,
            self.config.client_hello_max_bytes,
            self.config.client_hello_timeout(),
        ))
        .await?;
        let name = hello
            .accepted
            .client_hello()
            .server_name()
            .ok_or(Refusal::NoServerName)?
            .to_owned();
        let target = match self.grammar.parse(&name) {
            Ok(Route::Target(t)) => t,
            Ok(Route::Gateway { .. }) => {
                return Box::pin(self.serve_self_attestation(client, hello.raw, &name)).await
            }
            Err(error) => return Err(Refusal::HostName { name, error }),
        };
        // Refused before any TLS if nothing could serve it; the slot and the upstream connection wait until the
        // client has shown it speaks TLS to the end: its ClientHello (passthrough, read above) or its whole
        // handshake (terminated), so clients that stall cost neither a slot of the app nor an instance connection.
        let (app, candidates) = self.candidates(&target)?;
        let limits = self.config.relay_limits();
        let (outcome, instance): (RelayOutcome, String) = match target.mode {
            Mode::Passthrough => {
                let (mut permit, mut upstream, candidate) =
                    self.open_upstream(&app, candidates).await?;
                permit.set_instance(&candidate.instance_id);
                let mut preamble = self.preamble(&candidate, client, peer);
                self.metrics.connection(&app, target.mode.as_str());
                preamble.extend_from_slice(&hello.raw);
                upstream
                    .write_all(&preamble)
                    .await
                    .map_err(Refusal::UpstreamWrite)?;
                drop(hello);
                let outcome = relay_tcp(
                    client,
                    &upstream,
                    limits,
                    &self.metrics.bytes,
                    &self.metrics.spliced,
                )
                .await;
                (outcome, candidate.instance_id)
            }
            Mode::Terminate | Mode::Grpc => {
                let config = match target.mode {
                    Mode::Grpc => self.tls.h2.clone(),
                    _ => self.tls.http1.clone(),
                };
                let started = Instant::now();
                let local = client.local_addr().unwrap_or(peer);
                let replay = Replay::new(hello.raw, client);
                let deadline = self.config.handshake_timeout();
                let accept = TlsAcceptor::from(config).accept(replay);
                let mut tls = match Box::pin(tokio::time::timeout(deadline, accept)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return Err(Refusal::Handshake(e)),
                    Err(_) => return Err(Refusal::HandshakeTimeout(deadline)),
                };
                self.metrics.handshake.observe(started.elapsed());
                let (mut permit, mut upstream, candidate) =
                    match self.open_upstream(&app, candidates).await {
                        Ok(opened) => opened,
                        Err(refusal) => {
                            // The session is up, so no alert: an HTTP/1.1 client (the only protocol a
                            // terminated route without `g` speaks) gets a 503 naming the reason, then every
                            // client the session's orderly close.
                            if target.mode == Mode::Terminate {
                                let answer = unavailable(refusal.reason());
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(1),
                                    tls.write_all(&answer),
                                )
                                .await;
                            }
                            let _ =
                                tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
                            return Err(Refusal::AfterHandshake(Box::new(refusal)));
                        }
                    };
                permit.set_instance(&candidate.instance_id);
                self.metrics.connection(&app, target.mode.as_str());
                if candidate.proxy_protocol {
                    upstream
                        .write_all(&proxy_protocol::encode_v2(peer, local))
                        .await
                        .map_err(Refusal::UpstreamWrite)?;
                }
                let outcome = relay(tls, upstream, limits, &self.metrics.bytes).await;
                (outcome, candidate.instance_id)
            }
        };
        tracing::debug!(
            %peer, app = %app, %instance, mode = %target.mode,
            to_instance = outcome.to_upstream, to_client = outcome.to_client, end = outcome.end.as_str(),
            "connection finished"
        );
        Ok(())
    }
}
