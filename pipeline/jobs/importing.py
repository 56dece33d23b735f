"""Saliency maps made by any other tool, written as a mask store that ``perturb evaluate`` reads.

:func:`import_maps` pairs each image under ``data`` (found by :func:`pipeline.discover`) with its
map in ``maps`` (a folder of ``.npy`` / greyscale PNG files, one ``.npz`` or one HDF5 file; the
layouts are in :mod:`pipeline.data.maps`), and stores what a baseline store holds
(:mod:`pipeline.jobs.baselines`). Each map goes through these steps, in this order:

1. **Shape.** Leading axes of length 1 are dropped (a ``(1, 3, H, W)`` map is ``(3, H, W)``). A
   2-D map is ``(h, w)``; a 3-D map has a channel axis of 1 or 3 first (``(C, h, w)``, PyTorch's
   order) or else last (``(h, w, C)``). Anything else is skipped as ``map shape``.
2. **Values.** Numbers only (bool, integer or float; else ``map unreadable``), converted to
   float32; a map with NaN or infinity (also after that conversion) is skipped as ``map not finite``.
3. **Sign** (``sign``): ``abs`` takes ``|v|`` (a signed attribution's magnitude; the gradient
   baseline's rule), ``positive`` ``max(v, 0)`` (evidence for the class only), ``raw`` keeps ``v``
   (larger = more salient as it stands). Applied to every value, before the channels are reduced.
4. **Channels** (``channels``): ``max`` over the channel axis (Simonyan et al.'s rule, the gradient
   baseline's), ``sum`` or ``mean``.
5. **Frame.** The map covers the whole image: it must have the aspect ratio of the model input
   (a map of the resized input, e.g. 224 x 224 or a 7 x 7 CAM) or of the original image (a map at
   the image's resolution, or a multiple), within one pixel of rounding; else ``map shape`` (for
   example a map transposed against a portrait image). It is resized to the model input with
   torch's bilinear interpolation (``align_corners=False``, antialiased when shrinking, as PIL
   resizes the images); the map's own size is kept in the ``map_height``/``map_width`` columns.
6. **Normalisation**, as the baselines: per image ``(s - min) / (max - min)``; a constant map becomes
   all zeros. The store holds ``mask = 1 - s`` ``(1, H, W)`` at the model input size.

Rows are a baseline store's: ``target`` is the model's top-1 class (``RunConfig.target = "top1"``)
or the folder's label (``"label"``), ``p_original`` its probability, ``area`` the mean of
``1 - mask``; ``p_perturbed``, ``p_final``, ``loss``, ``tv`` are NaN. An image without a map is a
skipped row with reason ``no map``; unreadable images and unlabelled ones (``label``) are skipped
as in every run. Maps of no image are listed in the summary, not fatal. The configuration,
which identifies the store (a run resumes where it stopped), is::

    {"method": NAME, "import": {"source", "format", "sign", "channels", "resize", "normalise"},
     "model": SPEC, "target": "top1"|"label", "input_size": [H, W]}

(with ``RunConfig.targets``, ``"target": "file"`` and the table's digest, :func:`pipeline.jobs.settings.target_config`).

It has no ``"solver"`` key, so :func:`pipeline.evaluation.store_saliency` reads ``1 - mask`` as for
a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..data import discover
from ..data.maps import MapReadError, MapSource, match_maps, open_maps
from ..errors import ConfigError
from ..methods.simple import minmax
from ..models import Classifier, load_model
from ..options import choice
from ..store import STATUS_SKIPPED
from .run import EXTRA_COLUMNS, RunConfig, RunSummary, batch_rows, batch_targets, run_store
from .settings import target_config

__all__ = ["IMPORT_REASONS", "ImportSummary", "MapChannels", "MapSign", "import_config", "import_maps",
           "prepare_map"]

MapSign = Literal["abs", "positive", "raw"]
"""How signed values become saliency: ``|v|``, ``max(v, 0)``, or ``v`` as it is."""

MapChannels = Literal["max", "sum", "mean"]
"""How a channel axis is reduced to one map."""

IMPORT_REASONS: dict[str, str] = {
    "no map": "the image has no map in MAPS",
    "map unreadable": "the map file is not an array (or a colour PNG, or a pickled object)",
    "map not finite": "the map holds NaN or infinite values",
    "map shape": "the map is not (h, w), (C, h, w) or (h, w, C) with C 1 or 3, or its aspect ratio fits "
                 "neither the model input nor the image",
}
"""Skip reasons of an import, beside those of :data:`pipeline.data.REASONS` and ``no label``."""

MAP_COLUMNS = ("map_height", "map_width")
"""Extra columns: the size of each map as read, before resizing (NaN when none was read)."""

RESIZE = "bilinear, align_corners=False, antialiased (torch.nn.functional.interpolate)"
NORMALISE = "per-image min-max to [0, 1], a constant map all 0; mask = 1 - saliency"


@dataclass
class ImportSummary(RunSummary):
    """A :class:`RunSummary` of an import, with the maps that fit no image and the first few skip
    details (which map, what was wrong)."""

    unmatched: list[str] = field(default_factory=list)
    ignored: int = 0
    details: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        text = super().lines()
        if self.unmatched:
            shown = ", ".join(self.unmatched[:5]) + (f" (and {len(self.unmatched) - 5} more)"
                                                     if len(self.unmatched) > 5 else "")
            text.append(f"{len(self.unmatched)} maps without an image (not imported): {shown}")
        if self.ignored:
            text.append(f"{self.ignored} files in the maps folder are not .npy or .png and were ignored")
        return text + self.details


def import_config(method: str, source: MapSource, sign: str, channels: str, classifier: Classifier,
                  run: RunConfig) -> dict[str, Any]:
    """The configuration recorded in (and identifying) an imported store."""
    return {"method": method,
            "import": {"source": str(Path(source.path).resolve()), "format": source.kind, "sign": sign,
                       "channels": channels, "resize": RESIZE, "normalise": NORMALISE},
            "model": classifier.spec, **target_config(run), "input_size": list(classifier.input_size)}


def import_maps(maps: str | Path, data: str | Path, out: str | Path, model: Classifier | str = "efficientnet_lite0",
                *, method: str, run: RunConfig = RunConfig(), sign: MapSign = "abs", channels: MapChannels = "max",
                overwrite: bool = False, device: str | torch.device = "cpu") -> ImportSummary:
    """Store the saliency maps ``maps`` of the images under ``data`` in the mask store ``out``.

    Args:
        maps: a folder, ``.npz`` or HDF5 file of maps (:mod:`pipeline.data.maps`).
        data: the images (a folder or a file list, as ``perturb masks`` takes them).
        out: the HDF5 store to write (resumed when it exists with the same configuration).
        model: the classifier the maps explain, or its spec (loaded on ``device`` after the maps
            and images were matched, so a naming problem is reported first).
        method: the method's name, recorded in the store (e.g. ``"captum-saliency"``).
        run: batch size, workers, ``limit``, ``target`` (``top1`` or ``label``), progress.
        sign, channels: see the module docstring (steps 3 and 4).
        overwrite: start the store afresh.

    Returns:
        The summary: images stored, resumed, skipped by reason, and the maps of no image.

    Raises:
        ConfigError: bad ``method``, ``sign`` or ``channels``; ``maps`` unusable or ambiguous
            (:func:`pipeline.data.maps.open_maps`, :func:`pipeline.data.maps.match_maps`).
        ImageReadError: ``data`` is missing or holds no image.
        StoreError: ``out`` exists with another configuration (pass ``overwrite=True``).
    """
    if not isinstance(method, str) or not method.strip() or method != method.strip():
        raise ConfigError(f"method must be a non-empty name without surrounding spaces, got {method!r}")
    choice("sign", sign, MapSign)
    choice("channels", channels, MapChannels)
    vocabulary = model.vocabulary if isinstance(model, Classifier) else None
    with open_maps(maps) as source:
        match = match_maps(source.keys, (r.relpath for r in discover(data, vocabulary)))
        classifier = load_model(model, device=device) if isinstance(model, str) else model
        config = import_config(method, source, sign, channels, classifier, run)
        details: list[str] = []

        def batch_fn(batch: dict[str, Any], records: list) -> tuple[dict[str, Any], torch.Tensor]:
            return _import_batch(batch, records, source, match.keys, classifier, run, sign, channels, details)

        summary = run_store(data, out, classifier, config, (1, *classifier.input_size), run, batch_fn,
                            overwrite=overwrite, desc=f"import {method}")
    base = {f.name: getattr(summary, f.name) for f in fields(RunSummary)}
    return ImportSummary(**base, unmatched=match.unmatched, ignored=source.ignored, details=details)


_DETAILS = 5  # skip details kept for the summary


def _import_batch(batch: dict[str, Any], records: list, source: MapSource, keys: dict[str, str],
                  classifier: Classifier, run: RunConfig, sign: str, channels: str,
                  details: list[str]) -> tuple[dict[str, Any], torch.Tensor]:
    """Store rows and masks ``(b, 1, H, W)`` of one loader batch: each readable image's map read,
    checked and resized; skipped rows stay NaN."""
    rows, ok = batch_rows(batch, records, run, EXTRA_COLUMNS + MAP_COLUMNS)
    size = tuple(classifier.input_size)
    maps: list[torch.Tensor] = []
    chosen: list[int] = []
    for j in ok.nonzero()[:, 0].tolist():  # one file per image: reading is per map
        relpath = rows["path"][j]
        try:
            if relpath not in keys:
                raise MapReadError("no map", "")
            array = source.read(keys[relpath])
            heat = prepare_map(array, size, (int(batch["height"][j]), int(batch["width"][j])), sign, channels)
            rows["map_height"][j], rows["map_width"][j] = float(heat.height), float(heat.width)
        except MapReadError as error:
            rows["status"][j], rows["reason"][j] = STATUS_SKIPPED, error.reason
            if str(error) and len(details) < _DETAILS:
                details.append(f"skipped {relpath}: {error}")
            continue
        maps.append(heat.map)
        chosen.append(j)
    masks = torch.full((len(ok), 1, *size), float("nan"))
    if not chosen:
        return rows, masks
    index = torch.tensor(chosen)
    device = classifier.device
    with torch.no_grad():
        probs = classifier(classifier.normalize(batch["image"][index].to(device))).float().softmax(1)
    given = batch_targets(batch, records, run)
    targets = probs.argmax(1) if given is None else given[index].to(device)
    saliency = minmax(torch.stack(maps)[:, None])
    rows["target"][index] = targets.cpu()
    rows["p_original"][index] = probs.gather(1, targets[:, None])[:, 0].cpu()
    rows["area"][index] = saliency.flatten(1).mean(1).cpu()
    masks[index] = (1 - saliency).cpu()
    return rows, masks


@dataclass(frozen=True)
class PreparedMap:
    """A map ready to normalise: ``map`` ``(H, W)`` float32 at the model input size; ``height`` and
    ``width`` its size as read."""

    map: torch.Tensor
    height: int
    width: int


def prepare_map(array: np.ndarray, input_size: tuple[int, int], image_size: tuple[int, int], sign: str,
                channels: str) -> PreparedMap:
    """Steps 1 to 5 of the module docstring: one stored map -> ``(H, W)`` float32 saliency at
    ``input_size`` (not yet normalised). ``image_size`` is the original image's ``(height, width)``.

    Raises:
        MapReadError: reason ``map unreadable``, ``map not finite`` or ``map shape``.
    """
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise MapReadError("map unreadable", f"holds {kind}, not numbers")
    shape = array.shape
    while array.ndim > 2 and array.shape[0] == 1 and (array.ndim > 3 or array.shape[-1] not in (1, 3)):
        array = array[0]
    if array.ndim == 3:
        if array.shape[0] in (1, 3):
            array = np.moveaxis(array, 0, -1)
        elif array.shape[-1] not in (1, 3):
            raise MapReadError("map shape", f"shape {shape} has no channel axis of 1 or 3")
    elif array.ndim != 2:
        raise MapReadError("map shape", f"shape {shape} is not (h, w), (C, h, w) or (h, w, C)")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
        values = torch.from_numpy(np.array(array, dtype=np.float32))  # (h, w) or (h, w, C), a copy
    if not bool(torch.isfinite(values).all()):
        raise MapReadError("map not finite", f"shape {shape} holds NaN or infinite values (as float32)")
    if sign == "abs":
        values = values.abs()
    elif sign == "positive":
        values = values.clamp_min(0)
    if values.dim() == 3:
        values = values.amax(-1) if channels == "max" else values.sum(-1) if channels == "sum" else values.mean(-1)
    height, width = values.shape
    if not any(_fits((height, width), frame) for frame in (tuple(input_size), tuple(image_size)) if min(frame) > 0):
        raise MapReadError("map shape", f"a {height} x {width} map fits neither the model input "
                           f"{input_size[0]} x {input_size[1]} nor the image {image_size[0]} x {image_size[1]}")
    if (height, width) != tuple(input_size):
        values = F.interpolate(values[None, None], size=tuple(input_size), mode="bilinear", align_corners=False,
                               antialias=True)[0, 0]
    if not bool(torch.isfinite(values).all()):  # float32 sums of huge values
        raise MapReadError("map not finite", f"shape {shape} overflows float32")
    return PreparedMap(values, height, width)


def _fits(size: tuple[int, int], frame: tuple[int, int]) -> bool:
    """Whether an ``(h, w)`` map has the aspect ratio of an ``(H, W)`` frame within one pixel of
    rounding on either axis: ``|h W - w H| <= max(H, W)``."""
    (h, w), (fh, fw) = size, frame
    return abs(h * fw - w * fh) <= max(fh, fw)

