"""The mask: its upsampling, regularisers, and the saliency map derived from it.

Masks are ``(B, K, h, w)`` in ``[0, 1]`` with **1 = keep, 0 = perturb**; ``K`` is 1 except for
extremal perturbation, which solves one mask per target area. The same :func:`upsample` is used
by the solver and by every reader, so stored masks map to exactly what was optimised.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MaskConfig, ObjectiveConfig
from ..errors import ConfigError
from .perturbations import gaussian_blur


def upsample(masks: torch.Tensor, size: tuple[int, int], config: MaskConfig | None = None) -> torch.Tensor:
    """Map ``(B, K, h, w)`` mask parameters to ``(B, K, H, W)`` masks on the input.

    ``bilinear`` uses ``align_corners=True`` (jacobgil's); ``nearest-blur`` repeats cells then smooths
    with a Gaussian of ``smooth_sigma`` output pixels (the paper's code); ``smooth-max`` is
    extremal perturbation's smooth mask cropped to the input (:func:`generate`).
    """
    return generate(masks, size, config)[0]


def generate(masks: torch.Tensor, size: tuple[int, int],
             config: MaskConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(on_input, full)``: the masks on the input ``(B, K, H, W)``, and the whole generated masks
    that the area constraint counts: for ``smooth-max`` with its margin, ``(B, K, H', W')``
    (TorchRay's full mask), else the same tensor as ``on_input``."""
    mode = config.upsample if config is not None else "bilinear"
    if mode == "bilinear":
        up = F.interpolate(masks, size=size, mode="bilinear", align_corners=True)
        return up, up
    if mode == "nearest-blur":
        up = gaussian_blur(F.interpolate(masks, size=size, mode="nearest"), config.smooth_sigma)
        return up, up
    geometry = _geometry(masks.shape[-1], config.step, float(config.smooth_sigma), masks.device.type,
                         masks.device.index)
    margin = geometry.margin
    if masks.shape[-2] != masks.shape[-1] or margin + max(size) > geometry.out:
        raise ConfigError(f"mask.upsample=smooth-max needs a square grid whose size * step covers the input: "
                          f"grid {tuple(masks.shape[-2:])}, step {config.step}, input {tuple(size)}; "
                          f"set mask.size={math.ceil(max(size) / config.step)}")
    batch, k = masks.shape[:2]
    full = _SmoothMax.apply(masks.reshape(batch * k, *masks.shape[-2:]), geometry, float(config.coldness))
    full = full.clamp(0, 1).view(batch, k, geometry.out, geometry.out)
    return full[..., margin : margin + size[0], margin : margin + size[1]], full


@dataclass(frozen=True)
class _Geometry:
    """TorchRay's ``MaskGenerator`` layout for a ``grid x grid`` parameter tensor.

    Output pixel ``u`` (of ``out``, margin included) reads the parameter cells
    ``floor(u / step) + j - padding``, ``j < taps``, each weighted by ``weight`` of its distance;
    the weight depends on ``u`` only through ``u mod step``, so it is ``(step, step, taps**2)``.
    """

    step: int
    margin: int
    padding: int
    taps: int
    mid: int  # cells after unfolding
    out: int  # output side, margin included
    weight: torch.Tensor  # (step, step, taps**2)


@functools.lru_cache(maxsize=16)
def _geometry(grid: int, step: int, sigma: float, device_type: str, device_index: int | None) -> _Geometry:
    margin = sigma
    padding = 1 + math.ceil((margin + sigma) / step)
    radius = 1 + math.ceil(sigma / step)
    taps = 2 * radius + 1
    mid = grid + 2 * padding - taps + 1
    out = step * mid - step + 1
    sub = torch.arange(step, dtype=torch.float32)  # u mod step
    offsets = torch.arange(taps, dtype=torch.float32) - padding  # the cell read, relative to floor(u / step)
    # Distance of pixel u from the centre of cell i, margin + step * i, as TorchRay measures it.
    delta = sub.view(-1, 1) - (margin + step * offsets.view(1, -1))  # (step, taps)
    distance = torch.sqrt(delta.view(step, 1, taps, 1) ** 2 + delta.view(1, step, 1, taps) ** 2)
    weight = torch.exp(-2 * ((distance / sigma - 0.5).clamp(min=0) ** 2))  # (step, step, taps, taps)
    device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
    return _Geometry(step, round(margin), padding, taps, mid, out,
                     weight.reshape(step, step, taps * taps).to(device))


class _SmoothMax(torch.autograd.Function):
    """Smooth-max masks ``(N, out, out)`` of parameters ``(N, grid, grid)``, unclamped.

    Each output pixel is ``y = sum_j v_j softmax(c v)_j`` over its ``taps**2`` weighted parameters
    ``v_j = w_j p_j``; ``dy/dv_j = s_j (1 + c (v_j - y))``. Autograd would keep several tensors of
    ``taps**2 * side**2`` numbers per mask alive (23 MB each at 224 px). This keeps ``v`` and
    ``softmax(c v)`` only while they fit in ``SAVE_BYTES``, and otherwise recomputes them in the
    backward pass, a few masks at a time, keeping only the parameters.
    """

    CHUNK = 4  # masks per piece: bounds the temporaries to about 0.1 GB each
    SAVE_BYTES = 2**30

    @staticmethod
    def _values(params: torch.Tensor, geometry: _Geometry) -> torch.Tensor:
        """``(n, mid, mid, 1, 1, T)`` parameters read by each cell times ``(step, step, T)`` weights:
        ``(n, mid, step, mid, step, T)`` (row-major over output pixels, taps last)."""
        n, taps = len(params), geometry.taps
        cells = F.unfold(params.unsqueeze(1), taps, padding=geometry.padding)  # (n, T, mid*mid)
        cells = cells.transpose(1, 2).reshape(n, geometry.mid, 1, geometry.mid, 1, taps * taps)
        return cells * geometry.weight.view(1, 1, geometry.step, 1, geometry.step, -1)

    @staticmethod
    def forward(ctx, params: torch.Tensor, geometry: _Geometry, coldness: float) -> torch.Tensor:
        ctx.save_for_backward(params)
        ctx.geometry, ctx.coldness = geometry, coldness
        side, out = geometry.mid * geometry.step, geometry.out
        keep = 2 * len(params) * side * side * geometry.taps**2 * params.element_size() <= _SmoothMax.SAVE_BYTES
        pieces, ctx.kept = [], [] if keep else None
        for piece in params.split(_SmoothMax.CHUNK):
            values = _SmoothMax._values(piece, geometry)
            weights = torch.softmax(coldness * values, dim=-1)
            pooled = torch.linalg.vecdot(values, weights)  # no product temporary
            if keep:
                ctx.kept.append((values, weights, pooled))
            pieces.append(pooled.reshape(len(piece), side, side)[:, :out, :out])
        return torch.cat(pieces)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        params, = ctx.saved_tensors
        geometry, coldness = ctx.geometry, ctx.coldness
        side, out, mid, step = geometry.mid * geometry.step, geometry.out, geometry.mid, geometry.step
        grads = []
        for j, (piece, piece_grad) in enumerate(zip(params.split(_SmoothMax.CHUNK), grad.split(_SmoothMax.CHUNK))):
            n = len(piece)
            if ctx.kept is not None:
                values, weights, pooled = ctx.kept[j]
            else:
                values = _SmoothMax._values(piece, geometry)
                weights = torch.softmax(coldness * values, dim=-1)
                pooled = torch.linalg.vecdot(values, weights)
            pooled = pooled.unsqueeze(-1)
            padded = F.pad(piece_grad, (0, side - out, 0, side - out)).reshape(n, mid, step, mid, step, 1)
            # dvalues = g * s * (1 + c (v - y)), then times the tap weights: one temporary, in place
            dvalues = (values - pooled).mul_(coldness).add_(1).mul_(weights).mul_(padded)
            dvalues.mul_(geometry.weight.view(1, 1, step, 1, step, -1))
            dcells = dvalues.sum((2, 4))  # (n, mid, mid, T)
            dcells = dcells.reshape(n, mid * mid, -1).transpose(1, 2)
            grads.append(F.fold(dcells, piece.shape[-2:], geometry.taps, padding=geometry.padding)[:, 0])
        ctx.kept = None
        return torch.cat(grads), None, None


def saliency(masks: torch.Tensor, game: str, size: tuple[int, int], config: MaskConfig | None = None) -> torch.Tensor:
    """Saliency ``(B, 1, H, W)`` from masks ``(B, K, h, w)``: ``1 - m`` for the deletion game (what was
    deleted), ``m`` for the preservation game (what was kept); the mean over the ``K`` masks."""
    up = upsample(masks.float(), size, config)
    heat = 1 - up if game == "delete" else up
    return heat.mean(dim=1, keepdim=True)


def total_variation(masks: torch.Tensor, beta: float) -> torch.Tensor:
    """``mean |m[i+1,j]-m[i,j]|^beta + mean |m[i,j+1]-m[i,j]|^beta`` per image, ``(B, K, h, w) -> (B,)``."""
    dy = (masks[..., 1:, :] - masks[..., :-1, :]).abs().pow(beta)
    dx = (masks[..., :, 1:] - masks[..., :, :-1]).abs().pow(beta)
    return dy.flatten(1).mean(1) + dx.flatten(1).mean(1)


def sparsity(masks: torch.Tensor, objective: ObjectiveConfig) -> torch.Tensor:
    """L1 term per image, ``(B, K, h, w) -> (B,)``: of ``1 - m`` (what is deleted) in the deletion game,
    of ``m`` (what is kept) in the preservation game; a mean or a sum over the cells."""
    amount = 1 - masks if objective.game == "delete" else masks
    flat = amount.abs().flatten(1)
    return flat.mean(1) if objective.l1_reduction == "mean" else flat.sum(1)


def area_penalty(masks_up: torch.Tensor, areas: torch.Tensor) -> torch.Tensor:
    """Extremal perturbation's area constraint per image, ``(B, K, H, W) -> (B,)``.

    ``mean (sort(m_k) - r_k)^2`` where ``r_k`` has ``floor((1 - a_k) N)`` zeros then ones, summed over
    the ``K`` areas ``a_k`` (``areas`` is ``(K,)``). The count is computed in the dtype of ``areas``:
    the solver passes float64, as TorchRay's Python floats.
    """
    batch, k, height, width = masks_up.shape
    n = height * width
    ranks = torch.arange(n, device=masks_up.device)
    zeros = (n * (1 - areas)).floor().to(ranks.dtype)  # (K,)
    reference = (ranks.view(1, n) >= zeros.view(k, 1)).to(masks_up.dtype)  # (K, N)
    ordered = masks_up.flatten(2).sort(dim=2).values  # (B, K, N)
    return (ordered - reference).pow(2).mean(2).sum(1)


def circle_masks(radii: torch.Tensor, size: int) -> torch.Tensor:
    """Centred circles of ``radii`` (fractions of the mask side) as ``(R, 1, size, size)`` masks,
    0 inside (perturbed) and 1 outside, softened by a one-cell linear edge."""
    coords = torch.arange(size, dtype=torch.float32, device=radii.device) - (size - 1) / 2
    distance = (coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2).sqrt() / size  # (size, size)
    return (distance.unsqueeze(0) - radii.view(-1, 1, 1)).mul(size).clamp(0, 1).unsqueeze(1)


def resize(masks, size: tuple[int, int]) -> torch.Tensor:
    """Stored masks resized bilinearly with ``align_corners=True`` (jacobgil's way), e.g. 28x28 ->
    224x224: ``(k, c, h, w)`` tensor or array, any float dtype -> float32 ``(k, c, H, W)`` on the
    masks' device; values stay in the masks' range."""
    tensor = masks if isinstance(masks, torch.Tensor) else torch.from_numpy(np.asarray(masks))
    if tensor.ndim != 4:
        raise ConfigError(f"resize() needs masks shaped (k, c, h, w), got {tuple(tensor.shape)}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ConfigError(f"resize() needs a positive (H, W), got {tuple(size)}")
    return upsample(tensor.float(), (height, width))  # the bilinear mapping, as for a solver's masks
