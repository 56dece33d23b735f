"""Pictures of a report, as ``data:`` URIs ready for an ``<img src>``.

Plots are drawn by :mod:`pipeline.pictures` and embedded as PNG. Gallery pictures are the
thumbnails ``perturb evaluate`` drew (JPEG, the run folder's ``thumbnails.parquet``,
:func:`pipeline.evaluation.read_thumbnails`): a report opens no mask store and decodes no image.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..evaluation import CURVES, GALLERY_SEED, THUMBNAILS_FILE, read_thumbnails
from ..pictures import plot_curves, plot_localisation, png_bytes

__all__ = ["data_uri", "curves_png", "localisation_png", "Thumbnails"]


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def curves_png(runs: Mapping[str, Mapping[str, Any] | None]) -> str | None:
    """:func:`pipeline.pictures.plot_curves` of the runs that have curves; None when none has.

    Args:
        runs: run name -> ``curves.npz`` content (``fraction`` ``(P,)``, curves ``(N, P)``), or None.
    """
    runs = {name: c for name, c in runs.items() if c is not None and any(len(c[k]) for k in CURVES)}
    return data_uri(png_bytes(plot_curves(runs, CURVES)), "image/png") if runs else None


def localisation_png(tables: Mapping[str, pd.DataFrame]) -> str | None:
    """:func:`pipeline.pictures.plot_localisation` of the runs with localisation rows; None when none has."""
    tables = {name: t for name, t in tables.items() if len(t)}
    return data_uri(png_bytes(plot_localisation(tables)), "image/png") if tables else None


class Thumbnails:
    """The gallery pictures of one run: each image with its saliency overlaid, as ``perturb
    evaluate`` drew it into the run folder.

    Args:
        folder: the run folder (an output of :func:`pipeline.evaluation.evaluate_store`).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._jpeg = read_thumbnails(self.folder)
        self._missing: set[str] = set()

    def get(self, paths: Sequence[str]) -> dict[str, str | None]:
        """``path -> data URI`` (JPEG) of each image; None for an image without a picture."""
        out: dict[str, str | None] = {}
        for path in map(str, paths):
            jpeg = (self._jpeg or {}).get(path)
            out[path] = data_uri(jpeg, "image/jpeg") if jpeg is not None else None
            if jpeg is None:
                self._missing.add(path)
        return out

    @property
    def problem(self) -> str:
        """Why pictures are missing so far ("" when none is)."""
        if self._jpeg is None:
            return (f"no {THUMBNAILS_FILE} in {str(self.folder)!r}: galleries show no pictures (evaluations "
                    "written without plots, with no gallery, or before evaluations drew them have none; "
                    "run `perturb evaluate` again for pictures)")
        if self._missing:
            return (f"{len(self._missing)} images shown have no picture: unreadable when evaluated, or outside the "
                    "galleries `perturb evaluate` draws (up to its own number of images per row, 4 by default, "
                    f"with seed {GALLERY_SEED})")
        return ""
