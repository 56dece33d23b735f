"""The files an evaluation writes: tables (Parquet, CSV, JSON, ``curves.npz``) and plots (mean
curves, best/worst galleries) on Agg canvases (no pyplot, no global backend change)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..data import ImageDataset, ImageRecord
from ..names import display_name
from ..metrics import auc
from ..store import MaskStore

from .settings import AUC_COLUMNS, CURVES, EvalConfig, metric_direction
from .saliency import store_saliency


def write_tables(out: Path, per_image: pd.DataFrame, summary: dict[str, Any],
                  curves: dict[str, Any]) -> dict[str, Path]:
    paths = {"per_image_parquet": out / "per_image.parquet", "per_image_csv": out / "per_image.csv",
             "summary_csv": out / "summary.csv", "summary_json": out / "summary.json",
             "curves_npz": out / "curves.npz"}
    # Text formats need valid text: a file name that is not UTF-8 is written escaped (pipeline.names).
    shown = per_image.assign(path=per_image["path"].map(display_name))
    shown.to_parquet(paths["per_image_parquet"], index=False)
    shown.to_csv(paths["per_image_csv"], index=False)
    rows = [{"metric": name, **values} for name, values in summary["metrics"].items()]
    pd.DataFrame(rows, columns=["metric", "mean", "sem", "count", "better"]).to_csv(paths["summary_csv"],
                                                                                   index=False)
    # NaN (no value) is written as null: strict JSON readers reject NaN.
    paths["summary_json"].write_text(json.dumps(_nan_to_none(summary), indent=2, default=_json_default) + "\n")
    np.savez_compressed(paths["curves_npz"], **{**curves, "path": np.asarray(
        [display_name(str(p)) for p in curves["path"]], dtype=str)})
    return paths

def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value

def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

def write_plots(out: Path, store: MaskStore, per_image: pd.DataFrame, curves: dict[str, Any],
                 root: Path, config: EvalConfig, with_boxes: bool) -> dict[str, Path]:
    """``curves.png`` and one ``gallery_<metric>.png`` per key metric (Agg canvas, no pyplot)."""
    paths = {"curves_png": out / "curves.png"}
    curves_figure({store.path.stem: curves}, paths["curves_png"])
    if config.gallery < 1:
        return paths
    keys = [*AUC_COLUMNS.values(), *(["energy_pg"] if with_boxes else [])]
    for metric in keys:
        picks = _gallery_rows(per_image, metric, config.gallery)
        if picks is None:
            continue
        path = out / f"gallery_{metric}.png"
        gallery_figure(store, per_image, picks, metric, root, path)
        paths[f"gallery_{metric}"] = path
    return paths

def _gallery_rows(per_image: pd.DataFrame, metric: str, count: int) -> tuple[list[int], list[int]] | None:
    """Row positions of the ``count`` best and worst images by ``metric`` (None when none has it)."""
    values = pd.to_numeric(per_image[metric], errors="coerce") if metric in per_image else None
    if values is None or not values.notna().any():
        return None
    ordered = values.dropna().sort_values(kind="stable")
    if metric_direction(metric) == "higher":
        ordered = ordered[::-1]
    return list(ordered.index[:count]), list(ordered.index[::-1][:count])

def new_figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend change) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)

def plot_curves(runs: Mapping[str, Mapping[str, Any]]) -> Any:
    """The mean curves of one or more runs with a pointwise 95% band (mean +- 1.96 standard errors
    over images), one panel per curve kind (:data:`CURVES`); a matplotlib Figure.

    Args:
        runs: run name -> a ``curves.npz`` content (``fraction`` ``(P,)`` and ``(N, P)`` curves).
    """
    fig, axes = new_figure(1, len(CURVES), (4.2 * len(CURVES), 3.6))
    for ax, name in zip(axes[0], CURVES):
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


def curves_figure(runs: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write :func:`plot_curves` of ``runs`` to the PNG ``path``."""
    plot_curves(runs).savefig(path, dpi=100)
    return Path(path)


def gallery_figure(store: MaskStore, per_image: pd.DataFrame, picks: tuple[list[int], list[int]],
                   metric: str, root: Path, path: str | Path) -> Path:
    """Best (top row) and worst (bottom row) images by ``metric``: image with the heatmap overlaid."""
    best, worst = picks
    cols = max(len(best), len(worst))
    fig, axes = new_figure(2, cols, (2.6 * cols, 5.8))
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (title, rows) in enumerate((("best", best), ("worst", worst))):
        records = [ImageRecord(root / str(per_image["path"].iat[p]), str(per_image["path"].iat[p])) for p in rows]
        dataset = ImageDataset(records, store.input_size)
        heat = store_saliency(store, np.asarray(rows, dtype=np.int64), store.input_size)[:, 0].numpy()
        for c, p in enumerate(rows):
            ax = axes[r, c]
            ax.imshow(dataset[c]["image"].permute(1, 2, 0).numpy())
            h = heat[c]
            span = float(h.max() - h.min())
            ax.imshow((h - h.min()) / span if span > 0 else np.zeros_like(h), cmap="jet", alpha=0.45,
                      vmin=0, vmax=1)
            ax.set_title(f"{title}: {display_name(Path(records[c].relpath).stem)[-24:]}\n{metric} = "
                         f"{float(per_image[metric].iat[p]):.3f}", fontsize=7)
    fig.savefig(path, dpi=90)
    return Path(path)
