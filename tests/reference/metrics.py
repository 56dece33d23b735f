"""The project's metrics against independent code: deletion/insertion against Quantus, the pointing
game against TorchRay, one image at a time, on the same saliency maps.

Deletion and insertion (``pipeline.evaluation.causal_batch``, batched over images and steps) against
Quantus 0.6's ``PixelFlipping``, configured to the project's protocol (docs/metrics.md):

* score: the softmax probability of the store's target (``softmax=True``);
* ``features_in_step = 3 * step``: Quantus counts each colour channel as a feature, and the map is
  given as ``(1, 1, H, W)``, which it broadcasts over the channels, so every step moves ``step``
  whole pixels (``step`` = 1792 as in RISE's evaluation, 28 steps);
* substrates computed here, not by the project: zeros in normalised space (``perturb_baseline=0.0``)
  for ``deletion_zero``; OpenCV's ``GaussianBlur`` (11x11, sigma 5, reflect-101 borders) of the
  normalised image for ``deletion_blur`` and, as the starting image, for ``insertion``, where a
  replacement function copies the blurred (deletion) or original (insertion) pixels in;
* ``normalise=False``, ``abs=False``: the order is the map's own.

Quantus 0.6 checks ``features_in_step`` against ``H * W`` though its loop counts ``3 * H * W``
features; a subclass replaces that one check (:func:`_pixel_flipping`), nothing else.

Two protocol points Quantus does differently, handled so that the same thing is compared:

* Quantus's curve starts after the first step; the unperturbed score (the first point of the
  project's curve) is computed here with a plain forward pass and put in front. The AUC of the
  joined curve is ``numpy.trapezoid`` with spacing ``1 / (n - 1)``, on ``[0, 1]`` as RISE does
  (Quantus's own ``calculate_auc`` uses spacing 1, an AUC 28 times larger).
* Ties: Quantus ranks with ``numpy.argsort`` (unstable), the project breaks ties in raster order.
  The ``tie_free`` rows give Quantus a map whose order is the same ranking made explicit (value,
  then raster index, by ``numpy.lexsort``); the ``raw`` rows give it the map itself, so the
  effect of the tie rule on a map with plateaus is measured, not hidden.

Pointing game (``pipeline.metrics.pointing_game_hit``) against ``torchray.benchmark.pointing_game``:
the same heatmap (resized to the original frame) and the same boxes; the point is the heatmap's
first maximum in raster order, TorchRay gets the union of the class's boxes as its mask. Per-class
accuracy is compared over the classes present (TorchRay's ``accuracy`` averages over all
``num_classes``, counting a class never seen as 0).

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
from typing import Callable

import numpy as np
import torch

CURVES = ("deletion_zero", "deletion_blur", "insertion")


# ---------------------------------------------------------------- deletion / insertion by Quantus

def opencv_blur(x: np.ndarray, kernel: int = 11, sigma: float = 5.0) -> np.ndarray:
    """``(3, H, W)`` float32 blurred per channel by OpenCV, reflect-101 borders (RISE's substrate)."""
    import cv2

    return np.stack([cv2.GaussianBlur(channel, (kernel, kernel), sigma, borderType=cv2.BORDER_REFLECT_101)
                     for channel in x.astype(np.float32)])


def replace_from(arr: np.ndarray, indices: np.ndarray, source: np.ndarray, **_) -> np.ndarray:
    """Quantus perturbation: the features ``indices`` ``(N, I)`` of ``arr`` ``(N, F)`` take the values
    of ``source`` (the same image's substrate, or its original for insertion)."""
    out = arr.copy()
    rows = np.arange(len(arr))[:, None]
    out[rows, indices] = source.reshape(len(arr), -1)[rows, indices]
    return out


def tie_free(saliency: np.ndarray) -> np.ndarray:
    """The ranking ``(H, W)`` -> ``(H, W)`` float64 with no ties: higher value first, then lower
    raster index first, written as ``N - rank``."""
    flat = saliency.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    out = np.empty(flat.size)
    out[order] = flat.size - np.arange(flat.size)
    return out.reshape(saliency.shape)


def _pixel_flipping():
    """Quantus's ``PixelFlipping`` with one input check corrected.

    Quantus 0.6 checks that ``features_in_step`` divides ``H * W``, while its loop flattens the
    attribution broadcast over the channels and counts ``3 * H * W`` features; whole-pixel steps
    (``3 * step`` features) then fail a check the loop does not need. The subclass checks what the
    loop uses instead; ordering, perturbing and scoring stay Quantus's.
    """
    import quantus

    class PixelFlipping(quantus.PixelFlipping):
        def custom_preprocess(self, x_batch: np.ndarray, **kwargs) -> None:
            if np.prod(x_batch.shape[1:]) % self.features_in_step:
                raise ValueError(f"features_in_step {self.features_in_step} must divide {np.prod(x_batch.shape[1:])}")

    return PixelFlipping


def quantus_curves(model: torch.nn.Module, x: np.ndarray, saliency: np.ndarray, target: int, step: int,
                   substrate: Callable[[np.ndarray], np.ndarray] = opencv_blur) -> dict[str, np.ndarray]:
    """The three curves of one image by Quantus ``PixelFlipping``.

    Args:
        model: eval-mode network taking the normalised ``(1, 3, H, W)`` image.
        x: ``(3, H, W)`` float32 normalised image.
        saliency: ``(H, W)``, larger = more important (passed to Quantus as is).
        target: the class scored.
        step: pixels per step.
        substrate: the blur substrate of ``x``.

    Returns:
        ``{curve: (n + 1,) float64}``: the unperturbed score then Quantus's ``n`` points.
    """
    blurred = substrate(x)
    plan = {"deletion_zero": (x, 0.0, None), "deletion_blur": (x, None, blurred), "insertion": (blurred, None, x)}
    curves = {}
    for name, (start, baseline, source) in plan.items():
        kwargs = {} if source is None else {"perturb_func": replace_from, "perturb_func_kwargs": {"source": source[None]}}
        metric = _pixel_flipping()(features_in_step=3 * step, normalise=False, abs=False,
                                       perturb_baseline=0.0 if baseline is not None else "black",
                                       disable_warnings=True, display_progressbar=False, **kwargs)
        points = metric(model=model, x_batch=start[None].astype(np.float32), y_batch=np.array([target]),
                        a_batch=saliency[None, None].astype(np.float32), channel_first=True, softmax=True,
                        device="cpu", batch_size=1)[0]
        with torch.no_grad():
            first = torch.softmax(model(torch.from_numpy(start[None].astype(np.float32))), dim=1)[0, target]
        curves[name] = np.concatenate([[float(first)], np.asarray(points, dtype=np.float64)])
    return curves


def trapezoid_auc(curve: np.ndarray) -> float:
    """AUC of points spread evenly over ``[0, 1]``."""
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


# ---------------------------------------------------------------- pointing game by TorchRay

def torchray_hit(heatmap: np.ndarray, boxes: np.ndarray, tolerance: int = 15) -> bool:
    """TorchRay's pointing game for one heatmap ``(H, W)`` and its class's boxes ``(K, 4)`` inclusive."""
    from torchray.benchmark.pointing_game import PointingGame

    mask = torch.zeros(heatmap.shape, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return PointingGame(1, tolerance=tolerance).evaluate(mask, (int(x), int(y))) == 1


def torchray_class_accuracy(hits: list[bool], classes: list[int]) -> float:
    """TorchRay's per-class mean accuracy over the classes present (see the module docstring)."""
    from torchray.benchmark.pointing_game import PointingGame

    present = sorted(set(classes))
    game = PointingGame(len(present), tolerance=15)
    for hit, c in zip(hits, classes):
        game.aggregate(1 if hit else -1, present.index(c))
    return float(game.accuracy)


# ---------------------------------------------------------------- the run

def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _common as common
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
