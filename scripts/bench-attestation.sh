#!/usr/bin/env bash
# Attestation costs in one table: RA-TLS certificate generation, first and cached verification of SEV-SNP
# evidence (simulated and the real AMD Milan sample), and mutual RA-TLS handshakes per second against plain mutual
# TLS with the same key type, on loopback. Release build.
#
# Usage: scripts/bench-attestation.sh [HANDSHAKES]   (default 1000 sequential handshakes per variant)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p attestation --example ratls_snp_bench
echo "== SEV-SNP RA-TLS ($(nproc) CPUs, $(date -u +%FT%TZ))"
target/release/examples/ratls_snp_bench "${1:-1000}"
if [ -f attestation/examples/ratls_tdx_handshake_bench.rs ]; then
    cargo build --release --locked -p attestation --example ratls_tdx_handshake_bench
    echo
    echo "== TDX RA-TLS"
    target/release/examples/ratls_tdx_handshake_bench "${1:-1000}"
fi
