"""Fold eval-mode BatchNorm into the convolution before it, for a frozen classifier.

In eval mode ``BN(conv(x)) = s * (W x + b - mu) / sigma + beta`` is itself a convolution, with
weights ``W s / sigma`` and bias ``(b - mu) s / sigma + beta``. Folding removes a full pass over
every activation map in the forward and in the backward to the input, which the solver runs every
iteration. On the 2-core CPU, removing EfficientNet-Lite0's 49 BatchNorms takes a forward + backward
from 65.5 to 42.6 ms per image at batch 8, and from 70.8 to 56.9 ms at batch 1.

Which BatchNorm follows which convolution is read off one traced forward pass rather than the
module tree: a BatchNorm whose input *is* a convolution's output is a candidate. The folded network
is then checked against the original on random input; if they disagree (a convolution output used
elsewhere too, say), the original is kept. timm's ``BatchNormAct2d`` keeps its dropout and activation.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .models import probe


CHECK_SIZE = (64, 64)
"""Input size of the float64 check that a fold kept the network's function."""


def fold_batchnorm(module: nn.Module, input_size: tuple[int, int], rtol: float = 1e-4) -> tuple[nn.Module, int]:
    """A copy of the eval-mode ``module`` with every ``Conv2d -> BatchNorm2d`` pair folded, and the
    number of pairs folded. Returns ``(module, 0)`` unchanged when nothing can be folded or the
    folded copy's logits differ from the original's by more than ``rtol`` of their range on random
    ``(2, 3, *input_size)`` input."""
    if isinstance(module, torch.jit.ScriptModule) or module.training:
        return module, 0
    pairs = _conv_bn_pairs(module, input_size)
    if not pairs:
        return module, 0
    folded = copy.deepcopy(module)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        _replace(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _replace(folded, bn_name, _after_norm(bn))
    for parameter in folded.parameters():
        parameter.requires_grad_(False)
    if not _same_function(module, folded, input_size, rtol):
        warnings.warn("BatchNorm folding changed this model's output; using it unfolded", stacklevel=2)
        return module, 0
    return folded, len(pairs)


def _same_function(module: nn.Module, folded: nn.Module, input_size: tuple[int, int], rtol: float) -> bool:
    """Whether ``folded`` computes ``module``'s logits, within ``rtol`` of their range, on random
    ``(2, 3, *input_size)`` input.

    Compared in float64 (on copies), at :data:`CHECK_SIZE` when the network accepts it: folding is exact in exact arithmetic, so only a wrong fold
    shows. In float32 the rounding of the two orders of operations differs, by more than ``rtol``
    on a GPU, whose float32 convolutions use TF32 by default; there every fold was refused.
    """
    device = next(module.parameters()).device
    reference, candidate = copy.deepcopy(module).double(), copy.deepcopy(folded).double()
    # Folding acts per pixel, so a small input checks it as well as a full one, at a fraction of the
    # cost of float64 convolutions; a network that needs its own input size gets that.
    sizes = [CHECK_SIZE, tuple(input_size)] if min(input_size) > max(CHECK_SIZE) else [tuple(input_size)]
    for size in sizes:
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
        try:
            with torch.no_grad():
                expected, got = reference(x), candidate(x)
            break
        except (RuntimeError, TypeError, AssertionError):  # this size does not fit the network
            continue
    else:  # a network that cannot run in float64: not checked, not folded
        return False
    scale = (expected.max() - expected.min()).clamp_min(1e-6)
    return bool((got - expected).abs().max() <= rtol * scale)


def _conv_bn_pairs(module: nn.Module, input_size: tuple[int, int]) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` for each BatchNorm2d called on a Conv2d's output, in one forward."""
    names = {m: n for n, m in module.named_modules()}
    calls: dict[nn.Module, int] = {}
    conv_outputs: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []

    def on_conv(conv, inputs, output):
        calls[conv] = calls.get(conv, 0) + 1
        conv_outputs[id(output)] = (names[conv], output)  # holding the tensor keeps its id unique

    def on_bn(bn, inputs, output):
        calls[bn] = calls.get(bn, 0) + 1
        source = conv_outputs.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            pairs.append((source[0], names[bn]))

    # Conv2d subclasses too (timm's Conv2dSame): the check after folding guards them
    probe(module, input_size, [(m, on_conv) for m in module.modules() if isinstance(m, nn.Conv2d)]
          + [(m, on_bn) for m in module.modules() if _foldable_norm(m)])
    # A module called twice (shared weights) cannot be folded for one of its uses only.
    counts: dict[str, int] = {}
    for conv_name, bn_name in pairs:
        counts[conv_name] = counts.get(conv_name, 0) + 1
    once = {names[m] for m, n in calls.items() if n == 1}
    return [(c, b) for c, b in pairs if counts[c] == 1 and c in once and b in once]


def _foldable_norm(m: nn.Module) -> bool:
    """Plain BatchNorm2d, or timm's BatchNormAct2d (BatchNorm, then dropout and activation)."""
    if type(m) is nn.BatchNorm2d:
        return True
    return isinstance(m, nn.BatchNorm2d) and type(m).__name__ == "BatchNormAct2d" and hasattr(m, "act")


def _after_norm(bn: nn.Module) -> nn.Module:
    """What remains of ``bn`` once its normalisation is in the convolution."""
    rest = [part for part in (getattr(bn, "drop", None), getattr(bn, "act", None)) if part is not None]
    return nn.Sequential(*rest) if rest else nn.Identity()


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attribute, new)
