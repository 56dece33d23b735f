"""Deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018).

The protocol follows ``eclique/RISE`` ``evaluation.py`` (``CausalMetric``):

* pixels are ranked by descending saliency of the full-resolution map, all three colour channels
  together; ties are broken by raster index (lowest flat index first, see :func:`pixel_order`);
* **deletion** starts from the image and replaces ``step`` pixels per step with the substrate, most
  salient first, until every pixel is gone; **insertion** starts from the substrate and puts
  ``step`` image pixels back per step, most salient first;
* with ``n = ceil(H * W / step)`` steps there are ``n + 1`` scores, the softmax probability of the
  target class after ``0, step, 2 * step, ...`` pixels were moved (the last step may be partial);
* the area under the curve is the trapezoid rule on ``[0, 1]`` (:func:`auc`).

Substrates (RISE's protocol, docs/metrics.md): deletion uses :func:`zero_substrate` (mean grey), insertion uses
:func:`blur_substrate`. Everything here is a pure function of tensors; nothing is printed.
"""

from __future__ import annotations

import enum
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from pipeline.errors import ConfigError
from pipeline.options import choice

__all__ = [
    "CausalMode",
    "RISE_STEP",
    "pixel_order",
    "causal_curves",
    "auc",
    "blur_substrate",
    "zero_substrate",
]

RISE_STEP = 224 * 8
"""Pixels moved per step in RISE's published evaluation (1792 at 224x224: 28 steps, 29 scores)."""

Forward = Callable[[Tensor], Tensor]
"""Maps a normalised batch ``(N, 3, H, W)`` to logits ``(N, C)``."""


class CausalMode(str, enum.Enum):
    """Which causal metric :func:`causal_curves` computes."""

    DELETION = "deletion"
    """Start from the image; the most salient pixels become substrate (lower AUC: better)."""

    INSERTION = "insertion"
    """Start from the substrate; put the most salient image pixels back (higher AUC: better)."""


