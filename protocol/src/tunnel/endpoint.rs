//! The endpoint: owns the UDP socket, the TUN device, the peer table and the three tasks that move packets.
//!
//! # Threads, ownership and shutdown
//!
//! The data plane runs on two threads of its own, each with a single-threaded tokio runtime, so a packet is
//! handled by the thread the kernel wakes (no hand-off between threads) and the data plane does not compete
//! with the embedding program's tasks:
//! - **`tunnel-rx`**: UDP → decrypt → isolation checks → TUN (batches of up to 64 datagrams per `recvmmsg`);
//! - **`tunnel-tx`**: TUN → encrypt → UDP (every queued TUN packet or super-segment, then one `sendmmsg`),
//!   and next to it the **timers** task: every 250 ms, WireGuard's timers (handshake retries, rekeying,
//!   session expiry), persistent keep-alives, the handshake rate limiter's reset, and health bookkeeping.
//!
//! The [`Endpoint`] owns the threads. [`Endpoint::shutdown`] (or a [`ShutdownHandle`]) asks them to stop
//! and waits for them; dropping the `Endpoint` asks them to stop without waiting (they finish the batch in
//! hand and exit within milliseconds). If either thread fails (an unexpected socket or device error) it
//! stops the whole endpoint, which [`Endpoint::stopped`] reports. The TUN device disappears with its address
//! and routes once the threads and the `Endpoint` are gone (it is not persistent). Peer changes and
//! snapshots are synchronous and may be called from any thread while the endpoint runs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use boringtun::x25519;
use socket2::{SockAddr, Socket};
use tokio::sync::watch;

use super::config::{EndpointConfig, PeerConfig, TIMER_TICK};
use super::error::TunnelError;
use super::filter::{reset_for, InboundFilter, Verdict, RESET_LEN};
use super::gro::{Coalescer, FrameSink};
use super::ip::ipv4_addrs;
use super::key::PublicKey;
use super::offload;
use super::peer::{Peer, PeerTable};
use super::stats::{EndpointCounters, EndpointStats, PeerDrop, PeerStats};
use super::tun::Tun;
use super::udp::{watch_fd, Batch, BATCH, DATAGRAM_CAP, SEND_CAPACITY};

/// The largest read from a TUN device with offloads: a 64 KiB IP packet behind its virtio header.
const MAX_FRAME: usize = offload::VNET_HDR_LEN + 65_535;

/// State shared by the endpoint's handle and its tasks.
struct Shared {
    config: EndpointConfig,
    public: x25519::PublicKey,
    public_key: PublicKey,
    udp: Socket,
    udp_v6: bool,
    tun: Tun,
    tun_name: String,
    local_addr: SocketAddr,
    peers: RwLock<PeerTable>,
    /// The inbound filter in force (starts as the configured one; replaced at run time).
    filter: RwLock<Option<InboundFilter>>,
    rate_limiter: Arc<RateLimiter>,
    counters: EndpointCounters,
}

impl Shared {
    fn read_peers(&self) -> RwLockReadGuard<'_, PeerTable> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_peers(&self) -> RwLockWriteGuard<'_, PeerTable> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_filter(&self) -> RwLockReadGuard<'_, Option<InboundFilter>> {
        self.filter.read().unwrap_or_else(|p| p.into_inner())
    }

    fn dest(&self, addr: SocketAddr) -> SockAddr {
        match (addr, self.udp_v6) {
            (SocketAddr::V4(v4), true) => SockAddr::from(SocketAddr::new(
                IpAddr::V6(v4.ip().to_ipv6_mapped()),
                v4.port(),
            )),
            _ => SockAddr::from(addr),
        }
    }

    /// Sends one datagram right away, outside the batched paths (handshakes, cookies, timers).
    /// Returns false if the kernel did not take it; the WireGuard timers retry handshakes.
    fn send_now(&self, datagram: &[u8], to: SocketAddr) -> bool {
        match self.udp.send_to(datagram, &self.dest(to)) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(%to, error = %e, "UDP send failed");
                false
            }
        }
    }
}

