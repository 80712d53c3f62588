//! The `tunnel-rx` task: UDP → decrypt → routing decisions (see `route`) → TUN, a batch of datagrams per
//! `recvmmsg`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, TunnResult};

use super::filter::{InboundFilter, RESET_LEN};
use super::gro::{Coalescer, FrameSink};
use super::offload;
use super::peer::{Peer, PeerTable};
use super::route::{self, message_type, Inbound, Lookup, COOKIE_REPLY, DATA_OVERHEAD};
use super::shared::Shared;
use super::stats::{EndpointEvent, PeerDrop};
use super::udp::{watch_fd, Batch, BATCH, DATAGRAM_CAP};
use crate::key::PublicKey;

/// Receives, decrypts and delivers until the socket fails.
pub(super) async fn task(shared: Arc<Shared>) -> io::Result<()> {
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
    match route::lookup(datagram) {
        Lookup::Initiation => {
            match shared
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
                            // No peer has a key of small order, which `from_bytes` refuses.
                            let peer = PublicKey::from_bytes(half.peer_static_public)
                                .ok()
                                .and_then(|key| peers.by_key(&key));
                            if peer.is_none() {
                                counters.bump(EndpointEvent::UnknownPeer);
                            }
                            peer
                        }
                        Err(_) => {
                            counters.bump(EndpointEvent::Malformed);
                            None
                        }
                    }
                }
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    counters.bump(EndpointEvent::CookieReply);
                    shared.send_now(cookie, from);
                    None
                }
                Ok(_) | Err(_) => {
                    counters.bump(EndpointEvent::Malformed);
                    None
                }
            }
        }
        Lookup::ReceiverIndex(idx) => {
            let peer = peers.by_receiver_index(idx);
            if peer.is_none() {
                counters.bump(EndpointEvent::UnknownPeer);
            }
            peer
        }
        Lookup::Malformed => {
            counters.bump(EndpointEvent::Malformed);
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
    let mut st = peer.lock();
    let counters = &peer.counters;
    let mut reset = None;
    let accepted = match st.tunn.decapsulate(Some(from.ip()), datagram, out) {
        TunnResult::Done => true,
        TunnResult::Err(e) => {
            tracing::trace!(peer = %peer.key, error = ?e, "datagram rejected");
            if !matches!(e, WireGuardError::UnderLoad) {
                counters.drop(PeerDrop::Rejected);
            }
            false
        }
        TunnResult::WriteToNetwork(reply) if message_type(reply) == Some(COOKIE_REPLY) => {
            // Handshakes are coming too fast: the sender must prove its address first. Nothing about this
            // datagram is authenticated yet, so the peer's endpoint stays where it is.
            shared.counters.bump(EndpointEvent::CookieReply);
            shared.send_now(reply, from);
            false
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
            true
        }
        TunnResult::WriteToTunnelV4(packet, _) => {
            reset = deliver(shared, peer, st.allowed_ip, packet, filter, gro);
            true
        }
        TunnResult::WriteToTunnelV6(..) => {
            counters.drop(PeerDrop::NotIpv4);
            true
        }
    };
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
    if let Some(endpoint) = route::roam(datagram, accepted, from) {
        // The datagram was authenticated under the peer's key: follow the peer to its current address.
        st.endpoint = Some(endpoint);
        counters.authenticated(wall);
    }
}

/// Acts on the routing core's decision for a decrypted packet (see [`route::inbound`]): writes it to the
/// TUN device, or counts the drop. Returns the reset to send back when the filter refuses a connection
/// attempt.
fn deliver(
    shared: &Shared,
    peer: &Peer,
    allowed: Ipv4Addr,
    packet: &[u8],
    filter: Option<&InboundFilter>,
    gro: Option<&mut Coalescer>,
) -> Option<[u8; RESET_LEN]> {
    let counters = &peer.counters;
    let decision = route::inbound(packet, allowed, shared.config.address, filter);
    if let Some(reason) = decision.drop_reason() {
        counters.drop(reason);
    }
    match decision {
        Inbound::Deliver => {}
        Inbound::Drop(_) => return None,
        Inbound::Reset(rst) => return Some(rst),
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
            self.0.counters.bump(EndpointEvent::TunWriteFailed);
        }
    }
}
