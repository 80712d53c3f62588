#!/usr/bin/env bash
# Benchmarks the agent's port forwarder against the alternatives for reaching a container, in one run:
#   direct        the container's own address (no hop: the baseline)
#   agent         cvm-agent's forwarder (examples/forwarder.rs, target docker:SERVICE:8080)
#   docker-proxy  a port published with `docker run -p` (Docker's userland proxy on loopback)
#   haproxy       HAProxy in TCP mode
# For each: HTTP/1.1 keep-alive requests/s and latency (wrk), new connections/s (wrk, Connection: close), and a
# single-stream 1 GiB download (curl). Prints a table with ratios to the direct path.
#
# Run as root (Docker). DURATION (seconds per wrk run, default 10), CONNECTIONS (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
IMAGE=${TESTSERVER_IMAGE:-tee-gateway-testserver:latest}
NAME="tgw-bench-$$"
AGENT_PORT=18081
PUBLISHED_PORT=18082
HAPROXY_PORT=18083

for tool in wrk curl haproxy docker; do
  command -v "$tool" >/dev/null || { echo "bench-forward.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

scripts/build-test-image.sh --if-stale
cargo build --release --locked -q -p cvm-agent --example forwarder
FORWARDER=target/release/examples/forwarder

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

docker run -d --name "$NAME" --hostname "$NAME" --label "tee-gateway.service=$NAME" \
  -p "127.0.0.1:$PUBLISHED_PORT:8080" "$IMAGE" >/dev/null
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NAME")

"$FORWARDER" --listen 127.0.0.1 --port "$AGENT_PORT=docker:$NAME:8080" >"$tmp/forwarder.out" 2>"$tmp/forwarder.err" &
pids+=($!)

cat >"$tmp/haproxy.cfg" <<CFG
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bench
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend container
backend container
  server c $ip:8080
CFG
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)

wait_up() {
  for _ in $(seq 100); do
    if curl -sf -o /dev/null --max-time 1 "http://$1/"; then return 0; fi
    sleep 0.1
  done
  echo "bench-forward.sh: $1 does not answer" >&2
  cat "$tmp"/*.err "$tmp"/*.log 2>/dev/null >&2 || true
  exit 1
}

declare -A addr=([direct]="$ip:8080" [agent]="127.0.0.1:$AGENT_PORT" [docker-proxy]="127.0.0.1:$PUBLISHED_PORT" [haproxy]="127.0.0.1:$HAPROXY_PORT")
order=(direct agent docker-proxy haproxy)
for k in "${order[@]}"; do wait_up "${addr[$k]}"; done

# wrk's "Requests/sec" and its latency average and 99th percentile, normalised to microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    else print v }'
}
declare -A rps lat p99 cps mbps
for k in "${order[@]}"; do
  a=${addr[$k]}
  echo "bench-forward.sh: $k ($a)" >&2
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://$a/")
  rps[$k]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  lat[$k]=$(to_us "$(awk '/Latency/ && !done {print $2; done=1}' <<<"$out")")
  p99[$k]=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -H 'Connection: close' "http://$a/")
  cps[$k]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  speed=$(curl -s -o /dev/null --max-time 120 -w '%{speed_download}' "http://$a/bytes/1073741824")
  mbps[$k]=$(awk -v s="$speed" 'BEGIN {printf "%.0f", s * 8 / 1000000}')
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
printf '\n%-13s %12s %7s %10s %10s %12s %7s %10s %7s\n' \
  path "req/s" "x" "avg(us)" "p99(us)" "conn/s" "x" "Mbit/s" "x"
for k in "${order[@]}"; do
  printf '%-13s %12.0f %7s %10.0f %10.0f %12.0f %7s %10s %7s\n' "$k" "${rps[$k]}" "$(ratio "${rps[$k]}" "${rps[direct]}")" \
    "${lat[$k]}" "${p99[$k]}" "${cps[$k]}" "$(ratio "${cps[$k]}" "${cps[direct]}")" \
    "${mbps[$k]}" "$(ratio "${mbps[$k]}" "${mbps[direct]}")"
done
echo "(x: ratio to the direct path; wrk -t2 -c$CONNECTIONS -d${DURATION}s; 1 GiB single-stream download with curl)"
