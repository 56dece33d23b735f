"""Which images an evaluation shows, and the pictures it writes.

:func:`gallery_picks` chooses a metric's best, worst and seeded random images (the galleries of
``gallery_<metric>.png`` and of the HTML report); :func:`flagged_rows` lists the images whose
perturbation is weak (the report's strength diagnostic). :func:`write_pictures` draws, once per
evaluation while the store is open, everything a report shows of it: ``curves.png``,
``gallery_<metric>.png`` and ``thumbnails.parquet`` (one JPEG per image a report may show), so a
report is built from the evaluation folder alone (:func:`read_thumbnails`).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..names import display_name
from ..pictures import draw_boxes, draw_dashed_boxes, gallery_figure, jpeg_thumbnail, overlay, plot_curves, to_uint8
from ..store import STATUS_OK, MaskStore

from .diagnostics import WEAK_RATIO
from .saliency import stored_pictures
from .settings import AUC_COLUMNS, CURVES, EvalConfig, metric_direction

GALLERY_METRICS: tuple[str, ...] = (*AUC_COLUMNS.values(), "energy_pg")
"""Metrics with a gallery (best, worst, random images), when the run has values for them."""

GALLERY_SEED: int = 0
"""Seed of the galleries' random samples for which :func:`write_pictures` draws thumbnails (the
report's default, :class:`pipeline.report.ReportConfig` ``seed``)."""

THUMBNAIL_SIDE: int = 140
"""Longer side, in pixels, of the thumbnails a report embeds."""

THUMBNAILS_FILE = "thumbnails.parquet"
"""The evaluation folder's thumbnails: columns ``path`` (as in ``per_image.parquet``) and ``jpeg``
(bytes: the image in its original aspect ratio with its saliency overlaid and, when boxes were
given, the label's ground-truth boxes drawn in white and the box localisation found
(:data:`FOUND_BOX_COLUMNS`) dashed in magenta, :data:`THUMBNAIL_SIDE` px on the longer side)."""

FOUND_BOX_COLUMNS = ("locbox_xmin", "locbox_ymin", "locbox_xmax", "locbox_ymax")
"""Per-image columns of the box localisation found for the first threshold setting (the first
``(method, alpha)`` of :attr:`EvalConfig.thresholds` and the first box kind: value 0.1, tight by
default), inclusive pixels of the original frame; ``locbox_setting`` names the setting and
``locbox_fallback`` is 1.0 when nothing survived the threshold and the box is the whole image."""


