"""The evaluation job (``perturb evaluate``): a store's metrics into a report folder and its HTML page,
in one process or as one shard of a sharded evaluation (:class:`pipeline.jobs.shards.EvaluationShard`)."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..distributed import Shard
from ..evaluation import EvalConfig, EvalResult, check_images_present, evaluate_store
from ..models import Classifier, load_model
from ..store import MaskStore
from .reports import report_line, write_run_report
from .shards import EvaluationShard

__all__ = ["EvaluationRun", "evaluate_run"]


@dataclass(frozen=True)
class EvaluationRun:
    """What :func:`evaluate_run` did.

    Attributes:
        out: the report folder.
        lines: what to print: the means (one process) or what the shard did, and the HTML page.
        warnings: what went wrong without stopping the evaluation (e.g. held-out thresholds that
            could not be chosen).
        result: the evaluation of one process; None for a shard.
        report: the HTML page written (one process, or the rank that merged the shards), or None.
    """

    out: Path
    lines: list[str]
    warnings: list[str] = field(default_factory=list)
    result: EvalResult | None = None
    report: Path | None = None


def evaluate_run(store: str | Path, out: str | Path, classifier: Classifier | None = None,
                 data: str | Path | None = None, boxes: Any = None, config: EvalConfig = EvalConfig(),
                 shard: Shard = Shard(), device: str | None = None, progress: bool = True) -> EvaluationRun:
    """Evaluate ``store`` into the report folder ``out`` and write its ``report.html``.

    With a ``shard`` of ``N > 1`` only the rows whose image ``index % N == shard.rank`` are
    evaluated, into ``<out>.shards/``; under torchrun rank 0 then merges every shard into the
    report one process writes (with its ``report.html``), elsewhere ``perturb merge`` does.

    Args:
        store: the mask (or baseline) store.
        out: the report folder.
        classifier: the model the store explains; None loads the store's model on ``device``.
        data: the image root; None = the store's recorded source.
        boxes: ground-truth boxes (:func:`pipeline.evaluation.evaluate_store`), or None.
        config: the evaluation settings (:meth:`EvalConfig.with_alpha_split` for the paper's protocol).
        shard: this process's share (:func:`pipeline.distributed.resolve_shard`).

    Raises:
        StoreError: the store cannot be read, or the shard disagrees with the others.
        ConfigError: the classifier does not match the store, or ``alpha_split`` without boxes.
        ImageReadError: none, or most, of the images are under the image root (checked before
            the model is loaded); a few missing ones are skipped and counted in ``warnings``.
    """
    out = Path(out)
    with MaskStore(store) as opened:  # a wrong image folder is refused before the model is loaded
        spec = opened.model
        mine = (EvaluationShard.rows_of(opened.column("index"), shard.rank, shard.world).tolist()
                if shard.sharded else None)
        check_images_present(opened, data, mine)
    if classifier is None:
        classifier = load_model(spec, device=device or "cpu")
    if shard.sharded:
        job = EvaluationShard.prepare(out, shard, store, config, boxes, data, vocabulary=classifier.vocabulary)
        lines = [_evaluate_shard(job, store, data, classifier, boxes, config, progress), *job.finish()]
        return EvaluationRun(out, lines, report=job.result.report if job.result else None)
    result = evaluate_store(store, data, classifier, out, boxes=boxes, config=config, progress=progress)
    lines, warnings = summary_lines(result.summary, config)
    warnings += unreadable_lines(result.table)
    page = write_run_report([out], out / "report.html", vocabulary=classifier.vocabulary, data_root=data)
    return EvaluationRun(out, [*lines, f"wrote {out}", report_line(page)], warnings, result, page)


def _evaluate_shard(job: EvaluationShard, store: str | Path, data: str | Path | None, classifier: Classifier,
                    boxes: Any, config: EvalConfig, progress: bool) -> str:
    """Evaluate this shard's rows into ``job.path`` unless it is finished; says what it did."""
    if job.overwrite:
        shutil.rmtree(job.path, ignore_errors=True)
    if job.done:
        return f"{job.shard.label}: already evaluated in {job.path}"
    with MaskStore(store) as opened:
        mine = EvaluationShard.rows_of(opened.column("index"), job.shard.rank, job.shard.world)
    evaluate_store(store, data, classifier, job.path, boxes=boxes,
                   # the held-out alpha is chosen over all images, when the shards are merged
                   config=dataclasses.replace(config, plots=False, alpha_split=None), progress=progress,
                   indices=mine.tolist())
    job.mark_done(len(mine))
    return f"{job.shard.label}: evaluated {len(mine)} images into {job.path}"


def summary_lines(summary: Mapping[str, Any], config: EvalConfig) -> tuple[list[str], list[str]]:
    """``(lines, warnings)`` saying an evaluation's ``summary``: each metric's mean, standard
    error and count (under ``alpha_split`` the held-out choice of alphas replaces the fixed-alpha
    localisation means)."""
    lines = [f"{name:36s} {stats['mean']:.4f} +- {stats['sem'] or 0:.4f} (n={stats['count']})"
             for name, stats in summary["metrics"].items()
             if stats.get("mean") is not None and not (config.alpha_split and name.startswith("loc_"))]
    warnings = target_lines(summary)
    held_out = summary.get("localization_split")
    if held_out and "error" in held_out:
        return lines, [*warnings, f"held-out alpha not computed: {held_out['error']}"]
    if held_out:
        lines.append(f"held-out alpha: chosen on {held_out['n_calibration']} images, error on {held_out['n_test']}")
        for choice in held_out["choices"]:
            lines.append(f"  {choice['method']:6s} {choice['box_kind']:9s} alpha {choice['alpha']:<5g} "
                         f"error {100 * choice['test_error']:.1f}% (calibration {100 * choice['calibration_error']:.1f}%)")
    return lines, warnings


def target_lines(summary: Mapping[str, Any]) -> list[str]:
    """A line when localised rows explain a target other than their label (a ``--target top1``
    store): localisation then scores the predicted class's mask against the label's boxes."""
    counts = summary.get("counts") or {}
    differs, localized = counts.get("localized_target_differs_from_label"), counts.get("localized")
    if not differs or not localized:
        return []
    return [f"localisation: the target differs from the label on {differs} of {localized} localised images "
            f"({100 * differs / localized:.0f}%): their masks explain the predicted class but are scored "
            "against the label's boxes; solve with --target label to localise the label's class"]


def unreadable_lines(per_image: pd.DataFrame, shown: int = 3) -> list[str]:
    """One line counting the rows whose image could not be read (skipped), naming the first few."""
    unreadable = per_image["eval_status"].astype(str).str.startswith("unreadable")
    if not unreadable.any():
        return []
    rows = per_image[unreadable]
    names = ", ".join(f"{path} ({status.removeprefix('unreadable: ')})" for path, status
                      in zip(rows["path"].astype(str)[:shown], rows["eval_status"].astype(str)[:shown]))
    more = ", ..." if len(rows) > shown else ""
    noun = "image" if len(rows) == 1 else "images"
    return [f"{len(rows)} {noun} could not be read (skipped): {names}{more}"]
