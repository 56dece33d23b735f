"""The project's metrics against independent code, one image at a time, on the masks of a store:
deletion/insertion (``pipeline.evaluation.causal_batch``) against Quantus's ``PixelFlipping``
configured to the project's protocol, and the pointing game (``pipeline.metrics.pointing_game_hit``)
against TorchRay's. The configuration of both peers is the reference code the tests also use
(``tests/reference/metrics.py``; its docstring and docs/metrics.md give every setting). Needs the ``peers``
extra (``pip install -e '.[peers]'``).

Pointing game: every ok image of the store with a box of its label's class. Deletion/insertion:
the first ``--images`` ok images, each curve with Quantus given the tie-free ranking of the map
(``tie_free``) and, with ``--raw``, the map itself (its own tie rule).

Files: ``metric-parity-auc-STEM.csv`` (per image and curve: both AUCs, their difference, the largest
difference of a curve point) and ``metric-parity-pointing-STEM.csv`` (per image: both hits), written
after every image; ``STEM`` (``--name``) defaults to the store's file stem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DEFAULT_DATA
from pipeline import EvalConfig, MaskStore, load_model
from pipeline.data import ImageDataset, ImageRecord
from pipeline.evaluation import causal_batch, store_saliency
from pipeline.metrics import PointingGame, auc, load_boxes, pointing_game_hit, resize_heatmap
from pipeline.store import STATUS_OK
from tests.reference import metrics as parity

NAME = ""
DEVICES = ("cpu",)
THREADS = 1


def add_arguments(parser) -> None:
    parser.add_argument("store", type=Path, help="a mask store (perturb masks or perturb baseline)")
    parser.add_argument("--boxes", type=Path, default=DEFAULT_DATA.parent / "bbox", help="ImageNet box folder")
    parser.add_argument("--data", type=Path, default=None, help="image root (default: the store's source)")
    parser.add_argument("--images", type=int, default=8, help="images for deletion/insertion (the pointing game "
                        "uses all)")
    parser.add_argument("--step", type=int, default=1792, help="pixels per deletion/insertion step")
    parser.add_argument("--raw", action="store_true", help="also give Quantus the raw map (ties its own way)")


def run(args, device: torch.device, results) -> int:
    name = results.name or args.store.stem
    with MaskStore(args.store) as store:
        table = store.table()
        root = args.data or Path(store.source)
        classifier = load_model(store.model)
        rows = np.flatnonzero(table["status"].to_numpy() == STATUS_OK)
        saliency = store_saliency(store, rows, store.input_size)[:, 0].numpy()
    meta = {"store": str(args.store)}
    pointing(classifier, table, rows, saliency, load_boxes(args.boxes), meta, results, name)
    records = [ImageRecord(root / str(table["path"].iat[p]), str(table["path"].iat[p]), int(table["label"].iat[p]))
               for p in rows]
    curves(classifier, ImageDataset(records, classifier.input_size), table, rows, saliency, args, meta, results, name)
    return 0


def pointing(classifier, table, rows: np.ndarray, saliency: np.ndarray, box_map: dict, meta: dict, results,
             name: str) -> None:
    """Every image with a box of its label's class: the project's hit against TorchRay's."""
    point_rows, ours_game = [], PointingGame()
    for i, p in enumerate(rows):
        label, height, width = int(table["label"].iat[p]), int(table["height"].iat[p]), int(table["width"].iat[p])
        entry = box_map.get(Path(str(table["path"].iat[p])).stem)
        gt = entry.for_class(classifier.vocabulary.wnids[label]) if entry is not None and label >= 0 else None
        if gt is None or not len(gt):
            continue
        heat = resize_heatmap(saliency[i], (height, width))
        ours, theirs = pointing_game_hit(heat, gt, 15), parity.torchray_hit(heat, gt, 15)
        ours_game.update(ours, label)
        point_rows.append({"path": table["path"].iat[p], "label": label, "hit_ours": ours, "hit_torchray": theirs,
                           "same": ours == theirs, **meta})
    per_class_torchray = parity.torchray_class_accuracy([r["hit_torchray"] for r in point_rows],
                                                        [r["label"] for r in point_rows])
    results.write(point_rows, file=f"metric-parity-pointing-{name}.csv")
    game = ours_game.compute()
    print(f"pointing game: {sum(r['same'] for r in point_rows)} of {len(point_rows)} images identical; per image "
          f"ours {game['per_image']:.4f}; per class ours {game['per_class']:.4f}, TorchRay {per_class_torchray:.4f}")


def curves(classifier, dataset, table, rows: np.ndarray, saliency: np.ndarray, args, meta: dict, results,
           name: str) -> None:
    """The first ``--images`` images: the three curves' AUCs, the project's against Quantus's."""
    config = EvalConfig(step=args.step, chunk=32, workers=0)
    auc_rows = []
    for i in range(min(args.images, len(rows))):
        item = dataset[i]
        image, target = item["image"][None], int(table["target"].iat[rows[i]])
        heat = torch.from_numpy(saliency[i])[None, None]
        ours = causal_batch(classifier, image, heat, torch.tensor([target]), config)
        x = classifier.normalize(image)[0].numpy()
        variants = {"tie_free": parity.tie_free(saliency[i])}
        if args.raw:
            variants["raw"] = saliency[i]
        for variant, a in variants.items():
            theirs = parity.quantus_curves(classifier.module, x, a, target, args.step)
            for curve in parity.CURVES:
                mine = ours[curve][0].double().numpy()
                row = {"path": table["path"].iat[rows[i]], "curve": curve, "saliency": variant,
                       "auc_ours": float(auc(ours[curve])[0]), "auc_quantus": parity.trapezoid_auc(theirs[curve]),
                       "points": len(mine), "max_point_diff": float(np.abs(mine - theirs[curve]).max())}
                row["auc_diff"] = row["auc_ours"] - row["auc_quantus"]
                row["ties_in_map"] = int(saliency[i].size - np.unique(saliency[i]).size)
                auc_rows.append({**row, **meta})
                print(f"{i:3d} {variant:8s} {curve:14s} ours {row['auc_ours']:.5f} quantus {row['auc_quantus']:.5f} "
                      f"diff {row['auc_diff']:+.2e} ties {row['ties_in_map']}", flush=True)
        results.write(auc_rows, file=f"metric-parity-auc-{name}.csv")  # after every image
    for variant in ("tie_free", "raw"):
        diffs = [abs(r["auc_diff"]) for r in auc_rows if r["saliency"] == variant]
        if diffs:
            print(f"{variant}: {len(diffs)} AUCs, largest |ours - Quantus| {max(diffs):.2e}, "
                  f"within 1e-3: {sum(d <= 1e-3 for d in diffs)}")
