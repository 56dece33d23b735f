"""RISE (Petsiuk, Das & Saenko, BMVC 2018) as the saliency method ``rise``, batched on the device.

``N`` random binary grids of ``s x s`` cells (each cell kept with probability ``p``) are upsampled
bilinearly past the image size and cropped at a random shift, giving soft masks ``M_i`` ``(H, W)``;
the saliency of class ``c`` is ``sum_i P_c(image * M_i) M_i / (N p)``, the mean of the masks weighted
by the class's softmax probability on the masked image (normalised by ``E[M] = p`` as in the paper).
The masks multiply the **normalised** image, so a masked pixel becomes the dataset's mean colour, as
in the paper's code and TorchRay's.

The masks are TorchRay's (``torchray.attribution.rise.rise``), drawn from the same seed in the same
order: a ``torch.Generator`` seeded with ``seed`` draws, in chunks of :data:`TORCHRAY_CHUNK` masks,
the grids (``rand < p``) and then the row and column shifts; every grid is reflect-padded by one
cell, upsampled bilinearly (``align_corners=False``) to ``ceil((H + ceil(H / s)) / s)`` pixels per
cell and cropped at its shift. Only these random numbers are drawn on the CPU (``N s^2`` of them,
negligible); the upsampling, masking and forward passes run on the device in chunks of masks, each
chunk applied to every image of the batch in one forward pass of ``batch_size`` masked images. All
images of a run share the same masks (the ``seed`` option, default 0), so an image's map does not
depend on its batch. On the CPU the masks equal TorchRay's bit for bit (TorchRay on a GPU draws its
grids from the CUDA generator instead); TorchRay's map is this one times ``p`` (it divides by ``N``)
and uses a sigmoid of the model's output, so a model returning the log-odds of the softmax gives
TorchRay the same scores (``tests/methods/test_rise.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .library_options import merge_options
from .registry import SaliencyMethod, register

if TYPE_CHECKING:
    from ..models import Classifier

__all__ = ["CPU_NUM_MASKS", "DEFAULTS", "PAPER_NUM_MASKS", "Rise", "RiseDraws", "register_all", "rise_draws",
           "rise_masks", "rise_method", "rise_saliency"]

PAPER_NUM_MASKS = 8000
"""The paper's ``N`` for ResNet50 (4000 for VGG16), used on a GPU."""

CPU_NUM_MASKS = 1000
"""``N`` on a CPU: 8000 forward passes per image take minutes there (Lite0, 224 px, 2 cores)."""

TORCHRAY_CHUNK = 32
"""Masks per draw from the generator: TorchRay's default ``batch_size``, which fixes the order of
its random numbers (grids, then shifts, per chunk)."""

DEFAULTS: dict[str, Any] = {"num_masks": None, "num_cells": 7, "p": 0.5, "seed": 0, "batch_size": 128}
"""``num_masks`` None: :data:`PAPER_NUM_MASKS` on a GPU, :data:`CPU_NUM_MASKS` on the CPU (the
resolved number is what :meth:`Rise.check` returns and a run records). ``batch_size``: masked
images per forward pass."""

REDUCTION = ("probability-weighted mean of the masks, sum_i P_target(x * M_i) M_i / (N p); one map "
             "per image (the masks are single-channel)")


@dataclass(frozen=True)
class RiseDraws:
    """The random numbers of ``N`` RISE masks: grids ``(N, 1, s, s)`` float 0/1 and shifts ``(N,)``."""

    grids: torch.Tensor
    shift_rows: torch.Tensor
    shift_cols: torch.Tensor


def rise_draws(num_masks: int, num_cells: int, size: tuple[int, int], p: float, seed: int) -> RiseDraws:
    """Draw TorchRay's grids and shifts for ``num_masks`` masks of images ``size`` ``(H, W)``."""
    generator = torch.Generator().manual_seed(int(seed))
    cells = [math.ceil(side / num_cells) for side in size]
    grids, rows, cols = [], [], []
    for start in range(0, num_masks, TORCHRAY_CHUNK):
        count = min(num_masks - start, TORCHRAY_CHUNK)
        grids.append((torch.rand(count, 1, num_cells, num_cells, generator=generator) < p).float())
        rows.append(torch.randint(0, cells[0], (count,), generator=generator))
        cols.append(torch.randint(0, cells[1], (count,), generator=generator))
    return RiseDraws(torch.cat(grids), torch.cat(rows), torch.cat(cols))


