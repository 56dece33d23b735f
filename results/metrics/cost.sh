#!/bin/bash
# CPU seconds of each `perturb evaluate --metrics` choice on 8 development images (Grad-CAM maps,
# EfficientNet-Lite0, one torch thread): each metric alone, and `complexity` alone as the fixed
# cost (imports, model load, reading images), which the per-image cost leaves out.
# Usage: results/metrics/cost.sh DATA_ROOT WORK_DIR  ->  prints CSV: metrics,images,cpu_s,wall_s
set -e
DATA=${1:-../shared/data/imagenet-val-100}
WORK=${2:-/tmp/metric-cost}
export OMP_NUM_THREADS=1
P="python -m pipeline"
mkdir -p "$WORK"
[ -f "$WORK/gradcam.h5" ] || $P baseline gradcam "$DATA/val" --out "$WORK/gradcam.h5" --limit 8 --target label \
  --workers 0 --batch-size 8 > /dev/null
echo "metrics,images,cpu_s,wall_s"
for metrics in complexity deletion insertion localisation pointing road "road --road-precision float32 --road-tol 1e-6" \
               "deletion,insertion,localisation,pointing"; do
  /usr/bin/time -f "%U %S %e" -o "$WORK/time.txt" $P evaluate "$WORK/gradcam.h5" --out "$WORK/eval" \
    --boxes "$DATA/bbox" --workers 0 --batch-size 8 --metrics $metrics > /dev/null 2>&1
  read user sys wall < "$WORK/time.txt"
  echo "\"$metrics\",8,$(python -c "print(round($user + $sys, 1))"),$wall"
done
