#!/usr/bin/env bash
# Installs what tee-gateway's tests, lab, demo and benchmarks need on a Debian machine (run as root).
# Idempotent: packages already present are not fetched again, and `apt-get update` runs at most once.
set -euo pipefail

APT_PACKAGES=(
  iproute2 iputils-ping procps psmisc util-linux   # lab: ip netns, ping, ps, fuser, flock
  nftables                                         # lab: blocking a tunnel's UDP in a namespace
  wireguard-go wireguard-tools                     # reference WireGuard peer for interop and benchmarks
  iperf3 curl openssl wrk nghttp2-client           # real clients (h2load is in nghttp2-client)
  haproxy nginx libnginx-mod-stream bc             # alternatives the benchmarks compare against; ratios
  python3 python3-pip python3-venv                 # grpcio and websockets clients
  pkg-config                                       # for -sys crates
)
PIP_PACKAGES=(grpcio grpcio-tools websockets)

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root (it installs Debian packages)" >&2
    exit 1
  fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  echo "install-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The benchmarks start haproxy and nginx themselves; the packaged services must not hold ports.
  for svc in haproxy nginx; do
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    pkill -x "$svc" 2>/dev/null || true
  done
fi

PYTHON=${PYTHON:-python3}
pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  mod=${p//-/_}
  [ "$p" = grpcio-tools ] && mod=grpc_tools
  [ "$p" = grpcio ] && mod=grpc
  "$PYTHON" -c "import $mod" 2>/dev/null || pip_missing+=("$p")
done
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "install-deps.sh: pip installing ${pip_missing[*]}"
  "$PYTHON" -m pip install -q --disable-pip-version-check "${pip_missing[@]}" 2>/dev/null \
    || "$PYTHON" -m pip install -q --disable-pip-version-check --break-system-packages "${pip_missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps.sh: no Rust toolchain (cargo) on PATH; install one with rustup (Rust >= 1.85)" >&2
  exit 1
fi
