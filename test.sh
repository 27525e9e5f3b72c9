#!/usr/bin/env bash
# Install (first time) and run the test suite (pytest) on small real subsets of the data.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/setup_env.sh" "$ROOT/requirements-dev.txt"
cd "$ROOT"
exec .venv/bin/python -m pytest -q "$@"
