#!/usr/bin/env bash
# The demo: a gateway and two CVM agents with simulated SEV-SNP evidence, an app container behind one of them,
# and real clients reaching it through all three route kinds. Run as root on Debian:
#
#   scripts/demo.sh          # build, run the demo, print what each client got, tear everything down
#   scripts/demo.sh --keep   # the same, then keep everything running until Ctrl-C (explore by hand)
#
# What it builds (all on this machine, nothing leaves it):
#   - the lab (scripts/lab.sh): hosts `gateway`, `cvm1`, `client` as network namespaces on a private bridge;
#   - a simulated vendor PKI (`gateway attestation sim-pki`), the app owner's key (`gateway app keygen`, whose
#     public key the app id is derived from) and its signed app policy (`gateway app sign-policy`), which the
#     agents carry to the gateway; the operator's apps file, which can only deny; a gateway policy;
#   - the gateway in `gateway`, with a demo certificate for *.apps.demo.test;
#   - agent A in the root namespace (it plays the CVM that runs Docker) forwarding to a container of the
#     service `web` (the test server image, built locally), and agent B in `cvm1` forwarding to a test server
#     process in that namespace;
#   - from `client`: curl through TLS termination, openssl through passthrough, Python grpcio through `g`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

KEEP=0
case "${1:-}" in
  --keep) KEEP=1 ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--keep]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (network namespaces, TUN devices, Docker)" >&2; exit 1; }

BASE=apps.demo.test
GW_ADDR=198.18.0.1
ROOT_ADDR=198.18.0.254
CONTAINER=tgw-demo-web
MEASUREMENT=$(printf 'a1%.0s' $(seq 48))
GW_MEASUREMENT=$(printf 'c3%.0s' $(seq 48))

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing what the demo needs"
scripts/install-deps.sh

step "building gateway, cvm-agent and the test server image"
cargo build -q --locked -p gateway -p cvm-agent --bins
scripts/build-test-image.sh --if-stale
BIN=$ROOT/target/debug
TESTSERVER=$ROOT/target/x86_64-unknown-linux-gnu/release/testserver
# The process in cvm1 runs the image's binary; a current image can come from another checkout.
[ -x "$TESTSERVER" ] || scripts/build-test-image.sh

