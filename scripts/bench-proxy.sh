#!/usr/bin/env bash
# Benchmarks the gateway's client-facing proxy against HAProxy and nginx doing the same job, in one run:
#   1. requests/s with wrk through TLS termination (TLS 1.3 at the proxy, plain TCP to the backend) and through
#      TLS passthrough (SNI routing, TLS end to end to the backend), keep-alive connections;
#   2. RSS per idle terminated connection with N idle connections (default 10,000).
# The backend is nginx serving a small static answer. By default everything runs on loopback; with LAB=1 it runs
# in the network-namespace lab (scripts/lab.sh, taken under its lock and torn down afterwards): the proxies in the
# gateway host, the backend in cvm1 (reached over the lab network), wrk and the idle clients in the client host.
# Usage (root, for the mount namespace that gives wrk its host names): scripts/bench-proxy.sh
# Environment: IP (loopback address to use, default 127.77.0.1), DURATION (wrk seconds, default 10), CONNS (wrk connections, 64), THREADS (wrk threads, 2),
#              IDLE (idle connections, 10000; 0 skips the measurement), SKIP_BUILD=1 to use an existing release
#              build, LAB=1 for the lab topology.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
IDLE=${IDLE:-10000}
IP=${IP:-127.77.0.1}   # a loopback address of its own, clear of other services' ports
LAB=${LAB:-0}
# Where each part runs and listens: BACKEND_IP for the backend, IP for the proxies; IN_* prefix the commands.
BACKEND_IP=$IP
IN_BACKEND=() IN_PROXY=() IN_CLIENT=()
if [ "$LAB" = 1 ]; then
  IP=198.18.0.1          # the gateway host
  BACKEND_IP=198.18.0.11 # cvm1
  IN_BACKEND=(ip netns exec cvm1) IN_PROXY=(ip netns exec gateway) IN_CLIENT=(ip netns exec client)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/examples/static_proxy}

[ "$(id -u)" -eq 0 ] || { echo "bench-proxy.sh: run as root (wrk needs a private /etc/hosts)" >&2; exit 1; }
for tool in wrk haproxy nginx openssl python3 unshare; do
  command -v "$tool" >/dev/null || { echo "bench-proxy.sh: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || { echo "bench-proxy.sh: nginx stream module missing (libnginx-mod-stream)" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p gateway --example static_proxy
fi

WORK=$(mktemp -d /tmp/tee-gateway-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$LAB" = 1 ]; then
  exec 9>/run/tee-gateway-lab.lock
  flock 9
  scripts/lab.sh down && scripts/lab.sh up
  trap 'cleanup; scripts/lab.sh down' EXIT
fi
# Each idle terminated connection costs the proxy two descriptors (client and backend side); the hard limit of
# open files bounds how many idle connections one process can hold.
ulimit -n "$(ulimit -Hn)"
MAXIDLE=$(( ($(ulimit -n) - 400) / 2 ))
if [ "$IDLE" -gt "$MAXIDLE" ]; then
  echo "bench-proxy.sh: open-file limit $(ulimit -n) allows $MAXIDLE idle connections per proxy, not $IDLE; using $MAXIDLE" >&2
  IDLE=$MAXIDLE
fi

APP=aaaaaaaa11111111
INST=1111111111111111
BASE=apps.bench
TERM_NAME=$APP-18080.$BASE
PASS_NAME=$APP-18443s.$BASE
# Ports: backend 18080 (plain) / 18443 (TLS); gateway 28443; haproxy 38443 (term) 38444 (pass);
# nginx 48443 (term) 48444 (pass); admin 29443.

# --- PKI: a CA, a wildcard for the proxies, a certificate of the backend's own.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
issue() { # name cn san
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$WORK/$1.key" -out "$WORK/$1.csr" 2>/dev/null
  openssl x509 -req -in "$WORK/$1.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf "subjectAltName=%s" "$3") -out "$WORK/$1.crt" 2>/dev/null
  cat "$WORK/$1.crt" "$WORK/$1.key" > "$WORK/$1.pem"
}
issue wildcard "*.$BASE" "DNS:*.$BASE"
issue backend backend.internal "DNS:backend.internal,DNS:*.$BASE"

# The top of an nginx configuration: instance NAME ($1) with WORKERS ($2) processes, its files under $WORK.
nginx_top() {
  mkdir -p "$WORK/$1"
  cat <<CONF
worker_processes $2;
pid $WORK/$1.pid;
error_log $WORK/$1.err;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
CONF
}

# --- Backend: nginx, one worker, static 13-byte answer, plain and TLS.
{ nginx_top nginx-backend 1; cat <<CONF
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $BACKEND_IP:18080 backlog=4096; location / { return 200 "hello, bench\n"; } }
  server { listen $BACKEND_IP:18443 ssl backlog=4096; ssl_certificate $WORK/backend.crt; ssl_certificate_key $WORK/backend.key;
           ssl_protocols TLSv1.3; location / { return 200 "hello, bench\n"; } }
}
CONF
} > "$WORK/nginx-backend.conf"
"${IN_BACKEND[@]}" nginx -c "$WORK/nginx-backend.conf" -p "$WORK/nginx-backend" -g 'daemon off;' & PIDS+=($!)

