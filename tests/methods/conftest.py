"""Tiny models and images for the saliency-method tests (no downloads, 16-24 px, a few ms each)."""

import numpy as np
import torch
from torch import nn

from pipeline.imagenet import ClassVocabulary
from pipeline.models import Classifier, frozen

WNIDS = tuple(f"n{i:08d}" for i in range(3))


def classifier_of(module: nn.Module, size=(16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> Classifier:
    """A three-class Classifier around ``module`` (identity normalisation unless told)."""
    vocabulary = ClassVocabulary(wnids=WNIDS, names=("a", "b", "c"))
    return Classifier(frozen(module), "tiny", size, mean, std, vocabulary)


def images(batch: int, size=(16, 16), seed=0) -> torch.Tensor:
    """``(batch, 3, H, W)`` uniform in [0, 1], reproducible."""
    return torch.from_numpy(np.random.default_rng(seed).uniform(size=(batch, 3, *size))).float()


def linear_model(weights: torch.Tensor) -> nn.Module:
    """Three classes: logit 0 = sum(weights * x) over (3, H, W), logits 1 and 2 = 0."""
    linear = nn.Linear(weights.numel(), 3, bias=False)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0] = weights.flatten()
    return nn.Sequential(nn.Flatten(), linear)


class TinyConv(nn.Module):
    """``conv (3 -> channels, kernel) -> activation -> global average pool -> linear (channels -> 3)``,
    with named children (``conv``, ``act``, ``pool``, ``fc``) so tests can name layers."""

    def __init__(self, channels=4, kernel=1, activation: nn.Module | None = None, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, channels, kernel, padding=kernel // 2)
        self.act = activation if activation is not None else nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, 3)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.act(self.conv(x)))))
