"""The project's metrics against independent code on a store's saliency maps: deletion/insertion
against Quantus, the pointing game against TorchRay, one image at a time (the reference code and
how it is configured to the project's protocol: ``tests/reference/metrics.py``).

Run from the repository root (needs the ``peers`` extra: ``pip install -e .[peers]``)::

    .venv/bin/python benchmarks/metric_parity.py STORE.h5 --boxes ../shared/data/imagenet-val-100/bbox --images 8

Writes ``results/benchmarks/metric-parity-auc-<name>.csv`` (per image and curve: both AUCs, their
difference, the largest difference of a curve point) and ``metric-parity-pointing-<name>.csv``
(per image: both hits), and prints the summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


# ---------------------------------------------------------------- the run

def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _common as common
    from tests.reference.metrics import CURVES, quantus_curves, tie_free, torchray_class_accuracy, torchray_hit, trapezoid_auc
    from pipeline.data import ImageDataset, ImageRecord
    from pipeline.evaluation import EvalConfig, causal_batch, store_saliency
    from pipeline.metrics import PointingGame, auc, load_boxes, pointing_game_hit, resize_heatmap
    from pipeline.models import load_model
    from pipeline.store import STATUS_OK, MaskStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--boxes", type=Path, default=common.DEFAULT_DATA.parent / "bbox")
    parser.add_argument("--data", type=Path, default=None, help="image root (default: the store's source)")
    parser.add_argument("--images", type=int, default=8, help="images for deletion/insertion (the pointing game uses all)")
    parser.add_argument("--step", type=int, default=1792)
    parser.add_argument("--raw", action="store_true", help="also give Quantus the raw map (ties its own way)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None, help="results name (default: the store's stem)")
    parser.add_argument("--out", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = args.name or args.store.stem
    info = common.machine(torch.device("cpu"))
    box_map = load_boxes(args.boxes)
    with MaskStore(args.store) as store:
        table = store.table()
        root = args.data or Path(store.source)
        classifier = load_model(store.model)
        rows = np.flatnonzero(table["status"].to_numpy() == STATUS_OK)
        saliency = store_saliency(store, rows, store.input_size)[:, 0].numpy()
    records = [ImageRecord(root / str(table["path"].iat[p]), str(table["path"].iat[p]), int(table["label"].iat[p]))
               for p in rows]
    dataset = ImageDataset(records, classifier.input_size)
    meta = {"machine": info["machine"], "torch": info["torch"], "date": common.now(), "store": str(args.store)}

    # Pointing game on every image with a box of its label class.
    point_rows, ours_game = [], PointingGame()
    for i, p in enumerate(rows):
        label, height, width = int(table["label"].iat[p]), int(table["height"].iat[p]), int(table["width"].iat[p])
        entry = box_map.get(Path(str(table["path"].iat[p])).stem)
        gt = entry.for_class(classifier.vocabulary.wnids[label]) if entry is not None and label >= 0 else None
        if gt is None or not len(gt):
            continue
        heat = resize_heatmap(saliency[i], (height, width))
        ours, theirs = pointing_game_hit(heat, gt, 15), torchray_hit(heat, gt, 15)
        ours_game.update(ours, label)
        point_rows.append({"path": table["path"].iat[p], "label": label, "hit_ours": ours, "hit_torchray": theirs,
                           "same": ours == theirs, **meta})
    per_class_torchray = torchray_class_accuracy([r["hit_torchray"] for r in point_rows], [r["label"] for r in point_rows])
    common.write_csv(args.out / f"metric-parity-pointing-{name}.csv", point_rows)
    game = ours_game.compute()
    print(f"pointing game: {sum(r['same'] for r in point_rows)} of {len(point_rows)} images identical; per image "
          f"ours {game['per_image']:.4f}; per class ours {game['per_class']:.4f}, TorchRay {per_class_torchray:.4f}")

    # Deletion / insertion on the first --images images.
    config = EvalConfig(step=args.step, chunk=32, workers=0)
    auc_rows = []
    for i in range(min(args.images, len(rows))):
        item = dataset[i]
        image, target = item["image"][None], int(table["target"].iat[rows[i]])
        heat = torch.from_numpy(saliency[i])[None, None]
        ours = causal_batch(classifier, image, heat, torch.tensor([target]), config)
        x = classifier.normalize(image)[0].numpy()
        variants = {"tie_free": tie_free(saliency[i])}
        if args.raw:
            variants["raw"] = saliency[i]
        for variant, a in variants.items():
            theirs = quantus_curves(classifier.module, x, a, target, args.step)
            for curve in CURVES:
                mine = ours[curve][0].double().numpy()
                row = {"path": table["path"].iat[rows[i]], "curve": curve, "saliency": variant,
                       "auc_ours": float(auc(ours[curve])[0]), "auc_quantus": trapezoid_auc(theirs[curve]),
                       "points": len(mine), "max_point_diff": float(np.abs(mine - theirs[curve]).max())}
                row["auc_diff"] = row["auc_ours"] - row["auc_quantus"]
                row["ties_in_map"] = int(saliency[i].size - np.unique(saliency[i]).size)
                auc_rows.append({**row, **meta})
                print(f"{i:3d} {variant:8s} {curve:14s} ours {row['auc_ours']:.5f} quantus {row['auc_quantus']:.5f} "
                      f"diff {row['auc_diff']:+.2e} ties {row['ties_in_map']}", flush=True)
        common.write_csv(args.out / f"metric-parity-auc-{name}.csv", auc_rows)  # after every image
    for variant in ("tie_free", "raw"):
        diffs = [abs(r["auc_diff"]) for r in auc_rows if r["saliency"] == variant]
        if diffs:
            print(f"{variant}: {len(diffs)} AUCs, largest |ours - Quantus| {max(diffs):.2e}, "
                  f"within 1e-3: {sum(d <= 1e-3 for d in diffs)}")


if __name__ == "__main__":
    main()
