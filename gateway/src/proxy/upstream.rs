//! Choosing and connecting to an upstream instance: "connect top N".
//!
//! Candidates are shuffled (no session affinity). The first attempt starts at once; another starts whenever the
//! stagger delay passes without a winner, or at once when an attempt fails, with at most N attempts in flight.
//! The first connection established wins and the attempts still in flight are dropped, which cancels them. A
//! refused or timed-out attempt moves on to the next candidate, so one client connection survives dead
//! instances as long as one candidate answers.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::directory::Candidate;

/// How connection attempts are made.
#[derive(Debug, Clone, Copy)]
pub struct ConnectPolicy {
    /// At most this many attempts in flight at once ("top N").
    pub parallel: usize,
    /// Delay before starting the next attempt while earlier ones are still pending.
    pub stagger: Duration,
    /// Limit for a single connection attempt.
    pub attempt_timeout: Duration,
    /// Limit for the whole choice, over all attempts.
    pub total_timeout: Duration,
}

/// A connected upstream.
#[derive(Debug)]
pub struct Connected {
    /// The open connection.
    pub stream: TcpStream,
    /// The candidate it goes to.
    pub candidate: Candidate,
    /// Time from the first attempt to this connection.
    pub elapsed: Duration,
    /// Attempts that failed before this one won.
    pub failed_attempts: usize,
}

/// Why no upstream could be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// There was no candidate to try.
    #[error("no healthy instance exposes this port")]
    NoCandidates,
    /// Every candidate failed.
    #[error("all {attempts} connection attempts failed; last: {last}")]
    AllFailed {
        /// The number of attempts made.
        attempts: usize,
        /// The last failure.
        last: String,
    },
    /// The overall connect deadline passed.
    #[error("no instance connected within {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// A short stable name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::NoCandidates => "no_healthy_instance",
            ConnectError::AllFailed { .. } => "upstream_unreachable",
            ConnectError::Timeout(_) => "upstream_timeout",
        }
    }
}

async fn attempt(
    candidate: Candidate,
    timeout: Duration,
) -> Result<(TcpStream, Candidate), (Candidate, String)> {
    match tokio::time::timeout(timeout, TcpStream::connect(candidate.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok((stream, candidate))
        }
        Ok(Err(e)) => Err((candidate, e.to_string())),
        Err(_) => Err((candidate, format!("connect timed out after {timeout:?}"))),
    }
}

/// Shuffles `candidates` and races connection attempts to them under `policy`.
pub async fn connect(
    mut candidates: Vec<Candidate>,
    policy: ConnectPolicy,
) -> Result<Connected, ConnectError> {
    candidates.shuffle(&mut rand::thread_rng());
    connect_in_order(candidates, policy).await
}

/// Races connection attempts to `candidates` in the given order under `policy`.
pub async fn connect_in_order(
    candidates: Vec<Candidate>,
    policy: ConnectPolicy,
) -> Result<Connected, ConnectError> {
    if candidates.is_empty() {
        return Err(ConnectError::NoCandidates);
    }
    let started = Instant::now();
    match tokio::time::timeout(policy.total_timeout, race(candidates, policy, started)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(policy.total_timeout)),
    }
}

