"""One self-contained HTML page per evaluation or comparison (``perturb report``).

:func:`write_report` reads one or more run folders written by
:func:`pipeline.evaluation.evaluate_store` and writes a single HTML file that works offline with
nothing beside it: plots and gallery pictures are embedded as ``data:`` URIs, the style sheet and
the table-sorting script are inline. The page holds

* provenance: model, preset and full configuration, package versions, data source, image counts
  and skipped images by reason, when the store and the evaluation were written;
* the summary: means with 95% bootstrap intervals (those of :func:`pipeline.report.compare.compare_runs`),
  and for several runs the ranking and the paired differences against the first run;
* the mean deletion and insertion curves, localisation accuracy at every threshold, the pointing
  games;
* per-class means (best and worst classes) and the perturbation-strength diagnostic with the images
  it flags;
* galleries per metric: best, worst and a fixed seeded random sample, each image with its saliency
  (the thumbnails ``perturb evaluate`` drew into the run folder: the page is built from the run
  folders alone, without the mask store or the images);
* links to the Parquet/CSV files it was built from.

Galleries, flagged images and class lists are bounded (:class:`ReportConfig`), so the page's size
does not grow with the number of images: measured for a 50,000-image run by ``benchmarks/run.py report-size`` (docs/metrics.md, The report).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import ConfigError
from ..imagenet import ClassVocabulary

__all__ = ["ReportConfig", "build_report", "write_report", "comparison_files"]


@dataclass(frozen=True)
class ReportConfig:
    """What a report shows.

    Attributes:
        n_boot: bootstrap resamples per interval (as ``perturb compare --n-boot``).
        seed: base seed of the bootstrap and of the galleries' random samples.
        gallery: images per gallery row (best, worst, random) and metric (``perturb evaluate``
            draws the pictures of up to its own ``EvalConfig.gallery``, 4 by default).
        classes: best and worst classes listed per run.
        flagged: images listed by the perturbation-strength diagnostic per run.
    """

    n_boot: int = 2000
    seed: int = 0
    gallery: int = 4
    classes: int = 10
    flagged: int = 20

    def __post_init__(self) -> None:
        for name in ("n_boot", "gallery", "classes", "flagged"):
            value = getattr(self, name)
            low = 1 if name == "n_boot" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"ReportConfig.{name} must be an integer >= {low}; got {value!r}")


def build_report(run_dirs: Sequence[str | Path], out: str | Path, config: ReportConfig = ReportConfig(),
                 vocabulary: ClassVocabulary | None = None, data_root: str | Path | None = None,
                 comparison: pd.DataFrame | None = None, extra_files: Sequence[str | Path] = (),
                 names: Sequence[str] | None = None) -> str:
    """The HTML of the report on ``run_dirs`` (the first is the reference of paired differences).

    Args:
        run_dirs: :func:`pipeline.evaluation.evaluate_store` output folders, named by folder name.
        out: where the page will be written (links to the tables are relative to it).
        config: what the page shows.
        vocabulary: class names; None = ImageNet-1k's when every class index fits it.
        data_root: not used (gallery pictures come from each run folder's ``thumbnails.parquet``);
            accepted so that existing callers keep working.
        comparison: :func:`pipeline.report.compare.compare_runs`'s table for these runs, computed with
            ``config.n_boot`` and ``config.seed`` (reused instead of bootstrapping again).
        extra_files: more files to link (``comparison.csv`` ...).
        names: the runs' names, one per folder (as given to ``compare_runs``); None = folder names.

    Raises:
        ConfigError: no run, repeated names, a folder that is not an evaluation.
    """
    from .page import build_page
    from .tables import interval_table, load_runs

    runs = load_runs(run_dirs, names)
    if vocabulary is None:
        vocabulary = _default_vocabulary(runs)
    intervals = interval_table(runs, config.n_boot, config.seed, comparison)
    return build_page(runs, intervals, Path(out), config, vocabulary, [Path(p) for p in extra_files])


def write_report(run_dirs: Sequence[str | Path], out: str | Path, config: ReportConfig = ReportConfig(),
                 vocabulary: ClassVocabulary | None = None, data_root: str | Path | None = None,
                 comparison: pd.DataFrame | None = None, extra_files: Sequence[str | Path] = (),
                 names: Sequence[str] | None = None) -> Path:
    """Write :func:`build_report`'s page to ``out`` (parent folders created); returns the path."""
    out = Path(out)
    text = build_report(run_dirs, out, config, vocabulary, data_root, comparison, extra_files, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a page
    return out


def _default_vocabulary(runs: Sequence) -> ClassVocabulary | None:
    """ImageNet-1k's names when every explained and labelled class index is one of its 1000."""
    indices = pd.concat([pd.to_numeric(r.table[c], errors="coerce") for r in runs for c in ("target", "label")
                         if c in r.table]).dropna()
    if len(indices) and indices.max() >= 1000:
        return None
    from ..imagenet import imagenet_vocabulary

    return imagenet_vocabulary()


def comparison_files(folder: str | Path, names: Sequence[str]) -> list[Path]:
    """``comparison.csv`` and ``comparison.md`` in ``folder`` when that comparison is of exactly the
    runs ``names`` (so a page links only the tables it agrees with); else empty."""
    folder = Path(folder)
    table = folder / "comparison.csv"
    if not table.is_file():
        return []
    try:
        runs = list(dict.fromkeys(pd.read_csv(table, usecols=["run"])["run"].astype(str)))
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return []
    if runs != list(names):
        return []
    return [p for p in (table, folder / "comparison.md") if p.is_file()]
