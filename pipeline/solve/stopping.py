"""Per-image early stopping: the window rule, and the batch shapes a solve shrinks through.

The rule (:class:`pipeline.config.OptimConfig`): the objective is averaged over windows of
``stop_window`` iterations, counted from each image's own first iteration, and an image has
converged at the end of a window whose mean improved on the previous window's by at most
``stop_tol * max(|previous mean|, 1e-3)``. :func:`pipeline.solve.solver.solve` (one count for the
batch) and :func:`pipeline.solve.stream.solve_stream` (a count per slot) both keep it here.
"""

from __future__ import annotations

import torch


class WindowStop:
    """The window bookkeeping of ``B`` images, every tensor ``(B,)`` on the device."""

    def __init__(self, batch: int, window: int, tol: float, device: torch.device):
        self.window, self.tol = window, tol
        self.done = torch.zeros(batch, dtype=torch.int64, device=device)  # iterations each image has run
        self.total = torch.zeros(batch, device=device)  # sum of the objective over the current window
        self.previous = torch.full((batch,), float("nan"), device=device)  # last window's mean; NaN: none yet

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """Count one iteration of per-image ``loss`` ``(B,)``; ``(B,)`` bool: the images whose window
        ended now with a mean that improved on the previous one's by at most the tolerance."""
        self.done += 1
        self.total += loss
        ended = self.done % self.window == 0
        mean = self.total / self.window
        # NaN (no previous window yet) compares False: a first window never converges.
        converged = ended & (self.previous - mean <= self.tol * self.previous.abs().clamp_min(1e-3))
        self.previous = torch.where(ended, mean, self.previous)
        self.total = torch.where(ended, torch.zeros_like(mean), self.total)
        return converged

    def reset(self, rows: torch.Tensor) -> None:
        """Start the images ``rows`` ``(r,)`` afresh (a slot taking a new image)."""
        for state, value in ((self.done, 0), (self.total, 0), (self.previous, float("nan"))):
            state.index_fill_(0, rows, value)

    def subset(self, keep: torch.Tensor) -> None:
        """Keep the images ``keep`` ``(b,)`` (indices) only."""
        self.done, self.total, self.previous = self.done[keep], self.total[keep], self.previous[keep]


def shrunk_rows(live: torch.Tensor, remaining: int) -> torch.Tensor | None:
    """The rows to keep of a batch whose ``live`` ``(B,)`` bool holds ``remaining`` (> 0) images
    still being solved, or None to keep them all: the power of two holding the live images when that
    at least halves the batch (or turns a count that is no power of two into one), stopped rows
    filling the rest. Every new batch shape costs planning (cuDNN plans, lazily loaded kernels, a
    torch.compile graph: on an H200 the first 25 iterations of a shape took 4 s where later ones
    take 0.02 s each); powers of two keep a whole dataset run to a few shapes, each planned once."""
    batch = len(live)
    size = 1 << (remaining - 1).bit_length()
    if not (size <= batch // 2 or (size < batch and batch & (batch - 1))):
        return None
    filler = (~live).nonzero()[: size - remaining, 0]
    return torch.cat([live.nonzero()[:, 0], filler]).sort().values
