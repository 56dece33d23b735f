"""Perturbation operators: what replaces the pixels a mask removes.

Every operator works on a batch of normalised images ``(B, 3, H, W)`` and is differentiable where
it depends on the mask. Masks here are already upsampled to the image size, ``(B, 1, H, W)`` in
``[0, 1]``, with **1 = keep the pixel, 0 = perturb it**.

Two shapes of operator:

* *substrate* operators compute a fixed ``p(x)`` once per batch; the perturbed input is the blend
  ``x_m = m * x + (1 - m) * p(x)`` (:func:`blend`);
* the paper's *mask-modulated blur* blurs each pixel with its own ``sigma(u) = sigma0 * (1 - m(u))``;
  it is made differentiable as a blur pyramid (:class:`BlurPyramid`).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F

from ..config import PerturbationConfig

def gaussian_blur(images: torch.Tensor, sigma: float, kernel_size: int = 0, truncate: float = 3.0,
                  padding: str = "reflect") -> torch.Tensor:
    """Gaussian blur of ``(B, C, H, W)`` with reflect borders (OpenCV's default border) or zero ones.

    ``kernel_size`` 0 takes ``2 * ceil(truncate * sigma) + 1``, reduced (odd) to fit the image when
    borders reflect. The blur is applied as two 1-D passes: a sigma-10 kernel is 61 wide, and a
    61 x 61 2-D convolution costs 30x more for the same result.
    """
    if kernel_size <= 0:
        kernel_size = 2 * math.ceil(truncate * sigma) + 1
    if padding == "zero":
        mode = "constant"
    else:
        mode = "reflect"
        limit = min(images.shape[-2:])
        kernel_size = min(kernel_size, limit - 1 if limit % 2 == 0 else limit)
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    batch, channels, height, width = images.shape
    flat = images.reshape(batch * channels, 1, height, width)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1))
    return flat.view(batch, channels, height, width)


def median_blur(images: torch.Tensor, size: int = 11) -> torch.Tensor:
    """Median filter of ``(B, C, H, W)`` over ``size x size`` windows, replicated borders
    (as OpenCV's ``medianBlur`` and ``scipy.ndimage.median_filter(mode='nearest')``).

    On CPU it calls scipy's C implementation (about 20x faster than sorting unfolded windows);
    on other devices it takes medians of unfolded windows, one channel at a time.
    """
    if images.device.type == "cpu":
        import scipy.ndimage

        array = images.detach().float().numpy()
        filtered = scipy.ndimage.median_filter(array, size=(1, 1, size, size), mode="nearest")
        return torch.from_numpy(filtered).to(images.dtype)
    pad = size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    batch, channels, height, width = images.shape
    out = torch.empty_like(images)
    for c in range(channels):  # the unfolded windows are size**2 times the image
        windows = F.unfold(padded[:, c : c + 1], kernel_size=size)  # (B, size*size, H*W)
        out[:, c] = windows.median(dim=1).values.view(batch, height, width)
    return out


def substrate(images: torch.Tensor, config: PerturbationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """The fully perturbed version ``p(x)`` of normalised ``images`` ``(B, 3, H, W)``.

    For ``modulated-blur`` this is the strongest pyramid level (``sigma0`` everywhere), which is
    what the mask-modulated blur gives where ``m = 0``.
    """
    kind = config.kind
    if kind in ("blur", "modulated-blur"):
        return gaussian_blur(images, config.sigma, config.kernel_size, config.truncate, config.padding)
    if kind == "median":
        return median_blur(images, config.median_size)
    if kind == "jacobgil-average":
        return 0.5 * (gaussian_blur(images, 5.0, 11) + median_blur(images, 11))
    if kind == "constant":
        if config.constant == "zero":
            return torch.zeros_like(images)
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + config.noise_std * noise


def blend(images: torch.Tensor, mask: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """``m * x + (1 - m) * p(x)`` for images/perturbed ``(B, 3, H, W)`` and mask ``(B, 1, H, W)``."""
    return perturbed + mask * (images - perturbed)


class BlurPyramid:
    """The paper's mask-modulated blur, differentiable in the mask.

    Level ``l`` of ``L`` is the image blurred with ``sigma_l = sigma0 * l / (L - 1)`` (level 0 is
    the image itself). A pixel with mask value ``m`` wants ``sigma = sigma0 * (1 - m)``, that is the
    fractional level ``t = (1 - m) * (L - 1)``; its value is the linear interpolation between the two
    levels around ``t``, written as hat weights ``max(0, 1 - |t - l|)`` so the gradient in ``m`` is
    non-zero everywhere except exactly on level boundaries.

    ``interpolation="floor"`` is TorchRay's form of the same interpolation: the mask indexes the
    levels from the most perturbed one, ``p = m (L - 1)``, and blends level ``floor(p)`` with the
    next one. The values are the same; the gradient differs where ``p`` is a whole number: a mask
    at exactly 0 (fully perturbed) gets the slope towards the next level, one at exactly 1 none.
    """

    def __init__(self, images: torch.Tensor, sigma0: float = 10.0, levels: int = 8, kernel_size: int = 0,
                 truncate: float = 3.0, padding: str = "reflect", interpolation: str = "hat"):
        """Build the ``(L, B, 3, H, W)`` pyramid of normalised ``images`` ``(B, 3, H, W)`` once."""
        self.levels, self.interpolation = levels, interpolation
        sigmas = [sigma0 * level / (levels - 1) for level in range(levels)]
        self.pyramid = torch.stack(
            [images] + [gaussian_blur(images, s, kernel_size, truncate, padding) for s in sigmas[1:]]
        )

    @classmethod
    def _of(cls, pyramid: torch.Tensor, interpolation: str) -> BlurPyramid:
        """A pyramid of already blurred levels ``(L, B, 3, H, W)``."""
        made = cls.__new__(cls)
        made.levels, made.interpolation, made.pyramid = len(pyramid), interpolation, pyramid
        return made

    def subset(self, keep: torch.Tensor) -> BlurPyramid:
        """The pyramid of the images ``keep`` ``(b,)`` (indices) only."""
        return BlurPyramid._of(self.pyramid[:, keep], self.interpolation)

    def repeated(self, k: int) -> BlurPyramid:
        """Every image repeated ``k`` times (image-major)."""
        return BlurPyramid._of(self.pyramid.repeat_interleave(k, dim=1), self.interpolation)

    def scatter_(self, rows: torch.Tensor, other: BlurPyramid, other_rows: torch.Tensor) -> None:
        """Replace the images ``rows`` ``(r,)`` by ``other``'s ``other_rows``, in place."""
        self.pyramid.index_copy_(1, rows, other.pyramid[:, other_rows])

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        """Perturb with per-pixel blur for an upsampled mask ``(B, 1, H, W)``; returns ``(B, 3, H, W)``."""
        grid = torch.arange(self.levels, device=mask.device, dtype=mask.dtype).view(-1, 1, 1, 1, 1)
        if self.interpolation == "floor":
            return (self._floor_weights(mask, grid) * self.pyramid).sum(dim=0)
        position = (1 - mask.clamp(0, 1)) * (self.levels - 1)  # (B, 1, H, W)
        weights = (1 - (position.unsqueeze(0) - grid).abs()).clamp(min=0)  # (L, B, 1, H, W)
        return (weights * self.pyramid).sum(dim=0)

    def _floor_weights(self, mask: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """``(L, B, 1, H, W)`` weights of TorchRay's interpolation (level 0 here = its level L - 1)."""
        top = self.levels - 1
        position = mask.unsqueeze(0) * top  # (1, B, 1, H, W), counted from the most perturbed level
        low = position.detach().floor().clamp(0, top)
        fraction = position - low
        lower = top - low  # this pyramid's index of level floor(p), and of the next one (clamped)
        upper = (lower - 1).clamp(min=0)
        return (1 - fraction) * (grid == lower) + fraction * (grid == upper)
