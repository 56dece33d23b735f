"""Excitation backprop and contrastive excitation backprop (Zhang et al., ECCV 2016) through TorchRay.

``excitation_backprop``: TorchRay's ``torchray.attribution.excitation_backprop`` on the whole batch,
the winning probabilities of the target's logit propagated down to the ``layer`` option's output
(default: the layer Grad-CAM uses, :func:`pipeline.methods.layers.default_layer`), summed over its
channels and upsampled bilinearly to the input size (TorchRay's reduction).
``contrastive_excitation_backprop``: TorchRay's contrastive variant, the same minus the excitation of
the negated classifier measured at ``contrast_layer`` (default: the last pooling child before the
classifier, ``global_pool`` of timm models, ``avgpool`` of torchvision ones), clamped at zero.

TorchRay implements the rule for ``conv``, ``linear``, average pooling and batch norm (passed
through), and for ResNet skip connections only once its ``update_resnet`` has rewritten
torchvision's blocks; both that and turning in-place activations out of place (an in-place ReLU
would overwrite the layer output whose gradient is the map) are done on a cached copy of the
network. Any other operation between the layer and the
output (a residual ``+`` of timm blocks, squeeze-excitation products, SiLU, a mean used as pooling)
would silently get the plain gradient, so :meth:`Excitation.check` walks the autograd graph of one
probe pass from the layer to the logits and refuses, with the operation's name, what TorchRay does
not rewrite. For EfficientNet-Lite0 that means the default layer ``bn2`` (and ``conv_head``,
``blocks.6``) work: the head after them is convolution, batch norm, ReLU6, average pooling and a
linear layer; earlier blocks are behind residual additions and are refused. The method also assumes
non-negative activations entering each linear layer (true after a ReLU; not after a linear
bottleneck), which the check cannot see.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from .layers import resolve_layer
from .library_options import merge_options
from .registry import SaliencyMethod, register

if TYPE_CHECKING:
    from ..models import Classifier

__all__ = ["METHODS", "Excitation", "default_contrast_layer", "excitation_method", "register_all"]

METHODS: dict[str, dict[str, Any]] = {
    "excitation_backprop": {"layer": None, "classifier_layer": None},
    "contrastive_excitation_backprop": {"layer": None, "contrast_layer": None, "classifier_layer": None},
}
"""The two names and their options (None: the defaults the module docstring describes)."""

REDUCTIONS = {
    "excitation_backprop": "excitation at the layer summed over channels, upsampled bilinearly (TorchRay)",
    "contrastive_excitation_backprop": "contrastive excitation at the layer summed over channels, clamped at "
                                       "zero, upsampled bilinearly (TorchRay)",
}

_EXPLAINED = {"AddBackward0": "AddBackward0 (an addition: a residual connection)",
              "MulBackward0": "MulBackward0 (a product: squeeze-excitation or gating)",
              "MeanBackward1": "MeanBackward1 (a mean used as pooling)"}

_PASSES = ("EBP_", "Relu", "Threshold", "Hardtanh", "View", "Reshape", "UnsafeView", "Squeeze", "Unsqueeze",
           "Clone", "Permute", "Transpose", "MaxPool", "ConstantPadNd", "Cat", "AccumulateGrad", "Alias")
"""Autograd nodes excitation backprop handles: TorchRay's rewritten functions (``EBP_*``), and
operations whose gradient already is the excitation rule (ReLU masks, max-pool routing, reshapes,
concatenation)."""


def _torchray():
    try:
        from torchray.attribution import excitation_backprop as module
    except ImportError as error:
        raise ConfigError("excitation backprop needs TorchRay: pip install torchray "
                          "(the 'peers' extra)") from error
    return module


_NETWORKS: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
_CHECKED: "weakref.WeakKeyDictionary[nn.Module, set]" = weakref.WeakKeyDictionary()


def _network(module: nn.Module) -> nn.Module:
    """The network TorchRay runs on: ``module`` itself, or a cached copy of it with its in-place
    activations made out of place (an in-place ReLU after the layer would overwrite the tensor whose
    gradient is the map) and, for a torchvision ResNet, TorchRay's rewritten skip connections."""
    from torchvision.models.resnet import ResNet

    inplace = any(getattr(m, "inplace", False) for m in module.modules())
    if not inplace and not isinstance(module, ResNet):
        return module
    view = _NETWORKS.get(module)
    device = next(module.parameters()).device
    if view is None or next(view.parameters()).device != device:
        view = copy.deepcopy(module)
        for child in view.modules():
            if getattr(child, "inplace", False):
                child.inplace = False
        if isinstance(view, ResNet):
            view = _torchray().update_resnet(view)
        _NETWORKS[module] = view
    return view


