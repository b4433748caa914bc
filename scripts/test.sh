#!/usr/bin/env bash
# Set up (pinned, offline-friendly) and run lint + the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check .
# a default test may skip only for a missing GPU or ComfyUI checkout (tests/skip_policy.py)
VQGAN_STRICT_SKIPS=1 .venv/bin/python -m pytest -q "$@"
