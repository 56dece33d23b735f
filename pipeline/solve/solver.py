"""The batched mask solver.

:func:`solve` optimises one mask per image (``K`` per image for extremal perturbation) for a whole
batch at once. Images never interact: the loss is a *sum* of per-image losses, Adam/SGD update
each mask cell on its own, the model is in eval mode, and every random draw (noise, jitter,
random initialisation) comes from a counter-based generator keyed by the image's own seed. So an
image gets the same mask alone or inside any batch. The iteration loop issues no host
synchronisation (no ``.item()``, no host copies, no data-dependent Python branches), with one
exception that is off by default: per-image early stopping (``optim.stop_window``) reads one
boolean per image at the end of each window, to take converged images out of the batch.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import masks as masklib
from ..config import SolverConfig
from ..models import Classifier
from .perturbations import BlurPyramid, blend, substrate

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


# ---------------------------------------------------------------- per-image random streams

_M32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors holding values below 2**32 (for the few keys)."""
    for _ in range(2):
        x = x ^ (x >> 16)
        x = (x * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def _hash32_bits(x: torch.Tensor) -> torch.Tensor:
    """The same mixer on int32 tensors, in place (the bulk of the numbers). int32 arithmetic wraps
    like uint32 and is several times faster than int64 on CPU; masking makes the shifts logical."""
    for _ in range(2):
        x ^= (x >> 16) & 0xFFFF
        x *= 0x45D9F3B
    x ^= (x >> 16) & 0xFFFF
    return x


def counter_uniform(seeds: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform ``(0, 1)`` float32 numbers of ``(B, *shape)``, a pure function of (image seed, stream,
    position).

    ``seeds`` is ``(B,)`` int64. Being counter-based, image ``i`` draws the same numbers whatever
    batch it is in, with no per-image generator objects or loops.
    """
    count = math.prod(shape)
    key = _hash32((_hash32(seeds & _M32) ^ (stream * 0x9E3779B1 & _M32)) & _M32)  # (B,) in [0, 2**32)
    key = torch.where(key >= 2**31, key - 2**32, key).to(torch.int32)  # the same 32 bits, as int32
    position = torch.arange(count, device=seeds.device, dtype=torch.int32)
    bits = _hash32_bits(key.view(-1, 1) + position.view(1, -1))
    # The top 24 bits fill a float32 mantissa exactly; +0.5 keeps 0 out (log in Box-Muller).
    return ((bits >> 8) & 0xFFFFFF).to(torch.float32).add_(0.5).mul_(2.0**-24).view(-1, *shape)


def counter_normal(seeds: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal ``(B, *shape)`` from :func:`counter_uniform` by Box-Muller (both outputs used)."""
    count = math.prod(shape)
    half = (count + 1) // 2
    uniform = counter_uniform(seeds, stream, (2 * half,))
    radius = uniform[:, :half].log().mul_(-2).sqrt_()
    angle = uniform[:, half:].mul(2 * math.pi)
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :count].reshape(-1, *shape)


def shift(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Translate each image of ``(B, C, H, W)`` by its own integer ``(dy, dx)`` ``(B,)``, replicating
    borders; differentiable (two gathers)."""
    batch, channels, height, width = images.shape
    rows = (torch.arange(height, device=images.device).view(1, -1) - dy.view(-1, 1)).clamp(0, height - 1)
    cols = (torch.arange(width, device=images.device).view(1, -1) - dx.view(-1, 1)).clamp(0, width - 1)
    out = images.gather(2, rows.view(batch, 1, height, 1).expand(batch, channels, height, width))
    return out.gather(3, cols.view(batch, 1, 1, width).expand(batch, channels, height, width))


# ---------------------------------------------------------------- the problem for one batch

class Perturber:
    """A batch's perturbation, built once: ``perturber(mask_up)`` is the normalised input seen through
    an upsampled mask ``(B, 1, H, W)`` (the blend with the substrate, or the paper's blur pyramid)."""

    def __init__(self, x: torch.Tensor, config: SolverConfig, seeds: torch.Tensor):
        """``x``: normalised images ``(B, 3, H, W)``; ``seeds``: ``(B,)`` int64 per-image seeds."""
        self.x = x
        perturbation = config.perturbation
        self.pyramid = BlurPyramid(x, perturbation.sigma, perturbation.levels, perturbation.kernel_size,
                                   perturbation.truncate, perturbation.padding, perturbation.interpolation) \
            if perturbation.kind == "modulated-blur" else None
        if perturbation.kind == "noise":  # seeded per image (stream 1000) so the batch never matters
            self.p = x + perturbation.noise_std * counter_normal(seeds, 1000, tuple(x.shape[1:]))
        else:
            self.p = substrate(x, perturbation)

    def __call__(self, mask_up: torch.Tensor) -> torch.Tensor:
        if self.pyramid is not None:
            return self.pyramid(mask_up)
        return blend(self.x, mask_up, self.p)

    def subset(self, keep: torch.Tensor) -> "Perturber":
        """The perturbation of the images ``keep`` ``(b,)`` (indices) only."""
        clone = Perturber.__new__(Perturber)
        clone.x, clone.p = self.x[keep], self.p[keep]
        clone.pyramid = None
        if self.pyramid is not None:
            clone.pyramid = BlurPyramid.__new__(BlurPyramid)
            clone.pyramid.levels, clone.pyramid.interpolation = self.pyramid.levels, self.pyramid.interpolation
            clone.pyramid.pyramid = self.pyramid.pyramid[:, keep]
        return clone

    def scatter_(self, rows: torch.Tensor, other: "Perturber", other_rows: torch.Tensor) -> None:
        """Replace the images ``rows`` ``(r,)`` by ``other``'s ``other_rows``, in place (no second
        copy of the blur pyramid)."""
        self.x.index_copy_(0, rows, other.x[other_rows])
        self.p.index_copy_(0, rows, other.p[other_rows])
        if self.pyramid is not None:
            self.pyramid.pyramid.index_copy_(1, rows, other.pyramid.pyramid[:, other_rows])

    def repeated(self, k: int) -> "Perturber":
        """The same perturbation with every image repeated ``k`` times (image-major), for ``K`` masks."""
        clone = Perturber.__new__(Perturber)
        clone.x, clone.p = self.x.repeat_interleave(k, 0), self.p.repeat_interleave(k, 0)
        clone.pyramid = None
        if self.pyramid is not None:
            clone.pyramid = BlurPyramid.__new__(BlurPyramid)
            clone.pyramid.levels, clone.pyramid.interpolation = self.pyramid.levels, self.pyramid.interpolation
            clone.pyramid.pyramid = self.pyramid.pyramid.repeat_interleave(k, dim=1)
        return clone


class _Problem:
    """A batch's fixed parts: the model, the normalised images, the perturbation and the score."""

    def __init__(self, classifier: Classifier, images: torch.Tensor, targets: torch.Tensor | None,
                 config: SolverConfig, seeds: torch.Tensor):
        self.classifier, self.config, self.seeds = classifier, config, seeds
        self.x = classifier.normalize(images)
        self.size = tuple(self.x.shape[-2:])
        self.perturb = Perturber(self.x, config, seeds)
        k = max(1, len(config.objective.areas))
        self.perturb_k = self.perturb.repeated(k) if k > 1 else self.perturb
        with torch.no_grad():
            logits = self.logits(self.x)
        self.targets = logits.argmax(1) if targets is None else targets.to(logits.device)
        self.top5 = logits.topk(5, dim=1).indices  # the paper's localisation score sums these
        self.p_original = logits.softmax(1).gather(1, self.targets[:, None])[:, 0]

    def subset(self, keep: torch.Tensor) -> "_Problem":
        """The same problem for the images ``keep`` ``(b,)`` (indices) only."""
        clone = _Problem.__new__(_Problem)
        clone.classifier, clone.config, clone.size = self.classifier, self.config, self.size
        k = len(self.perturb_k.x) // len(self.x)
        clone.perturb = self.perturb.subset(keep)
        clone.perturb_k = self.perturb_k.subset(_mask_rows(keep, k)) if k > 1 else clone.perturb
        for name in ("seeds", "x", "targets", "top5", "p_original"):
            setattr(clone, name, getattr(self, name)[keep])
        return clone

    def scatter_(self, rows: torch.Tensor, other: "_Problem", other_rows: torch.Tensor) -> None:
        """Replace the images ``rows`` ``(r,)`` by ``other``'s ``other_rows``, in place (the slots of
        :func:`pipeline.solve.stream.solve_stream` taking new images). Only for a problem that owns its
        tensors, as :meth:`subset` makes, and between iterations (no autograd graph alive)."""
        k = len(self.perturb_k.x) // len(self.x)
        self.perturb.scatter_(rows, other.perturb, other_rows)
        if k > 1:
            self.perturb_k.scatter_(_mask_rows(rows, k), other.perturb, other_rows.repeat_interleave(k))
        for name in ("seeds", "x", "targets", "top5", "p_original"):
            getattr(self, name).index_copy_(0, rows, getattr(other, name)[other_rows])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        precision = self.config.precision
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with autocast:
            return self.classifier(x.contiguous(memory_format=torch.channels_last)).float()

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-image score ``(N,)`` of ``logits`` ``(N, C)`` for ``targets`` ``(N,)``."""
        kind = self.config.objective.score
        if kind == "logit":
            return logits.gather(1, targets[:, None])[:, 0]
        probs = logits.softmax(1)
        if kind == "top5":
            top5 = self.top5.repeat_interleave(len(logits) // len(self.top5), dim=0)
            return probs.gather(1, top5).sum(1)
        return probs.gather(1, targets[:, None])[:, 0]


def _mask_rows(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The rows ``(r * K,)`` of the ``K`` masks of the images ``rows`` ``(r,)`` (image-major)."""
    return (rows[:, None] * k + torch.arange(k, device=rows.device)).flatten()


def _seen(problem: _Problem, masks_up: torch.Tensor) -> torch.Tensor:
    """The inputs the model scores for masks ``(B, K, H, W)``: ``(B*K, 3, H, W)``, image-major.
    In the deletion game of extremal perturbation the region ``m`` is removed, so ``1 - m`` is kept."""
    batch, k = masks_up.shape[:2]
    keep = masks_up
    if problem.config.objective.areas and problem.config.objective.game == "delete":
        keep = 1 - masks_up
    return problem.perturb_k(keep.reshape(batch * k, 1, *masks_up.shape[-2:]))


def _initial_masks(problem: _Problem, k: int) -> torch.Tensor:
    """``(B, K, h, w)`` starting masks as the configuration says."""
    config = problem.config.mask
    batch, size = len(problem.x), config.size
    if config.init == "uniform":
        return counter_uniform(problem.seeds, 2000, (k, size, size))
    if config.init == "circle":
        return _circle_init(problem, size).expand(batch, k, size, size).clone()
    return torch.ones(batch, k, size, size, device=problem.x.device)


def _circle_init(problem: _Problem, size: int, steps: int = 12) -> torch.Tensor:
    """The paper's initialisation: per image, the smallest centred blurred circle whose deletion
    leaves at most 1% of the score (the largest tried when none does). ``(B, 1, h, w)``."""
    radii = torch.linspace(0.05, 0.75, steps, device=problem.x.device)
    circles = masklib.circle_masks(radii, size)  # (R, 1, h, w)
    batch = len(problem.x)
    with torch.no_grad():
        up = masklib.upsample(circles, problem.size, problem.config.mask)  # (R, 1, H, W)
        scores = []
        for r in range(steps):  # one radius at a time keeps memory at one batch
            logits = problem.logits(problem.perturb(up[r : r + 1].expand(batch, -1, -1, -1)))
            scores.append(logits.softmax(1).gather(1, problem.targets[:, None])[:, 0])
        deleted = torch.stack(scores, 1) <= 0.01 * problem.p_original[:, None]  # (B, R)
        # First radius that deletes; argmax of a bool row finds it, and the last radius if none does.
        choice = torch.where(deleted.any(1), deleted.float().argmax(1), torch.full_like(problem.targets, steps - 1))
    return circles[choice]


def _regulariser(problem: _Problem, masks: torch.Tensor, masks_full: torch.Tensor,
                 iteration: int | torch.Tensor) -> torch.Tensor:
    """``masks_full``: the generated masks the area constraint counts (:func:`pipeline.solve.masks.generate`)."""
    objective = problem.config.objective
    reg = objective.tv_coeff * masklib.total_variation(masks, objective.tv_beta)
    if objective.areas:
        areas = torch.tensor(objective.areas, device=masks.device, dtype=torch.float64)  # exact counts
        weight = objective.area_coeff * objective.area_growth**iteration
        return reg + weight * masklib.area_penalty(masks_full, areas)
    return reg + objective.l1_coeff * masklib.sparsity(masks, objective)


def _objective(problem: _Problem, masks: torch.Tensor, iteration: int | torch.Tensor) -> torch.Tensor:
    """Per-image loss ``(B,)`` for masks ``(B, K, h, w)`` at ``iteration`` (noise and jitter drawn):
    one count for the batch, or ``(B,)`` int64, each image's own (:mod:`pipeline.solve.stream`)."""
    config = problem.config
    masks_up, masks_full = masklib.generate(masks, problem.size, config.mask)
    batch, k = masks.shape[:2]
    seeds = problem.seeds.repeat_interleave(k)
    # The draws are per mask (B*K); the regulariser's count stays per image (B).
    draw = iteration.repeat_interleave(k) if torch.is_tensor(iteration) else iteration
    if config.mask.jitter:
        # Phi(x(. - tau); m) = shift_tau(Phi(x; m(. + tau))): shift the mask back, perturb, shift forward.
        tau = (counter_uniform(seeds, 3 * draw + 1, (2,)) * config.mask.jitter).long()
        flat = masks_up.reshape(batch * k, 1, *problem.size)
        masks_up = shift(flat, -tau[:, 0], -tau[:, 1]).view_as(masks_up)
    seen = _seen(problem, masks_up)
    if config.objective.noise_std:
        seen = seen + config.objective.noise_std * counter_normal(seeds, 3 * draw + 2, tuple(seen.shape[1:]))
    if config.mask.jitter:
        seen = shift(seen, tau[:, 0], tau[:, 1])
    if config.mask.flip:  # TorchRay's jitter: the model sees the input mirrored on even iterations
        if torch.is_tensor(draw):
            seen = torch.where((draw % 2 == 0).view(-1, 1, 1, 1), seen.flip(3), seen)
        elif draw % 2 == 0:
            seen = seen.flip(3)
    score = problem.score(problem.logits(seen), problem.targets.repeat_interleave(k)).view(batch, k).sum(1)
    sign = 1.0 if config.objective.game == "delete" else -1.0
    return _regulariser(problem, masks, masks_full, iteration) + sign * score


def solve(classifier: Classifier, images: torch.Tensor, config: SolverConfig, *, targets: torch.Tensor | None = None,
          seeds: torch.Tensor | None = None, callback: Callback | None = None) -> SolveResult:
    """Solve the masks of a batch at once.

    Args:
        classifier: a frozen classifier (:func:`pipeline.models.load_model`); its device is used.
        images: ``(B, 3, H, W)`` RGB in [0, 1] at the model's input size.
        config: the solver configuration (a preset, possibly overridden).
        targets: ``(B,)`` int64 classes to explain; the top-1 prediction when None.
        seeds: ``(B,)`` int64 per-image seeds for noise, jitter and random init (default: 0..B-1;
            dataset runs pass each image's dataset index).
        callback: optional progress hook, see :data:`Callback`.
    """
    device = classifier.device
    images = images.to(device, non_blocking=True).float()
    seeds = (torch.arange(len(images)) if seeds is None else seeds).to(device=device, dtype=torch.int64)
    if config.precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # Measured on an AVX2-only CPU: 17x slower than fp32 (benchmarks/solver.py).
        warnings.warn("precision=bf16 on a CPU without native bf16 (no AVX512-BF16/AMX) runs reference "
                      "kernels, many times slower than fp32; use precision=fp32 here", stacklevel=2)
    problem = _Problem(classifier, images, targets, config, seeds)
    k = max(1, len(config.objective.areas))
    optim = config.optim
    masks = _initial_masks(problem, k).requires_grad_(True)
    optimizer = _optimizer(masks, optim)
    batch = len(images)
    iterations = torch.full((batch,), optim.iterations, dtype=torch.int64, device=device)
    stopper = _Convergence(batch, optim.stop_window, optim.stop_tol, device) if optim.stop_window else None
    # Early stopping: ``active`` is the problem of the images in the optimised batch, ``rows``
    # their rows in the whole batch, ``live`` (on the device) those not stopped yet; ``final`` and
    # ``last_loss`` hold every image's mask and loss as of its stop. A stopped image stays in the
    # batch (its later values ignored) until the live ones fit a power of two at least halving it:
    # the batch is then cut to that size, stopped images filling the rest. Every new batch shape
    # costs planning (cuDNN plans, lazily loaded kernels, a torch.compile graph): on an H200 the
    # first 25 iterations of a shape took 4 s where later ones take 0.02 s each. Powers of two keep
    # a whole dataset run to a few shapes, each planned once.
    active, rows, final = problem, torch.arange(batch, device=device), masks.detach()
    live = torch.ones(batch, dtype=torch.bool, device=device)
    last_loss = torch.zeros(batch, device=device)
    for iteration in range(optim.iterations):
        loss = _objective(active, masks, iteration)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # a sum, so each image's gradient is independent of the batch size
        optimizer.step()
        with torch.no_grad():
            masks.clamp_(0, 1)
        loss = loss.detach()
        last_loss = loss if stopper is None else last_loss.index_copy(0, rows, torch.where(live, loss, last_loss[rows]))
        if callback is not None:
            callback(iteration, last_loss)
        done = stopper.update(iteration, loss) if stopper is not None else None
        if done is None:
            continue
        stopping = done & live
        if not bool(stopping.any()):  # host reads happen here only: once per window
            continue
        final = final.index_copy(0, rows[stopping], masks.detach()[stopping])
        iterations[rows[stopping]] = iteration + 1
        live &= ~stopping
        remaining = int(live.sum())
        if not remaining:
            break
        keep = _shrunk_rows(live, remaining)
        if keep is not None:
            rows, active, live = rows[keep], active.subset(keep), live[keep]
            masks, optimizer = _compacted(masks, optimizer, keep, optim)
            stopper.subset(keep)
    else:  # the images still live ran every iteration
        final = masks.detach() if stopper is None else final.index_copy(0, rows[live], masks.detach()[live])
    return _finish(problem, final, last_loss, iterations)


def _shrunk_rows(live: torch.Tensor, remaining: int) -> torch.Tensor | None:
    """The rows to keep of a batch whose ``live`` ``(B,)`` bool holds ``remaining`` (> 0) images
    still being solved, or None to keep them all: the power of two holding the live images when that
    at least halves the batch (or turns a count that is no power of two into one), stopped rows
    filling the rest. Few shapes, each planned once (see :func:`solve`)."""
    batch = len(live)
    size = 1 << (remaining - 1).bit_length()
    if not (size <= batch // 2 or (size < batch and batch & (batch - 1))):
        return None
    filler = (~live).nonzero()[: size - remaining, 0]
    return torch.cat([live.nonzero()[:, 0], filler]).sort().values


def _converged(previous: torch.Tensor, mean: torch.Tensor, tol: float) -> torch.Tensor:
    """``(B,)`` bool: the window mean ``mean`` improved on ``previous`` by at most
    ``tol * max(|previous|, 1e-3)`` (False where ``previous`` is NaN: no window yet)."""
    return previous - mean <= tol * previous.abs().clamp_min(1e-3)


def _optimizer(masks: torch.Tensor, optim) -> torch.optim.Optimizer:
    if optim.optimizer == "adam":
        return torch.optim.Adam([masks], lr=optim.lr)
    return torch.optim.SGD([masks], lr=optim.lr, momentum=optim.momentum, dampening=optim.dampening)


def _compacted(masks: torch.Tensor, optimizer: torch.optim.Optimizer, keep: torch.Tensor, optim):
    """The rows ``keep`` of the masks ``(B, K, h, w)`` as a new leaf, with an optimiser carrying on
    their state (Adam's moments, SGD's momentum: per element, so per image)."""
    state = optimizer.state[masks]
    kept = masks.detach()[keep].requires_grad_(True)
    optimizer = _optimizer(kept, optim)
    optimizer.state[kept] = {name: value[keep] if torch.is_tensor(value) and value.dim() and
                             value.shape[0] == len(masks) else value for name, value in state.items()}
    return kept, optimizer


class _Convergence:
    """Per-image early stopping: the window means of the objective, see :class:`pipeline.config.OptimConfig`."""

    def __init__(self, batch: int, window: int, tol: float, device: torch.device):
        self.window, self.tol = window, tol
        self.total = torch.zeros(batch, device=device)
        self.previous: torch.Tensor | None = None

    def update(self, iteration: int, loss: torch.Tensor) -> torch.Tensor | None:
        """Add the per-image ``loss`` ``(b,)``; at the end of a window, ``(b,)`` bool: converged."""
        self.total += loss
        if (iteration + 1) % self.window:
            return None
        mean = self.total / self.window
        previous, self.previous = self.previous, mean
        self.total = torch.zeros_like(self.total)
        if previous is None:
            return None
        return _converged(previous, mean, self.tol)

    def subset(self, keep: torch.Tensor) -> None:
        self.total, self.previous = self.total[keep], self.previous[keep]


def _finish(problem: _Problem, masks: torch.Tensor, loss: torch.Tensor, iterations: torch.Tensor) -> SolveResult:
    """Noise-free, jitter-free scores of the final masks and of the fully perturbed images."""
    p_final, area, tv = _final_scores(problem, masks)
    return SolveResult(masks, problem.targets, problem.p_original, _p_perturbed(problem), p_final, loss, area,
                       tv, iterations)


def _final_scores(problem: _Problem, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p_final, area, tv)``, each ``(B,)``, of masks ``(B, K, h, w)``, without noise or jitter."""
    batch, k = masks.shape[:2]
    with torch.no_grad():
        masks_up = masklib.upsample(masks, problem.size, problem.config.mask)
        probs = problem.logits(_seen(problem, masks_up)).softmax(1)
        p_final = probs.gather(1, problem.targets.repeat_interleave(k)[:, None]).view(batch, k).mean(1)
        area = (1 - masks_up).flatten(1).mean(1)
        tv = masklib.total_variation(masks, problem.config.objective.tv_beta)
    return p_final, area, tv


def _p_perturbed(problem: _Problem) -> torch.Tensor:
    """``(B,)`` target probability of the fully perturbed images (mask all 0)."""
    with torch.no_grad():
        zeros = torch.zeros(len(problem.x), 1, *problem.size, device=problem.x.device)
        return problem.logits(problem.perturb(zeros)).softmax(1).gather(1, problem.targets[:, None])[:, 0]
