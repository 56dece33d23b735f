#!/usr/bin/env bash
# The acceptance runs behind results/README.md's tables, on the development data (not shipped).
# CPU-sized by default: 16 images, 100 iterations. On a GPU: LIMIT=100 ITERATIONS= (each preset's
# own length) BATCH=64. P is the perturb command; OUT the results folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/imagenet-val-100}
LIMIT=${LIMIT:-16}
ITERATIONS=${ITERATIONS-100}
BATCH=${BATCH:-8}
OUT=${OUT_DIR:-results}
P=${P:-.venv/bin/perturb}
iterations=${ITERATIONS:+--iterations $ITERATIONS}

# Issue: perturbation variants side by side (solve, evaluate, compare in one resumable command).
$P sweep "$DATA/val" -p jacobgil -p jacobgil-code -p paper -p extremal $iterations --limit "$LIMIT" \
   --boxes "$DATA/bbox" --out "$OUT/sweep" --workers 1 --batch-size "$BATCH"

# Issue: the mask method against the saliency baselines, on the same images.
for name in centre random gradient gradcam; do
  $P baseline "$name" "$DATA/val" --limit "$LIMIT" --out "$OUT/baselines/$name/masks.h5" --workers 1 --batch-size "$BATCH"
  $P evaluate "$OUT/baselines/$name/masks.h5" --boxes "$DATA/bbox" --out "$OUT/baselines/$name" --workers 1 --batch-size "$BATCH"
done
$P compare "$OUT/sweep/paper" "$OUT"/baselines/{centre,random,gradient,gradcam} --out "$OUT/baselines"

# Issue: the reports as a person sees them (needs Debian's chromium; skipped without it).
if command -v chromium >/dev/null 2>&1; then
  scripts/screenshot_report.sh "$OUT/sweep/report.html" "$OUT/sweep/report.png" 1400 6000
fi