def found_box(row: pd.Series) -> np.ndarray:
    """The box localisation found for ``row`` (:data:`FOUND_BOX_COLUMNS`) as ``(1, 4)`` int64, or
    ``(0, 4)`` when the row has none (not localised, or a table written before evaluations recorded it)."""
    values = pd.to_numeric(pd.Series([row.get(c) for c in FOUND_BOX_COLUMNS]), errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all():
        return np.zeros((0, 4), np.int64)
    return values.astype(np.int64).reshape(1, 4)


BoxesOf = Callable[[pd.Series], np.ndarray]
"""A per-image table row -> its ground-truth boxes ``(K, 4)`` ``(xmin, ymin, xmax, ymax)`` in the
original frame (``K = 0`` for none)."""


def gallery_picks(table: pd.DataFrame, metric: str, count: int, seed: int) -> dict[str, pd.DataFrame]:
    """The rows shown in ``metric``'s gallery: ``best``, ``worst`` and ``random``.

    Args:
        table: evaluated rows (``eval_status == "ok"``), as ``per_image.parquet`` holds them.
        count: rows per kind.

    Best and worst are the ``count`` extremes (stable sort: ties in table order). The random
    sample draws ``count`` rows without replacement from the rows with a value, listed by path,
    with a generator seeded by ``seed`` and the metric's name, so the same images are drawn in
    every run that evaluated the same images. Empty dict when no row has a value.
    """
    if metric not in table:
        return {}
    values = pd.to_numeric(table[metric], errors="coerce")
    has = table[np.isfinite(values.to_numpy(np.float64))]
    if not len(has):
        return {}
    ordered = has.sort_values(metric, kind="stable", ascending=metric_direction(metric) != "higher")
    by_path = has.sort_values("path", kind="stable")
    rng = np.random.default_rng([int(seed), zlib.crc32(metric.encode())])
    chosen = np.sort(rng.choice(len(by_path), size=min(count, len(by_path)), replace=False))
    return {"best": ordered.head(count), "worst": ordered.iloc[::-1].head(count), "random": by_path.iloc[chosen]}


def flagged_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The ok rows whose fully perturbed image keeps at least :data:`WEAK_RATIO` of the class score,
    highest ratio first (ties by path), with a ``ratio`` column (``p_perturbed / p_original``).
    Empty when the table has no ``p_perturbed`` (a baseline store)."""
    if not {"status", "p_original", "p_perturbed"} <= set(table.columns):
        return table.iloc[0:0].assign(ratio=pd.Series(dtype=float))
    ok = table[(table["status"] == STATUS_OK) & table["p_perturbed"].notna() & (table["p_original"] > 0)]
    ratio = ok["p_perturbed"] / ok["p_original"]
    flagged = ok.assign(ratio=ratio)[ratio >= WEAK_RATIO]
    return flagged.sort_values(["ratio", "path"], ascending=[False, True], kind="stable")


def picture_rows(per_image: pd.DataFrame, count: int, seed: int = GALLERY_SEED) -> list[int]:
    """Row positions of every image a report with ``count`` pictures per gallery row or fewer
    shows: each gallery metric's best and worst, the random samples of every size up to
    ``count`` (a smaller sample is not a subset of a larger one), and the ``2 * count`` most
    weakly perturbed images. ``per_image``'s index is the store row position."""
    shown = per_image.assign(path=per_image["path"].map(display_name))  # as per_image.parquet has it
    evaluated = shown[shown["eval_status"] == "ok"]
    rows: list[int] = []
    for metric in GALLERY_METRICS:
        for size in range(1, count + 1):
            picks = gallery_picks(evaluated, metric, size, seed)
            kinds = ("best", "worst", "random") if size == count else ("random",)
            rows += [int(i) for kind in kinds if kind in picks for i in picks[kind].index]
    if count:
        rows += [int(i) for i in flagged_rows(shown).index[: 2 * count]]
    return sorted(set(rows))


def write_pictures(out: Path, store: MaskStore, per_image: pd.DataFrame, curves: dict[str, Any], root: Path,
                   config: EvalConfig, with_boxes: bool, boxes_of: BoxesOf | None = None) -> dict[str, Path]:
    """``curves.png``, one ``gallery_<metric>.png`` per gallery metric (best images in the top row,
    worst in the bottom row, ``config.gallery`` each) and :data:`THUMBNAILS_FILE` (the images of
    :func:`picture_rows` with ``config.gallery``), read once from ``root``; no gallery and no
    thumbnail when ``config.gallery`` is 0.

    Args:
        per_image: the evaluation's table (index = store row position).
        curves: the ``curves.npz`` content.
        with_boxes: the run has localisation (``energy_pg`` gets a gallery).
        boxes_of: the ground-truth boxes drawn on each picture; None draws none.
    """
    paths = {"curves_png": out / "curves.png"}
    plot_curves({store.path.stem: curves}, CURVES).savefig(paths["curves_png"], dpi=100)
    if config.gallery < 1:
        return paths
    drawn = _overlays(store, per_image, root, config, boxes_of)
    thumbnails = pd.DataFrame({"path": [display_name(per_image["path"].iat[p]) for p in drawn],
                               "jpeg": [jpeg_thumbnail(picture, THUMBNAIL_SIDE) for picture in drawn.values()]})
    paths["thumbnails"] = out / THUMBNAILS_FILE
    thumbnails.to_parquet(paths["thumbnails"], index=False)
    evaluated = per_image[per_image["eval_status"] == "ok"]
    for metric in GALLERY_METRICS if with_boxes else AUC_COLUMNS.values():
        picks = gallery_picks(evaluated, metric, config.gallery, GALLERY_SEED)
        if not picks:
            continue
        grid = [[(drawn[p], _title(kind, per_image, p, metric)) for p in picks[kind].index if p in drawn]
                for kind in ("best", "worst")]
        paths[f"gallery_{metric}"] = out / f"gallery_{metric}.png"
        gallery_figure(grid).savefig(paths[f"gallery_{metric}"], dpi=90)
    return paths


def _overlays(store: MaskStore, per_image: pd.DataFrame, root: Path, config: EvalConfig,
              boxes_of: BoxesOf | None) -> dict[int, np.ndarray]:
    """Row position -> uint8 ``(H, W, 3)`` image with its saliency overlaid (and its ground-truth and
    found boxes drawn),
    in the image's original frame so that it keeps its aspect ratio, for the readable images of
    :func:`picture_rows`."""
    drawn: dict[int, np.ndarray] = {}
    rows = picture_rows(per_image, config.gallery)
    for batch in stored_pictures(store, rows, root, frame="original"):
        for i in np.flatnonzero(batch.ok):
            row = int(batch.rows[i])
            picture = to_uint8(overlay(batch.images[i], batch.saliency[i]))
            if boxes_of is not None:
                picture = draw_boxes(picture, boxes_of(per_image.iloc[row]))
            drawn[row] = draw_dashed_boxes(picture, found_box(per_image.iloc[row]))
    return drawn


def _title(kind: str, per_image: pd.DataFrame, row: int, metric: str) -> str:
    stem = display_name(Path(str(per_image["path"].iat[row])).stem)[-24:]
    return f"{kind}: {stem}\n{metric} = {float(per_image[metric].iat[row]):.3f}"


def read_thumbnails(folder: str | Path) -> dict[str, bytes] | None:
    """An evaluation folder's thumbnails, ``path`` (as in ``per_image.parquet``) -> JPEG bytes;
    None when the folder has no :data:`THUMBNAILS_FILE` (evaluated without pictures, or before
    evaluations wrote it)."""
    path = Path(folder) / THUMBNAILS_FILE
    if not path.is_file():
        return None
    table = pd.read_parquet(path)
    return dict(zip(table["path"].astype(str), table["jpeg"]))
