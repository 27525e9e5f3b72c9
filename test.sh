#!/usr/bin/env bash
# Install (first time) and run the test suite (pytest) on small real subsets of the data.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/setup_env.sh" "$ROOT/requirements-dev.txt"
cd "$ROOT"
# The browser end-to-end test drives Debian's chromium (no Playwright browser download) and the DICOM node test
# a real Orthanc PACS; install them when missing and we may (root with apt, as in CI). Without one, its test is
# skipped with the reason, the rest still runs.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing ${missing[*]} for the browser and DICOM node tests (apt-get)..."
  (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null) || echo "${missing[*]} could not be installed: their tests will be skipped"
fi
exec .venv/bin/python -m pytest -q "$@"
