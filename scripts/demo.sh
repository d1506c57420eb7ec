#!/usr/bin/env bash
# One command demo: installs what is needed, builds kcred, then runs a
# throwaway realm, the controller and the CSI driver, publishes a volume
# for an annotated pod and proves the delivered keytab with kinit.
# Needs root (it mounts tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --workspace --bins
exec target/debug/kcred-demo
