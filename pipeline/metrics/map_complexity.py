"""Complexity of a saliency map: Sparseness (Chalasani et al., ICML 2020) and Complexity (Bhatt
et al., IJCAI 2020), computed as Quantus 0.6 computes them, for a whole batch at once.

Both look at the absolute map scaled to a maximum of 1, ``a = |s| / max |s|`` per image (an
all-zero map is left as it is), flattened to ``n = H x W`` values:

* **Sparseness** is the Gini index of ``a + 1e-7`` (the epsilon keeps an all-zero map defined):
  with the values sorted ascending, ``G = sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))``, ``i = 1..n``.
  0 for a uniform map, ``1 - 1/n`` for a one-hot map; higher = sparser (concentrated) map.
* **Complexity** is the Shannon entropy (natural log) of ``p = a / sum a``:
  ``-sum_i p_i log(p_i + 1e-12)``. ``log(n)`` for a uniform map, 0 for a one-hot map; lower =
  simpler map.

Quantus divides by the maximum over the whole batch it is given rather than per image; the two
agree for one image per call, and the epsilons make batched Quantus values differ from these by
about ``1e-7`` at most.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.errors import ConfigError

__all__ = ["sparseness", "complexity"]

_GINI_EPS = 1e-7
_LOG_EPS = 1e-12


def _absolute_scaled(saliency: Tensor) -> Tensor:
    """``(B, n)`` float64: ``|s| / max |s|`` per image (all-zero maps unchanged)."""
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        flat = saliency.flatten(1)
    elif saliency.dim() == 3:
        flat = saliency.flatten(1)
    else:
        raise ConfigError(f"saliency must have shape (B, 1, H, W) or (B, H, W); got {tuple(saliency.shape)}")
    flat = flat.to(torch.float64).abs()
    if not torch.isfinite(flat).all():
        raise ConfigError("saliency contains NaN or infinite values; allowed: finite numbers")
    top = flat.amax(1, keepdim=True)
    return torch.where(top > 0, flat / torch.where(top > 0, top, 1.0), flat)


def sparseness(saliency: Tensor) -> Tensor:
    """Gini index of each absolute map (see the module docstring).

    Args:
        saliency: ``(B, 1, H, W)`` or ``(B, H, W)``, any real dtype and device.

    Returns:
        ``(B,)`` float64 on the same device, in ``[0, 1)``.
    """
    values = torch.sort(_absolute_scaled(saliency) + _GINI_EPS, dim=1).values
    n = values.shape[1]
    index = torch.arange(1, n + 1, device=values.device, dtype=values.dtype)
    return ((2 * index - n - 1) * values).sum(1) / (n * values.sum(1))


def complexity(saliency: Tensor) -> Tensor:
    """Entropy of each normalised absolute map (see the module docstring).

    Args:
        saliency: ``(B, 1, H, W)`` or ``(B, H, W)``, any real dtype and device; an all-zero map
            gives NaN (it has no distribution), as in Quantus.

    Returns:
        ``(B,)`` float64 on the same device, in ``[0, log(H W)]``.
    """
    values = _absolute_scaled(saliency)
    p = values / values.sum(1, keepdim=True)
    return -(p * torch.log(p + _LOG_EPS)).sum(1)
