"""Shared fixtures for the core tests: the real offline model and images shipped with scikit-image."""

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from pipeline.models import load_model


@pytest.fixture(scope="session")
def classifier():
    torch.set_num_threads(2)
    return load_model("efficientnet_lite0")


def sample(name: str) -> np.ndarray:
    """An RGB uint8 picture shipped with scikit-image."""
    array = getattr(skimage.data, name)()
    return array[..., :3] if array.ndim == 3 else np.stack([array] * 3, axis=-1)


def sample_input(name: str, size=(224, 224)) -> torch.Tensor:
    """A scikit-image picture as a model input ``(3, H, W)`` in [0, 1]. The fixtures' own resize
    (torch's antialiased bilinear), fixed so that the tests' numbers do not move with the product's
    resize (``pipeline.data.to_input``, PIL)."""
    image = torch.from_numpy(np.array(sample(name))).permute(2, 0, 1).float().unsqueeze(0) / 255
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)[0]


@pytest.fixture(scope="session")
def chelsea():
    """scikit-image's chelsea (an Egyptian cat, ImageNet class 285) as (1, 3, 224, 224) in [0, 1]."""
    return sample_input("chelsea")[None]


@pytest.fixture(scope="session")
def eight_images(chelsea):
    names = ["coffee", "astronaut", "rocket", "chelsea", "immunohistochemistry", "colorwheel", "coins", "hubble_deep_field"]
    return torch.stack([sample_input(n) for n in names])
