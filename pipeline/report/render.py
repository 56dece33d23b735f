"""Pictures of masks: jacobgil's heatmap, mask, cam and perturbed images.

Inputs are single images: RGB ``(3, H, W)`` in [0, 1], saliency/mask ``(1, H, W)`` in [0, 1];
outputs are ``(H, W, 3)`` uint8 arrays ready for ``PIL.Image.fromarray``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Float ``[0, 1]`` array to uint8, clipped and rounded."""
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)


def heatmap(saliency: torch.Tensor) -> np.ndarray:
    """JET colour map of the saliency normalised to [0, 1] by its own range, ``(H, W, 3)`` float."""
    s = saliency[0].detach().float().cpu().numpy()
    s = (s - s.min()) / max(float(s.max() - s.min()), 1e-12)
    return colormaps["jet"](s)[..., :3]


def pictures(image: torch.Tensor, mask_up: torch.Tensor, saliency: torch.Tensor,
             perturbed: torch.Tensor) -> dict[str, np.ndarray]:
    """jacobgil's four pictures as uint8 arrays.

    Args:
        image: ``(3, H, W)`` RGB in [0, 1].
        mask_up: ``(1, H, W)`` upsampled mask, 1 = keep.
        saliency: ``(1, H, W)`` saliency (``1 - m`` for the deletion game).
        perturbed: ``(3, H, W)`` RGB in [0, 1], the image seen through the mask.
    """
    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy()
    heat = heatmap(saliency)
    cam = heat + rgb
    return {
        "heatmap": to_uint8(heat),
        "mask": to_uint8(np.repeat(mask_up[0].detach().float().cpu().numpy()[..., None], 3, axis=2)),
        "cam": to_uint8(cam / cam.max()),
        "perturbated": to_uint8(perturbed.detach().float().cpu().permute(1, 2, 0).numpy()),
    }


def save_pictures(pictures_: dict[str, np.ndarray], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Write each picture as ``<out_dir>/<prefix><name>.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in pictures_.items():
        path = out / f"{prefix}{name}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths
