"""Evaluate a mask store: deletion/insertion, localisation, pointing games, mask statistics.

:func:`evaluate_store` reads a store written by :func:`pipeline.jobs.run.run_masks` or
:func:`pipeline.jobs.baselines.run_baseline`, re-reads its images, and writes a per-image table, a
summary, the full curves and plots to an output folder. The protocols are DESIGN sections 3.1-3.3;
every choice is also recorded in ``summary.json`` (``settings``).

**Saliency** (:func:`store_saliency`): a solver store's masks go through
:func:`pipeline.solve.masks.saliency` with the stored game and :class:`~pipeline.config.MaskConfig`, so
the upsampling is exactly what was optimised; any other store (baselines) gives
``1 - bilinear-upsampled mask`` (``align_corners=True``; an identity at the input size).

**Deletion / insertion** (RISE): score = softmax probability of the store's ``target`` column;
images re-read from ``data_root / path`` with :class:`~pipeline.data.ImageDataset` at the store's
input size (the run's resize). Three curves per image, ``step`` pixels per step (default 1792):
``deletion_zero`` (substrate zeros in normalised space, mean grey; RISE's deletion),
``deletion_blur`` (substrate Gaussian blur 11 / sigma 5: the kind of perturbation masks are
optimised against) and ``insertion`` (from that blur; RISE's insertion). Ties in saliency are
broken in raster order (stable sort, :func:`pipeline.metrics.pixel_order`). AUC = trapezoid on
``[0, 1]``.

**Localisation** (Fong & Vedaldi Table 1), only with ``boxes``: the heatmap is resized to the
**original** image frame (store ``height``/``width``, :func:`pipeline.metrics.resize_heatmap`),
thresholded by every (method, alpha) of :class:`EvalConfig`, boxed tightly and by largest
component, and scored against the ground-truth boxes of the image's **label** class (IoU >= 0.5).
Rows with label -1, no annotation, no box of the class, or an annotation whose ``<size>`` differs
from the image's are excluded and counted. The pointing game (tolerance 15 px) is reported per
image and averaged per class; the energy pointing game is the share of saliency mass inside the
class's boxes. A run with ``target = top1`` explains the prediction while this protocol wants the
ground-truth class: ``target_is_label`` marks each image and the summary counts the mismatches.

**Outputs** in ``out_dir``:

* ``per_image.parquet`` and ``per_image.csv``: one row per store row (skipped rows included, with
  NaN metrics), the store's columns followed by ``eval_status``, the three AUCs,
  ``loc_<method>_<alpha>_<kind>`` (1.0 correct / 0.0 wrong / NaN excluded),
  ``iou_<method>_<alpha>_<kind>``, ``loc_status``, ``pointing_hit``, ``energy_pg``,
  ``target_is_label``, ``score_drop`` (``p_original - p_final``); with ``alpha_split`` (the
  paper's held-out choice of alpha) also ``alpha_split`` and ``locerr_<method>_<kind>``, and
  ``localization_split`` in ``summary.json``.
* ``summary.csv`` (metric, mean, sem, count, better) and ``summary.json`` (the same plus
  ``settings``, ``counts`` and the class-averaged ``pointing_game``).
* ``curves.npz``: ``deletion_zero``, ``deletion_blur``, ``insertion`` float32 ``(N, P)`` for the
  N evaluated images (``P = ceil(H * W / step) + 1`` scores), ``fraction`` ``(P,)`` (share of
  pixels moved at each point), and ``index`` ``(N,)``, ``path`` ``(N,)`` (str) to join with the table.
* ``curves.png`` (mean curves) and ``gallery_<metric>.png`` (best and worst images by
  ``insertion_auc``, ``deletion_auc_zero``, ``deletion_auc_blur``, and ``energy_pg`` with boxes).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..solve import masks as masklib
from ..config import from_dict
from ..data import ImageDataset, ImageRecord, make_loader
from ..errors import ConfigError
from ..names import display_name
from ..metrics import (
    IOU_CORRECT,
    RISE_STEP,
    ImageBoxes,
    PointingGame,
    auc,
    held_out_localization,
    split_calibration,
    blur_substrate,
    causal_curves,
    energy_pointing_game,
    load_boxes,
    localize,
    pointing_game_hit,
    resize_heatmap,
    zero_substrate,
)
from ..models import Classifier
from ..solve.masks import resize
from ..store import STATUS_OK, MaskStore

__all__ = ["EvalConfig", "EvalResult", "CURVES", "AUC_COLUMNS", "store_saliency", "evaluate_store",
           "causal_batch", "metric_direction", "metric_columns", "curves_figure", "gallery_figure"]

CURVES: tuple[str, ...] = ("deletion_zero", "deletion_blur", "insertion")
"""The three causal curves per image, in ``curves.npz`` and ``curves.png``."""

AUC_COLUMNS: dict[str, str] = {"deletion_zero": "deletion_auc_zero", "deletion_blur": "deletion_auc_blur",
                               "insertion": "insertion_auc"}
"""Curve name -> per-image AUC column."""

_STAT_COLUMNS = ("area", "tv", "p_original", "p_perturbed", "p_final", "score_drop")


@dataclass(frozen=True)
class EvalConfig:
    """How a store is evaluated.

    Attributes:
        step: pixels moved per deletion/insertion step (RISE's evaluation: 1792 at 224x224).
        chunk: model inputs per forward call in the curves (memory only, not results).
        batch_size: images read and evaluated together.
        workers: image-decoding processes (0 = in this process).
        blur_kernel, blur_sigma: the blur substrate (RISE: 11, 5).
        value_alphas, energy_alphas, mean_alphas: thresholds per method (DESIGN 3.2; the paper's
            0.10 / 0.95 / 0.5 are included by default, with a few more to show sensitivity).
        box_kinds: ``tight`` (the authors' code) and/or ``component`` (largest connected component).
        tolerance: pointing-game tolerance in original-frame pixels (Zhang et al.: 15).
        gallery: images shown per row (best and worst) in each gallery plot; 0 = no galleries.
        plots: write ``curves.png`` and the galleries.
        alpha_split: the paper's protocol (needs boxes): choose each threshold method's alpha on
            the calibration images and report the error on the others
            (:func:`pipeline.metrics.held_out_localization`): a fraction in ``(0, 1)`` (each image
            assigned by a hash of its path and ``alpha_split_seed``) or the calibration images'
            paths or stems. None: off.
        alpha_split_seed: varies the fractional split.
    """

    step: int = RISE_STEP
    chunk: int = 32
    batch_size: int = 8
    workers: int = 2
    blur_kernel: int = 11
    blur_sigma: float = 5.0
    value_alphas: tuple[float, ...] = (0.10, 0.25, 0.5)
    energy_alphas: tuple[float, ...] = (0.5, 0.8, 0.95)
    mean_alphas: tuple[float, ...] = (0.5, 1.0, 1.5)
    box_kinds: tuple[str, ...] = ("tight", "component")
    tolerance: float = 15.0
    gallery: int = 4
    plots: bool = True
    alpha_split: float | tuple[str, ...] | None = None
    alpha_split_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.alpha_split, (list, tuple, set, frozenset)):
            object.__setattr__(self, "alpha_split", tuple(str(k) for k in self.alpha_split))
            _require("alpha_split", self.alpha_split, "a non-empty list of image paths", bool(self.alpha_split))
        elif self.alpha_split is not None:
            _require("alpha_split", self.alpha_split, "a fraction strictly between 0 and 1",
                     _is_number(self.alpha_split, 0, False) and self.alpha_split < 1)
        _require("alpha_split_seed", self.alpha_split_seed, "an integer >= 0", _is_int(self.alpha_split_seed, 0))
        for name in ("step", "chunk", "batch_size"):
            _require(name, getattr(self, name), "an integer >= 1", _is_int(getattr(self, name), 1))
        _require("workers", self.workers, "an integer >= 0", _is_int(self.workers, 0))
        _require("gallery", self.gallery, "an integer >= 0", _is_int(self.gallery, 0))
        _require("blur_kernel", self.blur_kernel, "an odd integer >= 1",
                 _is_int(self.blur_kernel, 1) and self.blur_kernel % 2 == 1)
        _require("blur_sigma", self.blur_sigma, "a number > 0", _is_number(self.blur_sigma, 0, False))
        _require("tolerance", self.tolerance, "a number >= 0", _is_number(self.tolerance, 0, True))
        for name, upper in (("value_alphas", 1.0), ("energy_alphas", 1.0), ("mean_alphas", math.inf)):
            alphas = tuple(float(a) for a in getattr(self, name))
            allowed = "numbers in [0, 1]" if upper == 1.0 else "numbers >= 0"
            _require(name, alphas, allowed, all(0 <= a <= upper for a in alphas))
            object.__setattr__(self, name, alphas)  # lists from JSON/CLI become tuples
        kinds = tuple(str(k) for k in self.box_kinds)
        _require("box_kinds", kinds, "a non-empty subset of ('tight', 'component')",
                 bool(kinds) and set(kinds) <= {"tight", "component"})
        object.__setattr__(self, "box_kinds", kinds)

    @property
    def thresholds(self) -> list[tuple[str, float]]:
        """Every ``(method, alpha)`` pair, in value, energy, mean order."""
        return ([("value", a) for a in self.value_alphas] + [("energy", a) for a in self.energy_alphas]
                + [("mean", a) for a in self.mean_alphas])


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def _is_number(value: Any, low: float, inclusive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return False
    return math.isfinite(value) and (value >= low if inclusive else value > low)


def _require(name: str, value: Any, allowed: str, ok: bool) -> None:
    if not ok:
        raise ConfigError(f"EvalConfig.{name} must be {allowed}; got {value!r}")


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate_store` returns.

    Attributes:
        table: one row per store row (the ``per_image`` table).
        summary: the ``summary.json`` content (``metrics``, ``pointing_game``, ``counts``, ``settings``).
        paths: output name (``per_image_parquet``, ``summary_json``, ``curves_png``...) -> file.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


def metric_direction(name: str) -> str:
    """``"lower"`` or ``"higher"``: which way metric column ``name`` is better.

    Deletion AUCs, ``p_final`` and ``area`` are better lower (a smaller mask that deletes more);
    insertion, localisation, pointing games and ``score_drop`` higher. ``p_original``,
    ``p_perturbed`` and ``tv`` are descriptive: reported as ``""``.
    """
    if name.startswith(("deletion_auc", "locerr_")) or name in ("p_final", "area"):
        return "lower"
    if name in ("p_original", "p_perturbed", "tv"):
        return ""
    return "higher"


# --------------------------------------------------------------------------------------------
# saliency of a store


def store_saliency(store: MaskStore, rows: Any, size: Sequence[int]) -> torch.Tensor:
    """Saliency of the store's ``rows`` at ``size``.

    Args:
        store: an open :class:`~pipeline.store.MaskStore`.
        rows: row positions (anything :meth:`MaskStore.masks` accepts); use ok rows only.
        size: ``(H, W)``, normally the store's ``input_size``.

    Returns:
        ``(k, 1, H, W)`` float32 on the CPU, larger = more salient. Solver stores (config with
        ``"solver"``): :func:`pipeline.solve.masks.saliency` with the stored game and mask upsampling
        (``1 - m`` deletion game, ``m`` preservation game, mean over ``K`` masks). Other stores
        (baselines): ``1 - m`` upsampled bilinearly (``align_corners=True``). NaN for skipped rows.
    """
    masks = store.masks(rows)
    size = (int(size[0]), int(size[1]))
    if "solver" in store.config:
        solver = from_dict(store.config["solver"])
        return masklib.saliency(masks, solver.objective.game, size, solver.mask)
    return (1 - resize(masks, size)).mean(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------
# the evaluation


def evaluate_store(store_path: str | Path, data_root: str | Path | None, classifier: Classifier,
                   out_dir: str | Path, boxes: str | Path | Mapping[str, ImageBoxes] | None = None,
                   config: EvalConfig = EvalConfig(), device: str | torch.device | None = None,
                   progress: bool = False, indices: Sequence[int] | None = None) -> EvalResult:
    """Evaluate every ok row of a mask store and write the reports to ``out_dir``.

    Args:
        store_path: the HDF5 store (solver or baseline).
        data_root: folder the store's ``path`` column is relative to; None = the store's ``source``.
        classifier: the model the store explains (its spec and input size must match the store's).
        out_dir: created if missing; files listed in the module docstring.
        boxes: VOC XML folder or Kaggle CSV (:func:`pipeline.metrics.load_boxes`), or already
            loaded ``{stem: ImageBoxes}``; None skips localisation and pointing games.
        config: the evaluation settings.
        device: move ``classifier`` there first (in place); None keeps its device.
        progress: show a tqdm bar over images.
        indices: evaluate only the rows whose image ``index`` is listed (e.g. the images of a
            sweep run with ``--limit``); None evaluates every ok row. Other rows stay in the
            per-image table with NaN metrics and ``eval_status`` "not selected".

    Raises:
        StoreError: the store cannot be read. ConfigError: the classifier does not match it.
    """
    if config.alpha_split is not None and boxes is None:  # refused before any work is done
        raise ConfigError("alpha_split (choosing thresholds on held-out images) needs ground-truth boxes; "
                          "pass boxes (--boxes)")
    if device is not None:
        classifier.to(device)
    box_map = load_boxes(boxes) if isinstance(boxes, (str, Path)) else boxes
    with MaskStore(store_path) as store:
        _check_classifier(store, classifier)
        table = store.table()
        root = Path(data_root) if data_root is not None else Path(store.source)
        metrics, curves, game = _evaluate_rows(store, table, root, classifier, box_map, config, progress,
                                               indices)
        boxes_name = str(boxes) if isinstance(boxes, (str, Path)) else None if boxes is None else "<dict>"
        meta = {"store": str(Path(store_path).resolve()), "store_config": store.config,
                "model": store.model, "data_root": str(root), "input_size": list(store.input_size),
                "boxes": boxes_name}
        per_image, summary = summarise(_per_image(table, metrics), game, config, meta, box_map is not None)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = _write_tables(out, per_image, summary, curves)
        if config.plots:
            paths.update(_write_plots(out, store, per_image, curves, root, config, box_map is not None))
    return EvalResult(per_image, summary, paths)


def _check_classifier(store: MaskStore, classifier: Classifier) -> None:
    if store.model != classifier.spec:
        raise ConfigError(f"the store {str(store.path)!r} explains model {store.model!r} but the classifier "
                          f"is {classifier.spec!r}; evaluate with load_model({store.model!r})")
    if tuple(store.input_size) != tuple(classifier.input_size):
        raise ConfigError(f"the store's input size {tuple(store.input_size)} differs from the classifier's "
                          f"{tuple(classifier.input_size)}; evaluate with the model the store was made with")


def _evaluate_rows(store: MaskStore, table: pd.DataFrame, root: Path, classifier: Classifier,
                   box_map: Mapping[str, ImageBoxes] | None, config: EvalConfig, progress: bool,
                   indices: Sequence[int] | None = None
                   ) -> tuple[dict[int, dict[str, Any]], dict[str, Any], PointingGame]:
    """Metrics per store row position, the curves of the evaluated rows, and the pointing game."""
    chosen = table["status"].to_numpy() == STATUS_OK
    if indices is not None:
        chosen &= table["index"].isin(list(indices)).to_numpy()
    positions = np.flatnonzero(chosen)
    records = [ImageRecord(root / str(table["path"].iat[p]), str(table["path"].iat[p]),
                           int(table["label"].iat[p])) for p in positions]
    metrics: dict[int, dict[str, Any]] = {}
    curves: dict[str, list] = {name: [] for name in (*CURVES, "position")}
    game = PointingGame()
    if not len(positions):
        return metrics, _stack_curves(curves, table, store, config), game
    loader = make_loader(ImageDataset(records, store.input_size), config.batch_size, config.workers,
                         pin_memory=False)
    with tqdm(total=len(positions), unit="img", desc="evaluate", disable=not progress,
              dynamic_ncols=True) as bar:
        for batch in loader:
            rows = positions[batch["index"].numpy()]
            readable = batch["ok"].numpy()
            for p, reason in zip(rows[~readable], np.asarray(batch["reason"], dtype=object)[~readable]):
                metrics[int(p)] = {"eval_status": f"unreadable: {reason}"}
            if readable.any():
                _evaluate_batch(store, table, rows[readable], batch["image"][readable], classifier,
                                box_map, config, metrics, curves, game)
            bar.update(len(rows))
    return metrics, _stack_curves(curves, table, store, config), game


def _evaluate_batch(store: MaskStore, table: pd.DataFrame, rows: np.ndarray, images01: torch.Tensor,
                    classifier: Classifier, box_map: Mapping[str, ImageBoxes] | None, config: EvalConfig,
                    metrics: dict[int, dict[str, Any]], curves: dict[str, list], game: PointingGame) -> None:
    """Curves and localisation of readable rows ``rows`` ``(b,)``; ``images01`` ``(b, 3, H, W)``."""
    saliency = store_saliency(store, rows, store.input_size)
    targets = torch.from_numpy(table["target"].to_numpy()[rows].astype(np.int64))
    batch_curves = causal_batch(classifier, images01, saliency, targets, config)
    for name, values in batch_curves.items():
        curves[name].extend(values.cpu().numpy())
    curves["position"].extend(rows.tolist())
    aucs = {AUC_COLUMNS[name]: auc(values).cpu().numpy() for name, values in batch_curves.items()}
    labels = table["label"].to_numpy()[rows]
    for i, p in enumerate(rows):
        row = {"eval_status": "ok", "target_is_label": bool(targets[i] == labels[i])}
        row.update({column: float(values[i]) for column, values in aucs.items()})
        if box_map is not None:
            row.update(_localize_row(saliency[i, 0].numpy(), table.iloc[p], box_map, classifier, config, game))
        metrics[int(p)] = row


def causal_batch(classifier: Classifier, images01: torch.Tensor, saliency: torch.Tensor,
                 targets: torch.Tensor, config: EvalConfig) -> dict[str, torch.Tensor]:
    """The three causal curves of a batch on the classifier's device.

    Args:
        images01: ``(B, 3, H, W)`` float RGB in ``[0, 1]`` (normalised here).
        saliency: ``(B, 1, H, W)`` float, larger = more important.
        targets: ``(B,)`` int64 class scored (softmax probability).

    Returns:
        ``{"deletion_zero", "deletion_blur", "insertion"}`` -> ``(B, P)`` float32 curves.
    """
    device = classifier.device
    x = classifier.normalize(images01.to(device, torch.float32))
    blurred = blur_substrate(x, config.blur_kernel, config.blur_sigma)
    saliency, targets = saliency.to(device), targets.to(device)
    plan = {"deletion_zero": (zero_substrate(x), "deletion"), "deletion_blur": (blurred, "deletion"),
            "insertion": (blurred, "insertion")}

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        # channels_last, as the solver feeds it: about 40% faster for these CNNs on CPU.
        return classifier(inputs.contiguous(memory_format=torch.channels_last)).float()

    return {name: causal_curves(forward, x, saliency, targets, substrate, mode, config.step, config.chunk)
            for name, (substrate, mode) in plan.items()}


def _localize_row(heat_input: np.ndarray, row: pd.Series, box_map: Mapping[str, ImageBoxes],
                  classifier: Classifier, config: EvalConfig, game: PointingGame) -> dict[str, Any]:
    """Localisation columns of one image: heat ``(H, W)`` at input size -> the original frame."""
    label, height, width = int(row["label"]), int(row["height"]), int(row["width"])
    entry = box_map.get(Path(str(row["path"])).stem)
    wnid = classifier.vocabulary.wnids[label] if 0 <= label < len(classifier.vocabulary.wnids) else ""
    gt = entry.for_class(wnid) if entry is not None and wnid else np.zeros((0, 4), np.int64)
    if label < 0 or not wnid:
        return {"loc_status": "no label"}
    if entry is None:
        return {"loc_status": "no annotation"}
    if entry.size is not None and tuple(entry.size) != (width, height):
        return {"loc_status": "annotation size differs"}
    if not len(gt):
        return {"loc_status": "no box of class"}
    heat = resize_heatmap(heat_input, (height, width))
    out: dict[str, Any] = {"loc_status": "ok"}
    for result in localize(heat, gt, config.thresholds, config.box_kinds):
        key = f"{result.method.value}_{result.alpha:g}_{result.box_kind.value}"
        out[f"loc_{key}"], out[f"iou_{key}"] = float(result.correct), result.iou
    hit = pointing_game_hit(heat, gt, config.tolerance)
    game.update(hit, label)
    out["pointing_hit"], out["energy_pg"] = float(hit), energy_pointing_game(heat, gt)
    return out


def _stack_curves(curves: dict[str, list], table: pd.DataFrame, store: MaskStore,
                  config: EvalConfig) -> dict[str, Any]:
    """Curves as arrays ``(N, P)`` with ``index``, ``path`` and ``fraction`` ``(P,)``."""
    height, width = store.input_size
    n_pixels = height * width
    points = -(-n_pixels // config.step) + 1
    position = np.asarray(curves["position"], dtype=np.int64)
    out: dict[str, Any] = {name: np.asarray(curves[name], dtype=np.float32).reshape(-1, points)
                           for name in CURVES}
    out["fraction"] = np.minimum(np.arange(points) * config.step, n_pixels) / n_pixels
    out["index"] = table["index"].to_numpy()[position].astype(np.int64)
    out["path"] = table["path"].to_numpy()[position].astype(str)
    return out


# --------------------------------------------------------------------------------------------
# tables


def _per_image(table: pd.DataFrame, metrics: dict[int, dict[str, Any]]) -> pd.DataFrame:
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
    columns += [c for c in _STAT_COLUMNS if c in per_image]
    return columns


def _summary(per_image: pd.DataFrame, game: PointingGame, config: EvalConfig, meta: dict[str, Any],
             with_boxes: bool) -> dict[str, Any]:
    """``summary.json``: per-metric mean / standard error / count over evaluated rows, and settings."""
    evaluated = per_image["eval_status"] == "ok"
    metrics = {}
    for name in metric_columns(per_image):
        values = pd.to_numeric(per_image.loc[evaluated, name], errors="coerce").to_numpy(np.float64)
        values = values[np.isfinite(values)]
        n = int(values.size)
        sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        metrics[name] = {"mean": float(values.mean()) if n else float("nan"), "sem": sem, "count": n,
                         "better": metric_direction(name)}
    return {"metrics": metrics, "pointing_game": game.compute() if with_boxes else None,
            "counts": _counts(per_image, evaluated, with_boxes), "settings": _settings(config, meta)}


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
    }


def _write_tables(out: Path, per_image: pd.DataFrame, summary: dict[str, Any],
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


# --------------------------------------------------------------------------------------------
# plots


def _write_plots(out: Path, store: MaskStore, per_image: pd.DataFrame, curves: dict[str, Any],
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


def _figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend change) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def curves_figure(runs: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Plot the mean curves of one or more runs, one panel per curve kind (:data:`CURVES`).

    Args:
        runs: run name -> a ``curves.npz`` content (``fraction`` ``(P,)`` and ``(N, P)`` curves).
        path: the PNG written.
    """
    fig, axes = _figure(1, len(CURVES), (4.2 * len(CURVES), 3.6))
    for ax, name in zip(axes[0], CURVES):
        for run, curves in runs.items():
            values = np.asarray(curves[name], dtype=np.float64)
            if not len(values):
                continue
            mean_auc = float(auc(torch.from_numpy(values)).mean())  # = AUC of the mean curve (linear)
            ax.plot(curves["fraction"], values.mean(0), label=f"{run} (AUC {mean_auc:.3f}, n={len(values)})")
        better = "lower" if name.startswith("deletion") else "higher"
        ax.set(title=f"{name} ({better} AUC is better)", xlabel="fraction of pixels moved",
               ylabel="mean p(target)", xlim=(0, 1), ylim=(0, 1))
        if ax.lines:
            ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    return Path(path)


def gallery_figure(store: MaskStore, per_image: pd.DataFrame, picks: tuple[list[int], list[int]],
                   metric: str, root: Path, path: str | Path) -> Path:
    """Best (top row) and worst (bottom row) images by ``metric``: image with the heatmap overlaid."""
    best, worst = picks
    cols = max(len(best), len(worst))
    fig, axes = _figure(2, cols, (2.6 * cols, 5.8))
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
