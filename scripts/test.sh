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
  cargo test --workspace --no-fail-fast -- --include-ignored 2>&1 | tee "$log" || status=$?
else
  cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
fi
# The fast-path benchmark's smoke run: it must run end to end (real
# processes, Kerberos, TLS, tmpfs); how fast is not checked. Needs root
# for tmpfs, else it prints why it skipped.
cargo bench -p kcred-tests --bench fast_path --profile dev -- --quick 2>&1 | tee -a "$log" || status=$?
# The scale simulation's smoke run: 100 simulated nodes on the real node
# API (TLS, a client certificate each) against the real controller and
# realm; it checks the bench runs, not how fast. No root needed.
cargo bench -p kcred-tests --bench scale --profile dev -- --quick 2>&1 | tee -a "$log" || status=$?
# Deployment: the chart under the real Helm engine and Kubernetes schemas,
# alert rules under promtool, container images built with buildah (root).
tests/deploy/run.sh 2>&1 | tee -a "$log" || status=$?
# One closing line for the whole suite, summed over every cargo test
# binary and the pytest run.
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i == "passed;") p += $(i - 1)
         if ($i == "failed;") f += $(i - 1)
         if ($i == "ignored;") s += $(i - 1)
       }
     }
     /^[0-9]+ (passed|failed|skipped|error)/ && / in [0-9.]+s/ {
       gsub(/,/, "")
       for (i = 2; i <= NF; i++) {
         if ($i == "passed") p += $(i - 1)
         if ($i == "failed" || $i == "error" || $i == "errors") f += $(i - 1)
         if ($i == "skipped") s += $(i - 1)
       }
     }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
