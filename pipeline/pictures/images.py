"""Pictures of one image and its saliency: the JET heatmap, overlays, ``perturb explain``'s four
pictures (jacobgil's heatmap, mask, cam and perturbed image) and JPEG thumbnails.

Inputs are single images: RGB ``(3, H, W)`` tensors or ``(H, W, 3)`` arrays in [0, 1], saliency
``(1, H, W)`` or ``(H, W)`` (any range; larger = more salient). Outputs are ``(H, W, 3)`` arrays:
float in [0, 1], or uint8 ready for ``PIL.Image.fromarray`` where the name says so.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

OVERLAY_WEIGHT: float = 0.45
"""Share of the heatmap in the overlays of galleries and report thumbnails (the image keeps 0.55)."""


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Float ``[0, 1]`` array to uint8, clipped and rounded."""
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)


def _plane(saliency: Any) -> np.ndarray:
    """``(1, H, W)`` or ``(H, W)`` tensor/array -> ``(H, W)`` float array."""
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().float().cpu().numpy()
    s = np.asarray(saliency)
    return s[0] if s.ndim == 3 else s


def _rgb(image: Any) -> np.ndarray:
    """``(3, H, W)`` tensor or ``(H, W, 3)`` array -> ``(H, W, 3)`` float array."""
    if isinstance(image, torch.Tensor):
        return image.detach().float().cpu().permute(1, 2, 0).numpy()
    return np.asarray(image)


def heatmap(saliency: Any) -> np.ndarray:
    """JET colour map of the saliency normalised to [0, 1] by its own range (a constant map is
    all blue), ``(H, W, 3)`` float."""
    s = _plane(saliency)
    s = (s - s.min()) / max(float(s.max() - s.min()), 1e-12)
    return colormaps["jet"](s)[..., :3]


def overlay(image: Any, saliency: Any, weight: float = OVERLAY_WEIGHT) -> np.ndarray:
    """``(1 - weight) * image + weight * heatmap(saliency)``, ``(H, W, 3)`` float (not clipped).

    Args:
        image: RGB in [0, 1], ``(3, H, W)`` tensor or ``(H, W, 3)`` array.
        saliency: ``(1, H, W)`` or ``(H, W)`` at the image's size.
    """
    return (1 - weight) * _rgb(image) + weight * heatmap(saliency)


def explain_pictures(image: torch.Tensor, mask_up: torch.Tensor, saliency: torch.Tensor,
                     perturbed: torch.Tensor) -> dict[str, np.ndarray]:
    """jacobgil's four pictures as uint8 arrays: ``heatmap``, ``mask``, ``cam`` (heatmap plus
    image, scaled by its maximum) and ``perturbated``.

    Args:
        image: ``(3, H, W)`` RGB in [0, 1].
        mask_up: ``(1, H, W)`` upsampled mask, 1 = keep.
        saliency: ``(1, H, W)`` saliency (``1 - m`` for the deletion game).
        perturbed: ``(3, H, W)`` RGB in [0, 1], the image seen through the mask.
    """
    heat = heatmap(saliency)
    cam = heat + _rgb(image)
    return {
        "heatmap": to_uint8(heat),
        "mask": to_uint8(np.repeat(_plane(mask_up)[..., None], 3, axis=2)),
        "cam": to_uint8(cam / cam.max()),
        "perturbated": to_uint8(_rgb(perturbed)),
    }


def save_pictures(pictures: dict[str, np.ndarray], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Write each uint8 picture as ``<out_dir>/<prefix><name>.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in pictures.items():
        path = out / f"{prefix}{name}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def jpeg_thumbnail(picture: np.ndarray, side: int, quality: int = 80) -> bytes:
    """A uint8 ``(H, W, 3)`` picture shrunk to ``side`` pixels on its longer side (Lanczos; never
    enlarged), as JPEG bytes: photographs take a fifth of a PNG's size."""
    small = Image.fromarray(picture)
    small.thumbnail((int(side), int(side)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


BOX_COLOUR = (255, 255, 255)
"""Outline of ground-truth boxes drawn on pictures (white, with a black edge inside so it shows
on light and dark images alike)."""


def _canvas(picture: np.ndarray) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """A PIL image of uint8 ``(H, W, 3)`` ``picture`` to draw on, and the outline width that
    scales with the picture so lines stay visible in a thumbnail."""
    image = Image.fromarray(picture)
    return image, ImageDraw.Draw(image), max(2, round(max(picture.shape[:2]) / 100))


def draw_boxes(picture: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A copy of uint8 ``(H, W, 3)`` ``picture`` with ``boxes`` ``(K, 4)`` ``(xmin, ymin, xmax,
    ymax)`` (pixel coordinates of the picture, inclusive) outlined; lines scale with the picture
    so they stay visible in a thumbnail."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    if not len(boxes):
        return picture
    image, draw, width = _canvas(picture)
    for xmin, ymin, xmax, ymax in boxes.tolist():
        draw.rectangle((xmin, ymin, xmax, ymax), outline=BOX_COLOUR, width=width)
        if xmax - xmin > 2 * width and ymax - ymin > 2 * width:
            draw.rectangle((xmin + width, ymin + width, xmax - width, ymax - width), outline=(0, 0, 0), width=1)
    return np.asarray(image)


FOUND_BOX_COLOUR = (255, 0, 255)
"""Outline of the box localisation found (magenta, dashed): a colour the JET heatmap never takes,
so it stands apart from the overlay and from the white ground-truth boxes."""


def draw_dashed_boxes(picture: np.ndarray, boxes: np.ndarray, colour: tuple[int, int, int] = FOUND_BOX_COLOUR
                      ) -> np.ndarray:
    """A copy of uint8 ``(H, W, 3)`` ``picture`` with ``boxes`` ``(K, 4)`` (inclusive pixel
    coordinates of the picture) outlined in dashes of ``colour``, as thick as :func:`draw_boxes`'s
    lines, so the two kinds of box are told apart by style as well as by colour."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    if not len(boxes):
        return picture
    image, draw, width = _canvas(picture)
    dash = 3 * width
    for xmin, ymin, xmax, ymax in boxes.tolist():
        # each side in dashes of `dash` pixels with gaps as long; corners always drawn
        for x in range(xmin, xmax + 1, 2 * dash):
            end = min(x + dash - 1, xmax)
            draw.rectangle((x, ymin, end, ymin + width - 1), fill=colour)
            draw.rectangle((x, ymax - width + 1, end, ymax), fill=colour)
        for y in range(ymin, ymax + 1, 2 * dash):
            end = min(y + dash - 1, ymax)
            draw.rectangle((xmin, y, xmin + width - 1, end), fill=colour)
            draw.rectangle((xmax - width + 1, y, xmax, end), fill=colour)
    return np.asarray(image)
