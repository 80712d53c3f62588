#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints and every test (unit, integration, lab).
# Run as root: the lab tests create network namespaces, TUN devices and Docker containers. They are marked
# `#[ignore = "<what they need>"]`, so a plain `cargo test` as an ordinary user runs the others; here
# `--include-ignored` runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# One build from scratch: incremental artefacts would only double the target directory's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== free disk: $(df -h --output=avail . | tail -1)"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast -- --include-ignored --color never
