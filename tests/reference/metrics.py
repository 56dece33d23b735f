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

``python benchmarks/run.py metric-parity`` compares a store's maps this way; ``tests/metrics/test_parity.py``
a tiny model on random images.
"""

from __future__ import annotations

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
