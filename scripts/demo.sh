#!/usr/bin/env bash
# Set up (pinned, offline) and generate an image with the shipped demo models: no downloads needed.
# Usage: scripts/demo.sh ["PROMPT"] [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
prompt=${1:-"a red circle on a blue background"}
out=${2:-out.png}
.venv/bin/python -m vqgan_core generate "$prompt" --out "$out"
echo "wrote $out"
