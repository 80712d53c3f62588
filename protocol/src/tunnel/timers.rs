//! The timers task, next to `tunnel-tx`: every tick, WireGuard's timers (handshake retries, rekeying, session
//! expiry), persistent keep-alives, the handshake rate limiter's reset, and health bookkeeping.

use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::TunnResult;

use super::config::TIMER_TICK;
use super::peer::Peer;
use super::shared::Shared;
use super::udp::DATAGRAM_CAP;

/// Runs the timers of every peer each [`TIMER_TICK`], for as long as the endpoint runs.
pub(super) async fn task(shared: Arc<Shared>) -> io::Result<()> {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; DATAGRAM_CAP].into_boxed_slice();
    loop {
        tick.tick().await;
        #[cfg(test)]
        if shared
            .panic_in_timers
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            panic!("injected into the timers task");
        }
        shared.rate_limiter.reset_count();
        let peers: Vec<Arc<Peer>> = shared.read_peers().peers().cloned().collect();
        let now = Instant::now();
        let wall = SystemTime::now();
        for peer in &peers {
            run_timers(&shared, peer, &mut buf, now, wall);
        }
    }
}

fn run_timers(shared: &Shared, peer: &Peer, buf: &mut [u8], now: Instant, wall: SystemTime) {
    let mut st = peer.lock();
    let endpoint = st.endpoint;
    let send = |datagram: &[u8]| match endpoint {
        Some(to) => shared.send_now(datagram, to),
        None => false,
    };
    match st.tunn.update_timers(buf) {
        TunnResult::WriteToNetwork(datagram) => {
            if send(datagram) {
                st.last_sent = now;
            }
        }
        TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
        TunnResult::Err(e) => tracing::debug!(peer = %peer.key, error = ?e, "timer error"),
        TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
    }
    st.refresh_handshake(wall);
    let (Some(keepalive), Some(_)) = (st.keepalive, endpoint) else {
        return;
    };
    // Renew an idle session that keep-alives hold open, as WireGuard does when sending after
    // REKEY_AFTER_TIME, so the handshake time stays fresh for health checks.
    let stale = st
        .tunn
        .time_since_last_handshake()
        .is_some_and(|age| age >= shared.config.rekey_after);
    if stale {
        if let TunnResult::WriteToNetwork(init) = st.tunn.format_handshake_initiation(buf, false) {
            if send(init) {
                st.last_sent = now;
            }
        }
    }
    if now.duration_since(st.last_sent) >= keepalive {
        // Without a session this starts a handshake instead, which is what an idle tunnel needs.
        if let TunnResult::WriteToNetwork(datagram) = st.tunn.encapsulate(&[], buf) {
            if send(datagram) {
                st.last_sent = now;
            }
        }
    }
}
