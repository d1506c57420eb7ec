#!/usr/bin/env bash
# Profiles the controller and the node driver, with call stacks, through
# one run of the fast-path bench. The shipped build keeps neither frame
# pointers nor line tables, so this builds its own (release, frame
# pointers, line tables) in a target directory of its own; the first
# build takes about 15 minutes on two cores.
# Needs root (the bench mounts tmpfs) and `perf`.
# Usage: scripts/profile.sh [OUT_DIR]   (default: target/profile)
# Then, for example:
#   perf report -i OUT_DIR/controller.data --no-children --sort dso,sym
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/profile}"
command -v perf >/dev/null || {
  echo "profile: perf is missing (Debian/Ubuntu: the linux-tools package of the running kernel)" >&2
  exit 2
}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/framepointers}"
export RUSTFLAGS="-C force-frame-pointers=yes"
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
export CARGO_PROFILE_BENCH_DEBUG=line-tables-only
cargo build --release --bins
bench=$(cargo bench -p kcred-tests --bench fast_path --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*fast_path-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "profile: no fast_path bench built" >&2; exit 1; }
mkdir -p "$out"

"$bench" --bench >"$out/bench.txt" 2>&1 &
bench_pid=$!
# The bench starts its own controller and driver from $CARGO_TARGET_DIR.
pid_of() {
  for _ in $(seq 1 600); do
    local pid
    pid=$(pgrep -f "$CARGO_TARGET_DIR/release/$1" | head -1 || true)
    [ -n "$pid" ] && { echo "$pid"; return; }
    kill -0 "$bench_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "profile: $1 never started (see $out/bench.txt)" >&2
  return 1
}
controller=$(pid_of kcred-controller)
driver=$(pid_of kcred-csi-driver)
perf record -F 4999 -g -p "$controller" -o "$out/controller.data" >/dev/null 2>&1 &
rec_controller=$!
perf record -F 4999 -g -p "$driver" -o "$out/driver.data" >/dev/null 2>&1 &
rec_driver=$!
status=0
wait "$bench_pid" || status=$?
# perf stops by itself when its process exits; this only covers a bench
# that failed before stopping them.
kill -INT "$rec_controller" "$rec_driver" 2>/dev/null || true
wait "$rec_controller" "$rec_driver" 2>/dev/null || true

for who in controller driver; do
  echo "== $who: where its CPU went (self time, top 25)"
  perf report -i "$out/$who.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
    awk '/%/ && n++ < 25'
done
echo "== the bench's own table (perf slows both processes: compare figures with an unprofiled run)"
grep '^|' "$out/bench.txt" || true
echo "profiles: $out/controller.data, $out/driver.data"
exit "$status"
