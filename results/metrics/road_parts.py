"""ROAD and complexity of several stores on the same images, in parts, merged as far as done.

What `perturb evaluate STORE --out DIR --metrics road,complexity ...` computes, split into the
parts `index % PARTS == k` (the rows `perturb evaluate --shard k/PARTS` takes), part 0 of every
store first, then part 1 ...: a run stopped early has every store evaluated on the same images.
A finished part is kept (its folder has summary.json) and not evaluated again; each run ends (and
``--merge-only`` just does this) by merging the parts every store finished into ``OUT/<name>/``
(`pipeline.evaluation.merge_evaluations`, as `perturb merge` joins shards).

    OMP_NUM_THREADS=1 PYTHONPATH=. python results/metrics/road_parts.py OUT NAME=STORE.h5 ... \
        --data DATA/val --boxes DATA/bbox [--parts 8] [--merge-only]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipeline.evaluation import EvalConfig, evaluate_store, merge_evaluations
from pipeline.metrics import load_boxes
from pipeline.models import load_model
from pipeline.store import MaskStore

# The settings of the committed results: ROAD's paper defaults, the imputation solved in float32
# (tol 1e-6, errors about 2e-3 on [0, 1] pixels, below the 0.01 noise) to fit a shared 2-core CPU.
CONFIG = EvalConfig(workers=0, batch_size=8, plots=False, metrics=("road", "complexity"),
                    road_precision="float32", road_tol=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("stores", nargs="+", help="NAME=STORE.h5")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--boxes", type=Path)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--merge-only", action="store_true")
    args = parser.parse_args()
    stores = dict(text.split("=", 1) for text in args.stores)
    if not args.merge_only:
        classifier = None
        boxes = load_boxes(args.boxes) if args.boxes else None
        for part in range(args.parts):
            for name, store in stores.items():
                folder = args.out / "parts" / name / f"part-{part}-of-{args.parts}"
                if (folder / "summary.json").is_file():
                    continue
                with MaskStore(store) as opened:
                    index = opened.column("index")
                    spec = opened.model
                classifier = classifier or load_model(spec)
                start = time.perf_counter()
                chosen = index[index % args.parts == part].tolist()
                evaluate_store(store, args.data, classifier, folder, boxes=boxes, config=CONFIG, indices=chosen)
                print(f"{name} part {part}: {len(chosen)} images in {time.perf_counter() - start:.0f} s", flush=True)
    # only the parts every store finished: all stores are merged over the same images
    finished = [{p.parent.name for p in (args.out / "parts" / name).glob(f"part-*-of-{args.parts}/summary.json")}
                for name in stores]
    common = sorted(set.intersection(*finished))
    for name, store in stores.items():
        done = [args.out / "parts" / name / part for part in common]
        if done:
            merged = merge_evaluations(store, done, args.out / name, CONFIG, with_boxes=False)
            n = int((merged.table["eval_status"] == "ok").sum())
            print(f"{name}: {len(done)} of {args.parts} parts merged, {n} images", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
