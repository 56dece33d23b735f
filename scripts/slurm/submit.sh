#!/bin/bash
# Submit a sharded `perturb masks` job array and its merge job, chained with --dependency=afterok.
#
#   DATA=/data/imagenet/val OUT=/shared/runs/val.h5 SHARDS=8 scripts/slurm/submit.sh --preset paper
#
# Arguments go to `perturb masks`. Set SBATCH_ARGS for site options (partition, account).
set -euo pipefail
: "${DATA:?set DATA to the image folder (or file list)}"
: "${OUT:?set OUT to the merged store, on a file system every node sees}"
SHARDS=${SHARDS:-8}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC2086  # SBATCH_ARGS holds several options
array=$(sbatch --parsable --export=ALL --array="0-$((SHARDS - 1))" ${SBATCH_ARGS:-} "$here/masks-array.sbatch" "$@")
array=${array%%;*}  # "jobid;cluster" on multi-cluster sites
# shellcheck disable=SC2086
merge=$(sbatch --parsable --export=ALL --dependency="afterok:$array" ${SBATCH_ARGS:-} "$here/merge.sbatch")
echo "array job $array ($SHARDS shards) -> merge job ${merge%%;*} into $OUT"
