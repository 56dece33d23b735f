"""Evaluating a mask store: deletion/insertion, localisation and pointing-game metrics per image,
their summary, and the tables and plots written to a report folder (docs/metrics.md)."""

from .diagnostics import WEAK_RATIO, StrengthReport, perturbation_strength
from .evaluate import EvalResult, causal_batch, evaluate_store
from .outputs import curves_figure, gallery_figure, new_figure, plot_curves
from .saliency import store_saliency
from .settings import AUC_COLUMNS, CURVES, EvalConfig, metric_direction
from .shards import evaluate_sharded, is_sharded_report, merge_report, report_progress_lines
from .summary import metric_columns, summarise

__all__ = ["AUC_COLUMNS", "CURVES", "WEAK_RATIO", "EvalConfig", "EvalResult", "StrengthReport", "causal_batch",
           "curves_figure", "evaluate_sharded", "evaluate_store", "gallery_figure", "is_sharded_report",
           "merge_report", "metric_columns", "metric_direction", "new_figure", "perturbation_strength",
           "plot_curves", "report_progress_lines", "store_saliency", "summarise"]