/// Asks a running endpoint to stop; cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Asks the endpoint's threads to stop. They finish the batch in hand and exit.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A running WireGuard endpoint. See the module documentation for its tasks and shutdown.
pub struct Endpoint {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("public_key", &self.shared.public_key)
            .field("tun", &self.shared.tun_name)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Creates the TUN device (with its address, MTU and link up) and the UDP socket, then starts the
    /// endpoint's threads. Needs `CAP_NET_ADMIN`.
    pub async fn start(config: EndpointConfig) -> Result<Endpoint, TunnelError> {
        config.validate()?;
        let tun = Tun::create(
            &config.tun_name,
            config.address,
            config.prefix_len,
            config.mtu,
            config.offload,
        )?;
        let tun_name = tun.name().to_string();
        let udp = super::udp::bind(config.listen)?;
        let local_addr = udp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(config.listen);
        let public = x25519::PublicKey::from(config.private_key.secret());
        let rate_limiter = Arc::new(RateLimiter::new(&public, config.handshake_rate_limit));
        let shared = Arc::new(Shared {
            public_key: config.private_key.public_key(),
            public,
            udp_v6: config.listen.is_ipv6(),
            udp,
            tun,
            tun_name,
            local_addr,
            peers: RwLock::new(PeerTable::default()),
            filter: RwLock::new(config.inbound_filter.clone()),
            rate_limiter,
            counters: EndpointCounters::default(),
            config,
        });
        let (stop, _) = watch::channel(false);
        let mut endpoint = Endpoint {
            shared: Arc::clone(&shared),
            stop: stop.clone(),
            threads: Vec::with_capacity(2),
        };
        let rx = {
            let (shared, stop) = (Arc::clone(&shared), stop.clone());
            spawn_thread("tunnel-rx", stop.clone(), move || {
                receive_task(shared, stop)
            })
        };
        endpoint
            .threads
            .push(rx.map_err(|e| thread_error(&shared, e))?);
        let tx = {
            let (shared, stop) = (Arc::clone(&shared), stop.clone());
            spawn_thread("tunnel-tx", stop.clone(), move || async move {
                let timers = tokio::spawn(timer_task(Arc::clone(&shared), stop.clone()));
                send_task(shared, stop).await;
                let _ = timers.await;
            })
        };
        endpoint
            .threads
            .push(tx.map_err(|e| thread_error(&shared, e))?);
        tracing::info!(
            tun = %shared.tun_name,
            listen = %shared.local_addr,
            address = %shared.config.address,
            public_key = %shared.public_key,
            "WireGuard endpoint started"
        );
        Ok(endpoint)
    }

    /// This endpoint's public key.
    pub fn public_key(&self) -> PublicKey {
        self.shared.public_key
    }

