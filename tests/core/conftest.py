"""Shared fixtures for the core tests: the real offline model and images shipped with scikit-image."""

import numpy as np
import pytest
import skimage.data
import torch

from pipeline.data import to_input
from pipeline.models import load_model


@pytest.fixture(scope="session")
def classifier():
    torch.set_num_threads(2)
    return load_model("efficientnet_lite0")


def sample(name: str) -> np.ndarray:
    """An RGB uint8 picture shipped with scikit-image."""
    array = getattr(skimage.data, name)()
    return array[..., :3] if array.ndim == 3 else np.stack([array] * 3, axis=-1)


@pytest.fixture(scope="session")
def chelsea():
    """scikit-image's chelsea (an Egyptian cat, ImageNet class 285) as (1, 3, 224, 224) in [0, 1]."""
    return to_input(sample("chelsea"), (224, 224))[None]


@pytest.fixture(scope="session")
def eight_images(chelsea):
    names = ["coffee", "astronaut", "rocket", "chelsea", "immunohistochemistry", "colorwheel", "coins", "hubble_deep_field"]
    return torch.stack([to_input(sample(n), (224, 224)) for n in names])
