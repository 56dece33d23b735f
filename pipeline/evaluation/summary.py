"""The per-image table and ``summary.json`` of an evaluation: means with standard errors, counts,
the pointing game per class, the held-out choice of thresholds, and every setting."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..metrics import (
    IOU_CORRECT,
    PointingGame,
    held_out_localization,
    road_settings,
    split_calibration,
)
from ..store import STATUS_OK

from .settings import (AUC_COLUMNS, COMPLEXITY_COLUMNS, CURVE_METRIC, METRICS, ROAD_SUMMARY, EvalConfig, metric_direction,
                       road_column)


STAT_COLUMNS = ("area", "tv", "p_original", "p_perturbed", "p_final", "score_drop")

def per_image_table(table: pd.DataFrame, metrics: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """The store table joined with the metric columns (NaN where not evaluated)."""
    extra = pd.DataFrame.from_dict(metrics, orient="index").reindex(range(len(table)))
    if "eval_status" not in extra:  # nothing was evaluated
        extra["eval_status"] = pd.Series(np.nan, index=extra.index, dtype=object)
    per_image = pd.concat([table.reset_index(drop=True), extra], axis=1)
    unselected = per_image["eval_status"].isna() & (per_image["status"] == STATUS_OK)
    per_image.loc[unselected, "eval_status"] = "not selected"
    per_image["eval_status"] = per_image["eval_status"].fillna("skipped in store")
    for name in AUC_COLUMNS.values():
        if name not in per_image:
            per_image[name] = np.nan
    per_image["score_drop"] = per_image["p_original"] - per_image["p_final"]
    return per_image

def metric_columns(per_image: pd.DataFrame) -> list[str]:
    """The per-image metric columns present, in report order."""
    columns = [*AUC_COLUMNS.values()]
    columns += [c for c in per_image.columns if c.startswith("loc_") and c != "loc_status"]
    columns += [c for c in per_image.columns if c.startswith("locerr_")]
    columns += [c for c in ("pointing_hit", "energy_pg") if c in per_image]
    columns += [c for c in (*ROAD_SUMMARY, *COMPLEXITY_COLUMNS) if c in per_image]
    columns += [c for c in STAT_COLUMNS if c in per_image]
    return columns


_AUC_METRIC = {AUC_COLUMNS[curve]: metric for curve, metric in CURVE_METRIC.items()}  # column -> metric


def road_means(per_image: pd.DataFrame, fractions: tuple[float, ...]) -> dict[str, Any] | None:
    """``summary.json``'s ``road`` entry: the mean ROAD curves over the evaluated images, per
    fraction (``morf``, ``lerf``: probability of the explained class; ``morf_top1``,
    ``lerf_top1``: share still top-1), with ``fractions`` and the image count ``n``; None when the
    table has no ROAD columns."""
    if road_column("morf", fractions[0]) not in per_image:
        return None
    rows = per_image[(per_image["eval_status"] == "ok") & per_image["road_morf_auc"].notna()]
    means: dict[str, Any] = {"fractions": list(fractions), "n": int(len(rows))}
    for curve in ("morf", "lerf", "morf_top1", "lerf_top1"):
        means[curve] = [float(rows[road_column(curve, f)].mean()) if len(rows) else float("nan") for f in fractions]
    return means

def _summary(per_image: pd.DataFrame, game: PointingGame, config: EvalConfig, meta: dict[str, Any],
             with_boxes: bool) -> dict[str, Any]:
    """``summary.json``: per-metric mean / standard error / count over evaluated rows, and settings."""
    evaluated = per_image["eval_status"] == "ok"
    metrics = {}
    for name in metric_columns(per_image):
        if name in _AUC_METRIC and not config.wants(_AUC_METRIC[name]):
            continue  # a curve this evaluation was asked not to compute
        values = pd.to_numeric(per_image.loc[evaluated, name], errors="coerce").to_numpy(np.float64)
        values = values[np.isfinite(values)]
        n = int(values.size)
        sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        metrics[name] = {"mean": float(values.mean()) if n else float("nan"), "sem": sem, "count": n,
                         "better": metric_direction(name)}
    with_game = with_boxes and config.wants("pointing")
    summary = {"metrics": metrics, "pointing_game": game.compute() if with_game else None,
               "counts": _counts(per_image, evaluated, with_boxes), "settings": _settings(config, meta)}
    road = road_means(per_image, config.road_fractions) if config.wants("road") else None
    if road is not None:
        summary["road"] = road
    return summary

def summarise(per_image: pd.DataFrame, game: PointingGame, config: EvalConfig, meta: dict[str, Any],
              with_boxes: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-image table (with the held-out localisation columns when ``config.alpha_split`` is
    set) and the summary of one evaluation, from its per-image table and pointing game. Used by a
    one-process evaluation and by the merge of a sharded one, so both write the same report."""
    held_out = None
    if config.alpha_split is not None:
        try:
            per_image, held_out = _held_out(per_image, config)
        except ConfigError as error:  # e.g. a split leaving no test image: keep the other reports
            held_out = {"error": str(error)}
    summary = _summary(per_image, game, config, meta, with_boxes)
    if held_out is not None:
        summary["localization_split"] = held_out
    return per_image, summary

