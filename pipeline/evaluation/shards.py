"""Sharded evaluation: each shard evaluates its images of a store, the shards merge into one report.

Shard ``r`` of ``N`` (:mod:`pipeline.distributed`) evaluates the store rows whose image ``index``
has ``index % N == r`` with :func:`pipeline.evaluation.evaluate.evaluate_store` (its ``indices``), into
``<report>.shards/shard-<r>-of-<N>/`` (``per_image.parquet``/``.csv``, ``summary.*``,
``curves.npz``; no plots), and marks it finished with ``done.json``. The shards share
``<report>.shards/run.json``: ``N``, the store (path, ``run_key``, rows) and the evaluation
settings, so a shard started with another ``N``, store or settings is refused.

:func:`merge_report` builds the report a one-process evaluation writes: the per-image table
(each row's metrics from the shard that evaluated it, in store order), the summary (means and
pointing game recomputed from that table, in the same order), the curves (in store order) and
the plots. Under torchrun rank 0 merges after a barrier; otherwise ``perturb merge <report>``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..distributed import Shard, process_group_barrier, restart_count
from ..errors import StoreError
from .evaluate import evaluate_store
from .gallery import write_pictures
from .outputs import write_tables
from .settings import EvalConfig
from .summary import per_image_table, summarise
from ..metrics import ImageBoxes, PointingGame
from ..models import Classifier
from ..store.shards import PLAN_FILE, claim_file, shards_dir
from ..store import MaskStore

__all__ = ["evaluate_sharded", "merge_report", "is_sharded_report", "report_progress_lines"]

_DONE = "done.json"
_META_KEYS = ("store", "store_config", "model", "data_root", "input_size", "boxes")


def _shard_dir(report: Path, rank: int, world: int) -> Path:
    return shards_dir(report) / f"shard-{rank}-of-{world}"


def is_sharded_report(report: str | Path) -> bool:
    """Whether ``<report>.shards/`` holds a sharded evaluation (rather than a mask run)."""
    path = shards_dir(report) / PLAN_FILE
    try:
        return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("kind") == "evaluate"
    except (OSError, ValueError):
        return False


def _plan(store: MaskStore, store_path: Path, world: int, config: EvalConfig, boxes: Any,
          data_root: Any) -> dict[str, Any]:
    settings = dataclasses.asdict(config)
    return {"kind": "evaluate", "version": 1, "world": world, "store": str(store_path.resolve()),
            "store_run_key": store.run_key, "store_rows": len(store), "config": json.loads(json.dumps(settings)),
            "boxes": None if boxes is None else str(boxes), "data_root": None if data_root is None else str(data_root)}


def _check(stored: dict[str, Any], mine: dict[str, Any], shard: Shard, folder: Path) -> None:
    again = f"or delete {str(folder)!r} to start the sharded evaluation again"
    if stored.get("world") != mine["world"]:
        raise StoreError(f"{str(folder)!r} holds an evaluation split into {stored.get('world')} shards, but this "
                         f"process is {shard.label} (from {shard.launcher}): run {stored.get('world')} shards, {again}")
    for key, what in (("store", "store"), ("store_run_key", "store"), ("store_rows", "store"),
                      ("config", "evaluation settings"), ("boxes", "--boxes"), ("data_root", "--data")):
        if stored.get(key) != mine[key]:
            raise StoreError(f"this process's {what} differs from the sharded evaluation in {str(folder)!r} "
                             f"({key}: {json.dumps(stored.get(key))[:80]} vs {json.dumps(mine[key])[:80]}): give "
                             f"every shard the same store and options, {again}")


def evaluate_sharded(store_path: str | Path, data_root: str | Path | None, classifier: Classifier,
                     report: str | Path, shard: Shard, boxes: str | Path | Mapping[str, ImageBoxes] | None = None,
                     config: EvalConfig = EvalConfig(), progress: bool = False, overwrite: bool = False) -> list[str]:
    """Evaluate this shard's images of ``store_path`` (a finished shard is not redone), then under
    torchrun merge on rank 0 after every rank is done. Returns lines to print.

    Raises:
        StoreError: the shard disagrees with the others (``N``, store, settings, boxes, data).
    """
    store_path, report = Path(store_path), Path(report)
    folder = shards_dir(report)
    with MaskStore(store_path) as store:
        plan = _plan(store, store_path, shard.world, config, boxes, data_root)
        index = store.column("index")
    overwrite = overwrite and restart_count() == 0
    text = json.dumps(plan, sort_keys=True, indent=1) + "\n"
    if overwrite and shard.rank == 0:
        for stale in folder.glob("shard-*-of-*"):
            if stale.name.rsplit("-of-", 1)[-1] != str(shard.world):
                shutil.rmtree(stale, ignore_errors=True)
    if not claim_file(folder / PLAN_FILE, text, replace=overwrite):
        _check(json.loads((folder / PLAN_FILE).read_text(encoding="utf-8")), plan, shard, folder)
    own = _shard_dir(report, shard.rank, shard.world)
    if overwrite:
        shutil.rmtree(own, ignore_errors=True)
    mine = index[index % shard.world == shard.rank]
    lines = []
    if (own / _DONE).is_file():
        lines.append(f"{shard.label}: already evaluated in {own}")
    else:
        evaluate_store(store_path, data_root, classifier, own, boxes=boxes,
                       # the held-out alpha is chosen over all images, when the shards are merged
                       config=dataclasses.replace(config, plots=False, alpha_split=None), progress=progress,
                       indices=mine.tolist())
        claim_file(own / _DONE, json.dumps({"rank": shard.rank, "world": shard.world, "images": int(len(mine))}) + "\n",
                   replace=True)
        lines.append(f"{shard.label}: evaluated {len(mine)} images into {own}")
    if process_group_barrier(shard):
        if shard.rank == 0:
            merge_report(report)
            lines.append(f"merged {shard.world} evaluation shards into {report}")
        return lines
    waiting = [r for r in range(shard.world) if not (_shard_dir(report, r, shard.world) / _DONE).is_file()]
    lines.append(f"waiting for shards {', '.join(map(str, waiting))}, then `perturb merge {report}`" if waiting
                 else f"all {shard.world} shards are evaluated: `perturb merge {report}` writes {report}")
    return lines


def _read_plan(report: Path) -> dict[str, Any]:
    path = shards_dir(report) / PLAN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StoreError(f"no sharded evaluation writes into {str(report)!r} ({error})") from None


def report_progress_lines(report: str | Path) -> list[str]:
    """Which shards of a sharded evaluation are finished."""
    report = Path(report)
    plan = _read_plan(report)
    world = int(plan["world"])
    return [f"  shard {r}/{world}  " + ("evaluated" if (_shard_dir(report, r, world) / _DONE).is_file() else "not done")
            for r in range(world)]


def merge_report(report: str | Path, keep_shards: bool = False) -> Path:
    """Merge the evaluated shards into the report one process would write in ``report``.

    Raises:
        StoreError: a shard is not evaluated yet (named), or the store changed since.
    """
    report = Path(report)
    plan = _read_plan(report)
    world = int(plan["world"])
    folders = [_shard_dir(report, r, world) for r in range(world)]
    missing = [str(r) for r, f in enumerate(folders) if not (f / _DONE).is_file()]
    if missing:
        raise StoreError(f"cannot merge {str(report)!r}: shards {', '.join(missing)} of {world} are not evaluated; "
                         "run them (the same command), then merge again")
    config = EvalConfig(**plan["config"])
    with MaskStore(plan["store"]) as store:
        if store.run_key != plan["store_run_key"] or len(store) != plan["store_rows"]:
            raise StoreError(f"the store {plan['store']!r} changed since the shards were evaluated; delete "
                             f"{str(shards_dir(report))!r} and evaluate again")
        table = store.table()
        metrics, curves = _gather(folders, table, world)
        per_image = per_image_table(table, metrics)
        with_boxes = plan["boxes"] is not None
        game = PointingGame()
        if with_boxes and "loc_status" in per_image:
            located = per_image[per_image["loc_status"] == "ok"]
            for hit, label in zip(located["pointing_hit"], located["label"]):
                game.update(bool(hit), int(label))
        settings = json.loads((folders[0] / "summary.json").read_text(encoding="utf-8"))["settings"]
        meta = {key: settings[key] for key in _META_KEYS}
        per_image, summary = summarise(per_image, game, config, meta, with_boxes)
        report.mkdir(parents=True, exist_ok=True)
        write_tables(report, per_image, summary, curves)
        if config.plots:
            write_pictures(report, store, per_image, curves, Path(meta["data_root"]), config, with_boxes)
    if not keep_shards:
        shutil.rmtree(shards_dir(report), ignore_errors=True)
    return report


def _gather(folders: list[Path], table: pd.DataFrame, world: int) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Each evaluated row's metrics (by store row position) and the curves in store order."""
    store_columns = set(table.columns) | {"score_drop"}  # score_drop is recomputed by per_image_table
    position = {int(i): p for p, i in enumerate(table["index"])}
    metrics: dict[int, dict[str, Any]] = {}
    pieces: list[Any] = []
    for rank, folder in enumerate(folders):
        shard_table = pd.read_parquet(folder / "per_image.parquet")
        names = [c for c in shard_table.columns if c not in store_columns]
        own = (shard_table["index"].to_numpy() % world == rank) & ~shard_table["eval_status"].isin(
            ["not selected", "skipped in store"]).to_numpy()
        for p in np.flatnonzero(own):
            values = shard_table.iloc[p]
            metrics[position[int(values["index"])]] = {
                name: _plain(values[name]) for name in names if not _missing(values[name])}
        with np.load(folder / "curves.npz") as data:
            pieces.append({name: data[name] for name in data.files})
    curves: dict[str, Any] = {"fraction": pieces[0]["fraction"]}
    order = np.argsort([position[int(i)] for piece in pieces for i in piece["index"]], kind="stable")
    for name in pieces[0]:
        if name != "fraction":
            curves[name] = np.concatenate([piece[name] for piece in pieces])[order]
    return metrics, curves


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars as the Python values one-process evaluation stores."""
    return value.item() if isinstance(value, np.generic) else value
