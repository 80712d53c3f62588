//! The `tunnel-tx` task: TUN → encrypt → UDP, every queued TUN packet or super-segment, then one `sendmmsg`.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::TunnResult;

use super::offload;
use super::peer::PeerTable;
use super::route::{self, message_type, DATA_MESSAGE, DATA_OVERHEAD};
use super::shared::Shared;
use super::stats::{EndpointEvent, PeerDrop};
use super::udp::{watch_fd, Batch, DATAGRAM_CAP, SEND_CAPACITY};

/// The largest read from a TUN device with offloads: a 64 KiB IP packet behind its virtio header.
const MAX_FRAME: usize = offload::VNET_HDR_LEN + 65_535;

/// Reads, encrypts and sends until the device or the socket fails.
pub(super) async fn task(shared: Arc<Shared>) -> io::Result<()> {
    let tun = watch_fd(shared.tun.as_fd())?;
    let udp = watch_fd(shared.udp.as_fd())?;
    let mut batch = Batch::new(SEND_CAPACITY);
    let vnet_hdr = shared.tun.has_vnet_hdr();
    // With offloads a read is a whole TCP super-segment (up to 64 KiB) behind its virtio header.
    let mut frame = vec![0u8; if vnet_hdr { MAX_FRAME } else { DATAGRAM_CAP }].into_boxed_slice();
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
                        shared.counters.bump(EndpointEvent::Malformed);
                    } else if batch.has_room() {
                        encapsulate_one(&shared, &peers, packet, &mut batch);
                    } else {
                        // Only a super-segment with an MSS below what the MTU range allows gets here.
                        shared.counters.bump(EndpointEvent::Malformed);
                    }
                });
                if let Err(e) = split {
                    tracing::debug!(error = ?e, "unusable packet from the TUN device");
                    shared.counters.bump(EndpointEvent::Malformed);
                }
            }
        }
        drop(ready);
        if batch.len() > 0 {
            batch.send(&udp).await?;
        }
    }
}

fn encapsulate_one(shared: &Shared, peers: &PeerTable, packet: &[u8], batch: &mut Batch) {
    let Some(peer) = route::outbound(packet).and_then(|dst| peers.by_addr(dst)) else {
        shared.counters.bump(EndpointEvent::NoRoute);
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
