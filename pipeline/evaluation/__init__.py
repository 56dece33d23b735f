"""Evaluating a mask store: deletion/insertion, localisation, pointing-game, ROAD and complexity metrics per image,
their summary, and the tables and pictures written to a report folder (docs/metrics.md); the
evaluations of disjoint parts of a store merged into one (:mod:`.merge`, for sharded runs)."""

from .diagnostics import WEAK_RATIO, StrengthReport, perturbation_strength
from .evaluate import EvalResult, causal_batch, evaluate_store, road_columns
from .gallery import (
    GALLERY_METRICS,
    GALLERY_SEED,
    THUMBNAIL_SIDE,
    THUMBNAILS_FILE,
    flagged_rows,
    gallery_picks,
    picture_rows,
    read_thumbnails,
    write_pictures,
)
from .merge import combine_parts, merge_evaluations
from .presence import MISSING_SHARE, ImagePresence, check_images_present
from .saliency import StoredPictures, store_saliency, stored_pictures
from .settings import (
    AUC_COLUMNS,
    COMPLEXITY_COLUMNS,
    CURVES,
    DEFAULT_METRICS,
    METRICS,
    RANDOMISATION_COLUMNS,
    RANDOMISATION_FILES,
    ROAD_SUMMARY,
    EvalConfig,
    metric_direction,
    parse_metrics,
    road_column,
)
from .summary import metric_columns, road_means, summarise

__all__ = ["AUC_COLUMNS", "COMPLEXITY_COLUMNS", "CURVES", "DEFAULT_METRICS", "METRICS", "RANDOMISATION_COLUMNS",
           "RANDOMISATION_FILES", "ROAD_SUMMARY",
           "parse_metrics", "road_column", "road_columns", "road_means", "GALLERY_METRICS", "GALLERY_SEED", "THUMBNAILS_FILE", "THUMBNAIL_SIDE",
           "MISSING_SHARE", "WEAK_RATIO", "EvalConfig", "EvalResult", "StoredPictures", "ImagePresence", "StrengthReport", "causal_batch", "check_images_present",
           "combine_parts", "evaluate_store", "flagged_rows", "gallery_picks", "merge_evaluations",
           "metric_columns", "metric_direction", "perturbation_strength", "picture_rows", "read_thumbnails",
           "store_saliency", "stored_pictures", "summarise", "write_pictures"]
