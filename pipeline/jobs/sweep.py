"""Sweeps: solve, evaluate and compare several perturbation variants on the same images.

A sweep folder holds one sub-folder per variant (``<out>/<preset>/masks.h5`` plus its evaluation
report) and the comparison of them all (``<out>/comparison.md``, ``.csv``, ``curves.png``). Every
step resumes: masks through the store, and a variant whose report stamp matches its store (run,
row count), boxes and evaluation settings is not evaluated again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..config import override, preset
from ..errors import ConfigError
from ..evaluation import EvalConfig, evaluate_store
from ..models import Classifier
from .run import RunConfig, RunSummary, run_masks
from ..store import MaskStore

Notify = Callable[[str], None]


@dataclass(frozen=True)
class SweepResult:
    """The per-variant run summaries and the comparison table."""

    runs: dict[str, RunSummary]
    comparison: pd.DataFrame
    out: Path


def run_sweep(source: str | Path, out: str | Path, classifier: Classifier, presets: list[str],
              overrides: list[str] | None = None, run: RunConfig = RunConfig(),
              boxes: str | Path | None = None, evaluation: EvalConfig = EvalConfig(),
              notify: Notify | None = None) -> SweepResult:
    """Solve every preset in ``presets`` (each with the same ``overrides``) on the images of
    ``source``, evaluate each store, and compare them, the first preset being the reference.

    Raises:
        ConfigError: no preset, a repeated or unknown one, or an override that does not apply.
    """
    from ..report.compare import compare_runs

    if not presets or len(set(presets)) != len(presets):
        raise ConfigError(f"a sweep needs distinct presets (--preset a --preset b ...), got {presets}")
    configs = {name: override(preset(name), list(overrides or [])) for name in presets}  # fail before solving
    out = Path(out)
    say = notify or (lambda message: None)
    summaries = {}
    for name, config in configs.items():
        folder = out / name
        say(f"[{name}] solving masks")
        summaries[name] = run_masks(source, folder / "masks.h5", classifier, config, run)
        stamp = _report_stamp(folder / "masks.h5", summaries[name].total, boxes, evaluation)
        if _read(folder / "report.stamp") == stamp:
            say(f"[{name}] report is up to date")
            continue
        say(f"[{name}] evaluating")
        # Only this sweep's images: a store may hold more (a longer run, or a larger --limit before).
        evaluate_store(folder / "masks.h5", None, classifier, folder, boxes=boxes, config=evaluation,
                       progress=run.progress, indices=range(summaries[name].total))
        (folder / "report.stamp").write_text(stamp)
    say("comparing")
    table = compare_runs([out / name for name in presets], out)
    return SweepResult(summaries, table, out)


def _report_stamp(store_path: Path, images: int, boxes: str | Path | None, evaluation: EvalConfig) -> str:
    """What a report was made from: the store's run and row count, the boxes, the settings."""
    with MaskStore(store_path) as store:
        made_from = {"run_key": store.run_key, "rows": len(store), "images": images, "boxes": str(boxes),
                     "eval": repr(evaluation)}
    return json.dumps(made_from, sort_keys=True)


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None
