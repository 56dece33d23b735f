"""Compare evaluated runs side by side, with bootstrap intervals and paired differences.

Each run is an output folder of :func:`pipeline.evaluation.evaluate_store` (``per_image.parquet``,
``summary.json`` and ``curves.npz``), named by the folder's name. :func:`compare_runs` writes one
table (``comparison.csv``, ``comparison.md``) and ``curves.png`` (the mean curves of every run
overlaid).

Statistics, per metric and run, over the images the run evaluated (``eval_status == "ok"``) and
that have a value for the metric (localisation metrics exist only for images with a box of their
label class):

* the mean with a 95% **percentile bootstrap** interval: ``n_boot`` resamples of the images with
  replacement, the 2.5th and 97.5th percentiles of the resampled means;
* the **paired difference** ``run - first run`` over the images both evaluated (matched by the
  ``path`` column), with its own percentile bootstrap interval (images resampled as pairs). The
  first run is the reference; its own difference is left empty.

Each (metric, run) draws from its own generator seeded by ``seed`` and a CRC32 of the metric and
run names, so a table is reproducible and adding a run does not change the other runs' intervals.

Direction (column ``better``): deletion AUCs, ``p_final``, ``area``, ROAD's MoRF areas,
``complexity`` and the randomisation similarities lower; insertion AUC, ``ins_minus_del``
(insertion AUC minus zero-substrate deletion AUC, per image), localisation accuracies, pointing
game, energy pointing game, ROAD's LeRF and combined areas and ``sparseness`` higher. A folder
holding a randomisation check (``perturb randomisation --out`` the evaluation folder) adds, per
image, its mean similarity over the randomised steps (``randomisation_spearman_abs``,
``randomisation_ssim``, ``randomisation_hog_pearson``). Runs are ranked by the mean of
``ins_minus_del`` in ``comparison.md``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..evaluation import (
    AUC_COLUMNS,
    COMPLEXITY_COLUMNS,
    CURVES,
    RANDOMISATION_COLUMNS,
    RANDOMISATION_FILES,
    ROAD_SUMMARY,
    metric_direction,
)
from ..names import markdown_code, markdown_text
from ..pictures import plot_curves

__all__ = ["compare_runs", "bootstrap_ci", "comparison_metrics", "load_run", "metric_frame", "metric_row",
           "randomisation_columns", "RANK_METRIC"]

RANK_METRIC = "ins_minus_del"
"""Per-image ``insertion_auc - deletion_auc_zero``; runs are ranked by its mean (higher first)."""

_CHUNK_ELEMENTS = 4_000_000  # resampled values held at once (32 MB of float64)
_TABLE_COLUMNS = ["metric", "better", "run", "n", "mean", "ci_low", "ci_high", "n_paired", "diff",
                  "diff_ci_low", "diff_ci_high"]


def bootstrap_ci(values: Any, n_boot: int, rng: np.random.Generator, level: float = 0.95
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` ``(n,)`` (finite floats).

    Returns:
        ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``n_boot``
        resampled means; ``(nan, nan)`` for no values.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        return float("nan"), float("nan")
    means = np.empty(n_boot)
    per_chunk = max(1, _CHUNK_ELEMENTS // n)  # bounds memory for large n
    for start in range(0, n_boot, per_chunk):
        stop = min(n_boot, start + per_chunk)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _rng(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(name.encode()) for name in names)])


def load_run(folder: Path) -> dict[str, Any]:
    """A run folder's evaluated rows, summary, curves (``curves`` None when absent) and the per-image
    means of its randomisation check (:func:`randomisation_columns`)."""
    table_path = folder / "per_image.parquet"
    if not Path(folder).is_dir():
        raise ConfigError(f"no evaluation folder at {str(folder)!r}; check the path, or make one with "
                          "`perturb evaluate STORE --out FOLDER`")
    if not table_path.is_file():
        raise ConfigError(f"{str(folder)!r} is not an evaluation folder (it has no per_image.parquet); "
                          "make one with `perturb evaluate STORE --out FOLDER`")
    table = pd.read_parquet(table_path)
    table = table[table["eval_status"] == "ok"].reset_index(drop=True)
    if table["path"].duplicated().any():
        raise ConfigError(f"{str(table_path)!r} lists an image path twice; cannot pair images by path")
    table[RANK_METRIC] = table["insertion_auc"] - table["deletion_auc_zero"]
    summary_path, curves_path = folder / "summary.json", folder / "curves.npz"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    curves = dict(np.load(curves_path)) if curves_path.is_file() else None
    return {"table": table, "summary": summary, "curves": curves, "randomisation": randomisation_columns(folder)}


def metric_frame(table: pd.DataFrame, randomisation: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Where ``metric``'s per-image values are: the randomisation check's own images for its
    columns (they need not be among the evaluated ones), the evaluated rows for the others."""
    return randomisation if metric in RANDOMISATION_COLUMNS else table


