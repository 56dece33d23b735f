"""One evaluation from evaluations of disjoint parts of a store (the shards of ``perturb evaluate``).

:func:`combine_parts` joins the parts' per-image metrics and curves in store order (a pure
function of their tables); :func:`merge_evaluations` reads the parts' folders and writes the
report a one-process evaluation of the whole store writes: the same per-image table, summary
(means, pointing game and held-out thresholds recomputed over all images, in store order),
curves and plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import StoreError
from ..metrics import PointingGame
from ..store import MaskStore
from .evaluate import EvalResult
from .gallery import write_pictures
from .outputs import write_tables
from .settings import EvalConfig
from .summary import per_image_table, summarise

__all__ = ["combine_parts", "merge_evaluations"]

NOT_EVALUATED = ("not selected", "skipped in store")
"""``eval_status`` of a part's rows that another part (or nobody) evaluated."""

META_KEYS = ("store", "store_config", "model", "data_root", "input_size", "boxes", "store_attributes")
"""The settings of ``summary.json`` that come from the store and the options, not the metrics."""


def combine_parts(table: pd.DataFrame, parts: Sequence[tuple[pd.DataFrame, Mapping[str, np.ndarray]]]
                  ) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """The metrics of every evaluated row and the curves of all parts, in store order.

    Args:
        table: the store's table (``N`` rows).
        parts: per part, its per-image table (one row per store row; the rows it did not evaluate
            have ``eval_status`` "not selected" or "skipped in store") and its curves
            (``curves.npz``: ``(n_k, P)`` per curve, ``index`` and ``path`` ``(n_k,)``,
            ``fraction`` ``(P,)``).

    Returns:
        ``{store row position: {metric column: value}}`` (what
        :func:`pipeline.evaluation.summary.per_image_table` joins) and the curves of all parts,
        ``(sum n_k, P)`` each, rows in store order.

    Raises:
        StoreError: two parts evaluated the same row.
    """
    store_columns = set(table.columns) | {"score_drop"}  # score_drop is recomputed by per_image_table
    position = {int(i): p for p, i in enumerate(table["index"])}
    metrics: dict[int, dict[str, Any]] = {}
    for part, (rows, _) in enumerate(parts):
        names = [c for c in rows.columns if c not in store_columns]
        own = ~rows["eval_status"].isin(NOT_EVALUATED).to_numpy()
        for p in np.flatnonzero(own):
            values = rows.iloc[p]
            where = position[int(values["index"])]
            if where in metrics:
                raise StoreError(f"image index {int(values['index'])} was evaluated by two parts (part {part} "
                                 "and an earlier one); evaluate each image in one part only")
            metrics[where] = {name: _plain(values[name]) for name in names if not _missing(values[name])}
    pieces = [dict(curves) for _, curves in parts]
    combined: dict[str, Any] = {"fraction": pieces[0]["fraction"]}
    order = np.argsort([position[int(i)] for piece in pieces for i in piece["index"]], kind="stable")
    for name in pieces[0]:
        if name != "fraction":
            joined = np.concatenate([piece[name] for piece in pieces])
            # a curve the evaluation did not compute (``--metrics``) is empty in every part
            combined[name] = joined[order] if len(joined) == len(order) else joined
    return metrics, combined


def merge_evaluations(store_path: str | Path, folders: Sequence[str | Path], out: str | Path,
                      config: EvalConfig, with_boxes: bool) -> EvalResult:
    """Write into ``out`` the evaluation of ``store_path`` made of the evaluations of its parts
    in ``folders`` (each written by :func:`pipeline.evaluation.evaluate_store` with ``indices``,
    ``plots=False`` and no ``alpha_split``): tables, summary and curves, and the plots when
    ``config.plots``.

    Raises:
        StoreError: the store cannot be read, or two parts evaluated the same row.
    """
    folders, out = [Path(f) for f in folders], Path(out)
    parts = []
    for folder in folders:
        with np.load(folder / "curves.npz") as data:
            parts.append((pd.read_parquet(folder / "per_image.parquet"), {name: data[name] for name in data.files}))
    settings = json.loads((folders[0] / "summary.json").read_text(encoding="utf-8"))["settings"]
    meta = {key: settings[key] for key in META_KEYS if key in settings}
    with MaskStore(store_path) as store:
        table = store.table()
        metrics, curves = combine_parts(table, parts)
        per_image = per_image_table(table, metrics)
        game = PointingGame()  # replayed in store order, as one process plays it
        if with_boxes and "loc_status" in per_image:
            located = per_image[per_image["loc_status"] == "ok"]
            for hit, label in zip(located["pointing_hit"], located["label"]):
                game.update(bool(hit), int(label))
        per_image, summary = summarise(per_image, game, config, meta, with_boxes)
        out.mkdir(parents=True, exist_ok=True)
        paths = write_tables(out, per_image, summary, curves)
        if config.plots:
            paths.update(write_pictures(out, store, per_image, curves, Path(meta["data_root"]), config, with_boxes))
    return EvalResult(per_image, summary, paths)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars as the Python values one-process evaluation stores."""
    return value.item() if isinstance(value, np.generic) else value
