"""The saliency map of a stored row, whatever wrote the store (the solver or a baseline)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..config import from_dict
from ..solve import masks as masklib
from ..store import MaskStore


def store_saliency(store: MaskStore, rows: Any, size: Sequence[int]) -> torch.Tensor:
    """Saliency of the store's ``rows`` at ``size``.

    Args:
        store: an open :class:`~pipeline.store.MaskStore`.
        rows: row positions (anything :meth:`MaskStore.masks` accepts); use ok rows only.
        size: ``(H, W)``, normally the store's ``input_size``.

    Returns:
        ``(k, 1, H, W)`` float32 on the CPU, larger = more salient. Solver stores (config with
        ``"solver"``): :func:`pipeline.solve.masks.saliency` with the stored game and mask upsampling
        (``1 - m`` deletion game, ``m`` preservation game, mean over ``K`` masks). Other stores
        (baselines): ``1 - m`` upsampled bilinearly (``align_corners=True``). NaN for skipped rows.
    """
    masks = store.masks(rows)
    size = (int(size[0]), int(size[1]))
    if "solver" in store.config:
        solver = from_dict(store.config["solver"])
        return masklib.saliency(masks, solver.objective.game, size, solver.mask)
    return masklib.saliency(masks, "delete", size)  # a baseline stores 1 - saliency, bilinear
