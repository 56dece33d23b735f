"""`perturb explain` as a new user sees it (issue 21, item 12): progress during the solve, and
pictures at the image's aspect ratio instead of squashed to the model's square input."""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image
from torch import nn

from pipeline.config import resolve
from pipeline.jobs.explain import explain_image, picture_size
from pipeline.models import Classifier
from tests.helpers.models import classifier_of


def tiny_classifier() -> Classifier:
    """A small convolutional model with a 32 x 32 input (fast to solve against)."""
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return classifier_of(module, (32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, classes=8)


def test_picture_size_keeps_the_aspect_ratio():
    assert picture_size((300, 451), (224, 224)) == (224, 337)
    assert picture_size((600, 400), (224, 224)) == (336, 224)
    assert picture_size((50, 50), (224, 224)) == (224, 224)


def test_explain_shows_progress_and_writes_pictures_at_the_aspect_ratio(tmp_path, capsys):
    image = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(image)  # 300 x 451
    config = resolve("paper-fast", iterations=3)
    explained = explain_image(image, tiny_classifier(), config, tmp_path / "out", progress=True)
    assert "3/3" in capsys.readouterr().err  # the bar counted every iteration
    height, width = picture_size((300, 451), (32, 32))
    assert (height, width) == (32, 48)
    for path in explained.files:
        assert Image.open(path).size == (width, height)
    mask = np.asarray(Image.open(tmp_path / "out" / "mask.png"))
    assert mask.shape == (height, width, 3)
