"""Tiny models: the one random convolutional network the tests (and the fuzzing benchmarks) share,
a :class:`~pipeline.models.Classifier` around any small module, the mean-colour classifier whose
outputs are worked out by hand, and the torch thread count.

Models whose weights are set by hand, so that a test's expected numbers can be worked out on paper,
stay in their tests; they are wrapped with :func:`classifier_of`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from pipeline.imagenet import ClassVocabulary
from pipeline.models import Classifier, frozen


def tiny_convnet(classes: int = 1000, seed: int = 0) -> nn.Module:
    """A fixed random network ``(B, 3, H, W) -> (B, classes)`` logits, for any ``H, W >= 1``:
    3x3 convolution (8 channels), ReLU, average pooling to 4x4 (so where a pixel is matters),
    linear. Eval mode, no gradients for its parameters; the same weights for the same ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, classes))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval().requires_grad_(False)


def tiny_torchscript(path: Path | str, seed: int = 0) -> Path:
    """:func:`tiny_convnet` with 1000 classes saved as TorchScript at ``path`` (what
    ``load_model(str(path))`` and ``perturb masks --model PATH`` load); returns ``path``."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, still works
        torch.jit.script(tiny_convnet(1000, seed)).save(str(path))
    return path


def classifier_of(module: nn.Module, size: tuple[int, int] = (16, 16), mean=(0.0, 0.0, 0.0),
                  std=(1.0, 1.0, 1.0), classes: int = 10) -> Classifier:
    """A Classifier named ``tiny`` around ``module`` with input ``size``, normalisation ``mean``
    and ``std`` (identity unless told), and a vocabulary of ``classes`` made-up wnids ``n00000000``,
    ``n00000001``, ..."""
    vocabulary = ClassVocabulary(wnids=tuple(f"n{i:08d}" for i in range(classes)),
                                 names=tuple(f"class{i}" for i in range(classes)))
    return Classifier(frozen(module), "tiny", size, mean, std, vocabulary)


def mean_colour_classifier(weight, size: tuple[int, int] = (16, 16)) -> Classifier:
    """:func:`classifier_of` a model linear in the image's mean colour, whose outputs are worked out
    by hand: mean pooling, then a linear layer without bias of ``weight`` ``(classes, 3)``, so
    ``logit k = sum_c weight[k, c] * (mean of channel c)``; input ``size``, identity normalisation."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    linear = nn.Linear(3, weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return classifier_of(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear), size, classes=weight.shape[0])


@contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` torch threads, then restore the number there was."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
