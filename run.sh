#!/usr/bin/env bash
# Install (first time) and start the dashboard on the shipped model and artifacts.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/setup_env.sh" "$ROOT/requirements.txt"
cd "$ROOT"
exec .venv/bin/python -m streamlit run dashboard/app.py --server.headless true "$@"
