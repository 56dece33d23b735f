"""Meaningful-perturbation saliency (Fong & Vedaldi, ICCV 2017) at dataset scale.

The public API, importable from ``pipeline`` directly::

    import pipeline as pp

    classifier = pp.load_model("efficientnet_lite0", device="cuda")
    config = pp.override(pp.preset("paper"), ["optim.iterations=100"])
    pp.run_masks("imagenet/val", "val.h5", classifier, config, pp.RunConfig(batch_size="auto"))
    with pp.MaskStore("val.h5") as store:
        table = store.table()
    pp.evaluate_store("val.h5", None, classifier, "val-report", boxes="imagenet/val-boxes")

    # Captum's conventions: any eval-mode nn.Module, normalised inputs (N, 3, H, W) -> (N, 1, H, W)
    saliency = pp.MeaningfulPerturbation(model, iterations=75).attribute(x, target=285)
    # saliency maps made by another tool, as a store that evaluate reads
    pp.import_maps("my-maps/", "imagenet/val", "mine.h5", classifier, method="my-method")

The names are loaded on first use, so ``import pipeline`` (and the ``perturb`` CLI's start) does
not import torch. ``examples/explain_folder.py`` is a runnable walk through.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_API: dict[str, str] = {
    # models and configuration
    "load_model": "pipeline.models", "Classifier": "pipeline.models", "ClassVocabulary": "pipeline.imagenet",
    "preset": "pipeline.config", "override": "pipeline.config", "resolve": "pipeline.config",
    "PRESETS": "pipeline.config",
    "SolverConfig": "pipeline.config", "to_dict": "pipeline.config", "from_dict": "pipeline.config",
    # solving masks
    "solve": "pipeline.solve", "SolveResult": "pipeline.solve", "solve_stream": "pipeline.solve",
    "StreamBatch": "pipeline.solve",
    # long CPU runs: glibc keeps freed memory instead of page-faulting it in every iteration
    "retain_freed_memory": "pipeline.allocator",
    # attribution in Captum's conventions
    "MeaningfulPerturbation": "pipeline.attribution", "PerturbationResult": "pipeline.attribution",
    # dataset jobs
    "run_masks": "pipeline.jobs.run", "RunConfig": "pipeline.jobs.run", "RunSummary": "pipeline.jobs.run",
    "run_baseline": "pipeline.jobs.baselines", "run_sweep": "pipeline.jobs.sweep",
    "explain_image": "pipeline.jobs.explain", "import_maps": "pipeline.jobs.importing",
    # amortised masks: a predictor trained over a dataset's images starts the solver
    "train_predictor": "pipeline.amortise", "TrainConfig": "pipeline.amortise", "load_predictor": "pipeline.amortise",
    "warm_solve": "pipeline.amortise", "warm_config": "pipeline.amortise", "load_warm_start": "pipeline.amortise",
    "run_amortised": "pipeline.amortise",
    # the store
    "MaskStore": "pipeline.store", "MaskWriter": "pipeline.store", "merge_run": "pipeline.jobs.shards",
    "repair_store": "pipeline.store.repair",
    # images
    "discover": "pipeline.data", "read_input": "pipeline.data",
    "read_targets": "pipeline.data.targets", "TargetTable": "pipeline.data.targets",
    # evaluation and reports
    "evaluate_store": "pipeline.evaluation", "EvalConfig": "pipeline.evaluation",
    "store_saliency": "pipeline.evaluation", "compare_runs": "pipeline.report.compare",
    "randomise_store": "pipeline.jobs.randomisation", "RandomisationConfig": "pipeline.jobs.randomisation",
    "write_report": "pipeline.report", "ReportConfig": "pipeline.report",
    # errors
    "PipelineError": "pipeline.errors", "ConfigError": "pipeline.errors", "StoreError": "pipeline.errors",
    "ImageReadError": "pipeline.errors", "ModelUnavailableError": "pipeline.errors", "InputError": "pipeline.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
