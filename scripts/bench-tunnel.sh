#!/usr/bin/env bash
# Tunnel throughput and latency, in one run on the lab (cvm1 -> gateway), compared with the alternatives:
#
#   veth          the lab's plain path (veth -> bridge -> veth): the ceiling
#   wireguard-go  wireguard-go <-> wireguard-go (configured with wg)
#   ours          our endpoint (protocol::tunnel, release build) <-> our endpoint
#   ours-no-offload  the same without TUN offloads (one packet per TUN read)
#   ours-filter   ours with the inbound port filter (as on an agent) on the receiving endpoint, iperf3's port let in
#
# For each: iperf3 single stream and 4 streams (cvm1 sends to the gateway), and ping RTT (gateway <- cvm1).
# Prints a table and the ratios. Run as root: scripts/bench-tunnel.sh [SECONDS_PER_IPERF_RUN (default 10)]
# Takes the lab's lock for the whole run, so it never disturbs (or is disturbed by) lab tests.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
PINGS=${PINGS:-500}
LOCK=/run/tee-gateway-lab.lock
[ "$(id -u)" -eq 0 ] || { echo "bench-tunnel.sh: run as root" >&2; exit 1; }
for tool in iperf3 wireguard-go wg ping python3; do
  command -v "$tool" >/dev/null || { echo "bench-tunnel.sh: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done

echo "== building the endpoint (release)" >&2
cargo build --release --quiet -p tee-gateway-tests --bin tunnel-endpoint
BIN=$PWD/target/release/tunnel-endpoint

exec 9>"$LOCK"
flock 9
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/lab.sh down || true
  rm -rf "$WORK"
}
trap cleanup EXIT
scripts/lab.sh down
scripts/lab.sh up

GW=gateway
CVM=cvm1
umask 077
wg genkey >"$WORK/gw.key"
wg genkey >"$WORK/cvm.key"
GW_PUB=$(wg pubkey <"$WORK/gw.key")
CVM_PUB=$(wg pubkey <"$WORK/cvm.key")

bg() { "$@" & PIDS+=($!); }

wait_ping() { # host addr
  for _ in $(seq 1 50); do
    ip netns exec "$1" ping -c1 -W1 -q "$2" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench-tunnel.sh: $1 cannot reach $2" >&2
  exit 1
}

iperf() { # server_addr streams -> Gbit/s received
  ip netns exec "$CVM" iperf3 -c "$1" -P "$2" -t "$DURATION" -O 1 -J >"$WORK/iperf.json"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

rtt() { # addr -> average RTT in microseconds
  ip netns exec "$CVM" ping -c "$PINGS" -i 0.002 -q "$1" |
    awk -F'[/ =]+' '/^rtt/ { printf "%.0f\n", $7 * 1000 }'
}

declare -A SINGLE MULTI RTT
measure() { # name server_addr
  echo "== $1" >&2
  wait_ping "$CVM" "$2"
  bg ip netns exec "$GW" iperf3 -s -B "$2" -p 5201 >/dev/null 2>&1
  sleep 0.5
  SINGLE[$1]=$(iperf "$2" 1)
  MULTI[$1]=$(iperf "$2" 4)
  RTT[$1]=$(rtt "$2")
  kill "${PIDS[-1]}"
  wait "${PIDS[-1]}" 2>/dev/null || true
  unset 'PIDS[-1]'
}

# 1. Plain veth.
measure veth 198.18.0.1

# 2. wireguard-go <-> wireguard-go.
# wireguard-go keeps its control sockets in one directory for every namespace: one name per instance.
WG_GW=tgwbg$$
WG_CVM=tgwbc$$
bg ip netns exec "$GW" wireguard-go -f "$WG_GW" >/dev/null 2>&1
bg ip netns exec "$CVM" wireguard-go -f "$WG_CVM" >/dev/null 2>&1
for pair in "$GW:$WG_GW" "$CVM:$WG_CVM"; do
  for _ in $(seq 1 50); do ip netns exec "${pair%%:*}" wg show "${pair#*:}" >/dev/null 2>&1 && break; sleep 0.1; done
done
ip netns exec "$GW" wg set "$WG_GW" private-key "$WORK/gw.key" listen-port 51821 \
  peer "$CVM_PUB" allowed-ips 10.1.0.2/32
ip netns exec "$CVM" wg set "$WG_CVM" private-key "$WORK/cvm.key" listen-port 51821 \
  peer "$GW_PUB" allowed-ips 10.1.0.1/32 endpoint 198.18.0.1:51821
ip -n "$GW" addr add 10.1.0.1/24 dev "$WG_GW"
ip -n "$CVM" addr add 10.1.0.2/24 dev "$WG_CVM"
ip -n "$GW" link set "$WG_GW" mtu 1420 up
ip -n "$CVM" link set "$WG_CVM" mtu 1420 up
measure wireguard-go 10.1.0.1
kill "${PIDS[-1]}" "${PIDS[-2]}"
wait "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
unset 'PIDS[-1]' 'PIDS[-1]'

# 3. Ours <-> ours, with TUN offloads (the default), without, and with the receiver's inbound port filter.
GW_ONLY=() # flags for the receiving (gateway-side) endpoint only
ours() { # name extra-flags...
  local name=$1
  shift
  bg ip netns exec "$GW" "$BIN" --private-key-file "$WORK/gw.key" --listen-port 51822 --address 10.2.0.1/24 \
    --tun-name tgwb0 --peer "key=$CVM_PUB,ip=10.2.0.2" "$@" "${GW_ONLY[@]}" </dev/null >/dev/null
  bg ip netns exec "$CVM" "$BIN" --private-key-file "$WORK/cvm.key" --listen-port 51822 --address 10.2.0.2/24 \
    --tun-name tgwb0 --peer "key=$GW_PUB,ip=10.2.0.1,endpoint=198.18.0.1:51822" "$@" </dev/null >/dev/null
  measure "$name" 10.2.0.1
  kill "${PIDS[-1]}" "${PIDS[-2]}"
  wait "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
  unset 'PIDS[-1]' 'PIDS[-1]'
}
ours ours
ours ours-no-offload --no-offload
GW_ONLY=(--inbound-tcp-ports 5201)
ours ours-filter

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2fx' % (a/b) if b else 'n/a')" "$1" "$2"; }

echo
echo "Tunnel benchmark: cvm1 -> gateway, iperf3 ${DURATION}s per run, $PINGS pings, $(nproc) CPUs, $(date -u +%F)"
printf '| %-16s | %17s | %17s | %13s |\n' path "1 stream Gbit/s" "4 streams Gbit/s" "ping RTT µs"
echo '|:-----------------|------------------:|------------------:|--------------:|'
for name in veth wireguard-go ours ours-no-offload ours-filter; do
  printf '| %-16s | %17s | %17s | %13s |\n' "$name" "${SINGLE[$name]}" "${MULTI[$name]}" "${RTT[$name]}"
done
echo
echo "ours / wireguard-go: 1 stream $(ratio "${SINGLE[ours]}" "${SINGLE[wireguard-go]}"), 4 streams $(ratio "${MULTI[ours]}" "${MULTI[wireguard-go]}"), RTT $(ratio "${RTT[ours]}" "${RTT[wireguard-go]}")"
echo "ours / veth:         1 stream $(ratio "${SINGLE[ours]}" "${SINGLE[veth]}"), 4 streams $(ratio "${MULTI[ours]}" "${MULTI[veth]}")"
