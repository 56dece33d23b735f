"""Pictures shipped with scikit-image, as arrays, model inputs and image files."""

from __future__ import annotations

import numpy as np
import skimage.data


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
