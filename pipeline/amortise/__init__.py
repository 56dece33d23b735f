"""Amortised masks: a predictor learnt over a dataset's own images starts the solver near the answer.

:mod:`~pipeline.amortise.predictor` is the predictor (a head on the classifier's own features) and
its file format, :mod:`~pipeline.amortise.train` its resumable training, :mod:`~pipeline.amortise.warm`
the warm-started solve, :mod:`~pipeline.amortise.amortised` the ``--amortise K`` dataset run.
docs/method.md ("Amortised masks") has the design and the measurements.
"""

from .predictor import MaskPredictor, PredictorConfig, load_predictor, locate_taps, predict, save_predictor
from .train import TrainConfig, TrainSummary, checkpoint_path, train_predictor
from .warm import (EXTENTS, REFINE_ITERATIONS, WarmStart, extent_search, init_record, load_warm_start, predict_masks,
                   warm_config, warm_problem, warm_solve)
from .amortised import AMORTISE_EPOCHS, amortise_folder, run_amortised

__all__ = ["AMORTISE_EPOCHS", "EXTENTS", "REFINE_ITERATIONS", "extent_search", "MaskPredictor", "PredictorConfig",
           "TrainConfig", "TrainSummary", "WarmStart", "amortise_folder", "checkpoint_path", "init_record",
           "load_predictor", "load_warm_start", "locate_taps", "predict", "predict_masks", "run_amortised",
           "save_predictor", "train_predictor", "warm_config", "warm_problem", "warm_solve"]
