#!/usr/bin/env bash
# Create (or reuse) .venv and install what the project needs. Sourced by run.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQ="${1:-$ROOT/requirements.txt}"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.installed-$(cat "$ROOT/requirements.txt" "$REQ" "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install -q -r "$REQ"
  # The project itself, editable, without dependencies: they are pinned in the requirements files above
  # (an unpinned torch from pyproject.toml would replace the CPU wheel).
  "$ROOT/.venv/bin/python" -m pip install -q --no-deps -e "$ROOT"
  touch "$STAMP"
fi
# Default data location: ../shared/data/rsna-bone-age beside the checkout, when it exists.
if [ -z "${BONEAGE_DATA:-}" ] && [ -d "$ROOT/../shared/data/rsna-bone-age" ]; then
  export BONEAGE_DATA="$(cd "$ROOT/../shared/data/rsna-bone-age" && pwd)"
fi
