#!/usr/bin/env bash
# Runs every check kcred has: formatting, clippy, and the whole test suite
# (unit tests and end-to-end tests against a real MIT realm, real tmpfs
# mounts and real gRPC). Run as root, or mount tests skip with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# End-to-end tests run the real binaries (controller, driver, kcredctl).
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# Deployment: the chart under the real Helm engine and Kubernetes schemas,
# alert rules under promtool, container images built with buildah (root).
tests/deploy/run.sh
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i == "passed;") p += $(i - 1)
         if ($i == "failed;") f += $(i - 1)
         if ($i == "ignored;") s += $(i - 1)
       }
     }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
