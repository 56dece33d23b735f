"""Pictures of stored masks: heatmaps and overlays in each image's original frame (``perturb export``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import REASONS
from ..errors import ImageReadError, StoreError
from ..evaluation import stored_pictures
from ..pictures import heatmap, overlay, save_pictures, to_uint8
from ..store import STATUS_OK, MaskStore


def export_pictures(store_path: str | Path, out_dir: str | Path, rows: list[int] | None = None,
                    data_root: str | Path | None = None, limit: int = 16) -> list[Path]:
    """Write ``<stem>_heatmap.png`` and ``<stem>_overlay.png`` (half image, half heatmap) at the
    original size for ``rows`` (default: the first ``limit`` solved images; rows not solved are
    passed over). Images are read from ``data_root`` (default: the store's recorded source); the
    saliency is the one at the solver's input size, where the mask was optimised, resized.

    Raises:
        StoreError: a row outside the store. ImageReadError: an image cannot be read.
    """
    with MaskStore(store_path) as store:
        status = store.column("status")
        if rows is None:
            rows = [int(r) for r in np.flatnonzero(status == STATUS_OK)[:limit]]
        bad = [r for r in rows if not 0 <= r < len(status)]
        if bad:
            raise StoreError(f"rows {bad} are outside the store's {len(status)} rows")
        root = Path(data_root) if data_root is not None else store.image_root()
        written = []
        solved = [r for r in rows if status[r] == STATUS_OK]
        for picture in stored_pictures(store, solved, root, frame="original"):
            path = picture.paths[0]
            if not picture.ok[0]:
                reason = picture.reasons[0]
                raise ImageReadError(f"cannot read image {str(root / path)!r}: {REASONS.get(reason, reason)}")
            image, saliency = picture.images[0], picture.saliency[0]
            pictures = {"heatmap": to_uint8(heatmap(saliency)), "overlay": to_uint8(overlay(image, saliency, 0.5))}
            stem = Path(path).with_suffix("").as_posix().replace("/", "__")
            written += save_pictures(pictures, out_dir, prefix=f"{stem}_")
    return written
