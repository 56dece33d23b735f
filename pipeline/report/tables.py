"""The numbers of a report: every table the page shows, computed from the run folders' files.

A run folder is an output of :func:`pipeline.evaluation.evaluate_store` (``per_image.parquet``,
``summary.json``, ``curves.npz``). Nothing here re-evaluates an image: means, counts and
per-class figures are read off ``per_image.parquet`` (the same rows as ``per_image.csv``), and the
95% intervals and paired differences are those of :func:`pipeline.report.compare.compare_runs` (the same
rows, generators and seeds, so a report and ``comparison.csv`` agree to the last digit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .compare import RANK_METRIC, comparison_metrics, load_run, metric_frame, metric_row, run_names
from ..evaluation import WEAK_RATIO, StrengthReport, perturbation_strength
from ..errors import ConfigError
from ..evaluation import AUC_COLUMNS, RANDOMISATION_FILES, road_column
from ..imagenet import ClassVocabulary

__all__ = ["RunData", "load_runs", "road_curves_of", "randomisation_of", "interval_table", "class_table", "class_extremes", "localisation_table",
           "flagged_images", "GALLERY_METRICS", "CLASS_METRICS"]

GALLERY_METRICS: tuple[str, ...] = (*AUC_COLUMNS.values(), "energy_pg")
"""Metrics with a gallery (best, worst, random images), when the run has values for them."""

CLASS_METRICS: tuple[str, ...] = ("insertion_auc", "deletion_auc_zero", RANK_METRIC, "pointing_hit", "energy_pg")
"""Per-class means shown in the class breakdown; classes are ranked by :data:`RANK_METRIC`."""

TABLE_FILES: tuple[str, ...] = ("per_image.parquet", "per_image.csv", "summary.csv", "summary.json", "curves.npz",
                                 *RANDOMISATION_FILES.values())
"""Files of a run folder the report is built from (linked from the page when present)."""


@dataclass(frozen=True)
class RunData:
    """One evaluated run as the report reads it.

    Attributes:
        name: the folder's name (names the run, as in :func:`pipeline.report.compare.compare_runs`).
        folder: the run folder.
        table: ``per_image.parquet``, every row (skipped ones included).
        evaluated: the rows with ``eval_status == "ok"`` plus :data:`RANK_METRIC` (compare's view).
        summary: ``summary.json`` (empty dict when absent).
        curves: ``curves.npz`` content, or None.
        randomisation: ``path`` and the per-image means of the folder's randomisation check
            (:func:`pipeline.report.compare.randomisation_columns`), or None.
    """

    name: str
    folder: Path
    table: pd.DataFrame
    evaluated: pd.DataFrame
    summary: dict[str, Any]
    curves: dict[str, Any] | None
    randomisation: pd.DataFrame | None = None

    def frame(self, metric: str) -> pd.DataFrame:
        """The rows holding ``metric``'s per-image values (:func:`pipeline.report.compare.metric_frame`)."""
        empty = pd.DataFrame({"path": pd.Series([], dtype=object)})
        return metric_frame(self.evaluated, self.randomisation if self.randomisation is not None else empty, metric)

    @property
    def settings(self) -> dict[str, Any]:
        return self.summary.get("settings") or {}

    @property
    def files(self) -> list[Path]:
        """The run's table files that exist, in :data:`TABLE_FILES` order."""
        return [self.folder / name for name in TABLE_FILES if (self.folder / name).is_file()]


def load_runs(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[RunData]:
    """Read run folders (the first is the reference of paired differences), named ``names`` (one
    per folder; None = by folder name, :func:`pipeline.report.compare.run_names`).

    Raises:
        ConfigError: no folder, repeated names, a folder without ``per_image.parquet``.
    """
    folders = [Path(d) for d in run_dirs]
    if not folders:
        raise ConfigError("a report needs at least one run folder (an output of `perturb evaluate`)")
    names = run_names(folders, names)
    runs = []
    for name, folder in zip(names, folders):
        loaded = load_run(folder)  # raises the ConfigError for a folder that is not a run
        runs.append(RunData(name, folder, pd.read_parquet(folder / "per_image.parquet"), loaded["table"],
                            loaded["summary"], loaded["curves"], loaded["randomisation"]))
    return runs


def road_curves_of(run: RunData) -> dict[str, Any] | None:
    """The run's per-image ROAD curves, ``{"fractions": (P,), "morf": (N, P), "lerf": (N, P)}``
    (probabilities of the explained class, evaluated images with ROAD values); None without ROAD."""
    road = run.summary.get("road") or (run.settings.get("road") or {})
    fractions = road.get("fractions")
    if not fractions or road_column("morf", fractions[0]) not in run.evaluated:
        return None
    rows = run.evaluated[run.evaluated["road_morf_auc"].notna()]
    return {"fractions": np.asarray(fractions, dtype=np.float64),
            **{curve: rows[[road_column(curve, f) for f in fractions]].to_numpy(np.float64)
               for curve in ("morf", "lerf", "morf_top1", "lerf_top1")}}


def randomisation_of(run: RunData) -> dict[str, Any] | None:
    """The run folder's ``randomisation.json`` (``perturb randomisation``) with ``undefined_share``:
    per step, the share of images whose Spearman correlation is undefined (a constant map, e.g. a
    solver that deletes nothing on a randomised model), from ``randomisation.csv``; or None."""
    path = run.folder / RANDOMISATION_FILES["json"]
    if not path.is_file():
        return None
    import json

    checked = json.loads(path.read_text(encoding="utf-8"))
    csv = run.folder / RANDOMISATION_FILES["csv"]
    if csv.is_file():  # a constant re-made map has no rank correlation: say how often that happened
        rows = pd.read_csv(csv)
        undefined = rows["spearman_abs"].isna().groupby(rows["step"]).mean()
        checked["undefined_share"] = [float(undefined.get(i, float("nan"))) for i in range(len(checked["steps"]))]
    return checked


# --------------------------------------------------------------------------------------------
# means with intervals, paired differences


def report_metrics(runs: Sequence[RunData]) -> list[str]:
    """Compare's metrics, then any other metric a run's ``summary.json`` lists (``tv``, ...)."""
    metrics = comparison_metrics([r.evaluated for r in runs] + [r.randomisation for r in runs
                                                                  if r.randomisation is not None])
    for run in runs:
        for name in (run.summary.get("metrics") or {}):
            if name not in metrics and name in run.evaluated:
                metrics.append(name)
    return metrics


def interval_table(runs: Sequence[RunData], n_boot: int, seed: int,
                   comparison: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (metric, run), as ``comparison.csv``: ``metric, better, run, n, mean, ci_low,
    ci_high, n_paired, diff, diff_ci_low, diff_ci_high`` plus ``sem`` from ``summary.json``.

    Args:
        comparison: rows already computed by :func:`pipeline.report.compare.compare_runs` for these
            runs with the same ``n_boot`` and ``seed`` (reused, not recomputed); None computes all.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"n_boot must be an integer >= 1; got {n_boot!r}")
    ref = runs[0]
    known = {} if comparison is None else {(r["metric"], r["run"]): r for r in comparison.to_dict("records")}
    rows = []
    for metric in report_metrics(runs):
        for run in runs:
            row = known.get((metric, run.name))
            if row is None:
                row = metric_row(metric, run.name, run.frame(metric), ref.name,
                                 None if run is ref else ref.frame(metric), int(n_boot), seed)
            stats = (run.summary.get("metrics") or {}).get(metric) or {}
            sem = stats.get("sem")
            rows.append({**row, "sem": float(sem) if sem is not None else float("nan")})
    return pd.DataFrame(rows)


def ranking(intervals: pd.DataFrame) -> pd.DataFrame:
    """The :data:`RANK_METRIC` rows, best (highest mean) first, with a ``rank`` column from 1."""
    ranked = intervals[intervals["metric"] == RANK_METRIC].sort_values("mean", ascending=False, kind="stable")
    return ranked.assign(rank=np.arange(1, len(ranked) + 1)).reset_index(drop=True)


def verdict(row: Any) -> str:
    """Whether a paired difference's interval excludes zero, read with the metric's direction."""
    low, high, better = row["diff_ci_low"], row["diff_ci_high"], row["better"]
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return "no clear difference"
    up = low > 0
    if better not in ("higher", "lower"):
        return "higher" if up else "lower"
    return "better" if up == (better == "higher") else "worse"


# --------------------------------------------------------------------------------------------
# per class


def class_name(index: int, vocabulary: ClassVocabulary | None) -> str:
    """``name (wnid)`` of a class index; the bare index when the vocabulary does not know it."""
    if vocabulary is None or not 0 <= index < len(vocabulary):
        return "(none)" if index < 0 else str(index)
    wnid = vocabulary.wnids[index] if index < len(vocabulary.wnids) else ""
    return f"{vocabulary.names[index]} ({wnid})" if wnid else vocabulary.names[index]


def class_table(run: RunData, vocabulary: ClassVocabulary | None) -> pd.DataFrame:
    """Means of :data:`CLASS_METRICS` per explained class (``target``) over the evaluated images.

    Returns:
        ``target, class, n`` and one column per metric present, best :data:`RANK_METRIC` first.
    """
    table = run.evaluated
    metrics = [m for m in CLASS_METRICS if m in table]
    grouped = table.groupby("target", sort=True)
    out = grouped[metrics].mean() if metrics else pd.DataFrame(index=grouped.size().index)
    out.insert(0, "n", grouped.size())
    out = out.reset_index()
    out.insert(1, "class", [class_name(int(t), vocabulary) for t in out["target"]])
    if RANK_METRIC in out:
        out = out.sort_values([RANK_METRIC, "target"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)


def class_extremes(classes: pd.DataFrame, count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``count`` best and ``count`` worst classes (all classes once when there are fewer
    than ``2 * count``: then ``worst`` is empty)."""
    if len(classes) <= 2 * count:
        return classes, classes.iloc[0:0]
    return classes.head(count), classes.tail(count).iloc[::-1]


# --------------------------------------------------------------------------------------------
# localisation


def parse_loc_column(name: str) -> tuple[str, float, str] | None:
    """``loc_<method>_<alpha>_<kind>`` -> ``(method, alpha, kind)``; None for another column."""
    parts = name.split("_")
    if len(parts) != 4 or parts[0] != "loc":
        return None
    try:
        return parts[1], float(parts[2]), parts[3]
    except ValueError:
        return None


def localisation_table(run: RunData, intervals: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (share of images with IoU >= 0.5) at every threshold of one run, with its interval
    and the mean IoU. Columns ``method, alpha, kind, n, accuracy, ci_low, ci_high, mean_iou``."""
    own = intervals[intervals["run"] == run.name].set_index("metric")
    rows = []
    for column in run.evaluated.columns:
        parsed = parse_loc_column(column)
        if parsed is None or column not in own.index:
            continue
        method, alpha, kind = parsed
        iou = pd.to_numeric(run.evaluated.get("iou" + column[3:]), errors="coerce")
        stats = own.loc[column]
        rows.append({"method": method, "alpha": alpha, "kind": kind, "metric": column, "n": int(stats["n"]),
                     "accuracy": stats["mean"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
                     "mean_iou": float(iou.mean()) if iou is not None and iou.notna().any() else float("nan")})
    return pd.DataFrame(rows, columns=["method", "alpha", "kind", "metric", "n", "accuracy", "ci_low", "ci_high",
                                       "mean_iou"])


# --------------------------------------------------------------------------------------------
# the perturbation-strength diagnostic


def flagged_images(run: RunData) -> tuple[StrengthReport, pd.DataFrame]:
    """The diagnostic of :func:`pipeline.evaluation.perturbation_strength` and the images it
    flags (``p_perturbed >= WEAK_RATIO * p_original``), highest ratio first.

    Returns:
        ``(report, flagged)``; ``flagged`` has ``path, target, p_original, p_perturbed, ratio``.
    """
    table = run.table
    if not {"status", "p_original", "p_perturbed"} <= set(table.columns):
        return StrengthReport(0, 0, float("nan")), pd.DataFrame(columns=["path", "target", "p_original",
                                                                         "p_perturbed", "ratio"])
    report = perturbation_strength(table)
    ok = table[(table["status"] == "ok") & table["p_perturbed"].notna() & (table["p_original"] > 0)]
    ratio = ok["p_perturbed"] / ok["p_original"]
    flagged = ok.assign(ratio=ratio)[ratio >= WEAK_RATIO]
    flagged = flagged.sort_values(["ratio", "path"], ascending=[False, True], kind="stable")
    return report, flagged[["path", "target", "p_original", "p_perturbed", "ratio"]].reset_index(drop=True)
