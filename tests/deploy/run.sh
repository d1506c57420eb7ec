#!/usr/bin/env bash
# Runs the deployment tests (pytest): the Helm chart rendered and linted by
# the real Helm engine and validated against Kubernetes schemas, the alert
# rules under promtool, and, as root, the container images built with
# buildah and run. Uses the venv scripts/install-deps.sh creates
# ($KCRED_TEST_VENV, default /var/cache/kcred-test/venv). Extra arguments go
# to pytest, e.g. tests/deploy/run.sh -k chart.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${KCRED_TEST_VENV:-/var/cache/kcred-test/venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "no Python venv at $venv: run scripts/install-deps.sh" >&2
  exit 1
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/deploy "$@"
