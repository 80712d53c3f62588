//! `cvm-agent run`: [`build`] the agent (the boot steps), then [`Agent::serve`] it until shutdown.
//!
//! Boot, each step logged:
//! 1. the instance id from the state directory (created on first boot);
//! 2. the gateway policy and trust anchors;
//! 3. the agent's evidence in a fresh RA-TLS certificate, and a fresh WireGuard key pair (both in memory only);
//! 4. registration: for each gateway URL in order, a mutual RA-TLS handshake in which the gateway's evidence is
//!    verified against the gateway policy before anything else is sent; only then the request with the
//!    WireGuard key. A gateway refused at the handshake learns nothing; the failed check is logged;
//! 5. the tunnel: TUN device with the assigned address (its prefix route reaches the gateway), the gateway as the
//!    one peer, persistent keep-alive as the gateway says (25 s by default).
//!
//! Docker discovery (the Docker Engine API at `docker.socket`) starts at boot only when some port has a Docker
//! target, so an agent with only `HOST:PORT` targets needs no Docker engine. Once the tunnel is up, the port
//! forwarder listens on the tunnel address for every declared port (and is restarted on a new address when the
//! gateway assigns one); the tunnel endpoint's inbound filter lets in only the declared ports (and ICMP echo), so
//! other ports are refused even where a local service listens on a wildcard address.
//!
//! Then the agent registers again every re-registration interval, at once when a port's target state may have
//! changed (a container started or stopped, a fixed address stopped or started accepting a probe connection),
//! and when the tunnel showed no life - no handshake completed and no packet came from the gateway - for the
//! handshake timeout (180 s by default; WireGuard sessions last at most 180 s, so a working tunnel handshakes
//! sooner, and the gateway's keep-alives arrive far more often). Session restarts after a silence do not reset
//! that clock. Each registration reports every port's target state (up or down). Failures are retried with
//! exponential backoff and jitter (the loop wakes for each retry on time); the tunnel and everything behind it
//! keep running meanwhile. The RA-TLS certificate is renewed when a quarter of its validity remains, and the
//! gateway policy is reloaded when its file changes: a new policy that refuses the gateway the tunnel was set up
//! with (its claims as verified at that registration) tears the tunnel and the port forwarder down at once, and
//! the agent registers again only with a gateway the new policy accepts. These decisions are the [`crate::supervisor`]'s; the
//! [`crate::registration`] driver does the I/O.
//!
//! [`Agent::serve`] returns `Ok` when the shutdown future completes (after stopping everything in order). If a
//! critical part ends on its own - the registration driver, the tunnel endpoint, the port forwarder or Docker
//! discovery - it logs which and why and returns [`RunError::Stopped`], so the process exits non-zero and its
//! supervisor restarts it.

use std::future::Future;
use std::sync::Arc;

use attestation::policy::{GatewayPolicy, PolicyFile, PolicyFn, PolicyLoadError};
use attestation::ratls::{self, CertOptions, RaTlsIdentity};
use attestation::settings::SettingsError;
use protocol::control::{InstanceId, PortPolicy, PublicKey, RegisterRequest, PROTOCOL_VERSION};
use protocol::tunnel::PrivateKey;

