#!/usr/bin/env bash
# Attestation costs in tables: RA-TLS certificate generation, first and cached verification of SEV-SNP
# evidence (simulated and the real AMD Milan sample), TDX quote verification (the real Intel sample and sim-tdx),
# first and cached verification of a sim-tdx RA-TLS certificate, and mutual RA-TLS handshakes per second (SNP, and
# sim-tdx against sim-snp) against plain mutual TLS with the same key type, on loopback. Release build.
#
# Usage: scripts/bench-attestation.sh [HANDSHAKES]   (default 1000 sequential handshakes per variant)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p attestation --example ratls_snp_bench
echo "== SEV-SNP RA-TLS ($(nproc) CPUs, $(date -u +%FT%TZ))"
target/release/examples/ratls_snp_bench "${1:-1000}"
cargo build --release --locked -p attestation --example ratls_tdx_handshake_bench --example tdx_verify_bench
echo
echo "== TDX quotes: the real Intel sample and sim-tdx, uncached and cached"
target/release/examples/tdx_verify_bench 200
echo
echo "== TDX RA-TLS: first and cached certificate verification; mutual handshakes/s, sim-tdx vs plain mutual TLS"
target/release/examples/ratls_tdx_handshake_bench "${1:-1000}"
