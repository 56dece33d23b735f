"""Fixtures shared by the whole suite: the real offline model and images shipped with scikit-image."""

import pytest
import torch

from pipeline.models import load_model
from tests.helpers.images import sample_input


@pytest.fixture(scope="session")
def classifier():
    torch.set_num_threads(2)
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def chelsea():
    """scikit-image's chelsea (an Egyptian cat, ImageNet class 285) as (1, 3, 224, 224) in [0, 1]."""
    return sample_input("chelsea")[None]


@pytest.fixture(scope="session")
def eight_images(chelsea):
    names = ["coffee", "astronaut", "rocket", "chelsea", "immunohistochemistry", "colorwheel", "coins", "hubble_deep_field"]
    return torch.stack([sample_input(n) for n in names])