WORK=$(mktemp -d /tmp/tee-gateway-demo.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  docker rm -f "$CONTAINER" >/dev/null 2>&1
  ip link del tgdemo-a 2>/dev/null
  scripts/lab.sh down >/dev/null 2>&1
  if [ "$KEEP" -eq 1 ]; then echo "demo files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The lab is shared with the lab tests: hold its lock while the demo runs.
exec 9>/run/tee-gateway-lab.lock
flock -w 600 9 || { echo "demo.sh: the lab is busy (lock /run/tee-gateway-lab.lock)" >&2; exit 1; }

step "lab: network namespaces gateway, cvm1, client on 198.18.0.0/24"
scripts/lab.sh up

step "simulated vendor PKI, policies, certificates"
"$BIN/gateway" attestation sim-pki --seed tee-gateway-demo --out "$WORK/pki"
# The app's owner makes its key (the app id is derived from it) and signs which CVMs may serve the app.
APP=$("$BIN/gateway" app keygen --out "$WORK/owner.key")
cat >"$WORK/app-profiles.toml" <<EOF
# CVMs of the app may run with this (simulated SEV-SNP) measurement.
[[profile]]
platform = "sim-snp"
measurement = "$MEASUREMENT"
EOF
"$BIN/gateway" app sign-policy --key "$WORK/owner.key" --version 1 --profiles "$WORK/app-profiles.toml" \
  --out "$WORK/app-policy.json"
# The operator's apps file can deny an app ([apps.<id>] deny = true); it cannot allow one.
cat >"$WORK/apps.toml" <<EOF
# Which CVMs serve app $APP is decided by its owner's signed policy, not here.
EOF
cat >"$WORK/gateway-policy.toml" <<EOF
# Agents accept gateways with this (simulated SEV-SNP) measurement.
[[profile]]
platform = "sim-snp"
measurement = "$GW_MEASUREMENT"
EOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=demo CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=*.$BASE" \
  -keyout "$WORK/site.key" -out "$WORK/site.csr" 2>/dev/null
printf 'subjectAltName=DNS:*.%s,DNS:%s\n' "$BASE" "$BASE" >"$WORK/san.ext"
openssl x509 -req -in "$WORK/site.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
  -extfile "$WORK/san.ext" -out "$WORK/site.pem" 2>/dev/null

cat >"$WORK/gateway.toml" <<EOF
base_domains = ["$BASE"]
[control]
listen = "$GW_ADDR:8443"
[tunnel]
network = "198.19.0.0/16"
gateway_address = "198.19.0.1"
listen_port = 51820
public_endpoint = "$GW_ADDR:51820"
interface = "tgdemo-gw"
[registry]
path = "$WORK/registry.sqlite"
[attestation]
backend = "sim-snp"
app_policy = "$WORK/apps.toml"
trusted_sim_roots = ["$WORK/pki"]
sim_pki = "$WORK/pki"
sim_measurement = "$GW_MEASUREMENT"
[proxy]
listen = ["$GW_ADDR:443"]
[[proxy.certificates]]
cert = "$WORK/site.pem"
key = "$WORK/site.key"
EOF
agent_config() { # NAME TARGET
  cat <<EOF
app_id = "$APP"
gateways = ["https://$GW_ADDR:8443"]
state_dir = "$WORK/state-$1"
app_policy = "$WORK/app-policy.json"
[attestation]
backend = "sim-snp"
gateway_policy = "$WORK/gateway-policy.toml"
trusted_sim_roots = ["$WORK/pki"]
sim_pki = "$WORK/pki"
sim_measurement = "$MEASUREMENT"
[tunnel]
interface = "tgdemo-$1"
[[ports]]
port = 8080
target = "$2:8080"
[[ports]]
port = 8443
target = "$2:8443"
EOF
}
agent_config a "docker:web" >"$WORK/agent-a.toml"
agent_config b "127.0.0.1" >"$WORK/agent-b.toml"
"$BIN/gateway" check-config --config "$WORK/gateway.toml"

step "app container (service web) and a test server process in cvm1"
docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
docker run -d --name "$CONTAINER" --hostname "$CONTAINER" --label tee-gateway.service=web \
  tee-gateway-testserver:latest --name "container $CONTAINER" >/dev/null
ip netns exec cvm1 "$TESTSERVER" --name "process in cvm1" >"$WORK/testserver-cvm1.log" 2>&1 &
PIDS+=($!)

step "gateway (in namespace gateway) and agents (root namespace and cvm1)"
ip netns exec gateway "$BIN/gateway" run --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
"$BIN/cvm-agent" run --config "$WORK/agent-a.toml" >"$WORK/agent-a.log" 2>&1 &
PIDS+=($!)
ip netns exec cvm1 "$BIN/cvm-agent" run --config "$WORK/agent-b.toml" >"$WORK/agent-b.log" 2>&1 &
PIDS+=($!)

URL="https://$APP-8080.$BASE/"
client() { ip netns exec client "$@"; }
echo "waiting for both instances to serve $URL"
declare -A SEEN=()
for _ in $(seq 120); do
  out=$(client curl -s --max-time 3 --cacert "$WORK/ca.pem" --resolve "$APP-8080.$BASE:443:$GW_ADDR" "$URL" || true)
  case "$out" in *"container $CONTAINER"*) SEEN[a]=1 ;; *"process in cvm1"*) SEEN[b]=1 ;; esac
  [ ${#SEEN[@]} -eq 2 ] && break
  sleep 0.5
done
if [ ${#SEEN[@]} -ne 2 ]; then
  echo "demo.sh: the instances did not both come up; logs follow" >&2
  tail -n 30 "$WORK"/gateway.log "$WORK"/agent-a.log "$WORK"/agent-b.log "$WORK"/testserver-cvm1.log >&2
  exit 1
fi

step "curl through TLS termination ($APP-8080.$BASE), four requests"
for _ in 1 2 3 4; do
  client curl -sS --max-time 5 --cacert "$WORK/ca.pem" --resolve "$APP-8080.$BASE:443:$GW_ADDR" "$URL" | head -n 1
done

step "openssl through TLS passthrough ($APP-8443s.$BASE): the certificate is the instance's own"
client openssl s_client -connect "$GW_ADDR:443" -servername "$APP-8443s.$BASE" </dev/null 2>/dev/null \
  | grep -E '^(subject|issuer)=' | head -n 2

step "gRPC through h2 ($APP-8080g.$BASE): unary and server streaming"
client python3 scripts/clients/grpc_echo.py "$GW_ADDR:443" unary hello --tls --ca "$WORK/ca.pem" \
  --authority "$APP-8080g.$BASE"
client python3 scripts/clients/grpc_echo.py "$GW_ADDR:443" stream 3 --tls --ca "$WORK/ca.pem" \
  --authority "$APP-8080g.$BASE"

step "the gateway's own attestation document (gateway.$BASE), bound to its public TLS key"
client curl -sS --max-time 5 --cacert "$WORK/ca.pem" --resolve "gateway.$BASE:443:$GW_ADDR" \
  "https://gateway.$BASE/v1/attestation" >"$WORK/gateway-attestation.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: (v if len(str(v)) < 100 else str(v)[:60] + "...") for k, v in d.items()})' \
  "$WORK/gateway-attestation.json"

if [ "$KEEP" -eq 1 ]; then
  step "running; logs in $WORK; Ctrl-C to stop"
  wait
fi
step "demo finished"
