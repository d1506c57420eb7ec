#!/usr/bin/env bash
# Runs every check kcred has: formatting, clippy, and the whole test suite
# (unit tests and end-to-end tests against a real MIT realm, real tmpfs
# mounts and real gRPC). Run as root, or mount tests skip with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
