"""The saliency map of a stored row, whatever wrote the store (the solver or a baseline), and
:func:`stored_pictures`: stored rows paired with their images, the one place that does it (for
the metrics of ``evaluate``, its galleries and thumbnails, and ``perturb export``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import from_dict
from ..data import ImageDataset, ImageRecord, decode_image, make_loader
from ..errors import ImageReadError
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


@dataclass(frozen=True)
class StoredPictures:
    """A batch of stored rows with their images and saliency maps, in one frame.

    Attributes:
        rows: ``(b,)`` int64 store row positions, in the order asked.
        images: ``(b, 3, H, W)`` float32 RGB in [0, 1] on the CPU, not normalised; zeros where
            ``ok`` is False.
        saliency: ``(b, 1, H, W)`` float32 on the CPU (:func:`store_saliency`), larger = more salient.
        ok: ``(b,)`` bool, whether the image was decoded.
        reasons: ``b`` strings, "" or a code of :data:`pipeline.data.REASONS`.
        paths: ``b`` strings, the store's ``path`` column (relative to the image root).
    """

    rows: np.ndarray
    images: torch.Tensor
    saliency: torch.Tensor
    ok: np.ndarray
    reasons: list[str]
    paths: list[str]


def stored_pictures(store: MaskStore, rows: Sequence[int], data_root: str | Path,
                    frame: Literal["input", "original"] = "input", batch_size: int = 8,
                    workers: int = 0) -> Iterator[StoredPictures]:
    """The images of stored rows with their saliency, batch by batch, in the order of ``rows``.

    Args:
        store: an open store; ``rows`` should be rows with status ok (others have NaN saliency).
        rows: store row positions.
        data_root: the folder the store's ``path`` column is relative to.
        frame: ``"input"``: images read as the solver read them (:class:`pipeline.data.ImageDataset`,
            the one resize to the store's ``input_size``) and saliency at that size, in batches of
            ``batch_size`` decoded by ``workers`` processes. ``"original"``: each image decoded
            at its full size (:func:`pipeline.data.decode_image`) with its saliency computed at
            the input size (where the mask was optimised) and resized bilinearly
            (``align_corners=False``) to it, in batches of one.

    Yields:
        :class:`StoredPictures`. An unreadable image never raises: its ``ok`` is False.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    paths = store.column("path")[rows].astype(str) if len(rows) else np.zeros(0, dtype=str)
    root = Path(data_root)
    if frame == "original":
        for row, path in zip(rows, paths):
            yield _original(store, int(row), root, str(path))
        return
    records = [ImageRecord(root / p, p) for p in paths]
    loader = make_loader(ImageDataset(records, store.input_size), batch_size, workers, pin_memory=False)
    for batch in loader:
        at = batch["index"].numpy()
        yield StoredPictures(rows[at], batch["image"], store_saliency(store, rows[at], store.input_size),
                             batch["ok"].numpy(), list(batch["reason"]), [str(paths[i]) for i in at])


def _original(store: MaskStore, row: int, root: Path, path: str) -> StoredPictures:
    """One row in its image's original frame (a batch of one)."""
    at_input = store_saliency(store, [row], store.input_size)
    try:
        pixels, _ = decode_image(root / path)
    except ImageReadError as error:
        return StoredPictures(np.asarray([row]), torch.zeros(1, 3, 0, 0), torch.zeros(1, 1, 0, 0),
                              np.asarray([False]), [getattr(error, "reason", "unreadable")], [path])
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float().div_(255.0)  # PIL's are read-only
    saliency = F.interpolate(at_input, size=pixels.shape[:2], mode="bilinear", align_corners=False)
    return StoredPictures(np.asarray([row]), image, saliency, np.asarray([True]), [""], [path])
