"""Pictures of stored masks: heatmaps and overlays in each image's original frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F

from ..data import load_image
from ..errors import StoreError
from ..evaluation import store_saliency
from .render import heatmap, save_pictures, to_uint8
from ..store import MaskStore


def export_pictures(store_path: str | Path, out_dir: str | Path, rows: list[int] | None = None,
                    data_root: str | Path | None = None, limit: int = 16) -> list[Path]:
    """Write ``<stem>_heatmap.png`` and ``<stem>_overlay.png`` at the original size for ``rows``
    (default: the first ``limit`` solved images). Images are read from ``data_root`` (default: the
    store's recorded source)."""
    with MaskStore(store_path) as store:
        table = store.table()
        if rows is None:
            rows = [int(r) for r in np.flatnonzero(table["status"].to_numpy() == "ok")[:limit]]
        bad = [r for r in rows if not 0 <= r < len(table)]
        if bad:
            raise StoreError(f"rows {bad} are outside the store's {len(table)} rows")
        root = Path(data_root) if data_root is not None else Path(store.source)
        written = []
        for row in rows:  # one image at a time: each has its own original size
            entry = table.iloc[row]
            if entry["status"] != "ok":
                continue
            image = load_image(root / entry["path"]).astype(np.float32) / 255
            # Saliency at the solver's input size (where the mask was optimised), then resized.
            at_input = store_saliency(store, [row], store.input_size)
            heat = heatmap(F.interpolate(at_input, size=image.shape[:2], mode="bilinear", align_corners=False)[0])
            overlay = 0.5 * image + 0.5 * heat
            stem = Path(entry["path"]).with_suffix("").as_posix().replace("/", "__")
            written += save_pictures({"heatmap": to_uint8(heat), "overlay": to_uint8(overlay)}, out_dir, prefix=f"{stem}_")
    return written