def randomisation_columns(folder: Path) -> pd.DataFrame:
    """``path`` and the :data:`pipeline.evaluation.RANDOMISATION_COLUMNS` of the images of the
    folder's randomisation check (``perturb randomisation``): each image's mean similarity over the
    randomised steps; no rows when the folder has none."""
    csv = Path(folder) / RANDOMISATION_FILES["csv"]
    if not csv.is_file():
        return pd.DataFrame({"path": pd.Series([], dtype=object)})
    rows = pd.read_csv(csv)
    randomised = rows[rows["step"] > 0]
    means = randomised.groupby("path", sort=False)[list(RANDOMISATION_COLUMNS.values())].mean()
    return means.rename(columns={v: k for k, v in RANDOMISATION_COLUMNS.items()}).reset_index()


def comparison_metrics(tables: Sequence[pd.DataFrame]) -> list[str]:
    """The metric columns compared, in table order, with a value in at least one run (a metric
    the runs were evaluated without, ``--metrics``, is left out)."""
    present = {c for t in tables for c in t.columns
               if np.isfinite(pd.to_numeric(t[c], errors="coerce").to_numpy(np.float64)).any()}
    ordered = [*AUC_COLUMNS.values(), RANK_METRIC]
    locs = [c for t in tables for c in t.columns if c.startswith("loc_") and c != "loc_status"]
    locs += [c for t in tables for c in t.columns if c.startswith("locerr_")]  # held-out alpha (paper)
    ordered += list(dict.fromkeys(locs))
    ordered += ["pointing_hit", "energy_pg", *ROAD_SUMMARY, *COMPLEXITY_COLUMNS, *RANDOMISATION_COLUMNS,
                "p_final", "area"]
    return [m for m in ordered if m in present]


def _values(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``path`` and finite ``value`` of ``metric`` (empty when the run lacks it)."""
    if metric not in table:
        return pd.DataFrame({"path": [], "value": []})
    values = pd.to_numeric(table[metric], errors="coerce").astype(np.float64)
    frame = pd.DataFrame({"path": table["path"].astype(str), "value": values})
    return frame[np.isfinite(frame["value"])]


def metric_row(metric: str, name: str, run: pd.DataFrame, ref_name: str, ref: pd.DataFrame | None,
               n_boot: int, seed: int) -> dict[str, Any]:
    """One table row: mean and interval of ``metric`` in ``run``, and its paired difference."""
    own = _values(run, metric)
    low, high = bootstrap_ci(own["value"].to_numpy(), n_boot, _rng(seed, metric, name))
    row = {"metric": metric, "better": metric_direction(metric), "run": name, "n": len(own),
           "mean": float(own["value"].mean()) if len(own) else float("nan"), "ci_low": low, "ci_high": high,
           "n_paired": np.nan, "diff": np.nan, "diff_ci_low": np.nan, "diff_ci_high": np.nan}
    if ref is None:  # the reference run itself
        return row
    paired = own.merge(_values(ref, metric), on="path", suffixes=("", "_ref"))
    diff = (paired["value"] - paired["value_ref"]).to_numpy()
    d_low, d_high = bootstrap_ci(diff, n_boot, _rng(seed, metric, name, "vs", ref_name))
    row.update(n_paired=len(diff), diff=float(diff.mean()) if len(diff) else float("nan"),
               diff_ci_low=d_low, diff_ci_high=d_high)
    return row


def run_names(folders: Sequence[Path], names: Sequence[str] | None = None) -> list[str]:
    """The runs' names: ``names`` when given (one per folder), else the folders' names.

    Raises:
        ConfigError: a count that differs from the folders', an empty name, or repeated names.
    """
    if names is None:
        chosen = [f.name for f in folders]
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"run folders must have distinct names (they name the runs); got {chosen}, "
                              "or name the runs with names=[...] (--name)")
        return chosen
    chosen = [str(n) for n in names]
    if len(chosen) != len(folders):
        raise ConfigError(f"give one name per run folder (--name); got {len(chosen)} names for "
                          f"{len(folders)} folders")
    if any(not n.strip() for n in chosen) or len(set(chosen)) != len(chosen):
        raise ConfigError(f"run names must be distinct and not empty; got {chosen}")
    return chosen


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path, n_boot: int = 2000,
                 seed: int = 0, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Compare evaluated runs; write ``comparison.csv``, ``comparison.md`` and ``curves.png`` to ``out``.

    Args:
        run_dirs: :func:`pipeline.evaluation.evaluate_store` output folders; the first is the
            reference for paired differences.
        out: output folder, created if missing.
        n_boot: bootstrap resamples per interval, ``>= 1``.
        seed: base seed of the bootstrap.
        names: the runs' names in the tables, one per folder; None names them by folder name
            (which must then be unique).

    Returns:
        One row per (metric, run): ``metric, better, run, n, mean, ci_low, ci_high, n_paired, diff,
        diff_ci_low, diff_ci_high`` (differences NaN for the reference run).

    Raises:
        ConfigError: no run, repeated names, a folder without ``per_image.parquet``, bad ``n_boot``.
    """
    folders = [Path(d) for d in run_dirs]
    if not folders:
        raise ConfigError("compare_runs needs at least one run folder")
    names = run_names(folders, names)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"n_boot must be an integer >= 1; got {n_boot!r}")
    runs = {name: load_run(folder) for name, folder in zip(names, folders)}
    ref_name = names[0]

    def frame(name: str, metric: str) -> pd.DataFrame:
        return metric_frame(runs[name]["table"], runs[name]["randomisation"], metric)

    tables = [r["table"] for r in runs.values()] + [r["randomisation"] for r in runs.values()]
    rows = [metric_row(metric, name, frame(name, metric), ref_name,
                       None if name == ref_name else frame(ref_name, metric), int(n_boot), seed)
            for metric in comparison_metrics(tables) for name in names]
    table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv", index=False)
    (out / "comparison.md").write_text(_markdown(table, runs, folders, n_boot, seed))
    with_curves = {name: r["curves"] for name, r in runs.items() if r["curves"] is not None}
    if with_curves:
        plot_curves(with_curves, CURVES).savefig(out / "curves.png", dpi=100)
    return table


