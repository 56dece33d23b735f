"""Pictures shipped with scikit-image, as arrays, model inputs and image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image


def sample(name: str) -> np.ndarray:
    """An RGB uint8 picture shipped with scikit-image."""
    array = getattr(skimage.data, name)()
    return array[..., :3] if array.ndim == 3 else np.stack([array] * 3, axis=-1)


def sample_input(name: str, size=(224, 224)):
    """A scikit-image picture as a model input ``(3, H, W)`` in [0, 1]. The fixtures' own resize
    (torch's antialiased bilinear), fixed so that the tests' numbers do not move with the product's
    resize (``pipeline.data.to_input``, PIL)."""
    import torch
    import torch.nn.functional as F

    image = torch.from_numpy(np.array(sample(name))).permute(2, 0, 1).float().unsqueeze(0) / 255
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)[0]


PICTURES = ["chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "colorwheel"]
IMAGENET_LAYOUT = {"n01440764": PICTURES[2:4], "n01443537": PICTURES[4:6], "n02124075": PICTURES[:2]}
"""Three classes of ImageNet: tench (0), goldfish (1), Egyptian cat (285), two pictures each."""


def write_folder(root: Path, layout: dict[str, list[str]], size: tuple[int, int] | None = None,
                 suffix: str = ".jpg") -> Path:
    """An ImageNet-style folder at ``root``: ``layout`` maps each wnid (a subfolder) to the
    scikit-image pictures saved in it as ``<name><suffix>``, resized to ``size`` (width, height)
    when given. Returns ``root``."""
    for wnid, names in layout.items():
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for name in names:
            picture = Image.fromarray(sample(name))
            (picture.resize(size) if size else picture).save(root / wnid / f"{name}{suffix}")
    return root
