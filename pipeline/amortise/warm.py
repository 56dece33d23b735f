"""Warm starts: the solver starts every image from a predictor's mask and refines it.

:func:`warm_config` adapts a preset to a start near the answer (fewer iterations, the L1 warm-up
off: the warm-up exists to shrink the paper's uniform random start, which a predicted mask no
longer is; docs/method.md, "Amortised masks", has the measurement), :func:`predict_masks` gives
the starting masks of a batch, :func:`warm_solve` chains them into
:func:`pipeline.solve.solver.solve_problem` on one :func:`warm_problem` (one forward pass of the
clean batch serves the prediction, the extent search and the solver), and :func:`init_record` is
what a store made this way records (the predictor's identity) beside its solver configuration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import Origin, SolverConfig
from ..models import Classifier
from ..solve import SolveResult
from ..solve import masks as masklib
from ..solve.problem import Problem, final_scores
from ..solve.solver import Callback, batch_problem, solve_problem
from .predictor import MaskPredictor, capture, check_classifier, head_masks, load_predictor, predict
from .train import check_preset

__all__ = ["EXTENTS", "REFINE_ITERATIONS", "warm_config", "predict_masks", "warm_problem", "extent_search",
           "warm_solve", "init_record", "WarmStart", "load_warm_start"]

REFINE_ITERATIONS = 25
"""Refinement iterations after a predicted start, when not told otherwise (docs/method.md)."""

EXTENTS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
"""The exponents the extent search of a predicted start tries (:func:`extent_search`)."""


def warm_config(config: SolverConfig, iterations: int | None = REFINE_ITERATIONS, l1_start: float = 1.0,
                lr: float | None = None) -> SolverConfig:
    """``config`` for refining a predicted start: ``iterations`` (None keeps the preset's), the L1
    warm-up from ``l1_start`` times the weight down to it over those iterations (1: off), and the
    step size ``lr`` (None keeps the preset's)."""
    check_preset(config)
    optim = config.optim if iterations is None else dataclasses.replace(config.optim, iterations=iterations)
    if lr is not None:
        optim = dataclasses.replace(optim, lr=lr)
    objective = dataclasses.replace(config.objective, l1_start=l1_start,
                                    l1_decay=optim.iterations if l1_start != 1 else config.objective.l1_decay)
    if l1_start == 1:  # off: recorded as the preset without a warm-up (to_dict leaves the defaults out)
        objective = dataclasses.replace(objective, l1_decay=50)
    origin = config.origin
    if origin is not None:  # the name says what changed, as resolve() names -n
        applied = [f"optim.iterations={optim.iterations}", f"objective.l1_start={objective.l1_start:g}",
                   f"objective.l1_decay={objective.l1_decay}"] + ([f"optim.lr={optim.lr:g}"] if lr is not None else [])
        origin = Origin(origin.preset, (*origin.overrides, *applied))
    return dataclasses.replace(config, objective=objective, optim=optim, origin=origin)


def predict_masks(predictor: MaskPredictor, classifier: Classifier, images: torch.Tensor,
                  config: SolverConfig, targets: torch.Tensor | None = None,
                  extents: Sequence[float] = (),
                  seeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The predicted starting masks of a batch: ``(B, 1, h, w)`` in (0, 1) with ``h = config.mask.size``,
    and the targets ``(B,)`` (the top-1 prediction where ``targets`` is None); on the classifier's device.

    ``images``: ``(B, 3, H, W)`` RGB in [0, 1] at the model's input size. ``extents``: exponents
    ``g`` of an extent search (:func:`extent_search`, scored with ``seeds`` as the solver would;
    default ``0..B-1``); none: the prediction as it is, from one forward pass of the classifier.
    """
    if extents:
        problem, masks = warm_problem(predictor, classifier, images, config, targets, seeds, extents)
        return masks, problem.targets
    x = classifier.normalize(images.to(classifier.device).float())
    with torch.no_grad():
        masks, targets, _ = predict(predictor, classifier, x, targets, config.mask.size)
    return masks, targets


def warm_problem(predictor: MaskPredictor, classifier: Classifier, images: torch.Tensor, config: SolverConfig,
                 targets: torch.Tensor | None = None, seeds: torch.Tensor | None = None,
                 extents: Sequence[float] = EXTENTS) -> tuple[Problem, torch.Tensor]:
    """The batch's :class:`Problem` (:func:`pipeline.solve.solver.batch_problem`) and its predicted
    start ``(B, 1, h, w)`` after the extent search over ``extents``: the forward pass that scores the
    clean images also feeds the predictor's taps, and the search scores on the solver's own
    perturbation, so the classifier sees the clean batch once."""
    with capture(classifier, predictor.taps.names) as features:
        problem = batch_problem(classifier, images, config, targets, seeds)
    with torch.no_grad():
        masks = head_masks(predictor, classifier, features, problem.targets, problem.x, config.mask.size)
    return problem, extent_search(problem, masks, extents) if extents else masks


def extent_search(problem: Problem, masks: torch.Tensor, extents: Sequence[float]) -> torch.Tensor:
    """Per image, the power ``m ** g`` of the predicted masks ``(B, 1, h, w)`` (``g`` in ``extents``;
    a larger ``g`` deletes more of what the prediction half deletes) with the lowest objective on
    ``problem`` (noise-free, at the preset's final L1 weight): the predictor says where, this says
    how much, as the paper's circle initialisation tries radii. One forward pass per exponent."""
    objective = problem.config.objective
    candidates, values = [], []
    for g in extents:
        candidate = masks ** g
        p_final, _, tv = final_scores(problem, candidate)
        values.append(objective.l1_coeff * masklib.sparsity(candidate, objective) + objective.tv_coeff * tv + p_final)
        candidates.append(candidate)
    best = torch.stack(values).argmin(0)  # (B,)
    return torch.stack(candidates)[best, torch.arange(len(masks), device=masks.device)]


def warm_solve(classifier: Classifier, images: torch.Tensor, predictor: MaskPredictor, config: SolverConfig, *,
               targets: torch.Tensor | None = None, seeds: torch.Tensor | None = None,
               callback: Callback | None = None, extents: Sequence[float] = EXTENTS) -> SolveResult:
    """:func:`pipeline.solve.solver.solve` started from the predictor's masks, after the extent
    search over ``extents`` (empty: none), on one :func:`warm_problem`. ``config`` is used as given:
    pass it through :func:`warm_config` to refine for fewer iterations without the L1 warm-up."""
    check_preset(config)
    problem, start = warm_problem(predictor, classifier, images, config, targets, seeds, extents)
    return solve_problem(problem, callback=callback, init=start)


def init_record(predictor: MaskPredictor, extents: Sequence[float] = EXTENTS) -> dict[str, Any]:
    """What identifies a warm start in a store's configuration (``config["init"]``): the predictor's
    identity (a hash of its weights and architecture), what it was trained on, and the extent
    search's exponents."""
    meta = getattr(predictor, "meta", {}) or {}
    return {"predictor": predictor.identity, "images": meta.get("images"), "preset": meta.get("preset"),
            "epochs": meta.get("epochs"), "loss": (meta.get("training") or {}).get("loss"),
            "extents": [float(g) for g in extents]}


@dataclass(frozen=True)
class WarmStart:
    """A dataset run's warm start (``perturb masks --init``): the predictor, the file it came from,
    the extent search, and for ``--amortise K`` the number of images solved fully first and the
    configuration they were solved with.

    :meth:`configure` is what the run's store records in its configuration, ``config["init"]``
    (part of the store's identity: the predictor's hash, what it was trained on, the extent search,
    and for an amortised run ``K`` and the first images' solver), and :meth:`attrs` the file's path,
    an attribute of the store outside its identity: a moved predictor file resumes its store;
    another predictor does not.
    """

    predictor: MaskPredictor
    path: str
    extents: tuple[float, ...] = EXTENTS
    amortise: int | None = None
    first: dict[str, Any] | None = None

    def on(self, classifier: Classifier) -> WarmStart:
        """This start checked against ``classifier`` (the spec and input size it was trained for)
        with its predictor moved to the classifier's device.

        Raises:
            ConfigError: the predictor was trained for another classifier.
        """
        check_classifier(self.predictor.meta, classifier, self.path)
        self.predictor.to(classifier.device)
        return self

    def adapt(self, config: SolverConfig, iterations: int | None = None) -> SolverConfig:
        """``config`` for refining this start: :func:`warm_config` with ``iterations`` (None: the
        configuration's own) and the L1 warm-up off."""
        return warm_config(config, iterations=iterations)

    def record(self) -> dict[str, Any]:
        """``config["init"]`` of a store made from this start (plain data)."""
        record = init_record(self.predictor, self.extents)
        meta = getattr(self.predictor, "meta", {}) or {}
        record["classifier"] = meta.get("classifier")
        record["solved"] = [{k: entry.get(k) for k in ("run_key", "images")} for entry in meta.get("solved") or []]
        if self.amortise is not None:
            record.update(amortise=self.amortise, first=self.first)
        return record

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """A store's configuration ``config`` (:func:`pipeline.jobs.settings.store_config`) with this
        start recorded (see the class docstring)."""
        return {**config, "init": self.record()}

    def attrs(self) -> dict[str, str]:
        """The store attributes of this start: ``init_path``, the predictor file's absolute path."""
        return {"init_path": self.path}

    def solve(self, classifier: Classifier, images: torch.Tensor, config: SolverConfig, *,
              targets: torch.Tensor | None = None, seeds: torch.Tensor | None = None) -> SolveResult:
        """:func:`warm_solve` of a batch from this start (``config`` as given)."""
        return warm_solve(classifier, images, self.predictor, config, targets=targets, seeds=seeds,
                          extents=self.extents)


def load_warm_start(path: str | Path, classifier: Classifier | None = None,
                    extents: Sequence[float] = EXTENTS) -> WarmStart:
    """The warm start of the predictor file ``path`` (:func:`load_predictor`; with ``classifier``,
    checked against it and moved to its device).

    Raises:
        ConfigError: the file is missing, no finished predictor, or made for another classifier.
    """
    predictor = load_predictor(path, classifier)
    return WarmStart(predictor, str(Path(path).resolve()), tuple(float(g) for g in extents))