# --- The gateway.
"${IN_PROXY[@]}" "$BIN" --listen $IP:28443 --base-domain "$BASE" --cert "$WORK/wildcard.crt" --key "$WORK/wildcard.key" \
  --instance "$APP:$INST:$BACKEND_IP:18080" --instance "$APP:$INST:$BACKEND_IP:18443" 2>"$WORK/gateway.err" & GW=$!
PIDS+=($GW)

# --- HAProxy: the same two jobs.
cat > "$WORK/haproxy.cfg" <<CONF
global
  maxconn 9950
  nbthread 2
defaults
  timeout connect 5s
  timeout client 900s
  timeout server 900s
frontend term
  mode tcp
  bind $IP:38443 ssl crt $WORK/wildcard.pem alpn http/1.1 ssl-min-ver TLSv1.3
  default_backend plain
backend plain
  mode tcp
  server b1 $BACKEND_IP:18080
frontend pass
  mode tcp
  bind $IP:38444
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend tls if { req.ssl_sni -m end .$BASE }
backend tls
  mode tcp
  server b1 $BACKEND_IP:18443
CONF
"${IN_PROXY[@]}" haproxy -f "$WORK/haproxy.cfg" -db 2>"$WORK/haproxy.err" & HA=$!
PIDS+=($HA)

# --- nginx (stream module): the same two jobs, two workers like the others' two threads.
{ echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"; nginx_top nginx-proxy 2; cat <<CONF
stream {
  server { listen $IP:48443 ssl backlog=4096; ssl_certificate $WORK/wildcard.crt; ssl_certificate_key $WORK/wildcard.key;
           ssl_protocols TLSv1.3; proxy_pass $BACKEND_IP:18080; }
  map \$ssl_preread_server_name \$up { default $BACKEND_IP:18443; }
  server { listen $IP:48444 backlog=4096; ssl_preread on; proxy_pass \$up; }
}
CONF
} > "$WORK/nginx-proxy.conf"
"${IN_PROXY[@]}" nginx -c "$WORK/nginx-proxy.conf" -p "$WORK/nginx-proxy" -g 'daemon off;' & NG=$!
PIDS+=($NG)

# Host names for wrk, in a private mount namespace.
printf "127.0.0.1 localhost\n$IP %s %s\n" "$TERM_NAME" "$PASS_NAME" > "$WORK/hosts"
cat "$WORK/ca.crt" > "$WORK/ca-bundle.crt"
wait_port() { # ip port
  for _ in $(seq 100); do "${IN_CLIENT[@]}" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1:$2 not up" >&2; return 1
}
for p in 18080 18443; do wait_port "$BACKEND_IP" $p; done
for p in 28443 38443 38444 48443 48444; do wait_port "$IP" $p; done

# Sanity: every path answers with the backend's body, and passthrough shows the backend's own certificate.
check() { # name port
  local out
  out=$("${IN_CLIENT[@]}" curl -sS --max-time 5 --cacert "$WORK/ca.crt" --resolve "$1:$2:$IP" "https://$1:$2/")
  [ "$out" = "hello, bench" ] || { echo "bench-proxy.sh: $1:$2 answered '$out'" >&2; exit 1; }
}
for p in 28443 38443 48443; do check "$TERM_NAME" $p; done
for p in 28443 38444 48444; do check "$PASS_NAME" $p; done
subj=$("${IN_CLIENT[@]}" openssl s_client -connect $IP:28443 -servername "$PASS_NAME" </dev/null 2>/dev/null | grep '^subject=')
case "$subj" in *backend.internal*) ;; *) echo "bench-proxy.sh: passthrough presented '$subj'" >&2; exit 1;; esac

run_wrk() { # name port -> requests/s
  "${IN_CLIENT[@]}" unshare -m sh -c "mount --bind '$WORK/hosts' /etc/hosts && SSL_CERT_FILE='$WORK/ca-bundle.crt' \
    wrk -t$THREADS -c$CONNS -d${DURATION}s --latency https://$1:$2/" > "$WORK/wrk.out" 2>&1
  local rps errs
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk.out" | tr '\n' ' ')
  [ -z "$errs" ] || echo "  ($1:$2: $errs)" >&2
  echo "${rps:-0}"
}

if [ "$LAB" = 1 ]; then where="in the lab (client host -> gateway host -> backend in cvm1)"; else where="on loopback"; fi
echo "== wrk: $THREADS threads, $CONNS keep-alive connections, ${DURATION}s each; backend nginx; $where"
declare -A RPS
for mode in term pass; do
  if [ $mode = term ]; then name=$TERM_NAME; ports=(28443 38443 48443); else name=$PASS_NAME; ports=(28443 38444 48444); fi
  RPS[$mode,tee-gateway]=$(run_wrk "$name" "${ports[0]}")
  RPS[$mode,haproxy]=$(run_wrk "$name" "${ports[1]}")
  RPS[$mode,nginx]=$(run_wrk "$name" "${ports[2]}")
done
RPS[direct,backend]=$("${IN_CLIENT[@]}" wrk -t$THREADS -c$CONNS -d${DURATION}s http://$BACKEND_IP:18080/ | awk '/Requests\/sec/ {print $2}')
printf "%-12s %14s %14s %14s %12s %12s\n" mode tee-gateway haproxy nginx "gw/haproxy" "gw/nginx"
for mode in term pass; do
  g=${RPS[$mode,tee-gateway]}; h=${RPS[$mode,haproxy]}; n=${RPS[$mode,nginx]}
  printf "%-12s %14.0f %14.0f %14.0f %12.2f %12.2f\n" "$mode" "$g" "$h" "$n" \
    "$(echo "$g / $h" | bc -l)" "$(echo "$g / $n" | bc -l)"
done
printf "(backend alone, plain HTTP: %.0f requests/s)\n" "${RPS[direct,backend]}"

rss_kb() { # pids... -> summed VmRSS in kB (nginx: master + workers)
  local total=0 p
  for p in "$@"; do
    for q in $p $(pgrep -P "$p" || true); do
      total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$q/status" 2>/dev/null || echo 0)))
    done
  done
  echo $total
}

[ "$IDLE" -gt 0 ] || exit 0
echo "== RSS per idle terminated connection, $IDLE idle TLS connections"
printf "%-12s %12s %12s %12s %14s\n" proxy "before kB" "after kB" opened "bytes/conn"
for target in tee-gateway:28443:$GW haproxy:38443:$HA nginx:48443:$NG; do
  IFS=: read -r name port pid <<<"$target"
  before=$(rss_kb "$pid")
  coproc IDLEC { "${IN_CLIENT[@]}" python3 scripts/bench/idle_conns.py $IP "$port" "$TERM_NAME" "$WORK/ca.crt" "$IDLE"; }
  read -r ready opened <&"${IDLEC[0]}"
  sleep 2
  after=$(rss_kb "$pid")
  exec {IDLEC[1]}>&-
  wait "$IDLEC_PID" 2>/dev/null || true
  printf "%-12s %12d %12d %12d %14.0f\n" "$name" "$before" "$after" "$opened" \
    "$(echo "($after - $before) * 1024 / $opened" | bc -l)"
  sleep 2
done
