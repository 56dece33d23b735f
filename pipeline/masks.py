"""The mask: its upsampling, regularisers, and the saliency map derived from it.

Masks are ``(B, K, h, w)`` in ``[0, 1]`` with **1 = keep, 0 = perturb**; ``K`` is 1 except for
extremal perturbation, which solves one mask per target area. The same :func:`upsample` is used
by the solver and by every reader, so stored masks map to exactly what was optimised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import MaskConfig, ObjectiveConfig
from .perturbations import gaussian_blur


def upsample(masks: torch.Tensor, size: tuple[int, int], config: MaskConfig | None = None) -> torch.Tensor:
    """Upsample ``(B, K, h, w)`` masks to ``(B, K, H, W)``.

    ``bilinear`` uses ``align_corners=True`` (the seed); ``nearest-blur`` repeats cells then smooths
    with a Gaussian of ``smooth_sigma`` output pixels (the paper's code).
    """
    mode = config.upsample if config is not None else "bilinear"
    if mode == "bilinear":
        return F.interpolate(masks, size=size, mode="bilinear", align_corners=True)
    up = F.interpolate(masks, size=size, mode="nearest")
    return gaussian_blur(up, config.smooth_sigma)


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

    ``mean (sort(m_k) - r_k)^2`` where ``r_k`` has ``(1 - a_k) N`` zeros then ``a_k N`` ones, summed over
    the ``K`` areas ``a_k`` (``areas`` is ``(K,)``).
    """
    batch, k, height, width = masks_up.shape
    n = height * width
    ranks = torch.arange(n, device=masks_up.device, dtype=masks_up.dtype)
    reference = (ranks.view(1, n) >= ((1 - areas.view(k, 1)) * n)).to(masks_up.dtype)  # (K, N)
    ordered = masks_up.flatten(2).sort(dim=2).values  # (B, K, N)
    return (ordered - reference).pow(2).mean(2).sum(1)


def circle_masks(radii: torch.Tensor, size: int) -> torch.Tensor:
    """Centred circles of ``radii`` (fractions of the mask side) as ``(R, 1, size, size)`` masks,
    0 inside (perturbed) and 1 outside, softened by a one-cell linear edge."""
    coords = torch.arange(size, dtype=torch.float32, device=radii.device) - (size - 1) / 2
    distance = (coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2).sqrt() / size  # (size, size)
    return (distance.unsqueeze(0) - radii.view(-1, 1, 1)).mul(size).clamp(0, 1).unsqueeze(1)
