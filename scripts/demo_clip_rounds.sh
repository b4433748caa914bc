#!/usr/bin/env bash
# Adversarial rounds for the demo CLIP: fine-tune on the guide's own rejected generations, mine again, repeat.
#
# Why: a CLIP that ranks real shapes-world drawings right (the ResNet tower: 99.8 % shape zero-shot) is still
# fooled by the optimiser, which paints patchwork the CLIP scores above a clean drawing. Each round mines the
# current guide's generations (training.mine_negatives: the demo preset, judged by pixels), then fine-tunes
# the CLIP with every negative mined so far as extra images that match no caption (training.clip_train keys
# init + negatives). Seeds are fixed per round and per miner; the two miners of a round run side by side on
# one thread each.
#
#   bash scripts/demo_clip_rounds.sh BASE_CLIP DATA OUT [ROUNDS]
#   BASE_CLIP: a folder from `python -m training.clip_train --config training/configs/demo_clip_resnet.json`
#   DATA:      a shapes-world dataset (python -m training.shapes); OUT/clip_rK is round K's CLIP
# Schedule (the experiment the README reports; no CLIP from it is shipped): round 1 mines 70 images per miner from BASE_CLIP and fine-tunes 250
# steps (seed 0); round 2 mines 16 per miner; later rounds 30; rounds >= 2 fine-tune 200 steps (seed K).
set -euo pipefail
BASE=$1 DATA=$2 OUT=$3 ROUNDS=${4:-8}
PY=${PYTHON:-python}
mkdir -p "$OUT"
mine() {  # mine ROUND CLIP N SEED
  OMP_NUM_THREADS=1 $PY -m training.mine_negatives --clip "$2" --n "$3" --seed "$4" --out "$OUT/neg_r${1}_$4" \
    --set steps=100 > "$OUT/mine_r${1}_$4.log" 2>&1
}
negs="" prev=$BASE
for k in $(seq 1 "$ROUNDS"); do
  case $k in 1) n=70 s1=1 s2=2 ;; 2) n=16 s1=3 s2=4 ;; *) n=30 s1=$(( (k - 1) * 10 + 1 )) s2=$(( (k - 1) * 10 + 2 )) ;; esac
  mine "$k" "$prev" "$n" "$s1" & p1=$!
  mine "$k" "$prev" "$n" "$s2" & p2=$!
  wait $p1; wait $p2  # a failed miner stops the rounds (a bare `wait` would report success)
  negs="${negs:+$negs,}\"$OUT/neg_r${k}_$s1\",\"$OUT/neg_r${k}_$s2\""
  if (( k == 1 )); then steps=250 seed=0; else steps=200 seed=$k; fi
  $PY -m training.clip_train --config training/configs/demo_clip_resnet.json --data "$DATA" --out "$OUT/clip_r$k" \
    --steps $steps --set init="\"$prev\"" --set "negatives=[$negs]" --set lr=3e-4 --set warmup=10 --set threads=2 \
    --set seed=$seed > "$OUT/clip_r$k.log" 2>&1
  prev=$OUT/clip_r$k
  echo "round $k: $prev"
done