def rise_masks(draws: RiseDraws, size: tuple[int, int], start: int, stop: int,
               device: torch.device | str) -> torch.Tensor:
    """Masks ``start:stop`` of ``draws`` as ``(n, H, W)`` float32 on ``device``, built there."""
    height, width = size
    num_cells = draws.grids.shape[-1]
    grids = draws.grids[start:stop].to(device)
    count = grids.shape[0]
    # TorchRay upsamples to the image plus one cell of slack, with a one-cell reflection border
    slack = [side + math.ceil(side / num_cells) for side in size]
    cells = [math.ceil(side / num_cells) for side in slack]
    padded = F.pad(grids, (1, 1, 1, 1), mode="reflect")
    upsampled = F.interpolate(padded, size=(cells[0] * (num_cells + 2), cells[1] * (num_cells + 2)),
                              mode="bilinear", align_corners=False)[:, 0]
    rows = cells[0] + draws.shift_rows[start:stop].to(device)[:, None] + torch.arange(height, device=device)
    cols = cells[1] + draws.shift_cols[start:stop].to(device)[:, None] + torch.arange(width, device=device)
    index = torch.arange(count, device=device)[:, None, None]
    return upsampled[index, rows[:, :, None], cols[:, None, :]]


def rise_saliency(classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor, *, num_masks: int,
                  num_cells: int = 7, p: float = 0.5, seed: int = 0, batch_size: int = 128) -> torch.Tensor:
    """RISE saliency ``(B, 1, H, W)`` float32 of ``images01`` ``(B, 3, H, W)`` in [0, 1] for ``targets``.

    Every chunk of ``max(1, batch_size // B)`` masks is applied to all ``B`` images in one forward
    pass; the sum over masks accumulates on the device with no host copy.
    """
    device = classifier.device
    x = classifier.normalize(images01.to(device, torch.float32))
    batch = x.shape[0]
    size = (x.shape[-2], x.shape[-1])
    targets = targets.to(device, torch.int64)
    cpu = rise_draws(num_masks, num_cells, size, p, seed)
    # one small host-to-device copy of all the random numbers (N s^2 + 2N), none per chunk
    draws = RiseDraws(cpu.grids.to(device), cpu.shift_rows.to(device), cpu.shift_cols.to(device))
    chunk = max(1, batch_size // batch)
    saliency = torch.zeros(batch, size[0] * size[1], device=device)
    with torch.no_grad():
        for start in range(0, num_masks, chunk):
            masks = rise_masks(draws, size, start, min(start + chunk, num_masks), device)
            count = masks.shape[0]
            masked = (x[:, None] * masks[None, :, None]).flatten(0, 1)  # (B * n, 3, H, W), image-major
            probs = classifier(masked).float().softmax(1).view(batch, count, -1)
            scores = probs.gather(2, targets.view(batch, 1, 1).expand(batch, count, 1))[..., 0]  # (B, n)
            saliency += scores @ masks.view(count, -1)
    return (saliency / (num_masks * p)).view(batch, 1, *size)


@dataclass(frozen=True)
class Rise:
    """The batched function of ``rise`` (:data:`pipeline.methods.registry.SaliencyFn`); :meth:`check`
    resolves the options (``num_masks`` by device) without touching an image."""

    def check(self, classifier: Classifier | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The full options, checked; ``num_masks`` None becomes the device's default.

        Raises:
            ConfigError: an unknown option or a value out of range.
        """
        resolved = merge_options("rise", options, DEFAULTS)
        if resolved["num_masks"] is None:
            on_cpu = classifier is None or classifier.device.type == "cpu"
            resolved["num_masks"] = CPU_NUM_MASKS if on_cpu else PAPER_NUM_MASKS
        for name in ("num_masks", "num_cells", "batch_size"):
            if not isinstance(resolved[name], int) or resolved[name] < 1:
                raise ConfigError(f"rise option {name} must be a positive integer; got {resolved[name]!r}")
        if not 0 < float(resolved["p"]) < 1:
            raise ConfigError(f"rise option p must be in (0, 1); got {resolved['p']!r}")
        if classifier is not None and resolved["num_cells"] > min(classifier.input_size):
            raise ConfigError(f"rise option num_cells={resolved['num_cells']} exceeds the input size "
                              f"{classifier.input_size}")
        return resolved

    def __call__(self, classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
                 seeds: torch.Tensor, **options: Any) -> torch.Tensor:
        """``(B, 1, H, W)`` RISE saliency (``seeds`` unused: the masks come from the ``seed`` option)."""
        resolved = self.check(classifier, options)
        return rise_saliency(classifier, images01, targets, **resolved)


def rise_method() -> SaliencyMethod:
    """The saliency method ``rise``."""
    return SaliencyMethod(
        name="rise", fn=Rise(), options=dict(DEFAULTS), reduction=REDUCTION,
        description="RISE: random masks weighted by the class probability (Petsiuk et al., BMVC 2018)")


def register_all() -> None:
    """Register ``rise``."""
    register("rise", rise_method)
