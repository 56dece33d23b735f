"""Pictures of a report, as ``data:`` URIs ready for an ``<img src>``.

Plots are drawn by :mod:`pipeline.pictures` and embedded as PNG. Gallery pictures are the
thumbnails ``perturb evaluate`` drew (JPEG, the run folder's ``thumbnails.parquet``,
:func:`pipeline.evaluation.read_thumbnails`): a report opens no mask store and decodes no image.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..evaluation import CURVES, GALLERY_SEED, THUMBNAILS_FILE, read_thumbnails
from ..pictures import new_figure, plot_curves, plot_localisation, png_bytes

__all__ = ["data_uri", "curves_png", "localisation_png", "road_figure", "road_png", "randomisation_figure",
           "randomisation_png", "Thumbnails"]

RANDOMISATION_PANELS = (("spearman_abs", "Spearman rank correlation, |maps|"), ("ssim", "SSIM"),
                        ("hog_pearson", "HOG Pearson correlation"))


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


def road_figure(runs: Mapping[str, Mapping[str, Any]]) -> Any:
    """ROAD's mean curves per run: MoRF (left, lower is better) and LeRF (right, higher is
    better), with a pointwise 95% band (mean +- 1.96 standard errors over images).

    Args:
        runs: run name -> ``{"fractions": (P,), "morf": (N, P), "lerf": (N, P)}`` probabilities.
    """
    fig, axes = new_figure(1, 2, (8.4, 3.6))
    panels = (("morf", "MoRF: most relevant removed (lower is better)", "fraction of pixels removed"),
              ("lerf", "LeRF: least relevant removed (higher is better)", "fraction of pixels kept"))
    for ax, (key, title, xlabel) in zip(axes[0], panels):
        for name, run in runs.items():
            values = np.asarray(run[key], dtype=np.float64)
            if not len(values):
                continue
            x, mean = np.asarray(run["fractions"]), values.mean(0)
            line, = ax.plot(x, mean, marker="o", markersize=3, label=f"{name} (area {mean.mean():.3f}, n={len(values)})")
            if len(values) > 1:
                half = 1.96 * values.std(0, ddof=1) / np.sqrt(len(values))
                ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set(title=title, xlabel=xlabel, ylabel="mean p(target), imputed", xlim=(0, 1), ylim=(0, 1))
        ax.title.set_fontsize(10)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def road_png(runs: Mapping[str, Mapping[str, Any]]) -> str | None:
    """:func:`road_figure` as a data URI; None when no run has ROAD columns."""
    runs = {name: run for name, run in runs.items() if run is not None and len(run["morf"])}
    return data_uri(png_bytes(road_figure(runs)), "image/png") if runs else None


def randomisation_figure(runs: Mapping[str, Mapping[str, Any]]) -> Any:
    """The randomisation check's mean similarity per cascading step, one line per run, one panel
    per similarity (:data:`RANDOMISATION_PANELS`), with a 95% band (1.96 standard errors).

    Args:
        runs: run name -> ``randomisation.json`` content (``steps``, ``mean``, ``sem``).
    """
    fig, axes = new_figure(1, len(RANDOMISATION_PANELS), (4.6 * len(RANDOMISATION_PANELS), 4.0))
    for ax, (key, title) in zip(axes[0], RANDOMISATION_PANELS):
        labels: list[str] = []
        for name, run in runs.items():
            mean = np.asarray([np.nan if v is None else v for v in run["mean"][key]], dtype=np.float64)
            sem = np.asarray([np.nan if v is None else v for v in run["sem"][key]], dtype=np.float64)
            x = np.arange(len(mean))
            line, = ax.plot(x, mean, marker="o", markersize=3, label=f"{name} (n={run.get('images', '?')})")
            ax.fill_between(x, mean - 1.96 * sem, mean + 1.96 * sem, color=line.get_color(), alpha=0.15, linewidth=0)
            labels = list(run["steps"]) if len(run["steps"]) > len(labels) else labels
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set(title=title, xlabel="randomised down to (cascading)", ylabel="similarity to the original map",
               ylim=(-0.2 if key != "ssim" else 0, 1.02))
        ax.title.set_fontsize(10)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def randomisation_png(runs: Mapping[str, Mapping[str, Any]]) -> str | None:
    """:func:`randomisation_figure` as a data URI; None when no run has a randomisation check."""
    runs = {name: run for name, run in runs.items() if run is not None}
    return data_uri(png_bytes(randomisation_figure(runs)), "image/png") if runs else None
