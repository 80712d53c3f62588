//! Following the Docker engine: connect (negotiating the API version), list the running containers, then
//! re-inspect a container on every event that can change where connections go; on failure, back off and start
//! over.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::{InspectContainerOptions, ListContainersOptions};
use bollard::models::EventMessage;
use bollard::system::EventsOptions;
use bollard::{ClientVersion, Docker};
use futures::StreamExt;

use super::view::Shared;
use super::{Container, DiscoveryConfig, EngineError, EngineState};
use crate::backoff::Backoff;

/// The first reconnection delay after the engine became unreachable.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Follows the engine for as long as the task runs, reconnecting with backoff.
pub(super) async fn run(shared: Arc<Shared>, config: DiscoveryConfig) {
    let mut backoff = Backoff::new(FIRST_RETRY, config.max_backoff);
    let mut reported = false;
    loop {
        let result = follow(&shared, &config, &mut backoff, &mut reported).await;
        let Err(e) = result;
        let error = e.to_string();
        if !reported {
            tracing::error!(
                socket = %config.socket.display(),
                error = %error,
                "Docker engine unreachable: forwarding to the containers known before, retrying"
            );
            reported = true;
        } else {
            tracing::debug!(error = %error, "Docker engine still unreachable");
        }
        shared.update(|s| s.engine = EngineState::Unreachable { error });
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Connects, lists and follows events until something fails. Only returns on error.
async fn follow(
    shared: &Shared,
    config: &DiscoveryConfig,
    backoff: &mut Backoff,
    reported: &mut bool,
) -> Result<Infallible, EngineError> {
    let api = |source| EngineError::Api {
        socket: config.socket.clone(),
        source,
    };
    let docker = connect(&config.socket, config.request_timeout).await?;
    // Events from one second before the listing, so nothing between the two is missed (replays are harmless).
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    let mut filters = HashMap::new();
    filters.insert(
        "type".to_owned(),
        vec!["container".to_owned(), "network".to_owned()],
    );
    let mut events = docker
        .events(Some(EventsOptions::<String> {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters,
        }))
        .boxed();
    resync(shared, &docker).await.map_err(api)?;
    if *reported {
        tracing::info!(socket = %config.socket.display(), "Docker engine reachable again");
        *reported = false;
    }
    backoff.reset();
    let mut resync_timer = tokio::time::interval(config.resync_interval);
    resync_timer.tick().await;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if let Some(id) = affected_container(&event) {
                        refresh(shared, &docker, &id).await.map_err(api)?;
                    }
                }
                Some(Err(e)) => return Err(api(e)),
                None => return Err(EngineError::EventsEnded(config.socket.clone())),
            },
            _ = resync_timer.tick() => resync(shared, &docker).await.map_err(api)?,
        }
    }
}

/// Connects with the newest API version both sides speak.
async fn connect(socket: &Path, timeout: Duration) -> Result<Docker, EngineError> {
    let path = socket
        .to_str()
        .ok_or_else(|| EngineError::SocketPath(socket.to_owned()))?;
    let api = |source| EngineError::Api {
        socket: socket.to_owned(),
        source,
    };
    let secs = timeout.as_secs().max(1);
    let docker =
        Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION).map_err(api)?;
    match docker.negotiate_version().await {
        Ok(docker) => Ok(docker),
        // Engines older than the client's default refuse even `/version` at that version: start from API 1.41
        // (Docker 20.10) and negotiate from there.
        Err(bollard::errors::Error::DockerResponseServerError { message, .. })
            if message.contains("too new") =>
        {
            let old = ClientVersion {
                major_version: 1,
                minor_version: 41,
            };
            Docker::connect_with_unix(path, secs, &old)
                .map_err(api)?
                .negotiate_version()
                .await
                .map_err(api)
        }
        Err(e) => Err(api(e)),
    }
}

/// Replaces the whole view with a fresh listing.
async fn resync(shared: &Shared, docker: &Docker) -> Result<(), bollard::errors::Error> {
    let list = docker
        .list_containers(Some(ListContainersOptions::<String> {
            all: false,
            ..Default::default()
        }))
        .await?;
    let containers: BTreeMap<String, Container> = list
        .iter()
        .filter_map(Container::from_summary)
        .map(|c| (c.id.clone(), c))
        .collect();
    tracing::debug!(count = containers.len(), "listed running containers");
    shared.update(|s| {
        s.containers = containers;
        s.engine = EngineState::Reachable;
    });
    Ok(())
}

/// Inspects one container again after an event and updates (or removes) it.
async fn refresh(shared: &Shared, docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let container = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => Container::from_inspect(&c),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => return Err(e),
    };
    match &container {
        Some(c) => {
            tracing::debug!(id, name = %c.name, addresses = ?c.addresses, "container running")
        }
        None => tracing::debug!(id, "container not running"),
    }
    shared.update(|s| {
        match container {
            Some(c) => s.containers.insert(c.id.clone(), c),
            None => s.containers.remove(id),
        };
    });
    Ok(())
}

/// The container an event is about, if it can change where connections go.
pub(super) fn affected_container(event: &EventMessage) -> Option<String> {
    use bollard::models::EventMessageTypeEnum as Type;
    let actor = event.actor.as_ref()?;
    let action = event.action.as_deref().unwrap_or_default();
    match event.typ? {
        Type::CONTAINER => {
            // `exec_*`, `attach`, `top`, `health_status: ...` and similar do not change addresses or state.
            let relevant = matches!(
                action,
                "start"
                    | "restart"
                    | "stop"
                    | "die"
                    | "kill"
                    | "pause"
                    | "unpause"
                    | "destroy"
                    | "rename"
                    | "update"
                    | "oom"
            );
            relevant.then(|| actor.id.clone()).flatten()
        }
        Type::NETWORK if action == "connect" || action == "disconnect" => {
            actor.attributes.as_ref()?.get("container").cloned()
        }
        _ => None,
    }
}
