#!/usr/bin/env bash
# Builds the test server (testserver/) as a static binary and packs it into a `FROM scratch` Docker image.
#
#   scripts/build-test-image.sh            # always rebuild
#   scripts/build-test-image.sh --if-stale # rebuild only when the image is missing or its sources changed
#
# The image (default tee-gateway-testserver:latest, override with TESTSERVER_IMAGE) listens on 8080 (HTTP/1.1,
# h2c, gRPC, WebSocket), 8443 (TLS) and 9000 (raw TCP echo); see testserver/src/main.rs. Its label
# tee-gateway.testserver.sources holds a hash of the sources it was built from (testserver/ and this script;
# a dependency update alone does not make the image stale: run the script without --if-stale for that).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${TESTSERVER_IMAGE:-tee-gateway-testserver:latest}
TARGET=x86_64-unknown-linux-gnu
LABEL=tee-gateway.testserver.sources

sources_hash() {
  { find testserver -type f \( -name '*.rs' -o -name Cargo.toml \) -print0 | sort -z | xargs -0 sha256sum
    sha256sum scripts/build-test-image.sh; } | sha256sum | cut -d' ' -f1
}
hash=$(sources_hash)

if [ "${1:-}" = "--if-stale" ]; then
  current=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true)
  if [ "$current" = "$hash" ]; then
    exit 0
  fi
  echo "build-test-image.sh: $IMAGE missing or stale, building" >&2
fi

RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=false \
  cargo build --release --locked -p testserver --target "$TARGET"
bin="target/$TARGET/release/testserver"
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "build-test-image.sh: $bin is not statically linked" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/testserver"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY testserver /testserver
EXPOSE 8080 8443 9000
ENTRYPOINT ["/testserver"]
DOCKERFILE
if ! out=$(docker build -q --label "$LABEL=$hash" -t "$IMAGE" "$ctx" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "build-test-image.sh: built $IMAGE ($(du -h "$bin" | cut -f1) binary)" >&2
