#!/usr/bin/env bash
# Create .venv with pinned dependencies (idempotent). Usage: scripts/setup.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
req=requirements-lock.txt
[ "${1:-}" = "dev" ] && req=requirements-dev.txt
# Skip pip entirely when everything pinned is already there (fast re-runs, no network needed).
if ! .venv/bin/python - "$req" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
ok = True
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if not line or line.startswith('-r'):
        if line.startswith('-r'):
            for l2 in open(line.split()[1]):
                l2 = l2.split('#')[0].strip()
                if l2 and '==' in l2:
                    n, v = l2.split('==')
                    try:
                        ok &= version(n) == v
                    except PackageNotFoundError:
                        ok = False
        continue
    if '==' in line:
        n, v = line.split('==')
        try:
            ok &= version(n) == v
        except PackageNotFoundError:
            ok = False
sys.exit(0 if ok else 1)
PYEOF
then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
fi