    /// The UDP address the endpoint listens on (with the actual port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.shared.tun_name
    }

    /// This endpoint's tunnel address.
    pub fn address(&self) -> Ipv4Addr {
        self.shared.config.address
    }

    /// Adds a peer at run time; the other peers are not disturbed.
    pub fn add_peer(&self, peer: PeerConfig) -> Result<(), TunnelError> {
        let s = &self.shared;
        s.write_peers().insert(
            &peer,
            &s.config.private_key,
            s.config.address,
            &s.rate_limiter,
        )?;
        tracing::info!(public_key = %peer.public_key, allowed_ip = %peer.allowed_ip, "peer added");
        Ok(())
    }

    /// Changes a peer's tunnel address, endpoint (when given) or keep-alive without ending its session.
    pub fn update_peer(&self, peer: PeerConfig) -> Result<(), TunnelError> {
        self.shared
            .write_peers()
            .update(&peer, self.shared.config.address)?;
        tracing::info!(public_key = %peer.public_key, allowed_ip = %peer.allowed_ip, "peer updated");
        Ok(())
    }

    /// Removes a peer: from now on its datagrams are dropped and nothing is sent to it. Returns its final
    /// counters.
    pub fn remove_peer(&self, key: &PublicKey) -> Result<PeerStats, TunnelError> {
        let peer = self.shared.write_peers().remove(key)?;
        tracing::info!(public_key = %key, "peer removed");
        Ok(peer.snapshot(self.shared.config.health_window, SystemTime::now()))
    }

    /// Replaces the inbound filter (None: let in everything that passes the isolation checks). Takes effect
    /// from the next batch of datagrams; established connections to ports no longer let in stop receiving.
    pub fn set_inbound_filter(&self, filter: Option<InboundFilter>) {
        match &filter {
            Some(f) => tracing::info!(tcp_ports = ?f.tcp_ports().collect::<Vec<_>>(),
                icmp_echo = f.icmp_echo(), "inbound filter set"),
            None => tracing::info!("inbound filter removed"),
        }
        *self
            .shared
            .filter
            .write()
            .unwrap_or_else(|p| p.into_inner()) = filter;
    }

    /// The inbound filter in force.
    pub fn inbound_filter(&self) -> Option<InboundFilter> {
        self.shared.read_filter().clone()
    }

    /// A snapshot of one peer.
    pub fn peer(&self, key: &PublicKey) -> Option<PeerStats> {
        let peer = self.shared.read_peers().by_key(key).cloned()?;
        Some(peer.snapshot(self.shared.config.health_window, SystemTime::now()))
    }

    /// A snapshot of every peer, sorted by tunnel address.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let peers: Vec<Arc<Peer>> = self.shared.read_peers().peers().cloned().collect();
        let now = SystemTime::now();
        let mut stats: Vec<PeerStats> = peers
            .iter()
            .map(|p| p.snapshot(self.shared.config.health_window, now))
            .collect();
        stats.sort_by_key(|s| s.allowed_ip);
        stats
    }

    /// Whether the peer completed a handshake within the health window (None for an unknown peer).
    pub fn is_healthy(&self, key: &PublicKey) -> Option<bool> {
        self.peer(key).map(|s| s.healthy)
    }

    /// A snapshot of every peer and of the drops no peer can be blamed for.
    pub fn stats(&self) -> EndpointStats {
        self.shared.counters.snapshot(self.peer_stats())
    }

    /// A handle that can stop the endpoint from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Stops the threads and waits for them; the TUN device is removed once this returns.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a tunnel thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "waiting for the tunnel threads failed");
        }
    }

    /// Waits until the endpoint stops: after a [`ShutdownHandle::shutdown`], or if a task fails.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

fn thread_error(shared: &Shared, source: io::Error) -> TunnelError {
    TunnelError::Tun {
        name: shared.tun_name.clone(),
        action: "starting a data-plane thread",
        source,
    }
}

/// Runs `task` on a new thread with its own single-threaded runtime; any failure stops the endpoint.
fn spawn_thread<F, Fut>(
    name: &'static str,
    stop: watch::Sender<bool>,
    task: F,
) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(task()),
            Err(e) => {
                tracing::error!(thread = name, error = %e, "cannot build the thread's runtime; stopping the endpoint");
                stop.send_replace(true);
            }
        }
    })
}

/// Runs `work` until it fails or the endpoint is asked to stop; a failure stops the whole endpoint.
async fn until_stopped(
    name: &'static str,
    stop: watch::Sender<bool>,
    work: impl std::future::Future<Output = io::Result<()>>,
) {
    let mut stopped = stop.subscribe();
    tokio::select! {
        _ = stopped.wait_for(|stop| *stop) => {}
        result = work => {
            if let Err(e) = result {
                tracing::error!(task = name, error = %e, "tunnel task failed; stopping the endpoint");
            }
            stop.send_replace(true);
        }
    }
}