async fn race(
    candidates: Vec<Candidate>,
    policy: ConnectPolicy,
    started: Instant,
) -> Result<Connected, ConnectError> {
    let parallel = policy.parallel.max(1);
    let mut pending = candidates.into_iter();
    // Dropping the set (on return or cancellation) aborts the attempts still in flight.
    let mut in_flight = JoinSet::new();
    let mut failed = 0usize;
    let mut last_error: String;
    if let Some(c) = pending.next() {
        in_flight.spawn(attempt(c, policy.attempt_timeout));
    }
    loop {
        let stagger = tokio::time::sleep(policy.stagger);
        tokio::pin!(stagger);
        let can_start_more = in_flight.len() < parallel && pending.len() > 0;
        tokio::select! {
            outcome = in_flight.join_next(), if !in_flight.is_empty() => match outcome.map(|joined| joined.map_err(|e| e.to_string())) {
                Some(Ok(Ok((stream, candidate)))) => {
                    return Ok(Connected { stream, candidate, elapsed: started.elapsed(), failed_attempts: failed });
                }
                Some(Ok(Err((candidate, error)))) => {
                    tracing::debug!(instance = %candidate.instance_id, addr = %candidate.addr, %error, "upstream attempt failed");
                    failed += 1;
                    last_error = format!("{} ({}): {error}", candidate.instance_id, candidate.addr);
                    if let Some(c) = pending.next() {
                        in_flight.spawn(attempt(c, policy.attempt_timeout));
                    } else if in_flight.is_empty() {
                        return Err(ConnectError::AllFailed { attempts: failed, last: last_error });
                    }
                }
                Some(Err(join_error)) => {
                    failed += 1;
                    last_error = format!("connection attempt task failed: {join_error}");
                    if in_flight.is_empty() && pending.len() == 0 {
                        return Err(ConnectError::AllFailed { attempts: failed, last: last_error });
                    }
                }
                None => {}
            },
            _ = &mut stagger, if can_start_more => {
                if let Some(c) = pending.next() {
                    in_flight.spawn(attempt(c, policy.attempt_timeout));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    fn candidate(id: &str, addr: SocketAddr) -> Candidate {
        Candidate {
            instance_id: id.into(),
            addr,
            proxy_protocol: false,
            since_handshake: Some(Duration::ZERO),
        }
    }

    fn policy() -> ConnectPolicy {
        ConnectPolicy {
            parallel: 3,
            stagger: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
        }
    }

    /// An address whose port nobody listens on: connecting is refused at once.
    async fn refused_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    /// A listener that never accepts and has a full backlog, so a connect attempt hangs.
    fn blackhole() -> (socket2::Socket, SocketAddr, Vec<std::net::TcpStream>) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue so further SYNs are dropped.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                fillers.push(c);
            }
        }
        (s, addr, fillers)
    }

    #[tokio::test]
    async fn refused_candidates_move_on_at_once() {
        let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let list = vec![
            candidate("dead1", refused_addr().await),
            candidate("dead2", refused_addr().await),
            candidate("good", good.local_addr().unwrap()),
        ];
        let c = connect_in_order(list, policy()).await.unwrap();
        assert_eq!(c.candidate.instance_id, "good");
        assert_eq!(c.failed_attempts, 2);
        assert!(c.elapsed < Duration::from_millis(100), "{:?}", c.elapsed);
    }

    #[tokio::test]
    async fn a_blackholed_candidate_costs_at_most_the_stagger() {
        let (_hole, hole_addr, _fill) = blackhole();
        let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let list = vec![
            candidate("hole", hole_addr),
            candidate("good", good.local_addr().unwrap()),
        ];
        let c = connect_in_order(list, policy()).await.unwrap();
        assert_eq!(c.candidate.instance_id, "good");
        assert!(
            c.elapsed >= Duration::from_millis(90) && c.elapsed < Duration::from_millis(300),
            "{:?}",
            c.elapsed
        );
    }

    #[tokio::test]
    async fn all_failing_is_an_error_naming_the_last_failure() {
        let list = vec![
            candidate("dead1", refused_addr().await),
            candidate("dead2", refused_addr().await),
        ];
        let err = connect_in_order(list, policy()).await.unwrap_err();
        assert!(
            matches!(err, ConnectError::AllFailed { attempts: 2, .. }),
            "{err}"
        );
        assert!(matches!(
            connect(vec![], policy()).await,
            Err(ConnectError::NoCandidates)
        ));
    }

    #[tokio::test]
    async fn overall_timeout_bounds_blackholes() {
        let (_hole, hole_addr, _fill) = blackhole();
        let p = ConnectPolicy {
            total_timeout: Duration::from_millis(300),
            ..policy()
        };
        let started = Instant::now();
        let err = connect_in_order(vec![candidate("hole", hole_addr)], p)
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
