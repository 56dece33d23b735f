"""Continuous batching for per-image early stopping: slots that are refilled as images stop.

With early stopping, :func:`pipeline.solve.solver.solve` keeps a batch until its slowest image stops, and
shrinks it in power-of-two steps; on a GPU that cost time, as every new batch shape costs seconds
of planning (benchmarks/README.md, "Early stopping"). :func:`solve_stream` instead keeps ``S`` slots busy: when an
image stops (its window mean stopped improving, or it ran ``optim.iterations``) its result is given
out and the next image of the stream takes its slot. The batch keeps its shape while images wait;
after that the slots shrink in powers of two, as ``solve``'s batch does.

Every image follows the trajectory it would follow alone: its own iteration count keys its noise
and jitter draws and its windows, and its own step count drives Adam's bias correction
(:class:`RowOptimizer`; on a CPU the masks equal a plain solve's bit for bit, see
tests/solve/test_stream.py). Slots are refilled at window ends only, where the host reads which
images stopped: the loop's only host synchronisation besides handing results out.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator, NamedTuple

import torch

from ..config import OptimConfig, SolverConfig
from ..models import Classifier
from .problem import Problem, final_scores, initial_masks, objective, p_perturbed
from .solver import SolveResult, lr_scale
from .stopping import WindowStop, shrunk_rows

__all__ = ["StreamBatch", "solve_stream"]


class StreamBatch(NamedTuple):
    """Images entering the stream: ``images`` ``(b, 3, H, W)`` RGB in [0, 1] at the model's size,
    ``targets`` ``(b,)`` int64 or None (top-1), ``seeds`` ``(b,)`` int64, ``ids`` ``(b,)`` int64 handed
    back with each result (dataset indices, say)."""

    images: torch.Tensor
    targets: torch.Tensor | None
    seeds: torch.Tensor
    ids: torch.Tensor


class RowOptimizer:
    """Adam (or SGD with momentum) on masks ``(S, K, h, w)`` where every row has its own step count,
    so a row restarted for a new image starts from a fresh state while the others carry on. The
    update is :class:`torch.optim.Adam`'s (``SGD``'s) one, with the step count per row."""

    def __init__(self, masks: torch.Tensor, optim: OptimConfig, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.masks, self.optim, self.betas, self.eps = masks, optim, betas, eps
        self.first = torch.zeros_like(masks)  # Adam's exp_avg, or SGD's momentum buffer
        self.second = torch.zeros_like(masks)  # Adam's exp_avg_sq
        # float64: 1 - 0.999**t loses most of float32's digits at small t (torch computes it in
        # Python floats, which are doubles)
        self.steps = torch.zeros(len(masks), device=masks.device, dtype=torch.float64)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        shape = (-1,) + (1,) * (self.masks.dim() - 1)
        scale = lr_scale(self.steps, self.optim)  # each row at its own step of the schedule (1.0: constant)
        self.steps += 1
        if self.optim.optimizer == "sgd":  # a zero buffer makes the first step plain SGD, as torch's
            if self.optim.dampening:  # torch damps every step but a row's first, which copies the gradient
                first_step = (self.steps == 1).view(shape)
                self.first.mul_(self.optim.momentum).add_(grad, alpha=1 - self.optim.dampening)
                self.first = torch.where(first_step, grad, self.first)
            else:
                self.first.mul_(self.optim.momentum).add_(grad)
            if torch.is_tensor(scale):
                self.masks.sub_((self.optim.lr * scale).float().view(shape) * self.first)
            else:
                self.masks.add_(self.first, alpha=-self.optim.lr)
            return
        beta1, beta2 = self.betas
        step_size = (self.optim.lr * scale / (1 - beta1 ** self.steps)).float().view(shape)
        correction2_sqrt = (1 - beta2 ** self.steps).sqrt().float().view(shape)
        self.first.lerp_(grad, 1 - beta1)
        self.second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denominator = (self.second.sqrt() / correction2_sqrt).add_(self.eps)
        # addcdiv's order of operations, (-step * m) / d, so rows match torch's Adam bit for bit
        self.masks.add_(-step_size * self.first / denominator)

    def reset(self, rows: torch.Tensor) -> None:
        """Fresh state for the rows ``rows`` ``(r,)``."""
        for state in (self.first, self.second, self.steps):
            state.index_fill_(0, rows, 0)

    def subset(self, masks: torch.Tensor, keep: torch.Tensor) -> "RowOptimizer":
        """An optimiser of ``masks`` (the rows ``keep`` of this one's) carrying those rows' state."""
        optimizer = RowOptimizer(masks, self.optim, self.betas, self.eps)
        optimizer.first, optimizer.second, optimizer.steps = self.first[keep], self.second[keep], self.steps[keep]
        return optimizer


class _Pending:
    """Prepared images waiting for a slot: the problems of the stream's batches, in order."""

    def __init__(self, classifier: Classifier, batches: Iterator[StreamBatch], config: SolverConfig):
        self.classifier, self.batches, self.config = classifier, batches, config
        self.queue: deque = deque()  # [problem, ids, initial masks, p_perturbed, next row]
        self.exhausted = False

    def pull(self) -> bool:
        """Prepare the stream's next (non-empty) batch; False when there is none."""
        if self.exhausted:
            return False
        batch = next(self.batches, None)
        while batch is not None and not len(batch.ids):  # an empty batch has nothing to prepare
            batch = next(self.batches, None)
        if batch is None:
            self.exhausted = True
            return False
        device = self.classifier.device
        images = batch.images.to(device, non_blocking=True).float()
        seeds = batch.seeds.to(device=device, dtype=torch.int64)
        problem = Problem(self.classifier, images, batch.targets, self.config, seeds)
        self.queue.append([problem, batch.ids.to(device), initial_masks(problem), p_perturbed(problem), 0])
        return True

    def take(self, count: int) -> list[tuple]:
        """Up to ``count`` images, as ``(problem, rows, ids, initial masks, p_perturbed)`` pieces."""
        pieces = []
        while count:
            if not self.queue and not self.pull():
                break
            entry = self.queue[0]
            problem, ids, masks, p_perturbed, start = entry
            rows = torch.arange(start, min(start + count, len(ids)), device=ids.device)
            pieces.append((problem, rows, ids[rows], masks[rows], p_perturbed[rows]))
            count -= len(rows)
            entry[4] = start + len(rows)
            if entry[4] == len(ids):
                self.queue.popleft()
        return pieces


class _Slots:
    """The per-slot state, every tensor ``(S, ...)`` on the device. A slot is live while it holds an
    image not yet given out; a stopped image keeps its slot (optimised on, its result frozen in
    ``final*``) until the next hand-out."""

    def __init__(self, first: Problem, slots: int, config: SolverConfig):
        device = first.x.device
        self.config = config
        k = config.objective.masks_per_image
        # Placeholder rows (copies of the first images) that fill() overwrites.
        self.problem = first.subset(torch.arange(slots, device=device) % len(first.x))
        self.masks = torch.zeros(slots, k, config.mask.size, config.mask.size, device=device, requires_grad=True)
        self.optimizer = RowOptimizer(self.masks, config.optim)
        self.ids = torch.full((slots,), -1, dtype=torch.int64, device=device)
        self.p_perturbed = torch.zeros(slots, device=device)
        self.stop = WindowStop(slots, config.optim.stop_window, config.optim.stop_tol, device)
        self.live = torch.zeros(slots, dtype=torch.bool, device=device)
        self.stopped = torch.zeros(slots, dtype=torch.bool, device=device)
        self.final = self.masks.detach().clone()
        self.final_loss = torch.zeros(slots, device=device)
        self.final_done = torch.zeros(slots, dtype=torch.int64, device=device)

    def step(self) -> None:
        """One iteration of every slot; images that stop now get their result frozen."""
        optim = self.config.optim
        loss = objective(self.problem, self.masks, self.stop.done)
        grad, = torch.autograd.grad(loss.sum(), self.masks)
        self.optimizer.step(grad)
        with torch.no_grad():
            self.masks.clamp_(0, 1)
            loss = loss.detach()
            converged = self.stop.update(loss)  # each image's windows count from its own first iteration
            stopping = self.live & ~self.stopped & (converged | (self.stop.done >= optim.iterations))
            self.final = torch.where(stopping.view(-1, 1, 1, 1), self.masks, self.final)
            self.final_loss = torch.where(stopping, loss, self.final_loss)
            self.final_done = torch.where(stopping, self.stop.done, self.final_done)
            self.stopped |= stopping

    def hand_out(self, leaving: torch.Tensor) -> tuple[torch.Tensor, SolveResult]:
        """The ids and results of the stopped images in the slots ``leaving`` ``(r,)``, which are
        then empty."""
        p_final, area, tv = final_scores(self.problem, self.final)  # all slots: the shape stays fixed
        problem = self.problem
        result = SolveResult(self.final[leaving], problem.targets[leaving], problem.p_original[leaving],
                             self.p_perturbed[leaving], p_final[leaving], self.final_loss[leaving], area[leaving],
                             tv[leaving], self.final_done[leaving])
        ids = self.ids[leaving]
        self.live.index_fill_(0, leaving, False)
        return ids, result

    def fill(self, rows: torch.Tensor, pending: _Pending) -> int:
        """Put the next images of the stream into the empty slots ``rows`` (as many as there are);
        returns how many were filled."""
        offset = 0
        for source, source_rows, ids, masks, p_zero in pending.take(len(rows)):
            target = rows[offset:offset + len(source_rows)]
            offset += len(source_rows)
            self.problem.scatter_(target, source, source_rows)
            with torch.no_grad():
                self.masks.index_copy_(0, target, masks)
            self.ids.index_copy_(0, target, ids)
            self.p_perturbed.index_copy_(0, target, p_zero)
        filled = rows[:offset]
        self.optimizer.reset(filled)
        self.stop.reset(filled)
        for state, value in ((self.live, True), (self.stopped, False)):
            state.index_fill_(0, filled, value)
        return offset

    def shrink(self, remaining: int) -> None:
        """Once no image is waiting, with ``remaining`` (> 0) live: cut the slots to a power of two
        as :func:`pipeline.solve.solver.solve` cuts its batch. Empty slots cost as much as full ones, and
        on a CPU a smaller batch is proportionally cheaper; powers of two keep the shapes few."""
        keep = shrunk_rows(self.live, remaining)
        if keep is None:
            return
        self.problem = self.problem.subset(keep)
        self.masks = self.masks.detach()[keep].requires_grad_(True)
        self.optimizer = self.optimizer.subset(self.masks, keep)
        self.stop.subset(keep)
        for name in ("ids", "p_perturbed", "live", "stopped", "final", "final_loss", "final_done"):
            setattr(self, name, getattr(self, name)[keep])


def solve_stream(classifier: Classifier, batches: Iterable[StreamBatch], config: SolverConfig,
                 slots: int | None = None) -> Iterator[tuple[torch.Tensor, SolveResult]]:
    """Solve every image of ``batches`` with per-image early stopping, in ``slots`` slots kept full
    (default: the first batch's size). Batches may have any size; the stream pulls the next one
    when it needs images. Needs ``config.optim.stop_window > 0``.

    Yields:
        ``(ids, result)`` as images finish, in no fixed order: ``ids`` ``(r,)`` are the
        :class:`StreamBatch` ids of the ``r`` images, ``result`` their :class:`SolveResult`
        (on the device; ``iterations`` says how long each ran).
    """
    optim = config.optim
    if not optim.stop_window:
        raise ValueError("solve_stream needs early stopping (optim.stop_window > 0)")
    pending = _Pending(classifier, iter(batches), config)
    if not pending.pull():
        return
    state = _Slots(pending.queue[0][0], slots or len(pending.queue[0][0].x), config)
    live = state.fill(torch.arange(len(state.live), device=classifier.device), pending)  # counted on the host
    # Slots are handed out and refilled every `check` iterations. An image that reaches
    # optim.iterations in mid-window (when it is no multiple of the window) waits for the next one.
    check = min(optim.stop_window, optim.iterations)
    step = 0
    while True:
        state.step()
        step += 1
        if step % check:
            continue
        leaving = (state.live & state.stopped).nonzero()[:, 0]  # host read: once per window
        if not len(leaving):
            continue
        yield state.hand_out(leaving)
        live += state.fill(leaving, pending) - len(leaving)
        if not live:
            return
        if pending.exhausted and not pending.queue:
            state.shrink(live)