async fn receive_task(shared: Arc<Shared>, stop: watch::Sender<bool>) {
    until_stopped("receive", stop, async {
        let udp = watch_fd(shared.udp.as_fd())?;
        let mut batch = Batch::new(BATCH);
        let mut out = vec![0u8; DATAGRAM_CAP].into_boxed_slice();
        // With offloads, the TCP segments of a batch are merged before they are written (see `gro`).
        let mut gro = shared.tun.has_vnet_hdr().then(Coalescer::new);
        loop {
            let n = batch.recv(&udp).await?;
            let wall = SystemTime::now();
            let peers = shared.read_peers();
            let filter = shared.read_filter();
            for i in 0..n {
                let (datagram, from) = batch.received(i);
                let Some(from) = from else { continue };
                receive_one(
                    &shared,
                    &peers,
                    filter.as_ref(),
                    datagram,
                    from,
                    &mut out,
                    wall,
                    gro.as_mut(),
                );
            }
            if let Some(gro) = gro.as_mut() {
                gro.flush(&mut TunSink(&shared));
            }
        }
    })
    .await;
}

/// WireGuard's cookie reply message type.
const COOKIE_REPLY: u32 = 3;
/// WireGuard's transport data message type.
const DATA_MESSAGE: u32 = 4;
/// Bytes a data message adds to the packet it carries (header and authentication tag).
const DATA_OVERHEAD: usize = 32;

fn message_type(datagram: &[u8]) -> Option<u32> {
    let head: [u8; 4] = datagram.get(0..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(head))
}

/// The receiver index of a handshake response (after the sender's index), cookie reply or data message.
fn receiver_index(message_type: u32, datagram: &[u8]) -> Option<u32> {
    let at = if message_type == 2 { 8 } else { 4 };
    let idx: [u8; 4] = datagram.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(idx))
}

