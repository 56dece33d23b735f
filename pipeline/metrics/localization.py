"""Weak localisation (Fong & Vedaldi 2017, Table 1) and the pointing games.

Everything here works on one heatmap at a time as a numpy array ``(H, W)`` (float, larger = more
salient) **in the original image's pixel frame**, the frame of the ground-truth boxes. Bring a
224x224 saliency map there with :func:`resize_heatmap` first; :func:`localize` thresholds the
heatmap it is given and never resizes. (:func:`rescale_box` is the other order: threshold at
224x224, then map the box; the authors' code thresholded first, then resized the thresholded map.)

Boxes are ``(xmin, ymin, xmax, ymax)`` in **inclusive** pixel coordinates, 0-based, x = column,
y = row: a box covers ``(xmax - xmin + 1) * (ymax - ymin + 1)`` pixels (the ImageNet/VOC
convention; the ImageNet XML boxes here are 0-based, some touch ``width - 1``).

Protocol (the paper's section 4.1 and its code): threshold the heatmap (:class:`ThresholdMethod`), take a box around
the kept pixels (:class:`BoxKind`), and count the image correct when the best IoU with any
ground-truth box of the class is at least 0.5; localisation error = 1 - accuracy.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Iterable, Sequence

import numpy as np
from skimage.measure import label
from skimage.transform import resize

from pipeline.errors import ConfigError
from pipeline.options import choice

__all__ = [
    "ThresholdMethod",
    "BoxKind",
    "PAPER_THRESHOLDS",
    "IOU_CORRECT",
    "Box",
    "threshold",
    "tight_box",
    "largest_component_box",
    "iou",
    "best_iou",
    "rescale_box",
    "resize_heatmap",
    "LocalizationResult",
    "localize",
    "pointing_game_hit",
    "energy_pointing_game",
    "PointingGame",
]

Box = tuple[int, int, int, int]
"""``(xmin, ymin, xmax, ymax)``, inclusive, 0-based pixel coordinates."""

IOU_CORRECT = 0.5
"""An image is correctly localised when its best IoU is at least this (ILSVRC protocol)."""


class ThresholdMethod(str, enum.Enum):
    """How :func:`threshold` turns a heatmap into a set of kept pixels."""

    VALUE = "value"
    """Keep ``h - min(h) >= alpha * (max(h) - min(h))``; alpha in ``[0, 1]`` (paper: 0.10)."""

    ENERGY = "energy"
    """Keep the fewest top pixels whose sum is ``>= alpha * sum(h)``; alpha in ``[0, 1]`` (paper:
    0.95). Negative values are clipped to 0 first (they carry no mass)."""

    MEAN = "mean"
    """Keep ``h >= alpha * mean(h)``; alpha ``>= 0`` (paper: 0.5)."""


class BoxKind(str, enum.Enum):
    """Which box :func:`localize` draws around the kept pixels."""

    TIGHT = "tight"
    """The tight box around all kept pixels (the authors' code)."""

    COMPONENT = "component"
    """The tight box around the largest 8-connected component of kept pixels."""


PAPER_THRESHOLDS: tuple[tuple[ThresholdMethod, float], ...] = (
    (ThresholdMethod.VALUE, 0.10),
    (ThresholdMethod.ENERGY, 0.95),
    (ThresholdMethod.MEAN, 0.5),
)
"""The (method, alpha) pairs of Fong & Vedaldi's Table 1 for their masks."""


def _heatmap(heatmap: object) -> np.ndarray:
    """Return ``heatmap`` as a finite float64 ``(H, W)`` array, or raise :class:`ConfigError`."""
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2 or h.size == 0:
        raise ConfigError(f"heatmap must be a non-empty 2-D array (H, W); got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ConfigError("heatmap contains NaN or infinite values; allowed: finite numbers")
    return h


def _boxes(boxes: object, name: str = "gt_boxes") -> np.ndarray:
    """Return ``boxes`` as an int64 ``(K, 4)`` array with ``K >= 1`` and ``min <= max``."""
    b = np.asarray(boxes)
    if b.ndim == 1 and b.shape == (4,):
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
        raise ConfigError(
            f"{name} must have shape (K, 4) with K >= 1 (xmin, ymin, xmax, ymax); got {b.shape}"
        )
    b = b.astype(np.int64)
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ConfigError(f"{name} has a box with xmax < xmin or ymax < ymin: {b.tolist()}")
    return b


def _parse_method(method: ThresholdMethod | str, alpha: float) -> ThresholdMethod:
    """Validate ``method`` and its ``alpha`` range; return the method as an enum."""
    method = choice("method", method, ThresholdMethod)
    upper = np.inf if method is ThresholdMethod.MEAN else 1.0
    if not (np.isfinite(alpha) and 0.0 <= alpha <= upper):
        allowed = ">= 0" if method is ThresholdMethod.MEAN else "in [0, 1]"
        raise ConfigError(f"alpha for method {method.value!r} must be {allowed}; got {alpha!r}")
    return method


def threshold(heatmap: np.ndarray, method: ThresholdMethod | str, alpha: float) -> np.ndarray:
    """Pixels kept by thresholding ``heatmap``.

    Args:
        heatmap: ``(H, W)`` float (numpy, or anything ``np.asarray`` accepts), finite.
        method: ``"value"``, ``"energy"`` or ``"mean"``, see :class:`ThresholdMethod`.
        alpha: the method's parameter.

    Returns:
        ``(H, W)`` bool, True = kept. Energy: the kept set is the ``k`` most salient pixels for the
        smallest ``k`` whose sum reaches ``alpha`` of the clipped total; ties in value are taken in
        raster order (lowest flat index first), so exactly ``k`` pixels are kept; a heatmap with
        no positive mass keeps nothing. (The authors' code kept the ``k - 1`` pixels before the
        crossing one: one pixel fewer.) A constant heatmap keeps every pixel with "value".
    """
    method = _parse_method(method, alpha)
    h = _heatmap(heatmap)
    if method is ThresholdMethod.VALUE:
        return h - h.min() >= alpha * (h.max() - h.min())
    if method is ThresholdMethod.MEAN:
        return h >= alpha * h.mean()
    flat = np.clip(h, 0.0, None).ravel()
    keep = np.zeros(flat.shape, dtype=bool)
    order = np.argsort(-flat, kind="stable")
    mass = np.cumsum(flat[order])
    if mass[-1] <= 0.0:
        return keep.reshape(h.shape)
    # The total is the cumsum's own last entry (not flat.sum()), so alpha = 1 is always reached,
    # at the last positive pixel, whatever the rounding.
    k = int(np.argmax(mass >= alpha * mass[-1])) + 1
    keep[order[:k]] = True
    return keep.reshape(h.shape)


def tight_box(mask: np.ndarray) -> Box | None:
    """Tight box around the True pixels of ``mask`` ``(H, W)`` bool; None when none is True."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ConfigError(f"mask must be a 2-D array (H, W); got shape {mask.shape}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def largest_component_box(mask: np.ndarray) -> Box | None:
    """Tight box around the largest 8-connected component of ``mask`` ``(H, W)`` bool.

    Components come from ``skimage.measure.label(connectivity=2)``. Among equally large
    components the one met first in raster order wins. None when ``mask`` has no True pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ConfigError(f"mask must be a 2-D array (H, W); got shape {mask.shape}")
    labels = label(mask, connectivity=2)
    if labels.max() == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # label 0 is the background
    # label() numbers components in raster order of their first pixel; argmax takes the first max.
    return tight_box(labels == int(np.argmax(sizes)))


def iou(box: Sequence[int], boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of ``boxes``, inclusive pixel coordinates.

    Args:
        box: ``(xmin, ymin, xmax, ymax)``.
        boxes: ``(K, 4)`` int, same convention.

    Returns:
        ``(K,)`` float64 in [0, 1]; areas count pixels: ``(xmax - xmin + 1) * (ymax - ymin + 1)``.
    """
    a = _boxes(box, "box")[0]
    b = _boxes(boxes, "boxes")
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]) + 1, 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]) + 1, 0, None)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a + area_b - inter)


def best_iou(box: Sequence[int] | None, boxes: np.ndarray) -> float:
    """Largest IoU of ``box`` with any of ``boxes`` ``(K, 4)``; 0.0 when ``box`` is None."""
    if box is None:
        return 0.0
    return float(iou(box, boxes).max())


def rescale_box(box: Sequence[int], from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
    """Map an inclusive pixel box from a ``from_size = (h, w)`` frame to ``to_size = (H, W)``.

    Pixel ``x`` covers ``[x, x + 1)``; the box's covered span is scaled and the result is the
    smallest pixel box covering it: ``xmin' = floor(xmin * W / w)``,
    ``xmax' = ceil((xmax + 1) * W / w) - 1`` (integer arithmetic, no rounding error), clipped to
    the frame. Note the **(height, width)** order, unlike :class:`ImageBoxes.size`.
    """
    (h, w), (big_h, big_w) = _size(from_size, "from_size"), _size(to_size, "to_size")
    x0, y0, x1, y1 = (int(v) for v in _boxes(box, "box")[0])
    return (
        min(x0 * big_w // w, big_w - 1),
        min(y0 * big_h // h, big_h - 1),
        min(-(-(x1 + 1) * big_w // w) - 1, big_w - 1),
        min(-(-(y1 + 1) * big_h // h) - 1, big_h - 1),
    )


def _size(size: Sequence[int], name: str) -> tuple[int, int]:
    """Validate a ``(height, width)`` pair of positive integers."""
    try:
        valid = len(size) == 2 and all(int(s) == s and s >= 1 for s in size)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ConfigError(f"{name} must be (height, width), positive integers; got {size!r}")
    return int(size[0]), int(size[1])


def resize_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``heatmap`` ``(h, w)`` to ``size = (H, W)`` (height, width) by bilinear interpolation.

    ``skimage.transform.resize(order=1, mode="edge", preserve_range=True, anti_aliasing=False)``:
    pixel centres are aligned (``align_corners=False``), values are interpolated, not rescaled.
    ``mode="edge"`` repeats the border (skimage's default mirror would pull the border values
    towards their neighbours: ``[0, 1]`` would become ``[.25, .25, .75, .75]`` instead of
    ``[0, .25, .75, 1]``). Returns ``(H, W)`` float64.
    """
    return resize(
        _heatmap(heatmap), _size(size, "size"),
        order=1, mode="edge", preserve_range=True, anti_aliasing=False,
    )


@dataclasses.dataclass(frozen=True)
class LocalizationResult:
    """One row of :func:`localize`: one (method, alpha, box kind) for one image."""

    method: ThresholdMethod
    alpha: float
    box_kind: BoxKind
    box: Box
    """Predicted box, inclusive pixels in the heatmap's (original image) frame."""
    iou: float
    """Best IoU of ``box`` with the image's ground-truth boxes of the class."""
    correct: bool
    """``iou >= 0.5``."""
    fallback: bool
    """True when no pixel survived the threshold and ``box`` is the whole image (authors' rule)."""


def localize(
    heatmap: np.ndarray,
    gt_boxes: np.ndarray,
    methods_alphas: Iterable[tuple[ThresholdMethod | str, float]] = PAPER_THRESHOLDS,
    box_kinds: Iterable[BoxKind | str] = (BoxKind.TIGHT, BoxKind.COMPONENT),
) -> list[LocalizationResult]:
    """Localise one image for every (method, alpha) x box kind.

    Args:
        heatmap: ``(H, W)`` float saliency for the ground-truth class, **already in the original
            image frame** (see :func:`resize_heatmap`); it is not resized here.
        gt_boxes: ``(K, 4)`` int, ``K >= 1``, inclusive boxes in the same frame, **already
            filtered by the caller to the class explained** (see ``ImageBoxes.for_class``).
        methods_alphas: ``(method, alpha)`` pairs; default: the paper's three.
        box_kinds: ``"tight"`` and/or ``"component"`` (:class:`BoxKind`).

    Returns:
        One :class:`LocalizationResult` per pair and box kind, pairs outermost. When nothing
        survives a threshold the box is the whole image (as in the authors' code), ``fallback``.
    """
    h = _heatmap(heatmap)
    gt = _boxes(gt_boxes)
    kinds = [choice("box_kinds entries", k, BoxKind) for k in box_kinds]
    whole = (0, 0, h.shape[1] - 1, h.shape[0] - 1)
    rows = []
    for method, alpha in methods_alphas:
        kept = threshold(h, method, alpha)
        for kind in kinds:
            box = tight_box(kept) if kind is BoxKind.TIGHT else largest_component_box(kept)
            value = best_iou(box or whole, gt)
            rows.append(
                LocalizationResult(
                    ThresholdMethod(method), float(alpha), kind, box or whole,
                    value, value >= IOU_CORRECT, box is None,
                )
            )
    return rows


def pointing_game_hit(heatmap: np.ndarray, gt_boxes: np.ndarray, tolerance: float = 15) -> bool:
    """Pointing game (Zhang et al. 2016): is the heatmap's maximum near a ground-truth box?

    Args:
        heatmap: ``(H, W)`` float in the boxes' frame. The point is ``np.argmax``: among equal
            maxima, the first in raster order (row by row).
        gt_boxes: ``(K, 4)`` int, inclusive, ``K >= 1``, the explained class's boxes.
        tolerance: pixels, ``>= 0``.

    Returns:
        True when the point lies in a box or its Euclidean distance to the nearest pixel of any
        box is **strictly** below ``tolerance``. This is TorchRay's test
        (``torchray.benchmark.pointing_game.PointingGame.evaluate``: a hit when some box pixel lies
        at squared distance ``< tolerance**2``), so a point exactly 15 px away misses; the two agree
        for every integer tolerance >= 1 (TorchRay accepts integers only; at tolerance 0 it never
        hits, where this counts a point inside a box).
    """
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"tolerance must be a finite number >= 0 pixels; got {tolerance!r}")
    h = _heatmap(heatmap)
    gt = _boxes(gt_boxes)
    y, x = np.unravel_index(int(np.argmax(h)), h.shape)
    dx = np.maximum.reduce([gt[:, 0] - x, np.zeros(len(gt), np.int64), x - gt[:, 2]])
    dy = np.maximum.reduce([gt[:, 1] - y, np.zeros(len(gt), np.int64), y - gt[:, 3]])
    squared = dx * dx + dy * dy
    return bool(((squared < tolerance * tolerance) | (squared == 0)).any())


def energy_pointing_game(heatmap: np.ndarray, gt_boxes: np.ndarray) -> float:
    """Share of the heatmap's mass inside the union of ``gt_boxes`` ``(K, 4)`` (inclusive).

    Negative heatmap values are clipped to 0 first; boxes are clipped to the frame. Returns a
    float in ``[0, 1]``; 0.0 when the heatmap has no positive mass (it points nowhere).
    """
    h = np.clip(_heatmap(heatmap), 0.0, None)
    inside = np.zeros(h.shape, dtype=bool)
    for x0, y0, x1, y1 in _boxes(gt_boxes):
        inside[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    total = h.sum()
    return float(h[inside].sum() / total) if total > 0 else 0.0


class PointingGame:
    """Accumulates pointing-game hits over images, per image and per class.

    State is sums and counts per class, so accumulating in any order or batching gives the same
    result. ``compute()`` returns ``per_image`` (hits / images) and ``per_class`` (mean over the
    classes seen of each class's hit rate, as TorchRay reports), plus ``n_images`` and
    ``n_classes``; both rates are NaN before any update.
    """

    higher_is_better = True

    def __init__(self) -> None:
        self._hits: dict[int, int] = {}
        self._counts: dict[int, int] = {}

    def reset(self) -> None:
        """Forget every update."""
        self._hits.clear()
        self._counts.clear()

    def update(self, hit: bool, class_id: int) -> None:
        """Record one image: ``hit`` (bool) for class index ``class_id`` (int)."""
        if not isinstance(hit, (bool, np.bool_)):
            raise ConfigError(f"hit must be a bool; got {hit!r}")
        if isinstance(class_id, (bool, np.bool_)) or not isinstance(class_id, (int, np.integer)):
            raise ConfigError(f"class_id must be an integer class index; got {class_id!r}")
        key = int(class_id)
        self._hits[key] = self._hits.get(key, 0) + int(hit)
        self._counts[key] = self._counts.get(key, 0) + 1

    def compute(self) -> dict[str, float | int]:
        """``{"per_image", "per_class", "n_images", "n_classes"}`` from the state so far."""
        n_images = sum(self._counts.values())
        if n_images == 0:
            return {"per_image": float("nan"), "per_class": float("nan"),
                    "n_images": 0, "n_classes": 0}
        rates = [self._hits[c] / self._counts[c] for c in self._counts]
        return {
            "per_image": sum(self._hits.values()) / n_images,
            "per_class": float(np.mean(rates)),
            "n_images": n_images,
            "n_classes": len(rates),
        }
