"""The HTML page that ends ``perturb evaluate``, ``merge``, ``compare``, ``sweep`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__all__ = ["write_run_report", "report_line"]


def write_run_report(runs: Sequence[str | Path], out: str | Path, n_boot: int = 2000, gallery: int = 4,
                     **options: Any) -> Path:
    """Write the report of the evaluated ``runs`` to ``out`` (:func:`pipeline.report.write_report`);
    a comparison page (several runs, or a ``comparison`` table) links the ``comparison.csv`` and
    ``.md`` beside it when they compare exactly these runs. Returns the page's path.

    ``options``: ``vocabulary``, ``data_root``, ``comparison``, ``extra_files``, ``names`` of
    :func:`pipeline.report.build_report`.
    """
    from ..report import ReportConfig, comparison_files, write_report

    out = Path(out)
    if "comparison" in options or len(runs) > 1:
        names = options.get("names") or [Path(r).name for r in runs]
        options.setdefault("extra_files", comparison_files(out.parent, names))
    return write_report(runs, out, ReportConfig(n_boot=n_boot, gallery=gallery), **options)


def report_line(page: Path) -> str:
    """``report <page> (<size> MiB)``: where the page is, as the commands say it."""
    return f"report {page} ({page.stat().st_size / 2**20:.1f} MiB)"