/// Finds the peer a datagram belongs to, answering with a cookie when handshakes come too fast.
fn identify<'t>(
    shared: &Shared,
    peers: &'t PeerTable,
    datagram: &[u8],
    from: SocketAddr,
    out: &mut [u8],
) -> Option<&'t Arc<Peer>> {
    let counters = &shared.counters;
    match message_type(datagram) {
        Some(1) => match shared
            .rate_limiter
            .verify_packet(Some(from.ip()), datagram, out)
        {
            Ok(Packet::HandshakeInit(init)) => {
                match parse_handshake_anon(
                    shared.config.private_key.secret(),
                    &shared.public,
                    &init,
                ) {
                    Ok(half) => {
                        let peer = peers.by_key(&PublicKey::from_bytes(half.peer_static_public));
                        if peer.is_none() {
                            EndpointCounters::bump(&counters.unknown_peer);
                        }
                        peer
                    }
                    Err(_) => {
                        EndpointCounters::bump(&counters.malformed);
                        None
                    }
                }
            }
            Err(TunnResult::WriteToNetwork(cookie)) => {
                EndpointCounters::bump(&counters.cookie_replies);
                shared.send_now(cookie, from);
                None
            }
            Ok(_) | Err(_) => {
                EndpointCounters::bump(&counters.malformed);
                None
            }
        },
        Some(ty @ 2..=4) => {
            let peer = receiver_index(ty, datagram).and_then(|idx| peers.by_receiver_index(idx));
            if peer.is_none() {
                EndpointCounters::bump(&counters.unknown_peer);
            }
            peer
        }
        _ => {
            EndpointCounters::bump(&counters.malformed);
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn receive_one(
    shared: &Shared,
    peers: &PeerTable,
    filter: Option<&InboundFilter>,
    datagram: &[u8],
    from: SocketAddr,
    out: &mut [u8],
    wall: SystemTime,
    gro: Option<&mut Coalescer>,
) {
    let Some(peer) = identify(shared, peers, datagram, from, out) else {
        return;
    };
    let is_cookie = message_type(datagram) == Some(COOKIE_REPLY);
    let mut st = peer.lock();
    let counters = &peer.counters;
    let mut reset = None;
    match st.tunn.decapsulate(Some(from.ip()), datagram, out) {
        TunnResult::Done => {}
        TunnResult::Err(e) => {
            tracing::trace!(peer = %peer.key, error = ?e, "datagram rejected");
            if !matches!(e, WireGuardError::UnderLoad) {
                counters.drop(PeerDrop::Rejected);
            }
            return;
        }
        TunnResult::WriteToNetwork(reply) if message_type(reply) == Some(COOKIE_REPLY) => {
            // Handshakes are coming too fast: the sender must prove its address first. Nothing about this
            // datagram is authenticated yet, so the peer's endpoint stays where it is.
            EndpointCounters::bump(&shared.counters.cookie_replies);
            shared.send_now(reply, from);
            return;
        }
        TunnResult::WriteToNetwork(reply) => {
            // A handshake answer or the keep-alive that confirms a session; then whatever waited for it.
            shared.send_now(reply, from);
            st.last_sent = Instant::now();
            while let TunnResult::WriteToNetwork(queued) = st.tunn.decapsulate(None, &[], out) {
                if shared.send_now(queued, from) {
                    let carried = queued.len().saturating_sub(DATA_OVERHEAD);
                    if carried > 0 {
                        counters.sent(carried);
                    }
                } else {
                    counters.drop(PeerDrop::WriteFailed);
                }
            }
        }
        TunnResult::WriteToTunnelV4(packet, _) => {
            reset = deliver(shared, peer, st.allowed_ip, packet, filter, gro);
        }
        TunnResult::WriteToTunnelV6(..) => counters.drop(PeerDrop::NotIpv4),
    }
    if let Some(rst) = reset {
        // Refuse the connection attempt the way a closed port would, through the session it came in on.
        match st.tunn.encapsulate(&rst, out) {
            TunnResult::WriteToNetwork(datagram) if shared.send_now(datagram, from) => {
                counters.sent(RESET_LEN);
                st.last_sent = Instant::now();
            }
            TunnResult::WriteToNetwork(_) => counters.drop(PeerDrop::WriteFailed),
            _ => {}
        }
    }
    if !is_cookie {
        // The datagram was authenticated under the peer's key: follow the peer to its current address.
        st.endpoint = Some(from);
        counters.authenticated(wall);
    }
}

/// The isolation rule: deliver only packets from the peer's own address to this endpoint's address; then the
/// inbound filter, if any. Returns the reset to send back when the filter refuses a connection attempt.
fn deliver(
    shared: &Shared,
    peer: &Peer,
    allowed: Ipv4Addr,
    packet: &[u8],
    filter: Option<&InboundFilter>,
    gro: Option<&mut Coalescer>,
) -> Option<[u8; RESET_LEN]> {
    let counters = &peer.counters;
    let Some((src, dst)) = ipv4_addrs(packet) else {
        counters.drop(PeerDrop::NotIpv4);
        return None;
    };
    if src != allowed {
        counters.drop(PeerDrop::SpoofedSource);
        return None;
    }
    if dst != shared.config.address {
        counters.drop(PeerDrop::WrongDestination);
        return None;
    }
    match filter.map_or(Verdict::Pass, |f| f.check(packet)) {
        Verdict::Pass => {}
        Verdict::Drop => {
            counters.drop(PeerDrop::Filtered);
            return None;
        }
        Verdict::Reset => {
            counters.drop(PeerDrop::Refused);
            return reset_for(packet);
        }
    }
    if let Some(gro) = gro {
        // Write failures of merged frames are counted for the endpoint (`tun_write_failed`).
        gro.push(packet, &mut TunSink(shared));
        counters.received(packet.len());
        return None;
    }
    match shared.tun.write(packet) {
        Ok(_) => counters.received(packet.len()),
        Err(e) => {
            tracing::debug!(error = %e, "TUN write failed");
            counters.drop(PeerDrop::WriteFailed);
        }
    }
    None
}

/// Writes the coalescer's frames to the TUN device.
struct TunSink<'a>(&'a Shared);

impl FrameSink for TunSink<'_> {
    fn write_frame(&mut self, hdr: &[u8; offload::VNET_HDR_LEN], packet: &[u8]) {
        if let Err(e) = self.0.tun.write_frame(hdr, packet) {
            tracing::debug!(error = %e, "TUN write failed");
            EndpointCounters::bump(&self.0.counters.tun_write_failed);
        }
    }
}

