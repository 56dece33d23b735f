#!/usr/bin/env bash
# The acceptance runs behind the README's tables, on the development data (not shipped).
# CPU-sized: 16 images, 100 iterations; on a GPU raise --limit and drop --iterations.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/imagenet-val-100}
LIMIT=${LIMIT:-16}
P=.venv/bin/perturb

# Issue: perturbation variants side by side (solve, evaluate, compare in one resumable command).
$P sweep "$DATA/val" -p seed -p seed-code -p paper -p extremal --iterations 100 --limit "$LIMIT" \
   --boxes "$DATA/bbox" --out results/sweep --workers 1

# Issue: the mask method against the saliency baselines, on the same images.
for name in centre random gradient gradcam; do
  $P baseline "$name" "$DATA/val" --limit "$LIMIT" --out "results/baselines/$name/masks.h5" --workers 1
  $P evaluate "results/baselines/$name/masks.h5" --boxes "$DATA/bbox" --out "results/baselines/$name" --workers 1
done
$P compare results/sweep/paper results/baselines/{centre,random,gradient,gradcam} --out results/baselines
