#!/usr/bin/env bash
# Set up (pinned, offline-friendly) and run lint + the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
