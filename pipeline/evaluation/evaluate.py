"""Evaluate a mask store: deletion/insertion, localisation, pointing games, mask statistics.

:func:`evaluate_store` reads a store written by :func:`pipeline.jobs.run.run_masks` or
:func:`pipeline.jobs.baselines.run_baseline`, re-reads its images, and writes a per-image table, a
summary, the full curves and plots to an output folder. The protocols are in docs/metrics.md;
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
  ``iou_<method>_<alpha>_<kind>``, ``locbox_*`` (the box of the first setting, drawn on thumbnails),
  ``loc_status``, ``pointing_hit``, ``energy_pg``,
  ``target_is_label``, ``score_drop`` (``p_original - p_final``); with ``alpha_split`` (the
  paper's held-out choice of alpha) also ``alpha_split`` and ``locerr_<method>_<kind>``, and
  ``localization_split`` in ``summary.json``.
* ``summary.csv`` (metric, mean, sem, count, better) and ``summary.json`` (the same plus
  ``settings``, ``counts`` and the class-averaged ``pointing_game``).
* ``curves.npz``: ``deletion_zero``, ``deletion_blur``, ``insertion`` float32 ``(N, P)`` for the
  N evaluated images (``P = ceil(H * W / step) + 1`` scores), ``fraction`` ``(P,)`` (share of
  pixels moved at each point), and ``index`` ``(N,)``, ``path`` ``(N,)`` (str) to join with the table.
* with ``config.plots`` (:mod:`.gallery`): ``curves.png`` (mean curves), ``gallery_<metric>.png``
  (best and worst images by ``insertion_auc``, ``deletion_auc_zero``, ``deletion_auc_blur``, and
  ``energy_pg`` with boxes) and ``thumbnails.parquet`` (the pictures the HTML report shows: each
  gallery's best, worst and random images and the most weakly perturbed images, as JPEG), so
  the report needs neither the store nor the images.
"""


from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..metrics import (
    ImageBoxes,
    LocalizationResult,
    PointingGame,
    auc,
    blur_substrate,
    causal_curves,
    complexity,
    energy_pointing_game,
    load_boxes,
    localize,
    pointing_game_hit,
    resize_heatmap,
    road_curves,
    sparseness,
    zero_substrate,
)
from ..models import Classifier
from ..store import STATUS_OK, MaskStore

from .settings import AUC_COLUMNS, BOX_METRICS, CURVE_METRIC, CURVES, DEFAULT_METRICS, EvalConfig, road_column
from .gallery import FOUND_BOX_COLUMNS, write_pictures
from .outputs import write_tables
from .presence import check_images_present
from .saliency import stored_pictures
from .summary import per_image_table, summarise


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
        ImageReadError: none, or more than half, of the images to evaluate are under the image
            root (:func:`pipeline.evaluation.presence.check_images_present`); fewer missing files
            are skipped rows (``eval_status`` "unreadable: missing").
    """
    if config.alpha_split is not None and boxes is None:  # refused before any work is done
        raise ConfigError("alpha_split (choosing thresholds on held-out images) needs ground-truth boxes; "
                          "pass boxes (--boxes)")
    asked = [m for m in BOX_METRICS if config.wants(m)] if config.metrics != DEFAULT_METRICS else []
    if asked and boxes is None:
        raise ConfigError(f"metric {asked[0]} needs ground-truth boxes; pass boxes (--boxes) or leave it out "
                          "of the metrics")
    if device is not None:
        classifier.to(device)
    box_map = load_boxes(boxes) if isinstance(boxes, (str, Path)) else boxes
    with MaskStore(store_path) as store:
        _check_classifier(store, classifier)
        check_images_present(store, data_root, indices)  # a wrong folder is refused, not scored NaN
        table = store.table()
        root = Path(data_root) if data_root is not None else store.image_root()
        metrics, curves, game = _evaluate_rows(store, table, root, classifier, box_map, config, progress,
                                               indices)
        boxes_name = str(boxes) if isinstance(boxes, (str, Path)) else None if boxes is None else "<dict>"
        meta = {"store": str(Path(store_path).resolve()), "store_config": store.config,
                "model": store.model, "data_root": str(root), "input_size": list(store.input_size),
                "boxes": boxes_name, "store_attributes": store_facts(store)}
        per_image, summary = summarise(per_image_table(table, metrics), game, config, meta, box_map is not None)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = write_tables(out, per_image, summary, curves)
        if config.plots:
            boxes_of = None if box_map is None else partial(label_boxes, box_map=box_map,
                                                            wnids=classifier.vocabulary.wnids)
            paths.update(write_pictures(out, store, per_image, curves, root, config, box_map is not None, boxes_of))
    return EvalResult(per_image, summary, paths)

STORE_FACTS = ("created", "source", "shard", "schema_version", "preset", "overrides", "threads", "versions")
"""The store attributes an evaluation records (``settings.store_attributes``), so the report's
provenance never opens the store."""


def store_facts(store: MaskStore) -> dict[str, Any]:
    """The store's :data:`STORE_FACTS` attributes and its run key, JSON-ready."""
    facts = {key: store.attrs[key] for key in STORE_FACTS if key in store.attrs}
    facts = {key: value.item() if hasattr(value, "item") else value for key, value in facts.items()}
    return {**facts, "run_key": store.run_key}


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
    metrics: dict[int, dict[str, Any]] = {}
    curves: dict[str, list] = {name: [] for name in (*CURVES, "position")}
    game = PointingGame()
    if not len(positions):
        return metrics, _stack_curves(curves, table, store, config), game
    with tqdm(total=len(positions), unit="img", desc="evaluate", disable=not progress,
              dynamic_ncols=True) as bar:
        for batch in stored_pictures(store, positions, root, batch_size=config.batch_size, workers=config.workers):
            for p, reason in zip(batch.rows[~batch.ok], np.asarray(batch.reasons, dtype=object)[~batch.ok]):
                metrics[int(p)] = {"eval_status": f"unreadable: {reason}"}
            if batch.ok.any():
                _evaluate_batch(table, batch.rows[batch.ok], batch.images[batch.ok], batch.saliency[batch.ok],
                                classifier, box_map, config, metrics, curves, game)
            bar.update(len(batch.rows))
    return metrics, _stack_curves(curves, table, store, config), game

