"""Sweeps: solve, evaluate and compare several perturbation variants and saliency methods on the
same images.

A sweep folder holds one sub-folder per variant (``<out>/<preset>/masks.h5``, or for a saliency
method :class:`MethodVariant` ``<out>/<method name, ':' as '-'>/masks.h5`` written by
:func:`pipeline.jobs.baselines.run_baseline`, plus its evaluation report and ``report.html``) and the comparison of them all (``<out>/comparison.md``, ``.csv``,
``curves.png``, ``report.html``). Every
step resumes: masks through the store, and a variant whose report stamp matches its store (run,
row count), boxes and the evaluation settings that decide results is not evaluated again (a batch
size does not decide them, nor does a setting added later while it keeps its default).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from ..config import SolverConfig
from ..errors import ConfigError
from ..evaluation import EvalConfig, evaluate_store
from ..models import Classifier
from .baselines import checked_method, run_baseline
from .reports import report_line, write_run_report
from .run import RunConfig, RunSummary, run_masks
from ..store import MaskStore

Notify = Callable[[str], None]


@dataclass(frozen=True)
class MethodVariant:
    """A saliency method in a sweep: a name :func:`pipeline.methods.get_method` knows and its options
    (``{"n_steps": "16"}``), run as ``perturb baseline`` runs it."""

    method: str
    options: Mapping[str, Any] = field(default_factory=dict)


def variant_folder(name: str) -> str:
    """The sub-folder of variant ``name``: ``captum:IntegratedGradients`` -> ``captum-IntegratedGradients``
    (no ':' or path separator in a folder name)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


@dataclass(frozen=True)
class SweepResult:
    """The per-variant run summaries, the comparison table and the HTML pages written."""

    runs: dict[str, RunSummary]
    comparison: pd.DataFrame
    out: Path
    reports: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What ``perturb sweep`` prints at the end: the comparison and where the pages are."""
        return [(self.out / "comparison.md").read_text(), *(report_line(page) for page in self.reports)]


def run_sweep(source: str | Path, out: str | Path, classifier: Classifier,
              variants: Mapping[str, SolverConfig | MethodVariant] | Sequence[tuple[str, SolverConfig | MethodVariant]],
              run: RunConfig = RunConfig(), boxes: str | Path | None = None,
              evaluation: EvalConfig = EvalConfig(), notify: Notify | None = None,
              reports: bool = True, limits: Mapping[str, int] | None = None) -> SweepResult:
    """Solve every variant (name -> solver configuration, e.g. ``{name: preset(name)}``, or a
    :class:`MethodVariant`) on the images of ``source``, evaluate each store, and compare them, the
    first variant being the reference; with ``reports``, write each variant's ``report.html`` and
    the comparison's. Every method's options are checked before anything is solved. ``limits``
    (variant name -> N) gives a variant too slow for every image only the first N of them (within
    ``run.limit``); the comparison pairs each variant with the reference over the images both have.

    Raises:
        ConfigError: no variant, a repeated name (or folder), a limit for a name that is not a
            variant (or below 1), an unknown method, option or layer, or an alpha split without boxes.
    """
    from ..report.compare import compare_runs

    variants = list(variants.items() if isinstance(variants, Mapping) else variants)
    names = [variant_folder(name) for name, _ in variants]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"a sweep needs distinct presets and methods (--preset a --method b ...), got "
                          f"{[name for name, _ in variants]}")
    runs = variant_runs([name for name, _ in variants], run, limits or {})
    if evaluation.alpha_split is not None and boxes is None:
        raise ConfigError("--alpha-split (the paper's localisation protocol) needs --boxes")
    checked = {name: checked_method(config.method, classifier, config.options)[1]
               for name, config in variants if isinstance(config, MethodVariant)}  # fail before solving
    out = Path(out)
    say = notify or (lambda message: None)
    summaries = {}
    for (label, config), name in zip(variants, names):
        folder = out / name
        say(f"[{name}] solving masks")
        if isinstance(config, MethodVariant):
            summaries[name] = run_baseline(config.method, source, folder / "masks.h5", classifier, runs[label],
                                           options=checked[label])
        else:
            summaries[name] = run_masks(source, folder / "masks.h5", classifier, config, runs[label])
        stamp = _report_stamp(folder / "masks.h5", summaries[name].total, boxes, evaluation)
        if _up_to_date(_read(folder / "report.stamp"), stamp, evaluation):
            say(f"[{name}] report is up to date")
            continue
        say(f"[{name}] evaluating")
        # Only this sweep's images: a store may hold more (a longer run, or a larger --limit before).
        evaluate_store(folder / "masks.h5", None, classifier, folder, boxes=boxes, config=evaluation,
                       progress=run.progress, indices=range(summaries[name].total))
        (folder / "report.stamp").write_text(json.dumps(stamp, sort_keys=True))
    say("comparing")
    table = compare_runs([out / name for name in names], out)
    pages = []
    if reports:
        pages = [write_run_report([out / name], out / name / "report.html", vocabulary=classifier.vocabulary)
                 for name in names]
        pages.append(write_run_report([out / name for name in names], out / "report.html", comparison=table,
                                      vocabulary=classifier.vocabulary))
    return SweepResult(summaries, table, out, pages)


def variant_runs(names: Sequence[str], run: RunConfig, limits: Mapping[str, int]) -> dict[str, RunConfig]:
    """Each variant's run settings: ``run``, with the variant's own image limit where ``limits`` has one."""
    unknown = sorted(set(limits) - set(names))
    if unknown:
        raise ConfigError(f"--limit-for names {', '.join(unknown)}, not a preset or method of this sweep "
                          f"({', '.join(names)})")
    if any(int(n) < 1 for n in limits.values()):
        raise ConfigError(f"--limit-for needs a positive number of images, got {dict(limits)}")
    return {name: replace(run, limit=min(int(limits[name]), run.limit or int(limits[name])))
            if name in limits else run for name in names}


def _report_stamp(store_path: Path, images: int, boxes: str | Path | None, evaluation: EvalConfig) -> dict[str, Any]:
    """What a report is made from: the store's run and row count, the images, the boxes and the
    evaluation's result settings (:meth:`EvalConfig.result_settings`)."""
    with MaskStore(store_path) as store:
        return {"run_key": store.run_key, "rows": len(store), "images": images, "boxes": str(boxes),
                "eval": evaluation.result_settings()}


def _up_to_date(recorded: str | None, stamp: Mapping[str, Any], evaluation: EvalConfig) -> bool:
    """Whether the report stamped ``recorded`` (a ``report.stamp`` file's text) was made from
    ``stamp``: the same store, images and boxes, and settings ``evaluation`` reproduces, so that a
    later version's new setting, or another batch size, does not evaluate a sweep again."""
    try:
        made = json.loads(recorded) if recorded else None
    except json.JSONDecodeError:
        return False
    if not isinstance(made, dict) or any(made.get(key) != stamp[key] for key in stamp if key != "eval"):
        return False
    settings = made.get("eval")
    if isinstance(settings, str):  # stamps of earlier versions hold repr(EvalConfig(...))
        settings = _repr_settings(settings)
    return isinstance(settings, dict) and evaluation.reproduces(settings)


def _repr_settings(text: str) -> dict[str, Any] | None:
    """The keyword values of ``EvalConfig(step=1792, ...)`` read as literals (never executed), or
    None where the text is not such a call."""
    try:
        call = ast.parse(text, mode="eval").body
        if not isinstance(call, ast.Call):
            return None
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError):
        return None


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None
