#!/usr/bin/env bash
# Install (first time) and run the test suite (pytest) on small real subsets of the data.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/setup_env.sh" "$ROOT/requirements-dev.txt"
cd "$ROOT"
# Debian packages the tests drive: chromium for the browser end-to-end test (no Playwright browser download),
# poppler-utils (pdftotext, pdftoppm) to render the PDF reports and orthanc, the PACS the DICOM node is tested
# against. Installed when missing and we may (root with apt,
# as in CI); without one, the tests that need it are skipped with the reason, the rest still runs.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing ${missing[*]} for the tests (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  for pkg in "${missing[@]}"; do
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
      || echo "$pkg could not be installed: the tests that need it will be skipped"
  done
fi
exec .venv/bin/python -m pytest -q "$@"