def _held_out(per_image: pd.DataFrame, config: EvalConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The paper's protocol: the per-image table with ``alpha_split`` and ``locerr_*`` columns, and
    the ``localization_split`` entry of the summary (chosen alpha and test error per method)."""
    calibration = split_calibration(per_image["path"].astype(str).tolist(), config.alpha_split,
                                    config.alpha_split_seed)
    evaluated = (per_image["eval_status"] == "ok").to_numpy()
    choices, columns = held_out_localization(per_image[evaluated], calibration[evaluated])
    per_image = per_image.join(columns.reindex(per_image.index))
    fractional = not isinstance(config.alpha_split, tuple)
    entry = {"protocol": "alpha chosen per threshold method and box kind on the calibration images "
                         "(lowest error; ties: the smallest alpha), error reported on the test images",
             "split": config.alpha_split if fractional else f"list of {len(config.alpha_split)} images",
             "seed": config.alpha_split_seed if fractional else None,
             "n_calibration": choices[0].calibration_n, "n_test": choices[0].test_n,
             "choices": [dataclasses.asdict(choice) for choice in choices]}
    return per_image, entry

def _counts(per_image: pd.DataFrame, evaluated: pd.Series, with_boxes: bool) -> dict[str, Any]:
    labelled = evaluated & (per_image["label"] >= 0)
    differs = labelled & (per_image["target"] != per_image["label"])
    counts: dict[str, Any] = {
        "rows": int(len(per_image)), "ok_in_store": int((per_image["status"] == STATUS_OK).sum()),
        "evaluated": int(evaluated.sum()),
        "not_evaluated_by_status": per_image.loc[~evaluated, "eval_status"].value_counts().to_dict(),
        "evaluated_with_label": int(labelled.sum()),
        "target_differs_from_label": int(differs.sum()),
    }
    if with_boxes:
        loc_status = per_image.get("loc_status", pd.Series(np.nan, index=per_image.index, dtype=object))
        located = loc_status == "ok"
        counts["localized"] = int(located.sum())
        counts["localized_target_differs_from_label"] = int((located & differs).sum())
        # a --target top1 store localises the predicted class against the label's boxes
        counts["localized_target_differs_share"] = (
            counts["localized_target_differs_from_label"] / counts["localized"] if counts["localized"] else 0.0)
        counts["loc_excluded_by_reason"] = loc_status[evaluated & ~located].value_counts().to_dict()
    return counts

def _settings(config: EvalConfig, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "score": "softmax probability of the store's target column",
        "step": config.step,
        "substrates": {"deletion_zero": "zeros in normalised space (mean grey), RISE deletion",
                       "deletion_blur": f"Gaussian blur kernel {config.blur_kernel} sigma {config.blur_sigma} "
                                        "(reflect padding)",
                       "insertion": f"starts from Gaussian blur kernel {config.blur_kernel} sigma "
                                    f"{config.blur_sigma}, RISE insertion"},
        "tie_break": "stable sort: equal saliency in raster order (lowest flat index first), no jitter",
        "auc": "trapezoid on [0, 1]: (sum(s) - s[0]/2 - s[-1]/2) / (n - 1)",
        "thresholds": {"value": list(config.value_alphas), "energy": list(config.energy_alphas),
                       "mean": list(config.mean_alphas)},
        "box_kinds": list(config.box_kinds),
        "alpha_split": (list(config.alpha_split) if isinstance(config.alpha_split, tuple) else config.alpha_split),
        "alpha_split_seed": config.alpha_split_seed,
        "iou_correct": IOU_CORRECT,
        "pointing_tolerance_px": config.tolerance,
        "heatmap_frame": "original image (store height/width), bilinear resize_heatmap",
        "localization_class": "ground-truth label (boxes of the label's wnid)",
        "metrics": list(config.metrics),
        "metric_definitions": {name: METRICS[name] for name in config.metrics},
        **({"road": {**road_settings(config.road_config), "images": "[0, 1] RGB at the store's input size, "
                     "imputed before normalisation; noise seed road_seed + image index",
                     "morf": "the top fraction of pixels (ROAD's ranking) removed and imputed",
                     "lerf": "all pixels but the top fraction removed and imputed",
                     "area": "mean of the curve over the fractions; combined = (LeRF area - MoRF area) / 2"}}
           if config.wants("road") else {}),
        **({"complexity": {"sparseness": "Gini index of |s| / max|s| + 1e-7 (Chalasani et al. 2020, Quantus)",
                           "complexity": "entropy (natural log) of |s| / sum|s| (Bhatt et al. 2020, Quantus)",
                           "map": "the saliency at the store's input size, as the other metrics see it"}}
           if config.wants("complexity") else {}),
    }
