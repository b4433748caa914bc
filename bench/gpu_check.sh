#!/usr/bin/env bash
# Every GPU measurement of the project in one run (for a short GPU lease). The comparisons against the
# replicas come first so that they always fit the budget: generation speed (classic replica with OpenAI's
# CLIP module tree when the `clip` package is importable, with open_clip, and ours; 256² and 512², cutn 32),
# then taming's training step vs ours; then CUDA tests, profiles, torch.compile as the budget allows.
# Ends with the ratios (wall and CPU time) read back from both comparisons.
# Usage (repo root, a CUDA machine): OUT=/tmp/out bash bench/gpu_check.sh [budget_seconds] [stage ...]
# Stages (default, in this order): gen_bench train_bench gpu_tests gen_nobench gen_profile_eager gen_profile_256
# gen_compile (+ gen_nchw, gen_compile_full, gen_codes, train_ours). Default budget 540 s: gen_bench ~150 s,
# train_bench ~90 s on an H100-class card (estimates; the earlier replicas took 100-200 s for both).
# Missing wheels (open_clip_torch, kornia, kornia_rs, ftfy, wcwidth) may lie in .whl/ and are installed first;
# fetch them where PyPI is reachable (the device machine has none; it had torch 2.11 and Python 3.12):
#   pip download --no-deps --only-binary :all: --python-version 3.12 -d .whl open_clip_torch==3.3.0 \
#       kornia==0.9.0 kornia_rs==0.2.0 ftfy wcwidth
#   pip wheel --no-deps -w .whl openai-clip==1.0.1   # sdist only on PyPI; builds a py3-none-any wheel
# and carry .whl to the machine. Without openai-clip, gen_bench runs the open_clip replica only.
set -u
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
BUDGET=${1:-540}; shift || true; START=$(date +%s)
STAGES=${*:-gen_bench train_bench gpu_tests gen_nobench gen_profile_eager gen_profile_256 gen_compile}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
stage() {  # stage NAME SECONDS CMD...: run with a timeout no longer than the budget left
  local name=$1 want=$2; shift 2
  local t; t=$(left); (( t > want )) && t=$want
  if (( t < 20 )); then echo "== $name: skipped (budget)"; return; fi
  echo "== $name (timeout ${t}s) $(date +%T)"
  timeout "$t" "$@" > "$OUT/$name.txt" 2>&1; echo "== $name rc=$? after $(( $(date +%s) - START ))s"
  tail -n 40 "$OUT/$name.txt"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, open_clip, kornia, timm; print('torch', torch.__version__, 'open_clip', open_clip.__version__, 'kornia', kornia.__version__, 'timm', timm.__version__)"
  nproc; } 2>&1 | tee "$OUT/env.txt"
TIMEOUT=(); python3 -c "import pytest_timeout" 2>/dev/null && TIMEOUT=(--timeout 60)
CLASSIC=(classic)  # OpenAI's CLIP module tree (what nerdyrodent's script runs) when openai-clip is there
python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('clip') is None)" 2>/dev/null \
  && CLASSIC=(classic_openai classic)
echo "classic replicas: ${CLASSIC[*]}"
for s in $STAGES; do case $s in
  gpu_tests) stage gpu_tests 240 python3 -m pytest -v -m gpu -p no:cacheprovider --durations 12 "${TIMEOUT[@]}" tests/engine/test_gen_cuda.py ;;
  gen_bench) stage gen_bench 240 python3 bench/bench_generate.py --device cuda --sizes 256 512 --cutn 32 --iters 60 --warmup 10 --modes "${CLASSIC[@]}" ours --json-out "$OUT/gen_bench.json" ;;
  gen_profile_eager) stage gen_profile_eager 80 python3 bench/bench_generate.py --device cuda --sizes 512 --cutn 32 --iters 30 --warmup 5 --modes ours --cuda-graph off --profile ;;
  gen_profile_256) stage gen_profile_256 80 python3 bench/bench_generate.py --device cuda --sizes 256 --cutn 32 --iters 30 --warmup 5 --modes ours --cuda-graph off --profile ;;
  gen_nobench) stage gen_nobench 120 python3 bench/bench_generate.py --device cuda --sizes 512 256 --cutn 32 --iters 100 --warmup 10 --modes ours --no-cudnn-benchmark ;;
  gen_nchw) stage gen_nchw 120 python3 bench/bench_generate.py --device cuda --sizes 512 256 --cutn 32 --iters 100 --warmup 10 --modes ours --no-channels-last ;;
  gen_codes) stage gen_codes 120 python3 bench/bench_generate.py --device cuda --sizes 512 256 --cutn 32 --iters 50 --warmup 10 --modes ours --method codebook_sampling ;;
  train_bench) stage train_bench 150 python3 bench/bench_train.py ;;
  train_ours) stage train_ours 60 python3 bench/bench_train.py --mode ours ;;
  gen_compile) stage gen_compile 200 python3 bench/bench_generate.py --device cuda --sizes 512 256 --cutn 32 --iters 100 --warmup 10 --modes ours --compile blocks ;;
  gen_compile_full) stage gen_compile_full 240 python3 bench/bench_generate.py --device cuda --sizes 512 --cutn 32 --iters 100 --warmup 10 --modes ours --compile full ;;
  *) echo "unknown stage $s" ;;
esac; done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("== ratios (ours over the replica; CPU = process CPU seconds per step)")
g = out / "gen_bench.json"
for k, v in (json.loads(g.read_text())["summary"].items() if g.exists() else []):
    print(f"generation {k}: {v['speedup']:.2f}x wall ({v['classic_it_s']:.1f} -> {v['ours_it_s']:.1f} it/s), "
          f"{v['speedup_cpu_time']:.2f}x CPU")
t = out / "train_bench.txt"
lines = [json.loads(x) for x in t.read_text().splitlines() if x.startswith("{")] if t.exists() else []
for r in lines:
    if "speedup_ours_over_taming" in r:
        print(f"training: {r['speedup_ours_over_taming']:.2f}x img/s, {r['speedup_cpu_time']:.2f}x CPU, "
              f"memory ratio {r['memory_ratio_ours_over_taming']:.2f}")
PY
echo "total $(( $(date +%s) - START ))s"
