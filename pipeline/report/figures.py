"""Pictures of a report, as ``data:`` URIs ready for an ``<img src>``: plots and gallery thumbnails.

Plots are matplotlib figures on an Agg canvas (no pyplot, no global backend change) saved as PNG;
thumbnails are JPEG (photographs: a fifth of a PNG's size), so a page stays small enough to mail.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..data import ImageDataset, ImageRecord
from ..errors import PipelineError
from ..evaluation import CURVES, new_figure, plot_curves

__all__ = ["data_uri", "curves_png", "localisation_png", "Thumbnails"]


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _png(fig: Any, dpi: int = 80) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return data_uri(buffer.getvalue(), "image/png")


def curves_png(runs: Mapping[str, Mapping[str, Any]]) -> str | None:
    """:func:`pipeline.evaluation.plot_curves` of the runs that have curves; None when none has.

    Args:
        runs: run name -> ``curves.npz`` content (``fraction`` ``(P,)``, curves ``(N, P)``), or None.
    """
    runs = {name: c for name, c in runs.items() if c is not None and any(len(c[k]) for k in CURVES)}
    return _png(plot_curves(runs)) if runs else None


def localisation_png(tables: Mapping[str, pd.DataFrame]) -> str | None:
    """Localisation accuracy against the threshold, one panel per method (value, energy, mean),
    one line per (run, box kind); None when no run has localisation columns."""
    tables = {name: t for name, t in tables.items() if len(t)}
    if not tables:
        return None
    methods = list(dict.fromkeys(m for t in tables.values() for m in t["method"]))
    fig, axes = new_figure(1, len(methods), (3.6 * len(methods), 3.0))
    for ax, method in zip(axes[0], methods):
        for name, table in tables.items():
            for kind, rows in table[table["method"] == method].groupby("kind", sort=False):
                rows = rows.sort_values("alpha")
                label = f"{name}, {kind}" if len(tables) > 1 else kind
                ax.plot(rows["alpha"], rows["accuracy"], marker="o", linestyle="-" if kind == "tight" else "--",
                        label=label)
        ax.set(title=f"{method} threshold", xlabel="alpha", ylabel="accuracy (IoU >= 0.5)", ylim=(-0.02, 1.02))
        ax.title.set_fontsize(10)
        ax.legend(fontsize=7)
    return _png(fig)


class Thumbnails:
    """Image-with-saliency thumbnails of one run's images, read from its mask store and images.

    Args:
        store_path: the run's HDF5 store (None or missing: no thumbnails, :attr:`problem` says why).
        data_root: the folder the store's ``path`` column is relative to.
        side: the thumbnail's longer side in pixels.
    """

    def __init__(self, store_path: str | os.PathLike[str] | None, data_root: str | os.PathLike[str] | None,
                 side: int = 128):
        self.store_path = Path(store_path) if store_path else None
        self.data_root = Path(data_root) if data_root else None
        self.side = int(side)
        self.problem = ""
        self._cache: dict[str, str | None] = {}
        if self.store_path is None:
            self.problem = "no mask store recorded: galleries show no pictures"
        elif not self.store_path.is_file():
            self.problem = f"no mask store at {str(self.store_path)!r}: galleries show no pictures"
        elif self.data_root is None or not self.data_root.is_dir():
            self.problem = f"image folder {str(self.data_root)!r} not found: galleries show no pictures"

    def get(self, paths: Sequence[str]) -> dict[str, str | None]:
        """``path -> data URI`` (JPEG) of each image with its saliency overlaid; None for an image
        that cannot be read now. Results are cached: each image is drawn once per page."""
        todo = [p for p in dict.fromkeys(str(p) for p in paths) if p not in self._cache]
        if todo and not self.problem:
            self._cache.update(self._draw(todo))
        for path in todo:
            self._cache.setdefault(path, None)
        return {str(p): self._cache[str(p)] for p in paths}

    def _draw(self, paths: list[str]) -> dict[str, str | None]:
        from ..evaluation import store_saliency
        from .render import heatmap
        from ..store import MaskStore

        out: dict[str, str | None] = {}
        try:
            with MaskStore(self.store_path) as store:
                rows = np.asarray([store.row_of_path(p) for p in paths], dtype=np.int64)
                size = store.input_size
                records = [ImageRecord(self.data_root / p, p) for p in paths]
                dataset = ImageDataset(records, size)
                saliency = store_saliency(store, rows, size)  # (k, 1, H, W)
        except PipelineError as error:
            self.problem = f"cannot read the mask store ({error}): galleries show no pictures"
            return out
        for i, path in enumerate(paths):
            item = dataset[i]
            if not item["ok"]:
                continue
            rgb = item["image"].permute(1, 2, 0).numpy()
            overlay = 0.55 * rgb + 0.45 * heatmap(saliency[i])
            picture = Image.fromarray((np.clip(overlay, 0, 1) * 255 + 0.5).astype(np.uint8))
            picture.thumbnail((self.side, self.side), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=80, optimize=True)
            out[path] = data_uri(buffer.getvalue(), "image/jpeg")
        return out