use crate::app_policy::AppPolicyFile;
use crate::config::AgentConfig;
use crate::docker::{DiscoveryConfig, DiscoveryTask};
use crate::registration::{Driver, Forwarding, Registrar};
use crate::state::{StateDir, StateError};
use crate::target::Target;
use crate::tasks::{Ended, Tasks};

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory (instance id) is unusable.
    #[error("state directory")]
    State(#[source] StateError),
    /// The gateway policy did not load.
    #[error("gateway policy")]
    Policy(#[source] PolicyLoadError),
    /// The verifier of gateways (simulated roots, the TDX collateral directory) could not be set up.
    #[error("trust anchors")]
    Verifier(#[source] SettingsError),
    /// No attester for the configured backend.
    #[error("attester")]
    Attester(#[source] SettingsError),
    /// The agent's evidence or RA-TLS certificate could not be produced.
    #[error("ra-tls identity")]
    Identity(#[source] ratls::RaTlsError),
    /// The task producing the identity failed.
    #[error("ra-tls identity: the attestation task failed")]
    IdentityTask(#[source] tokio::task::JoinError),
    /// The TLS client configuration could not be built.
    #[error("tls client configuration")]
    Tls(#[source] rustls::Error),
    /// A critical part of the running agent ended on its own.
    #[error("a critical part of the agent stopped")]
    Stopped(#[source] Ended),
    /// The configured app policy is unreadable, not signed by the app's owner, or for another app.
    #[error("app policy {path}")]
    AppPolicy {
        /// The configured file.
        path: std::path::PathBuf,
        /// Why it is refused.
        #[source]
        source: attestation::owner::OwnerError,
    },
}

/// The agent after boot steps 1 to 3, ready to [`serve`](Agent::serve).
pub struct Agent {
    driver: Driver,
    discovery: Option<DiscoveryTask>,
}

/// Runs the agent until `shutdown` completes: [`build`], then [`Agent::serve`].
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    build(config).await?.serve(shutdown).await
}

/// Boot steps 1 to 3: the instance id, the gateway policy and trust anchors, the RA-TLS identity and the WireGuard
/// key; Docker discovery starts here when a port has a Docker target.
pub async fn build(config: AgentConfig) -> Result<Agent, RunError> {
    tracing::info!(dir = %config.state_dir.display(), "boot 1/5: state directory");
    let state = StateDir::open(&config.state_dir).map_err(RunError::State)?;
    let (instance_id, fresh) = state.instance_id().map_err(RunError::State)?;
    tracing::info!(instance = %instance_id, app = %config.app_id, new = fresh, "instance id");

    tracing::info!(policy = %config.attestation.gateway_policy.display(), "boot 2/5: gateway policy and trust anchors");
    let policy: Arc<PolicyFile<GatewayPolicy>> =
        Arc::new(PolicyFile::load(&config.attestation.gateway_policy).map_err(RunError::Policy)?);
    let a = &config.attestation.settings;
    let verifier = a.verifier().map_err(RunError::Verifier)?.verifier;
    let verifier = Arc::new(verifier);
    let check_policy = policy.clone();
    let gateways_verifier = Arc::new(a.ratls_verifier(
        verifier,
        Arc::new(PolicyFn(move |claims: &attestation::Claims| {
            check_policy.current().check(claims).map(|_| ())
        })),
    ));

    tracing::info!(backend = ?a.backend, "boot 3/5: attesting (RA-TLS certificate) and WireGuard key");
    let attester = a.attester().map_err(RunError::Attester)?;
    let options = CertOptions {
        validity: a.certificate_validity.duration(),
        ..Default::default()
    };
    let identity = tokio::task::spawn_blocking(move || RaTlsIdentity::new(attester, options))
        .await
        .map_err(RunError::IdentityTask)?
        .map_err(RunError::Identity)?;
    let identity = Arc::new(identity);
    let tls = Arc::new(
        ratls::client_config(identity.clone(), gateways_verifier.clone()).map_err(RunError::Tls)?,
    );
    let wg_key = PrivateKey::generate();
    let wg_public = wg_key.public_key();

    let discovery = config
        .ports
        .iter()
        .any(|r| !matches!(r.target, Target::Address { .. }))
        .then(|| {
            tracing::info!(socket = %config.docker.socket.display(),
                "a port has a Docker target: following the Docker engine");
            DiscoveryTask::spawn(DiscoveryConfig {
                socket: config.docker.socket.clone(),
                ..DiscoveryConfig::default()
            })
        });
    let app_policy = config
        .app_policy
        .as_deref()
        .map(|path| {
            AppPolicyFile::load(path, &config.app_id).map_err(|source| RunError::AppPolicy {
                path: path.to_path_buf(),
                source,
            })
        })
        .transpose()?;
    let registrar = Registrar {
        gateways: config.gateways.clone(),
        tls,
        verifier: gateways_verifier,
        request: request(&config, &instance_id, wg_public),
        app_policy,
        timeout: config.registration.attempt_timeout(),
    };
    Ok(Agent {
        driver: Driver {
            registrar,
            wg_key,
            identity,
            policy,
            forwarding: Forwarding::new(discovery.as_ref().map(DiscoveryTask::discovery)),
            config,
        },
        discovery,
    })
}

impl Agent {
    /// Serves until `shutdown` completes (`Ok`) or a critical part ends on its own ([`RunError::Stopped`]); stops
    /// everything before returning.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
        let Agent { driver, discovery } = self;
        let tasks = Tasks::new();
        tasks.spawn_critical_graceful("registration driver", |cancel| async move {
            driver.run(cancel).await.map_err(Into::into)
        });
        let discovery_ended = async {
            match &discovery {
                Some(d) => d.ended().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            _ = shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
            ended = tasks.ended() => Err(ended),
            ended = discovery_ended => Err(ended),
        };
        tasks.shutdown().await;
        if let Some(d) = discovery {
            d.shutdown().await;
        }
        result.map_err(|ended| {
            tracing::error!(part = ended.task, error = %ended.end,
                "a critical part of the agent stopped; exiting");
            RunError::Stopped(ended)
        })
    }
}

fn request(config: &AgentConfig, instance_id: &InstanceId, key: PublicKey) -> RegisterRequest {
    RegisterRequest {
        version: PROTOCOL_VERSION,
        app_id: config.app_id.clone(),
        instance_id: instance_id.clone(),
        wireguard_public_key: key,
        ports: config
            .ports
            .iter()
            .map(|p| PortPolicy {
                port: p.port,
                proxy_protocol: p.proxy_protocol,
                // Unknown until the forwarder runs (it needs the tunnel address from this registration).
                target_state: None,
            })
            .collect(),
        app_policy: None,
    }
}