def default_contrast_layer(module: nn.Module) -> str:
    """The last direct child whose class name contains ``Pool`` (``global_pool``, ``avgpool``).

    Raises:
        ConfigError: none; the user must name ``contrast_layer``.
    """
    pools = [name for name, child in module.named_children() if "Pool" in type(child).__name__]
    if not pools:
        raise ConfigError(f"{type(module).__name__} has no pooling child to take the contrast at; pass "
                          "contrast_layer=NAME (a layer between the saliency layer and the classifier)")
    return pools[-1]


def _unsupported_nodes(network: nn.Module, layer: nn.Module, input_size: tuple[int, int]) -> list[str]:
    """Autograd node names between ``layer``'s output and the logits that TorchRay does not rewrite,
    from one probe pass of a zero image inside TorchRay's excitation context."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        output.requires_grad_(True)  # a leaf, as TorchRay's probe makes it
        captured.append(output)

    handle = layer.register_forward_hook(hook)
    try:
        device = next(network.parameters()).device
        with torch.enable_grad(), _torchray().ExcitationBackpropContext():
            logits = network(torch.zeros(1, 3, *input_size, device=device))
    except RuntimeError as error:
        if "in-place" not in str(error):
            raise
        return ["an in-place operation on the layer's output (e.g. a functional relu_)"]
    finally:
        handle.remove()
    found, seen, stack = [], set(), [logits.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__
        if not name.startswith(_PASSES) and _EXPLAINED.get(name, name) not in found:
            found.append(_EXPLAINED.get(name, name))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


@dataclass(frozen=True)
class Excitation:
    """The batched function of ``excitation_backprop`` or ``contrastive_excitation_backprop``."""

    name: str

    def check(self, classifier: Classifier | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The full options with the layers resolved to names; checks the model once per layer.

        Raises:
            ConfigError: an unknown option or layer, or operations TorchRay's rules do not cover.
        """
        resolved = merge_options(self.name, options, METHODS[self.name])
        if classifier is None:
            return resolved
        network = _network(classifier.module)
        resolved["layer"], layer = resolve_layer(network, resolved["layer"], classifier.input_size)
        if "contrast_layer" in resolved:
            name = resolved["contrast_layer"] or default_contrast_layer(network)
            resolved["contrast_layer"], _ = resolve_layer(network, name, classifier.input_size)
        if resolved["classifier_layer"] is not None:
            resolve_layer(network, resolved["classifier_layer"], classifier.input_size)
        done = _CHECKED.setdefault(network, set())
        if resolved["layer"] not in done:
            unsupported = _unsupported_nodes(network, layer, classifier.input_size)
            if unsupported:
                raise ConfigError(
                    f"{self.name} through TorchRay does not support {type(classifier.module).__name__} from layer "
                    f"{resolved['layer']!r}: its path to the logits has {', '.join(unsupported)}, which TorchRay's "
                    "excitation rules do not rewrite; pick a later layer (perturb models --layers MODEL) or "
                    "another method")
            done.add(resolved["layer"])
        return resolved

    def __call__(self, classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
                 seeds: torch.Tensor, **options: Any) -> torch.Tensor:
        """``(B, 1, H, W)`` map of ``images01`` ``(B, 3, H, W)`` in [0, 1] for ``targets`` ``(B,)``, one
        TorchRay call on the batch (``seeds`` unused: deterministic)."""
        resolved = self.check(classifier, options)
        ebp = _torchray()
        network = _network(classifier.module)
        x = classifier.normalize(images01.to(classifier.device, torch.float32)).detach()
        targets = targets.to(x.device, torch.int64)
        with torch.enable_grad():
            if self.name == "excitation_backprop":
                maps = ebp.excitation_backprop(network, x, targets, saliency_layer=resolved["layer"], resize=True)
            else:
                maps = ebp.contrastive_excitation_backprop(
                    network, x, targets, saliency_layer=resolved["layer"], contrast_layer=resolved["contrast_layer"],
                    classifier_layer=resolved["classifier_layer"], resize=True)
        return maps.detach().float()


def excitation_method(name: str) -> SaliencyMethod:
    """The saliency method ``excitation_backprop`` or ``contrastive_excitation_backprop``."""
    return SaliencyMethod(
        name=name, fn=Excitation(name), options=dict(METHODS[name]), reduction=REDUCTIONS[name],
        description=f"TorchRay {name.replace('_', ' ')} (Zhang et al., Top-down Neural Attention by Excitation "
                    "Backprop, ECCV 2016)", layer=True)


def register_all() -> None:
    """Register both names (TorchRay is imported when one is first used)."""
    for name in METHODS:
        register(name, lambda name=name: excitation_method(name))