def _fmt(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return ""
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def _markdown(table: pd.DataFrame, runs: dict[str, Any], folders: list[Path], n_boot: int, seed: int) -> str:
    """``comparison.md``: notes, ranking, the table, and settings that differ between runs."""
    ref = table["run"].iloc[0] if len(table) else ""
    lines = ["# Comparison of evaluated runs", "",
             f"Reference (paired differences are `run` minus {markdown_code(ref)}, over images both evaluated, matched by path). "
             f"Intervals: 95% percentile bootstrap over images, {n_boot} resamples, seed {seed}. "
             "`better`: which direction is better.", ""]
    lines += [f"- {markdown_code(f.name)}: {markdown_text(str(f))}" for f in folders] + [""]
    ranking = table[table["metric"] == RANK_METRIC].sort_values("mean", ascending=False, kind="stable")
    if np.isfinite(ranking["mean"]).any():
        lines += ["## Ranking by insertion AUC minus deletion AUC (zero substrate), higher first", ""]
        lines += [f"{i}. {markdown_code(r.run)}: {_fmt(r.mean, r.ci_low, r.ci_high)}" for i, r in
                  enumerate(ranking.itertuples(), start=1)] + [""]
    lines += ["## Metrics", "", "| metric | better | run | n | mean [95% CI] | n paired | diff vs ref [95% CI] |",
              "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        diff = "(reference)" if r.run == ref else _fmt(r.diff, r.diff_ci_low, r.diff_ci_high)
        paired = "" if r.run == ref else f"{int(r.n_paired)}"
        lines.append(f"| {r.metric} | {r.better} | {markdown_text(r.run)} | {r.n} | {_fmt(r.mean, r.ci_low, r.ci_high)} | "
                     f"{paired} | {diff} |")
    return "\n".join(lines + [""] + _settings_notes(runs)) + "\n"


def _settings_notes(runs: dict[str, Any]) -> list[str]:
    """Lines naming evaluation settings that differ between runs (their numbers are not comparable)."""
    keys = ("step", "substrates", "thresholds", "box_kinds", "pointing_tolerance_px", "model", "input_size")
    settings = {name: r["summary"].get("settings", {}) for name, r in runs.items()}
    differing = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in settings.values()}) > 1]
    if not differing:
        return ["All runs were evaluated with the same settings (step, substrates, thresholds, model)."]
    lines = ["## Settings that differ between runs (compare with care)", ""]
    for key in differing:
        lines.append(f"- `{key}`: " + "; ".join(f"{markdown_code(name)}: {markdown_code(json.dumps(s.get(key)))}"
                                                for name, s in settings.items()))
    return lines
