"""The batched mask solver.

:func:`solve` optimises one mask per image (``K`` per image for extremal perturbation) for a whole
batch at once. Images never interact: the loss is a *sum* of per-image losses, Adam/SGD update
each mask cell on its own, the model is in eval mode, and every random draw (noise, jitter,
random initialisation) comes from a counter-based generator keyed by the image's own seed. So an
image gets the same mask alone or inside any batch. The iteration loop issues no host
synchronisation (no ``.item()``, no host copies, no data-dependent Python branches), with one
exception that is off by default: per-image early stopping (``optim.stop_window``) reads one
boolean per image at the end of each window, to take converged images out of the batch.

The batch's problem (model, perturbation, objective) is :mod:`pipeline.solve.problem`; the random
streams :mod:`pipeline.solve.random`; the early-stopping rule :mod:`pipeline.solve.stopping`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from ..config import OptimConfig, SolverConfig
from ..errors import ConfigError
from ..models import Classifier
from .problem import Problem, final_scores, initial_masks, objective, p_perturbed
from .stopping import WindowStop, shrunk_rows

Callback = Callable[[int, torch.Tensor], None]
"""Called as ``callback(iteration, per_image_loss)`` with a detached ``(B,)`` device tensor."""


@dataclass(frozen=True)
class SolveResult:
    """What :func:`solve` returns; every tensor is on the solver's device, batch first.

    Attributes:
        masks: ``(B, K, h, w)`` float32 in [0, 1], 1 = keep.
        targets: ``(B,)`` int64 class explained.
        p_original: ``(B,)`` score probability of the target on the unperturbed image.
        p_perturbed: ``(B,)`` on the fully perturbed image (mask all 0): how much the perturbation
            alone removes. When this stays high, no mask can delete the class.
        p_final: ``(B,)`` on the image perturbed by the final mask, without noise or jitter
            (for the preservation game, on the image with only the kept region).
        loss: ``(B,)`` final objective value.
        area: ``(B,)`` mean of ``1 - m`` upsampled (share of the image perturbed).
        tv: ``(B,)`` total variation of the final mask.
        iterations: ``(B,)`` int64 iterations each mask was optimised for (``optim.iterations``
            unless early stopping stopped it sooner).
    """

    masks: torch.Tensor
    targets: torch.Tensor
    p_original: torch.Tensor
    p_perturbed: torch.Tensor
    p_final: torch.Tensor
    loss: torch.Tensor
    area: torch.Tensor
    tv: torch.Tensor
    iterations: torch.Tensor

    def columns(self) -> dict[str, torch.Tensor]:
        """The per-image scalar fields, by name (for stores and tables)."""
        return {
            "target": self.targets, "p_original": self.p_original, "p_perturbed": self.p_perturbed,
            "p_final": self.p_final, "loss": self.loss, "area": self.area, "tv": self.tv,
            "iterations": self.iterations,
        }


def solve(classifier: Classifier, images: torch.Tensor, config: SolverConfig, *, targets: torch.Tensor | None = None,
          seeds: torch.Tensor | None = None, callback: Callback | None = None,
          init: torch.Tensor | None = None) -> SolveResult:
    """Solve the masks of a batch at once.

    Args:
        classifier: a frozen classifier (:func:`pipeline.models.load_model`); its device is used.
        images: ``(B, 3, H, W)`` RGB in [0, 1] at the model's input size.
        config: the solver configuration (a preset, possibly overridden).
        targets: ``(B,)`` int64 classes to explain; the top-1 prediction when None.
        seeds: ``(B,)`` int64 per-image seeds for noise, jitter and random init (default: 0..B-1;
            dataset runs pass each image's dataset index).
        callback: optional progress hook, see :data:`Callback`.
        init: ``(B, K, h, w)`` starting masks (a warm start, e.g. a mask predictor's,
            :mod:`pipeline.amortise`), clamped to [0, 1]; None starts as ``config.mask.init`` says.
    """
    return solve_problem(batch_problem(classifier, images, config, targets, seeds), callback=callback, init=init)


def batch_problem(classifier: Classifier, images: torch.Tensor, config: SolverConfig,
                  targets: torch.Tensor | None = None, seeds: torch.Tensor | None = None) -> Problem:
    """The :class:`Problem` of a batch as :func:`solve` builds it: ``images`` ``(B, 3, H, W)`` in [0, 1]
    moved to the classifier's device, ``seeds`` ``(B,)`` defaulting to ``0..B-1``; one forward pass
    of the clean images (a caller may hook it, as a warm start reads the classifier's features)."""
    device = classifier.device
    images = images.to(device, non_blocking=True).float()
    seeds = (torch.arange(len(images)) if seeds is None else seeds).to(device=device, dtype=torch.int64)
    if config.precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # Measured on an AVX2-only CPU: 17x slower than fp32 (benchmarks/run.py solver).
        warnings.warn("precision=bf16 on a CPU without native bf16 (no AVX512-BF16/AMX) runs reference "
                      "kernels, many times slower than fp32; use precision=fp32 here", stacklevel=3)
    return Problem(classifier, images, targets, config, seeds)


def solve_problem(problem: Problem, *, callback: Callback | None = None,
                  init: torch.Tensor | None = None) -> SolveResult:
    """Solve the masks of a batch whose :class:`Problem` is built (:func:`batch_problem`); ``callback``
    and ``init`` as for :func:`solve`."""
    optim, device, batch = problem.config.optim, problem.x.device, len(problem.x)
    masks = (initial_masks(problem) if init is None else warm_masks(init, problem)).requires_grad_(True)
    optimizer = make_optimizer(masks, optim)
    iterations = torch.full((batch,), optim.iterations, dtype=torch.int64, device=device)
    stopper = WindowStop(batch, optim.stop_window, optim.stop_tol, device) if optim.stop_window else None
    # Early stopping: ``active`` is the problem of the images in the optimised batch, ``rows``
    # their rows in the whole batch, ``live`` (on the device) those not stopped yet; ``final`` and
    # ``last_loss`` hold every image's mask and loss as of its stop. A stopped image stays in the
    # batch (its later values ignored) until the live ones fit a power of two at least halving it:
    # the batch is then cut to that size, stopped images filling the rest (stopping.shrunk_rows).
    active, rows, final = problem, torch.arange(batch, device=device), masks.detach()
    live = torch.ones(batch, dtype=torch.bool, device=device)
    last_loss = torch.zeros(batch, device=device)
    for iteration in range(optim.iterations):
        loss = objective(active, masks, iteration)
        if optim.schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = optim.lr * lr_scale(iteration, optim)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # a sum, so each image's gradient is independent of the batch size
        optimizer.step()
        with torch.no_grad():
            masks.clamp_(0, 1)
        loss = loss.detach()
        last_loss = loss if stopper is None else last_loss.index_copy(0, rows, torch.where(live, loss, last_loss[rows]))
        if callback is not None:
            callback(iteration, last_loss)
        if stopper is None:
            continue
        converged = stopper.update(loss)
        if (iteration + 1) % optim.stop_window:
            continue
        stopping = converged & live
        if not bool(stopping.any()):  # host reads happen here only: once per window
            continue
        final = final.index_copy(0, rows[stopping], masks.detach()[stopping])
        iterations[rows[stopping]] = iteration + 1
        live &= ~stopping
        remaining = int(live.sum())
        if not remaining:
            break
        keep = shrunk_rows(live, remaining)
        if keep is not None:
            rows, active, live = rows[keep], active.subset(keep), live[keep]
            masks, optimizer = _compacted(masks, optimizer, keep, optim)
            stopper.subset(keep)
    else:  # the images still live ran every iteration
        final = masks.detach() if stopper is None else final.index_copy(0, rows[live], masks.detach()[live])
    p_final, area, tv = final_scores(problem, final)
    return SolveResult(final, problem.targets, problem.p_original, p_perturbed(problem), p_final, last_loss, area,
                       tv, iterations)


def warm_masks(init: torch.Tensor, problem: Problem) -> torch.Tensor:
    """Given starting masks ``(B, K, h, w)`` as a fresh float32 tensor on the problem's device, in [0, 1]."""
    config, k = problem.config.mask, problem.config.objective.masks_per_image
    shape = (len(problem.x), k, config.size, config.size)
    if tuple(init.shape) != shape:
        raise ConfigError(f"init masks must be shaped {shape} (batch, masks per image, mask.size, mask.size), "
                          f"got {tuple(init.shape)}")
    return init.detach().to(problem.x.device, torch.float32).clamp(0, 1).clone()


def lr_scale(step: int | torch.Tensor, optim: OptimConfig) -> float | torch.Tensor:
    """The factor on ``optim.lr`` at (0-based) ``step``: 1 for the constant schedule; for the cosine
    one ``(1 + cos(pi step / T)) / 2`` with ``T = optim.iterations``. ``step`` is an int, or a
    float64 tensor of per-row counts (:class:`pipeline.solve.stream.RowOptimizer`)."""
    if optim.schedule == "constant":
        return 1.0
    if torch.is_tensor(step):
        return (1 + torch.cos(step * (math.pi / optim.iterations))) / 2
    return (1 + math.cos(step * (math.pi / optim.iterations))) / 2


def make_optimizer(masks: torch.Tensor, optim: OptimConfig) -> torch.optim.Optimizer:
    """torch's Adam, or SGD with (damped) momentum, on the masks leaf."""
    if optim.optimizer == "adam":
        return torch.optim.Adam([masks], lr=optim.lr)
    return torch.optim.SGD([masks], lr=optim.lr, momentum=optim.momentum, dampening=optim.dampening)


def _compacted(masks: torch.Tensor, optimizer: torch.optim.Optimizer, keep: torch.Tensor, optim: OptimConfig):
    """The rows ``keep`` of the masks ``(B, K, h, w)`` as a new leaf, with an optimiser carrying on
    their state (Adam's moments, SGD's momentum: per element, so per image)."""
    state = optimizer.state[masks]
    kept = masks.detach()[keep].requires_grad_(True)
    optimizer = make_optimizer(kept, optim)
    optimizer.state[kept] = {name: value[keep] if torch.is_tensor(value) and value.dim() and
                             value.shape[0] == len(masks) else value for name, value in state.items()}
    return kept, optimizer
