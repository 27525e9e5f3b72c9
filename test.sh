#!/usr/bin/env bash
# Install (first time) and run the test suite (pytest) on small real subsets of the data.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/setup_env.sh" "$ROOT/requirements-dev.txt"
cd "$ROOT"
# The browser end-to-end test drives Debian's chromium (no Playwright browser download); install it when
# missing and we may (root with apt, as in CI). Without it that test is skipped, the rest still runs.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing chromium for the browser tests (apt-get)..."
  (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium \
    >/dev/null) || echo "chromium could not be installed: the browser test will be skipped"
fi
exec .venv/bin/python -m pytest -q "$@"
