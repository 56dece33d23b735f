"""Figures: mean deletion/insertion curves, localisation accuracy against the threshold, and
grids of pictures (galleries). Each function returns a matplotlib Figure on an Agg canvas (no
pyplot, no global backend change); save it with ``fig.savefig`` or :func:`png_bytes`."""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..metrics import auc


def new_figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend change) and its axes
    ``(rows, cols)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def png_bytes(fig: Any, dpi: int = 80) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_curves(runs: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> Any:
    """The mean curves of one or more runs with a pointwise 95% band (mean +- 1.96 standard errors
    over images), one panel per curve kind.

    Args:
        runs: run name -> a ``curves.npz`` content: ``fraction`` ``(P,)`` and, for each of
            ``names``, ``(N, P)`` scores.
        names: the curve kinds, one panel each (``pipeline.evaluation.CURVES``); a name starting
            with ``deletion`` is better with a lower AUC, any other with a higher one.
    """
    fig, axes = new_figure(1, len(names), (4.2 * len(names), 3.6))
    for ax, name in zip(axes[0], names):
        for run, curves in runs.items():
            values = np.asarray(curves[name], dtype=np.float64)
            if not len(values):
                continue
            mean = values.mean(0)
            mean_auc = float(auc(torch.from_numpy(values)).mean())  # = AUC of the mean curve (linear)
            line, = ax.plot(curves["fraction"], mean, label=f"{run} (AUC {mean_auc:.3f}, n={len(values)})")
            if len(values) > 1:
                half = 1.96 * values.std(0, ddof=1) / np.sqrt(len(values))
                ax.fill_between(curves["fraction"], mean - half, mean + half, color=line.get_color(), alpha=0.15,
                                linewidth=0)
        better = "lower" if name.startswith("deletion") else "higher"
        ax.set(title=f"{name} ({better} AUC is better)", xlabel="fraction of pixels moved",
               ylabel="mean p(target)", xlim=(0, 1), ylim=(0, 1))
        ax.title.set_fontsize(10)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def plot_localisation(tables: Mapping[str, pd.DataFrame]) -> Any:
    """Localisation accuracy against the threshold, one panel per method (value, energy, mean),
    one line per (run, box kind).

    Args:
        tables: run name -> rows ``method, alpha, kind, accuracy`` (non-empty tables only).
    """
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
    return fig


def gallery_figure(rows: Sequence[Sequence[tuple[np.ndarray, str]]]) -> Any:
    """A grid of pictures, one row per entry of ``rows``, each panel a ``(picture, title)`` pair
    (picture ``(H, W, 3)`` uint8 or float in [0, 1]); rows may differ in length."""
    cols = max((len(row) for row in rows), default=0) or 1
    fig, axes = new_figure(len(rows) or 1, cols, (2.6 * cols, 2.9 * (len(rows) or 1)))
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, row in enumerate(rows):
        for c, (picture, title) in enumerate(row):
            axes[r, c].imshow(picture)
            axes[r, c].set_title(title, fontsize=7)
    return fig
