"""Tiny models and images for the saliency-method tests (no downloads, 16-24 px, a few ms each);
wrap a model with :func:`tests.helpers.models.classifier_of`."""

import numpy as np
import torch
from torch import nn


def images(batch: int, size=(16, 16), seed=0) -> torch.Tensor:
    """``(batch, 3, H, W)`` uniform in [0, 1], reproducible."""
    return torch.from_numpy(np.random.default_rng(seed).uniform(size=(batch, 3, *size))).float()


def linear_model(weights: torch.Tensor, classes: int = 3) -> nn.Module:
    """``classes`` classes: logit 0 = sum(weights * x) over (3, H, W), the other logits 0."""
    linear = nn.Linear(weights.numel(), classes, bias=False)
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


def red_minus_green() -> nn.Module:
    """1x1 convolution (A_0 = red, A_1 = green) -> mean pool -> linear with row [1, -1] for class 0 of
    3: logit 0 = mean(red) - mean(green), so Grad-CAM's weights are [1, -1] / (H W) and its map is
    ReLU(red - green)."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    linear = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
        linear.weight.copy_(torch.tensor([[1.0, -1.0], [0, 0], [0, 0]]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)
