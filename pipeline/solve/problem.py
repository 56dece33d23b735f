"""One batch's optimisation problem: the model, the images, their perturbation, and the objective.

:class:`Problem` holds what stays fixed while a batch is solved; :func:`objective` is the
per-image loss ``(B,)`` of masks ``(B, K, h, w)`` at an iteration (noise, jitter and flips drawn
from each image's own random streams, :mod:`pipeline.solve.random`), and :func:`final_scores` the
noise-free scores of finished masks. :func:`pipeline.solve.solver.solve` and
:func:`pipeline.solve.stream.solve_stream` share them.
"""

from __future__ import annotations

import contextlib

import torch

from ..config import SolverConfig
from ..models import Classifier
from . import masks as masklib
from .perturbations import BlurPyramid, blend, substrate
from .random import counter_normal, counter_uniform


def shift(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Translate each image of ``(B, C, H, W)`` by its own integer ``(dy, dx)`` ``(B,)``, replicating
    borders; differentiable (two gathers)."""
    batch, channels, height, width = images.shape
    rows = (torch.arange(height, device=images.device).view(1, -1) - dy.view(-1, 1)).clamp(0, height - 1)
    cols = (torch.arange(width, device=images.device).view(1, -1) - dx.view(-1, 1)).clamp(0, width - 1)
    out = images.gather(2, rows.view(batch, 1, height, 1).expand(batch, channels, height, width))
    return out.gather(3, cols.view(batch, 1, 1, width).expand(batch, channels, height, width))


class Perturber:
    """A batch's perturbation, built once: ``perturber(mask_up)`` is the normalised input seen through
    an upsampled mask ``(B, 1, H, W)`` (the blend with the substrate, or the paper's blur pyramid)."""

    def __init__(self, x: torch.Tensor, config: SolverConfig, seeds: torch.Tensor):
        """``x``: normalised images ``(B, 3, H, W)``; ``seeds``: ``(B,)`` int64 per-image seeds."""
        perturbation = config.perturbation
        pyramid = BlurPyramid(x, perturbation.sigma, perturbation.levels, perturbation.kernel_size,
                              perturbation.truncate, perturbation.padding, perturbation.interpolation) \
            if perturbation.kind == "modulated-blur" else None
        if perturbation.kind == "noise":  # seeded per image (stream 1000) so the batch never matters
            p = x + perturbation.noise_std * counter_normal(seeds, 1000, tuple(x.shape[1:]))
        else:
            p = substrate(x, perturbation)
        self._set(x, p, pyramid)

    def _set(self, x: torch.Tensor, p: torch.Tensor, pyramid: BlurPyramid | None) -> Perturber:
        self.x, self.p, self.pyramid = x, p, pyramid
        return self

    def __call__(self, mask_up: torch.Tensor) -> torch.Tensor:
        if self.pyramid is not None:
            return self.pyramid(mask_up)
        return blend(self.x, mask_up, self.p)

    def subset(self, keep: torch.Tensor) -> Perturber:
        """The perturbation of the images ``keep`` ``(b,)`` (indices) only."""
        pyramid = self.pyramid.subset(keep) if self.pyramid is not None else None
        return Perturber.__new__(Perturber)._set(self.x[keep], self.p[keep], pyramid)

    def scatter_(self, rows: torch.Tensor, other: Perturber, other_rows: torch.Tensor) -> None:
        """Replace the images ``rows`` ``(r,)`` by ``other``'s ``other_rows``, in place (no second
        copy of the blur pyramid)."""
        self.x.index_copy_(0, rows, other.x[other_rows])
        self.p.index_copy_(0, rows, other.p[other_rows])
        if self.pyramid is not None:
            self.pyramid.scatter_(rows, other.pyramid, other_rows)

    def repeated(self, k: int) -> Perturber:
        """The same perturbation with every image repeated ``k`` times (image-major), for ``K`` masks."""
        pyramid = self.pyramid.repeated(k) if self.pyramid is not None else None
        return Perturber.__new__(Perturber)._set(self.x.repeat_interleave(k, 0), self.p.repeat_interleave(k, 0),
                                                 pyramid)


class Problem:
    """A batch's fixed parts: the model, the normalised images, the perturbation and the score."""

    def __init__(self, classifier: Classifier, images: torch.Tensor, targets: torch.Tensor | None,
                 config: SolverConfig, seeds: torch.Tensor):
        self.classifier, self.config, self.seeds = classifier, config, seeds
        self.x = classifier.normalize(images)
        self.size = tuple(self.x.shape[-2:])
        self.perturb = Perturber(self.x, config, seeds)
        k = config.objective.masks_per_image
        self.perturb_k = self.perturb.repeated(k) if k > 1 else self.perturb
        with torch.no_grad():
            logits = self.logits(self.x)
        self.targets = logits.argmax(1) if targets is None else targets.to(logits.device)
        self.top5 = logits.topk(5, dim=1).indices  # the paper's localisation score sums these
        self.p_original = logits.softmax(1).gather(1, self.targets[:, None])[:, 0]

    def subset(self, keep: torch.Tensor) -> Problem:
        """The same problem for the images ``keep`` ``(b,)`` (indices) only."""
        clone = Problem.__new__(Problem)
        clone.classifier, clone.config, clone.size = self.classifier, self.config, self.size
        k = self.config.objective.masks_per_image
        clone.perturb = self.perturb.subset(keep)
        clone.perturb_k = self.perturb_k.subset(mask_rows(keep, k)) if k > 1 else clone.perturb
        for name in ("seeds", "x", "targets", "top5", "p_original"):
            setattr(clone, name, getattr(self, name)[keep])
        return clone

    def scatter_(self, rows: torch.Tensor, other: Problem, other_rows: torch.Tensor) -> None:
        """Replace the images ``rows`` ``(r,)`` by ``other``'s ``other_rows``, in place (the slots of
        :func:`pipeline.solve.stream.solve_stream` taking new images). Only for a problem that owns its
        tensors, as :meth:`subset` makes, and between iterations (no autograd graph alive)."""
        k = self.config.objective.masks_per_image
        self.perturb.scatter_(rows, other.perturb, other_rows)
        if k > 1:
            self.perturb_k.scatter_(mask_rows(rows, k), other.perturb, other_rows.repeat_interleave(k))
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


def mask_rows(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The rows ``(r * K,)`` of the ``K`` masks of the images ``rows`` ``(r,)`` (image-major)."""
    return (rows[:, None] * k + torch.arange(k, device=rows.device)).flatten()


def seen_inputs(problem: Problem, masks_up: torch.Tensor) -> torch.Tensor:
    """The inputs the model scores for masks ``(B, K, H, W)``: ``(B*K, 3, H, W)``, image-major.
    In the deletion game of extremal perturbation the region ``m`` is removed, so ``1 - m`` is kept."""
    batch, k = masks_up.shape[:2]
    keep = masks_up
    if problem.config.objective.areas and problem.config.objective.game == "delete":
        keep = 1 - masks_up
    return problem.perturb_k(keep.reshape(batch * k, 1, *masks_up.shape[-2:]))


def initial_masks(problem: Problem) -> torch.Tensor:
    """``(B, K, h, w)`` starting masks as the configuration says."""
    config, k = problem.config.mask, problem.config.objective.masks_per_image
    batch, size = len(problem.x), config.size
    if config.init == "uniform":
        return counter_uniform(problem.seeds, 2000, (k, size, size))
    if config.init == "circle":
        return circle_init(problem, size).expand(batch, k, size, size).clone()
    return torch.ones(batch, k, size, size, device=problem.x.device)


def circle_init(problem: Problem, size: int, steps: int = 12) -> torch.Tensor:
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


def l1_weight(objective_config, iteration: int | torch.Tensor) -> float | torch.Tensor:
    """The L1 weight at ``iteration`` (an int, or ``(B,)`` per-image counts): ``l1_coeff`` times a
    factor falling linearly from ``l1_start`` to 1 over the first ``l1_decay`` iterations."""
    boost = objective_config.l1_start - 1
    if not boost:
        return objective_config.l1_coeff
    if torch.is_tensor(iteration):
        left = (1 - iteration.double() / objective_config.l1_decay).clamp_min(0).float()
    else:
        left = max(0.0, 1 - iteration / objective_config.l1_decay)
    return objective_config.l1_coeff * (1 + boost * left)


def regulariser(problem: Problem, masks: torch.Tensor, masks_full: torch.Tensor,
                 iteration: int | torch.Tensor) -> torch.Tensor:
    """``masks_full``: the generated masks the area constraint counts (:func:`pipeline.solve.masks.generate`)."""
    objective = problem.config.objective
    reg = objective.tv_coeff * masklib.total_variation(masks, objective.tv_beta)
    if objective.areas:
        areas = torch.tensor(objective.areas, device=masks.device, dtype=torch.float64)  # exact counts
        weight = objective.area_coeff * objective.area_growth**iteration
        return reg + weight * masklib.area_penalty(masks_full, areas)
    return reg + l1_weight(objective, iteration) * masklib.sparsity(masks, objective)


def objective(problem: Problem, masks: torch.Tensor, iteration: int | torch.Tensor) -> torch.Tensor:
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
    seen = seen_inputs(problem, masks_up)
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
    return regulariser(problem, masks, masks_full, iteration) + sign * score


def final_scores(problem: Problem, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p_final, area, tv)``, each ``(B,)``, of masks ``(B, K, h, w)``, without noise or jitter."""
    batch, k = masks.shape[:2]
    with torch.no_grad():
        masks_up = masklib.upsample(masks, problem.size, problem.config.mask)
        probs = problem.logits(seen_inputs(problem, masks_up)).softmax(1)
        p_final = probs.gather(1, problem.targets.repeat_interleave(k)[:, None]).view(batch, k).mean(1)
        area = (1 - masks_up).flatten(1).mean(1)
        tv = masklib.total_variation(masks, problem.config.objective.tv_beta)
    return p_final, area, tv


def p_perturbed(problem: Problem) -> torch.Tensor:
    """``(B,)`` target probability of the fully perturbed images (mask all 0)."""
    with torch.no_grad():
        zeros = torch.zeros(len(problem.x), 1, *problem.size, device=problem.x.device)
        return problem.logits(problem.perturb(zeros)).softmax(1).gather(1, problem.targets[:, None])[:, 0]
