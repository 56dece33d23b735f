"""Metric core: deletion/insertion curves, localisation, pointing games, ground-truth boxes.

Pure functions over tensors (deletion/insertion) and numpy arrays (localisation), plus one small
accumulator, :class:`PointingGame`. Nothing here reads images, models or stores.
"""

from pipeline.metrics.boxes import (
    BoxRecord,
    ImageBoxes,
    load_boxes,
    read_kaggle_csv,
    read_voc_folder,
)
from pipeline.metrics.deletion import (
    RISE_STEP,
    CausalMode,
    auc,
    blur_substrate,
    causal_curves,
    pixel_order,
    zero_substrate,
)
from pipeline.metrics.localization import (
    CALIBRATION_ALPHAS,
    IOU_CORRECT,
    PAPER_THRESHOLDS,
    Box,
    BoxKind,
    HeldOutChoice,
    LocalizationResult,
    PointingGame,
    ThresholdMethod,
    best_iou,
    energy_pointing_game,
    held_out_localization,
    iou,
    largest_component_box,
    loc_columns,
    localize,
    pointing_game_hit,
    rescale_box,
    resize_heatmap,
    split_calibration,
    threshold,
    tight_box,
)

__all__ = [
    # deletion / insertion
    "CausalMode",
    "RISE_STEP",
    "pixel_order",
    "causal_curves",
    "auc",
    "blur_substrate",
    "zero_substrate",
    # localisation and pointing games
    "ThresholdMethod",
    "BoxKind",
    "PAPER_THRESHOLDS",
    "IOU_CORRECT",
    "Box",
    "threshold",
    "tight_box",
    "largest_component_box",
    "iou",
    "best_iou",
    "rescale_box",
    "resize_heatmap",
    "LocalizationResult",
    "localize",
    "pointing_game_hit",
    "energy_pointing_game",
    "PointingGame",
    # the paper's held-out choice of alpha
    "CALIBRATION_ALPHAS",
    "HeldOutChoice",
    "loc_columns",
    "split_calibration",
    "held_out_localization",
    # ground-truth boxes
    "BoxRecord",
    "ImageBoxes",
    "read_voc_folder",
    "read_kaggle_csv",
    "load_boxes",
]
