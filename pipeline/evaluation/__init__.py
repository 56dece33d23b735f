"""Evaluating a mask store: deletion/insertion, localisation and pointing-game metrics per image,
their summary, and the tables and plots written to a report folder (docs/metrics.md); the
evaluations of disjoint parts of a store merged into one (:mod:`.merge`, for sharded runs)."""

from .diagnostics import WEAK_RATIO, StrengthReport, perturbation_strength
from .evaluate import EvalResult, causal_batch, evaluate_store
from .merge import combine_parts, merge_evaluations
from .outputs import curves_figure, gallery_figure, new_figure, plot_curves
from .saliency import store_saliency
from .settings import AUC_COLUMNS, CURVES, EvalConfig, metric_direction
from .summary import metric_columns, summarise

__all__ = ["AUC_COLUMNS", "CURVES", "WEAK_RATIO", "EvalConfig", "EvalResult", "StrengthReport", "causal_batch",
           "combine_parts", "curves_figure", "evaluate_store", "gallery_figure", "merge_evaluations",
           "metric_columns", "metric_direction", "new_figure", "perturbation_strength", "plot_curves",
           "store_saliency", "summarise"]
