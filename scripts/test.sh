#!/usr/bin/env bash
# Runs every check kcred has: formatting, clippy, and the whole test suite
# (unit tests and end-to-end tests against a real MIT realm, real tmpfs
# mounts and real gRPC). Tests that mount tmpfs are #[ignore = "needs root"]:
# run as root they run too; otherwise they are counted as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# End-to-end tests run the real binaries (controller, driver, kcredctl).
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
if [ "$(id -u)" -eq 0 ]; then
  cargo test --workspace -- --include-ignored 2>&1 | tee "$log" || status=$?
else
  cargo test --workspace 2>&1 | tee "$log" || status=$?
fi
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i == "passed;") p += $(i - 1)
         if ($i == "failed;") f += $(i - 1)
         if ($i == "ignored;") s += $(i - 1)
       }
     }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
