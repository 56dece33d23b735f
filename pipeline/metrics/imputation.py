"""Noisy linear imputation (ROAD; Rong et al., ICML 2022), solved for a whole batch at once.

Every removed pixel becomes the weighted mean of its 8 neighbours (weight 1/6 for the 4 edge
neighbours, 1/12 for the 4 diagonals; at the image border the missing neighbours are left out and
the weights renormalised), each channel separately, and all removed pixels of an image are solved
jointly. For a removed pixel ``i`` with in-image neighbours ``N(i)``::

    (sum_{j in N(i)} w_ij) x_i - sum_{j in N(i), removed} w_ij x_j = sum_{j in N(i), kept} w_ij x_j

This is the system the reference (``tleemann/road_evaluation`` ``NoisyLinearImputer``, copied into
pytorch-grad-cam and Quantus) builds as a sparse matrix and solves with ``scipy.sparse.linalg.spsolve``
one image at a time on the CPU. The matrix is a graph Laplacian restricted to the removed pixels:
symmetric, and positive definite whenever the image keeps a pixel. Here every (image, mask,
channel) system of a batch is solved together on the device by conjugate gradients, preconditioned
by one multigrid V-cycle:

* the operator is stored as 9 coefficient maps per system (the pixel's own weight and its 8
  neighbours'), so applying it is 8 shifted multiply-adds of whole ``(N, C, H, W)`` tensors;
* coarse levels aggregate 2x2 pixels (piecewise-constant interpolation) and take the Galerkin
  product of the level above, which is again a 9-coefficient stencil computed by slicing, down to
  a grid of 2 pixels on a side;
* damped Jacobi smoothing before and after each coarse correction (symmetric, so the
  preconditioner is too), the coarse correction scaled up (aggregation's known over-stiffness).

Large removed regions, on which plain conjugate gradients had not reached 1e-4 of the direct
solution after 3,200 iterations at 224 px (the error travels about one pixel per iteration),
converge in 10 to 20 iterations.

After the solve, Gaussian noise of standard deviation ``noise`` (input units) is added to the
removed pixels only, from a generator seeded per image so that a result does not depend on how
images are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.errors import ConfigError

__all__ = ["ImputationConfig", "NEIGHBOUR_WEIGHTS", "linear_impute", "noisy_linear_impute", "seeded_noise"]

NEIGHBOUR_WEIGHTS: dict[tuple[int, int], float] = {
    (dy, dx): (1 / 12 if dy and dx else 1 / 6)
    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)
}
"""``(dy, dx) -> weight``: 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonals (the reference's)."""

_DIRECTIONS = tuple(NEIGHBOUR_WEIGHTS)


@dataclass(frozen=True)
class ImputationConfig:
    """How :func:`linear_impute` solves the systems.

    Attributes:
        tol: stop when every system's largest residual ``|b - A x|`` is at most ``tol`` times
            ``max(1, max |image|)``. The error can reach the residual over the system's smallest
            eigenvalue, about ``1e-4`` for a region spanning a 224 px image; at ``1e-9`` the
            solutions were within ``1e-7`` of the direct solve (``benchmarks/run.py road``).
        max_iter: upper bound on conjugate-gradient iterations (a safety net).
        check_every: iterations between convergence checks; each check is one device-to-host
            copy, and between checks the loop never synchronises.
        smoothing: damped-Jacobi sweeps before and after each coarse correction.
        dtype: the solve's precision. ``float64`` (default) reaches ``tol=1e-9``; ``float32`` cannot
            go much below a residual of ``1e-7``, i.e. errors near ``1e-3`` on large regions.
        chunk: systems (image x mask pairs) solved together, bounding memory (17.3 MiB per
            224-px system in float64, 8.6 MiB in float32). ``0`` (default): 8 on the CPU, where
            larger batches fall out of the cache (36 systems at once took 17.9 s of CPU against
            9.8 s in chunks of 8: ``benchmarks/run.py road --images 2 --chunk 36``), and 256 on
            a GPU.
    """

    tol: float = 1e-9
    max_iter: int = 200
    check_every: int = 5
    smoothing: int = 2
    dtype: torch.dtype = torch.float64
    chunk: int = 0

    def __post_init__(self) -> None:
        if not self.tol > 0:
            raise ConfigError(f"tol must be > 0; got {self.tol!r}")
        for name, low in (("max_iter", 1), ("check_every", 1), ("smoothing", 1), ("chunk", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"dtype must be torch.float32 or torch.float64; got {self.dtype!r}")


_JACOBI_DAMPING = 0.8
"""Below 1 so that the smoother is convergent (the Jacobi-scaled operator's eigenvalues are < 2)."""
_COARSE_SCALE = 2.0
"""Piecewise-constant aggregation makes coarse operators about twice too stiff; scaling the coarse
correction by 2 halves the iterations (15 against 15-30 at 64 px, all fractions)."""
_COARSEST_SWEEPS = 20
"""Jacobi sweeps that stand in for a direct solve on the coarsest (at most 2x2) grid."""


_CPU_CHUNK = 8
_DEVICE_CHUNK = 256


class _Level(NamedTuple):
    """One grid of the hierarchy: ``diag`` ``(N, 1, h, w)`` (1 on inactive cells), ``off``
    ``(N, 8, h, w)`` (coefficient coupling a cell to its neighbour in each of ``_DIRECTIONS``),
    ``active`` ``(N, 1, h, w)`` 0/1 (the cells that are unknowns)."""

    diag: Tensor
    off: Tensor
    active: Tensor


def _shifted(values: Tensor) -> list[Tensor]:
    """``values`` ``(N, C, h, w)`` seen from each neighbour: entry ``k`` holds, at ``x``, the value
    at ``x + _DIRECTIONS[k]`` (0 outside the grid)."""
    h, w = values.shape[-2:]
    padded = F.pad(values, (1, 1, 1, 1))
    return [padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _DIRECTIONS]


def _apply(level: _Level, values: Tensor) -> Tensor:
    """The level's operator applied to ``values`` ``(N, C, h, w)``."""
    h, w = values.shape[-2:]
    padded = F.pad(values, (1, 1, 1, 1))
    out = level.diag * values
    for k, (dy, dx) in enumerate(_DIRECTIONS):  # in place: the batch is large, temporaries are not free
        out.addcmul_(level.off[:, k:k + 1], padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w])
    return out


def _finest(unknown: Tensor) -> _Level:
    """The reference's system on the removed pixels (``unknown`` ``(N, 1, H, W)`` 0/1)."""
    weights = torch.tensor(list(NEIGHBOUR_WEIGHTS.values()), dtype=unknown.dtype, device=unknown.device)
    inside = torch.stack(_shifted(torch.ones_like(unknown)), 1)[:, :, 0]  # (N, 8, H, W): neighbour exists
    unknown_neighbour = torch.stack(_shifted(unknown), 1)[:, :, 0]
    weights = weights.view(1, 8, 1, 1)
    total = (weights * inside).sum(1, keepdim=True)  # border renormalisation: existing neighbours only
    off = -weights * unknown * unknown_neighbour
    return _Level(unknown * total + (1 - unknown), off, unknown)


def _coarsen(level: _Level) -> _Level:
    """The Galerkin operator ``P^T A P`` on 2x2 aggregates (``P`` copies a coarse value to its
    active fine cells); an odd last row or column is padded with inactive cells."""
    h, w = level.diag.shape[-2:]
    pad = (0, w % 2, 0, h % 2)
    active = F.pad(level.active, pad)
    diag = F.pad(level.diag * level.active, pad)
    off = F.pad(level.off, pad)
    coarse_diag = sum(diag[..., py::2, px::2] for py in (0, 1) for px in (0, 1))
    coarse_off = [torch.zeros_like(coarse_diag) for _ in _DIRECTIONS]
    index = {d: k for k, d in enumerate(_DIRECTIONS)}
    for k, (dy, dx) in enumerate(_DIRECTIONS):
        for py in (0, 1):
            for px in (0, 1):
                # A fine cell at parity (py, px) coupled in direction (dy, dx) reaches the aggregate
                # offset by ((py + dy) // 2, (px + dx) // 2).
                target = ((py + dy) // 2, (px + dx) // 2)
                part = off[:, k:k + 1, py::2, px::2]
                if target == (0, 0):
                    coarse_diag = coarse_diag + part
                else:
                    coarse_off[index[target]] = coarse_off[index[target]] + part
    coarse_active = (F.max_pool2d(active, 2) > 0).to(active.dtype)
    coarse_diag = coarse_diag * coarse_active + (1 - coarse_active)
    return _Level(coarse_diag, torch.cat(coarse_off, 1), coarse_active)


def _hierarchy(unknown: Tensor) -> list[_Level]:
    levels = [_finest(unknown)]
    while min(levels[-1].diag.shape[-2:]) > 2:
        levels.append(_coarsen(levels[-1]))
    return levels


def _restrict(residual: Tensor) -> Tensor:
    """``P^T``: the sum over each 2x2 aggregate."""
    h, w = residual.shape[-2:]
    return F.avg_pool2d(F.pad(residual, (0, w % 2, 0, h % 2)), 2) * 4


def _prolong(coarse: Tensor, level: _Level) -> Tensor:
    """``P``: each aggregate's value copied to its active fine cells."""
    h, w = level.diag.shape[-2:]
    return coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w] * level.active


def _vcycle(levels: list[_Level], residual: Tensor, depth: int, smoothing: int) -> Tensor:
    """One symmetric V-cycle from ``levels[depth]``: an approximation of ``A^-1 residual``."""
    level = levels[depth]
    step = _JACOBI_DAMPING * level.active / level.diag
    sweeps = _COARSEST_SWEEPS if depth == len(levels) - 1 else smoothing
    x = step * residual
    for _ in range(sweeps - 1):
        x.addcmul_(step, residual - _apply(level, x))
    if depth == len(levels) - 1:
        return x
    coarse = _vcycle(levels, _restrict(residual - _apply(level, x)), depth + 1, smoothing)
    x.add_(_prolong(coarse, level), alpha=_COARSE_SCALE)
    for _ in range(smoothing):
        x.addcmul_(step, residual - _apply(level, x))
    return x


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum((2, 3), keepdim=True)


def _solve(values: Tensor, unknown: Tensor, config: ImputationConfig) -> Tensor:
    """The removed pixels' solution (zero elsewhere) for ``values`` ``(N, C, H, W)`` and
    ``unknown`` ``(N, 1, H, W)`` 0/1, by multigrid-preconditioned conjugate gradients."""
    levels = _hierarchy(unknown)
    known_values = values * (1 - unknown)
    weights = torch.tensor(list(NEIGHBOUR_WEIGHTS.values()), dtype=values.dtype, device=values.device)
    rhs = unknown * sum(wk * neighbour for wk, neighbour in zip(weights, _shifted(known_values)))
    limit = config.tol * values.abs().amax((1, 2, 3), keepdim=True).clamp_min(1.0)
    tiny = torch.finfo(values.dtype).tiny
    x = torch.zeros_like(values)
    r = rhs.clone()
    z = _vcycle(levels, r, 0, config.smoothing)
    p, rz = z, _dot(r, z)
    for iteration in range(1, config.max_iter + 1):
        ap = _apply(levels[0], p).mul_(unknown)
        denom = _dot(p, ap)
        # A converged (or empty) system has p = 0: leave it still instead of dividing 0 by 0.
        alpha = torch.where(denom > 0, rz / denom.clamp_min(tiny), 0.0)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        if iteration % config.check_every == 0 and bool((r.abs().amax((1, 2, 3), keepdim=True) <= limit).all()):
            break
        z = _vcycle(levels, r, 0, config.smoothing)
        rz_new = _dot(r, z)
        p = z.addcmul_(torch.where(rz > 0, rz_new / rz.clamp_min(tiny), 0.0), p)
        rz = rz_new
    return x


def _check(images: Tensor, removed: Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ConfigError(f"images must be a float tensor of shape (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(removed.shape) != (n, 1, h, w):
        raise ConfigError(
            f"removed must have shape ({n}, 1, {h}, {w}) to match images {tuple(images.shape)}; "
            f"got {tuple(removed.shape)}"
        )


def linear_impute(images: Tensor, removed: Tensor, config: ImputationConfig = ImputationConfig()) -> Tensor:
    """The reference's linear imputation (without noise) of a batch, all images at once.

    Args:
        images: ``(N, C, H, W)`` float on any device: the pixels to keep and impute from.
        removed: ``(N, 1, H, W)`` bool (or 0/1) on the same device: ``True`` where a pixel (all
            its channels) is removed and imputed. Every image must keep at least one pixel.
        config: solver settings (:class:`ImputationConfig`).

    Returns:
        ``(N, C, H, W)`` in ``images``' dtype and device: kept pixels unchanged, removed pixels the
        solution of the 8-neighbour system.

    Raises:
        ConfigError: on mismatched shapes, or when an image has every pixel removed (its system
        has no unique solution; the reference's ``spsolve`` fails on it too).
    """
    _check(images, removed)
    removed = removed.to(images.device).bool()
    if bool(removed.flatten(1).all(1).any()):
        raise ConfigError("an image has every pixel removed; keep at least one pixel to impute from")
    n = images.shape[0]
    chunk = config.chunk or (_CPU_CHUNK if images.device.type == "cpu" else _DEVICE_CHUNK)
    out = []
    for start in range(0, n, chunk):
        values = images[start:start + chunk].to(config.dtype)
        unknown = removed[start:start + chunk].to(config.dtype)
        solved = _solve(values, unknown, config)
        out.append(torch.where(unknown.bool(), solved, values).to(images.dtype))
    return torch.cat(out)


def seeded_noise(seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal draws ``(len(seeds), *shape)``: row ``i`` is ``torch.randn(shape)`` from a CPU
    generator seeded with ``seeds[i]``, so it depends on that seed only (not on the batch or the
    device). One generator call per row and one copy to ``device``; nothing synchronises."""
    rows = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype)


def noisy_linear_impute(
    images: Tensor,
    removed: Tensor,
    noise: float = 0.01,
    seeds: Sequence[int] | None = None,
    config: ImputationConfig = ImputationConfig(),
) -> Tensor:
    """ROAD's noisy linear imputation: :func:`linear_impute`, then ``N(0, noise^2)`` added to the
    removed pixels.

    Args:
        images, removed, config: as :func:`linear_impute`.
        noise: standard deviation in the units of ``images``, ``>= 0`` (ROAD: 0.01).
        seeds: one integer per image (``N``); image ``i``'s noise is :func:`seeded_noise` of
            ``seeds[i]``, the same in any batch and on any device. ``None``: seeds ``0 .. N-1``.

    Returns:
        ``(N, C, H, W)`` like ``images``.
    """
    if not noise >= 0:
        raise ConfigError(f"noise must be >= 0; got {noise!r}")
    imputed = linear_impute(images, removed, config)
    if noise == 0:
        return imputed
    n = images.shape[0]
    seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ConfigError(f"seeds must give one integer per image ({n}); got {len(seeds)}")
    draws = seeded_noise(seeds, images.shape[1:], images.device, images.dtype)
    return torch.where(removed.to(images.device).bool(), imputed + noise * draws, imputed)
