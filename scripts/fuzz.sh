#!/usr/bin/env bash
# The long fuzz pass: every parser of untrusted input, 100,000 generated
# cases per target (proptest, stable toolchain). The normal test run
# (scripts/test.sh) runs the same targets with 256 cases each.
# Usage: scripts/fuzz.sh [cases]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
export PROPTEST_CASES="$cases"
# The dev profile keeps overflow checks on: an arithmetic overflow is a
# panic, as it should be for a fuzzer. Failures are kept for replay under
# proptest-regressions/.
for crate in kcred-controller kcred-audit kcred-keys kcred-csi-driver; do
  echo "== $crate: $cases cases per target"
  cargo test -p "$crate" --lib -- fuzz_ --test-threads 2
done
echo "fuzz: $cases cases per target, all passed"
