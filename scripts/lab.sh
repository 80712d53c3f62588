#!/usr/bin/env bash
# The network-namespace lab: several hosts on one machine, joined by veth pairs to a bridge that lives in its own
# namespace, so the root namespace's firewall (which the Docker engine manages) is never in the path between them.
#
#   scripts/lab.sh up               build the lab (idempotent: only what is missing is created)
#   scripts/lab.sh down             remove everything the lab created, killing processes left inside its hosts
#   scripts/lab.sh exec HOST CMD..  run CMD inside HOST's namespace (HOST=root runs it in the root namespace)
#   scripts/lab.sh status           print the hosts, their addresses and whether each is present
#
# Hosts (namespace name = host name) and their addresses on 198.18.0.0/24 (from 198.18.0.0/15, reserved for
# benchmarking and clear of Docker's address pools):
#
#   gateway 198.18.0.1    cvm1 198.18.0.11    cvm2 198.18.0.12    cvm3 198.18.0.13    client 198.18.0.100
#
# The root namespace also gets a leg on the bridge, as host `root` (198.18.0.254, interface `tgwlab0`): the one
# Docker engine runs there, so in the lab the root namespace plays the CVM that runs Docker containers.
# Every host has loopback up and an `/etc/netns/HOST/hosts` file, so the names above resolve inside the lab.
# Run as root. Tests serialize their use of the lab with an exclusive flock on /run/tee-gateway-lab.lock.
set -euo pipefail

BRIDGE_NS=tgwlab-bridge
BRIDGE=br0
ROOT_IF=tgwlab0
ROOT_ADDR=198.18.0.254
PREFIX=24
HOSTS=(gateway cvm1 cvm2 cvm3 client)
declare -A ADDR=(
  [gateway]=198.18.0.1
  [cvm1]=198.18.0.11
  [cvm2]=198.18.0.12
  [cvm3]=198.18.0.13
  [client]=198.18.0.100
)

die() { echo "lab.sh: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it creates network namespaces)"; }
ns_exists() { [ -e "/run/netns/$1" ]; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

hosts_file() {
  echo "127.0.0.1 localhost"
  echo "::1 localhost ip6-localhost ip6-loopback"
  local h
  for h in "${HOSTS[@]}"; do echo "${ADDR[$h]} $h"; done
  echo "$ROOT_ADDR root"
}

ensure_ns() {
  local ns=$1
  ns_exists "$ns" || ip netns add "$ns"
  in_ns "$ns" ip link set lo up
  # No IPv6 on lab links: no router solicitations or duplicate-address detection delaying the first packets.
  in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

up() {
  need_root
  ensure_ns "$BRIDGE_NS"
  if ! in_ns "$BRIDGE_NS" ip link show "$BRIDGE" >/dev/null 2>&1; then
    in_ns "$BRIDGE_NS" ip link add "$BRIDGE" type bridge
  fi
  in_ns "$BRIDGE_NS" ip link set "$BRIDGE" up

  local h
  for h in "${HOSTS[@]}"; do
    ensure_ns "$h"
    if ! in_ns "$h" ip link show eth0 >/dev/null 2>&1; then
      # A half-built pair from an interrupted run would block the name on the bridge side.
      in_ns "$BRIDGE_NS" ip link del "v-$h" >/dev/null 2>&1 || true
      ip link add name eth0 netns "$h" type veth peer name "v-$h" netns "$BRIDGE_NS"
    fi
    in_ns "$BRIDGE_NS" ip link set "v-$h" master "$BRIDGE" up
    in_ns "$h" ip addr replace "${ADDR[$h]}/$PREFIX" dev eth0
    in_ns "$h" ip link set eth0 up
    mkdir -p "/etc/netns/$h"
    hosts_file >"/etc/netns/$h/hosts"
  done

  if ! ip link show "$ROOT_IF" >/dev/null 2>&1; then
    in_ns "$BRIDGE_NS" ip link del v-root >/dev/null 2>&1 || true
    ip link add name "$ROOT_IF" type veth peer name v-root netns "$BRIDGE_NS"
  fi
  in_ns "$BRIDGE_NS" ip link set v-root master "$BRIDGE" up
  ip addr replace "$ROOT_ADDR/$PREFIX" dev "$ROOT_IF"
  ip link set "$ROOT_IF" up

  # Wait until every host reaches the gateway (the bridge learns addresses in well under a second).
  local tries
  for h in "${HOSTS[@]}"; do
    [ "$h" = gateway ] && continue
    for tries in $(seq 1 50); do
      in_ns "$h" ping -c1 -W1 -q "${ADDR[gateway]}" >/dev/null 2>&1 && break
      [ "$tries" -eq 50 ] && die "host $h cannot reach the gateway at ${ADDR[gateway]}"
      sleep 0.1
    done
  done
}

kill_ns_procs() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  local i
  for i in $(seq 1 20); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

down() {
  need_root
  local h
  for h in "${HOSTS[@]}" "$BRIDGE_NS"; do
    if ns_exists "$h"; then
      kill_ns_procs "$h"
      ip netns del "$h"
    fi
    [ "$h" = "$BRIDGE_NS" ] || rm -rf "/etc/netns/$h"
  done
  # Deleting the bridge namespace removes the root leg's peer, and with it the root leg; be sure anyway.
  ip link del "$ROOT_IF" >/dev/null 2>&1 || true
}

status() {
  local h state
  for h in "${HOSTS[@]}"; do
    if ns_exists "$h"; then state=up; else state=absent; fi
    printf '%-8s %-14s %s\n' "$h" "${ADDR[$h]}" "$state"
  done
  if ip link show "$ROOT_IF" >/dev/null 2>&1; then state=up; else state=absent; fi
  printf '%-8s %-14s %s\n' root "$ROOT_ADDR" "$state"
}

cmd=${1:-}
case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  exec)
    [ $# -ge 3 ] || die "usage: lab.sh exec HOST CMD [ARGS...]"
    host=$2
    shift 2
    if [ "$host" = root ]; then exec "$@"; fi
    [[ " ${HOSTS[*]} " == *" $host "* ]] || die "unknown host '$host' (hosts: ${HOSTS[*]} root)"
    ns_exists "$host" || die "host '$host' is not up (run: lab.sh up)"
    exec ip netns exec "$host" "$@"
    ;;
  *) die "usage: lab.sh up|down|status|exec HOST CMD [ARGS...]" ;;
esac