def _evaluate_batch(table: pd.DataFrame, rows: np.ndarray, images01: torch.Tensor, saliency: torch.Tensor,
                    classifier: Classifier, box_map: Mapping[str, ImageBoxes] | None, config: EvalConfig,
                    metrics: dict[int, dict[str, Any]], curves: dict[str, list], game: PointingGame) -> None:
    """Curves and localisation of readable rows ``rows`` ``(b,)``; ``images01`` ``(b, 3, H, W)``,
    ``saliency`` ``(b, 1, H, W)``."""
    targets = torch.from_numpy(table["target"].to_numpy()[rows].astype(np.int64))
    batch_curves = causal_batch(classifier, images01, saliency, targets, config)
    for name, values in batch_curves.items():
        curves[name].extend(values.cpu().numpy())
    curves["position"].extend(rows.tolist())
    columns = {AUC_COLUMNS[name]: auc(values).cpu().numpy() for name, values in batch_curves.items()}
    if config.wants("road"):
        columns.update(road_columns(classifier, images01, saliency, targets,
                                    table["index"].to_numpy()[rows].tolist(), config))
    if config.wants("complexity"):
        columns.update(sparseness=sparseness(saliency).cpu().numpy(), complexity=complexity(saliency).cpu().numpy())
    labels = table["label"].to_numpy()[rows]
    with_boxes = box_map is not None and any(config.wants(m) for m in BOX_METRICS)
    for i, p in enumerate(rows):
        row = {"eval_status": "ok", "target_is_label": bool(targets[i] == labels[i])}
        row.update({column: float(values[i]) for column, values in columns.items()})
        if with_boxes:
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
        ``{"deletion_zero", "deletion_blur", "insertion"}`` -> ``(B, P)`` float32 curves, those of
        the metrics ``config`` selects (``deletion``: the first two, ``insertion``: the third).
    """
    device = classifier.device
    x = classifier.normalize(images01.to(device, torch.float32))
    saliency, targets = saliency.to(device), targets.to(device)
    wanted = [curve for curve, metric in CURVE_METRIC.items() if config.wants(metric)]
    if not wanted:
        return {}
    blurred = blur_substrate(x, config.blur_kernel, config.blur_sigma)
    substrates = {"deletion_zero": zero_substrate(x), "deletion_blur": blurred, "insertion": blurred}
    forward = _channels_last(classifier)
    return {curve: causal_curves(forward, x, saliency, targets, substrates[curve], CURVE_METRIC[curve],
                                 config.step, config.chunk)
            for curve in wanted}


def _channels_last(classifier: Classifier):
    """``classifier`` as a function of a normalised ``(N, 3, H, W)`` batch giving float32 logits
    ``(N, classes)``, fed channels_last as the solver feeds it (about 40% faster for these CNNs on
    CPU)."""

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return classifier(inputs.contiguous(memory_format=torch.channels_last)).float()

    return forward


def road_columns(classifier: Classifier, images01: torch.Tensor, saliency: torch.Tensor, targets: torch.Tensor,
                 seeds: Sequence[int], config: EvalConfig) -> dict[str, np.ndarray]:
    """The per-image ROAD columns of a batch (:func:`pipeline.metrics.road_curves` on the
    classifier's device, imputing ``[0, 1]`` pixels as the reference does).

    Args:
        images01: ``(B, 3, H, W)`` float RGB in ``[0, 1]`` (normalised only for the model).
        saliency: ``(B, 1, H, W)``, larger = more relevant.
        targets: ``(B,)`` int64, the explained class.
        seeds: ``B`` image indices (each image's noise depends on its index, not its batch).

    Returns:
        column -> ``(B,)`` float64: for every fraction ``road_morf_<pct>``, ``road_lerf_<pct>``
        (probabilities), ``road_morf_top1_<pct>``, ``road_lerf_top1_<pct>`` (1.0 / 0.0), and the
        areas of :data:`pipeline.evaluation.settings.ROAD_SUMMARY`.
    """
    device = classifier.device

    model = _channels_last(classifier)

    def forward(inputs: torch.Tensor) -> torch.Tensor:  # ROAD imputes [0, 1] pixels: normalise for the model
        return model(classifier.normalize(inputs.float()))

    result = road_curves(forward, images01.to(device, torch.float32), saliency.to(device), targets.to(device),
                         config.road_config, seeds=seeds)
    curves = {"morf": result.morf, "lerf": result.lerf,
              "morf_top1": result.morf_top1.double(), "lerf_top1": result.lerf_top1.double()}
    columns = {road_column(name, f): values[:, j].double().cpu().numpy()
               for name, values in curves.items() for j, f in enumerate(config.road_fractions)}
    areas = {name: values.double().mean(1).cpu().numpy() for name, values in curves.items()}
    columns.update(road_morf_auc=areas["morf"], road_lerf_auc=areas["lerf"],
                   road_combined=(areas["lerf"] - areas["morf"]) / 2,
                   road_morf_top1_auc=areas["morf_top1"], road_lerf_top1_auc=areas["lerf_top1"],
                   road_combined_top1=(areas["lerf_top1"] - areas["morf_top1"]) / 2)
    return columns


def _localize_row(heat_input: np.ndarray, row: pd.Series, box_map: Mapping[str, ImageBoxes],
                  classifier: Classifier, config: EvalConfig, game: PointingGame) -> dict[str, Any]:
    """Localisation columns of one image: heat ``(H, W)`` at input size -> the original frame."""
    gt, status = row_boxes(row, box_map, classifier.vocabulary.wnids)
    if status != "ok":
        return {"loc_status": status}
    heat = resize_heatmap(heat_input, (int(row["height"]), int(row["width"])))
    out: dict[str, Any] = {"loc_status": "ok"}
    results = localize(heat, gt, config.thresholds, config.box_kinds) if config.wants("localisation") else []
    for result in results:
        key = f"{result.method.value}_{result.alpha:g}_{result.box_kind.value}"
        out[f"loc_{key}"], out[f"iou_{key}"] = float(result.correct), result.iou
    if results:
        out.update(found_box_columns(results[0]))  # the first setting's box: what thumbnails draw
    if config.wants("pointing"):
        hit = pointing_game_hit(heat, gt, config.tolerance)
        game.update(hit, int(row["label"]))
        out["pointing_hit"], out["energy_pg"] = float(hit), energy_pointing_game(heat, gt)
    return out


def found_box_columns(result: LocalizationResult) -> dict[str, Any]:
    """The :data:`FOUND_BOX_COLUMNS` (and ``locbox_setting``, ``locbox_fallback``) of one image."""
    setting = f"{result.method.value}_{result.alpha:g}_{result.box_kind.value}"
    return {"locbox_setting": setting, **dict(zip(FOUND_BOX_COLUMNS, map(int, result.box))),
            "locbox_fallback": float(result.fallback)}


def row_boxes(row: pd.Series, box_map: Mapping[str, ImageBoxes], wnids: Sequence[str]) -> tuple[np.ndarray, str]:
    """The boxes of ``row``'s label class in its original frame ``(K, 4)``, as localisation scores
    them, and the row's ``loc_status``: ``"ok"``, or why there are none (``"no label"``,
    ``"no annotation"``, ``"annotation size differs"``, ``"no box of class"``)."""
    none = np.zeros((0, 4), np.int64)
    label = int(row["label"])
    if not 0 <= label < len(wnids) or not wnids[label]:
        return none, "no label"
    entry = box_map.get(Path(str(row["path"])).stem)
    if entry is None:
        return none, "no annotation"
    if entry.size is not None and tuple(entry.size) != (int(row["width"]), int(row["height"])):
        return none, "annotation size differs"
    gt = entry.for_class(wnids[label])
    return (gt, "ok") if len(gt) else (none, "no box of class")


def label_boxes(row: pd.Series, box_map: Mapping[str, ImageBoxes], wnids: Sequence[str]) -> np.ndarray:
    """The boxes of :func:`row_boxes` alone (what the thumbnails draw)."""
    return row_boxes(row, box_map, wnids)[0]


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