def _is_int(value: object) -> bool:
    """True for Python/numpy integers, False for bools and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_bhw(saliency: Tensor) -> Tensor:
    """Return ``saliency`` as ``(B, H, W)``, accepting ``(B, 1, H, W)`` or ``(B, H, W)``."""
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        return saliency[:, 0]
    if saliency.dim() == 3:
        return saliency
    raise ConfigError(
        f"saliency must have shape (B, 1, H, W) or (B, H, W); got {tuple(saliency.shape)}"
    )


def pixel_order(saliency: Tensor) -> Tensor:
    """Rank pixels by descending saliency.

    Args:
        saliency: ``(B, 1, H, W)`` or ``(B, H, W)``, any real dtype, any device; larger means more
            important. Must be finite.

    Returns:
        ``(B, H * W)`` ``torch.long`` on the same device: flat raster indices (``y * W + x``),
        most salient first. **Tie-break:** equal saliencies keep raster order (lowest flat index
        first), via a stable sort. An upsampled 28x28 mask has large plateaus, so this choice is
        deterministic and reproducible rather than random jitter.
    """
    flat = _as_bhw(saliency).flatten(1)
    if not torch.isfinite(flat).all():
        raise ConfigError("saliency contains NaN or infinite values; allowed: finite numbers")
    return torch.sort(flat, dim=1, descending=True, stable=True).indices


def _pixel_rank(saliency: Tensor) -> Tensor:
    """``(B, H * W)`` long: each pixel's position in :func:`pixel_order` (inverse permutation)."""
    order = pixel_order(saliency)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _check_curve_inputs(
    images: Tensor, saliency: Tensor, targets: Tensor, substrate: Tensor
) -> None:
    """Raise :class:`ConfigError` unless the shapes of :func:`causal_curves`' inputs agree."""
    if images.dim() != 4:
        raise ConfigError(f"images must have shape (B, 3, H, W); got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if tuple(_as_bhw(saliency).shape) != (b, h, w):
        raise ConfigError(
            f"saliency shape {tuple(saliency.shape)} does not match images {tuple(images.shape)}; "
            f"allowed: ({b}, 1, {h}, {w}) or ({b}, {h}, {w})"
        )
    if substrate.shape != images.shape:
        raise ConfigError(
            f"substrate shape {tuple(substrate.shape)} must equal images shape "
            f"{tuple(images.shape)}"
        )
    if targets.shape != (b,) or targets.dtype not in (torch.int32, torch.int64):
        raise ConfigError(
            f"targets must be an integer tensor of shape ({b},); "
            f"got shape {tuple(targets.shape)} dtype {targets.dtype}"
        )


def causal_curves(
    forward: Forward,
    images: Tensor,
    saliency: Tensor,
    targets: Tensor,
    substrate: Tensor,
    mode: CausalMode | str,
    step: int = RISE_STEP,
    chunk: int = 64,
) -> Tensor:
    """Deletion or insertion curves for a batch of images, batched over images and steps.

    Input ``k`` of image ``b`` (``k = 0 .. n``) shows the image where a pixel's rank in
    :func:`pixel_order` is ``>= step * k`` (deletion) or ``< step * k`` (insertion), and the
    substrate elsewhere; all 3 channels move together.

    Args:
        forward: callable mapping a normalised batch ``(N, 3, H, W)`` to logits ``(N, C)``; called
            with ``N <= chunk`` under ``torch.no_grad()``. Put the model in ``eval()`` first.
        images: ``(B, 3, H, W)`` float, normalised.
        saliency: ``(B, 1, H, W)`` or ``(B, H, W)``; larger = more important; moved to
            ``images.device``.
        targets: ``(B,)`` long, the class whose softmax probability is scored.
        substrate: ``(B, 3, H, W)``, same dtype/device as ``images``: what replaces deleted pixels
            (deletion) or the starting image (insertion).
        mode: ``"deletion"`` or ``"insertion"`` (:class:`CausalMode`).
        step: pixels moved per step, ``>= 1``. RISE's evaluation used 1792 at 224x224.
        chunk: model inputs per ``forward`` call, ``>= 1``; trades memory for speed only.

    Returns:
        ``(B, n + 1)`` float32 on ``images.device``, ``n = ceil(H * W / step)``: the target's
        softmax probability (softmax taken in float32) after ``0, step, ..., H * W`` pixels moved.
    """
    mode = choice("mode", mode, CausalMode)
    for name, value in (("step", step), ("chunk", chunk)):
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1; got {value!r}")
    _check_curve_inputs(images, saliency, targets, substrate)
    b, _, h, w = images.shape
    n_points = -(-(h * w) // step) + 1
    with torch.no_grad():
        rank = _pixel_rank(saliency.to(images.device))
        targets = targets.to(device=images.device, dtype=torch.long)
        scores = []
        # Flat index j enumerates (image, step) pairs image-major; chunks cut across images so
        # every forward call is full-sized regardless of B and n.
        for start in range(0, b * n_points, chunk):
            j = torch.arange(start, min(start + chunk, b * n_points), device=images.device)
            img_idx, k = j // n_points, j % n_points
            moved = rank[img_idx] < (step * k)[:, None]
            show_image = ~moved if mode is CausalMode.DELETION else moved
            inputs = torch.where(
                show_image.view(-1, 1, h, w), images[img_idx], substrate[img_idx]
            )
            probs = torch.softmax(forward(inputs).float(), dim=1)
            scores.append(probs.gather(1, targets[img_idx, None])[:, 0])
        return torch.cat(scores).view(b, n_points)


def auc(curves: Tensor) -> Tensor:
    """Area under curves sampled evenly on ``[0, 1]`` (trapezoid rule, as RISE's ``auc``).

    Args:
        curves: ``(B, P)`` float with ``P >= 2`` points per curve (or ``(P,)`` for one curve).

    Returns:
        ``(B,)`` (or a 0-d tensor for ``(P,)`` input): ``(sum(s) - s[0]/2 - s[-1]/2) / (P - 1)``.
    """
    if curves.dim() not in (1, 2) or curves.shape[-1] < 2:
        raise ConfigError(
            f"curves must have shape (B, P) or (P,) with P >= 2 points; got {tuple(curves.shape)}"
        )
    total = curves.sum(-1) - curves[..., 0] / 2 - curves[..., -1] / 2
    return total / (curves.shape[-1] - 1)


def blur_substrate(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """Gaussian-blurred copy of ``images``: RISE's insertion substrate (klen 11, sigma 5).

    Uses ``torchvision.transforms.functional.gaussian_blur`` (a normalised, truncated
    ``kernel_size`` x ``kernel_size`` Gaussian with reflect padding). RISE convolved with zero
    padding, which darkens a ``kernel_size // 2`` border towards mean grey; reflect padding keeps
    the border an image-like blur, so scores near the border can differ slightly from RISE's.

    Args:
        images: ``(B, 3, H, W)`` float, normalised; ``min(H, W) > kernel_size // 2``.
        kernel_size: odd integer ``>= 1``.
        sigma: standard deviation in pixels, ``> 0``.

    Returns:
        ``(B, 3, H, W)``, same dtype and device as ``images``.
    """
    if not _is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size must be an odd integer >= 1; got {kernel_size!r}")
    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0; got {sigma!r}")
    if images.dim() != 4 or min(images.shape[-2:]) <= kernel_size // 2:
        raise ConfigError(
            f"images must have shape (B, 3, H, W) with H, W > kernel_size // 2 = "
            f"{kernel_size // 2}; "
            f"got {tuple(images.shape)}"
        )
    return gaussian_blur(images, [kernel_size, kernel_size], [float(sigma), float(sigma)])


def zero_substrate(images: Tensor) -> Tensor:
    """Zeros shaped like ``images`` ``(B, 3, H, W)``: mean grey in normalised space (RISE)."""
    return torch.zeros_like(images)