async fn send_task(shared: Arc<Shared>, stop: watch::Sender<bool>) {
    until_stopped("send", stop, async {
        let tun = watch_fd(shared.tun.as_fd())?;
        let udp = watch_fd(shared.udp.as_fd())?;
        let mut batch = Batch::new(SEND_CAPACITY);
        let vnet_hdr = shared.tun.has_vnet_hdr();
        // With offloads a read is a whole TCP super-segment (up to 64 KiB) behind its virtio header.
        let mut frame =
            vec![0u8; if vnet_hdr { MAX_FRAME } else { DATAGRAM_CAP }].into_boxed_slice();
        let mut scratch = vec![0u8; DATAGRAM_CAP].into_boxed_slice();
        // Leave room for WireGuard's 32 bytes in the datagram buffer.
        let max_packet = DATAGRAM_CAP - DATA_OVERHEAD;
        let frame_len = if vnet_hdr { frame.len() } else { max_packet };
        loop {
            let mut ready = tun.readable().await?;
            {
                let peers = shared.read_peers();
                while !batch.is_full() {
                    let n = match shared.tun.read(&mut frame[..frame_len]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ready.clear_ready();
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if !vnet_hdr {
                        encapsulate_one(&shared, &peers, &frame[..n], &mut batch);
                        continue;
                    }
                    let split = offload::split(&frame[..n], &mut scratch, |packet| {
                        if packet.len() > max_packet {
                            EndpointCounters::bump(&shared.counters.malformed);
                        } else if batch.has_room() {
                            encapsulate_one(&shared, &peers, packet, &mut batch);
                        } else {
                            // Only a super-segment with an MSS below what the MTU range allows gets here.
                            EndpointCounters::bump(&shared.counters.malformed);
                        }
                    });
                    if let Err(e) = split {
                        tracing::debug!(error = ?e, "unusable packet from the TUN device");
                        EndpointCounters::bump(&shared.counters.malformed);
                    }
                }
            }
            drop(ready);
            if batch.len() > 0 {
                batch.send(&udp).await?;
            }
        }
    })
    .await;
}

fn encapsulate_one(shared: &Shared, peers: &PeerTable, packet: &[u8], batch: &mut Batch) {
    let Some((_, dst)) = ipv4_addrs(packet) else {
        // IPv6 router solicitations and the like: the tunnel carries IPv4 only.
        EndpointCounters::bump(&shared.counters.no_route);
        return;
    };
    let Some(peer) = peers.by_addr(dst) else {
        EndpointCounters::bump(&shared.counters.no_route);
        return;
    };
    let mut st = peer.lock();
    let Some(endpoint) = st.endpoint else {
        peer.counters.drop(PeerDrop::NoEndpoint);
        return;
    };
    match st.tunn.encapsulate(packet, batch.next_buf()) {
        TunnResult::WriteToNetwork(datagram) => {
            let len = datagram.len();
            let is_data = message_type(datagram) == Some(DATA_MESSAGE);
            batch.commit(len, endpoint, shared.udp_v6);
            st.last_sent = Instant::now();
            // A handshake initiation carries no data: the packet waits in the peer's queue for the session.
            if is_data {
                peer.counters.sent(packet.len());
            }
        }
        TunnResult::Done => {}
        TunnResult::Err(e) => {
            tracing::debug!(peer = %peer.key, error = ?e, "encapsulation failed");
            peer.counters.drop(PeerDrop::Rejected);
        }
        TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
    }
}

async fn timer_task(shared: Arc<Shared>, stop: watch::Sender<bool>) {
    until_stopped("timers", stop, async {
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; DATAGRAM_CAP].into_boxed_slice();
        loop {
            tick.tick().await;
            shared.rate_limiter.reset_count();
            let peers: Vec<Arc<Peer>> = shared.read_peers().peers().cloned().collect();
            let now = Instant::now();
            let wall = SystemTime::now();
            for peer in &peers {
                run_timers(&shared, peer, &mut buf, now, wall);
            }
        }
    })
    .await;
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
