"""Which layer a layer-attribution method (Grad-CAM and the CAM family, excitation backprop) uses.

A layer is named as in ``module.named_modules()`` (``"bn2"``, ``"layer4"``, ``"features.29"``).
:func:`default_layer` is the layer the ``gradcam`` baseline has always used; :func:`resolve_layer`
checks a user's name (one :class:`~pipeline.errors.ConfigError` listing the candidates for an unknown
one, before any image is processed); :func:`candidate_layers` lists every module whose output is a
spatial map ``(B, C, h, w)``, the layers such methods can attribute to (``perturb models --layers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from ..models import probe

if TYPE_CHECKING:
    from ..models import Classifier

__all__ = ["LayerInfo", "candidate_layers", "default_layer", "layer_listing", "resolve_layer"]

_LISTED_DEPTH = 2  # an unknown-layer error lists the spatial layers up to this many dots deep


@dataclass(frozen=True)
class LayerInfo:
    """One layer a layer method can attribute to.

    Attributes:
        name: its name in ``named_modules()``.
        kind: its class name (``"Conv2d"``, ``"Sequential"``).
        shape: its output's shape for one image ``(C, h, w)`` at the classifier's input size.
    """

    name: str
    kind: str
    shape: tuple[int, int, int]


def default_layer(module: nn.Module) -> str:
    """The default layer's name: the ``gradcam`` baseline's choice.

    timm EfficientNet-style models (children ``conv_head`` and ``bn2``): ``bn2``, the head's
    normalisation and activation after the last 1x1 convolution (the last spatial map before
    pooling). Otherwise the last direct child that contains an ``nn.Conv2d`` (``layer4`` of a ResNet,
    ``features`` of VGG, DenseNet or MobileNet).

    Raises:
        ConfigError: no child contains a convolution (a TorchScript or transformer model).
    """
    children = dict(module.named_children())
    if "conv_head" in children and "bn2" in children:
        return "bn2"
    found = [name for name, child in children.items() if any(isinstance(m, nn.Conv2d) for m in child.modules())]
    if not found:
        raise ConfigError(f"{type(module).__name__} has no child block containing nn.Conv2d, so no default "
                          "layer for a layer method; pass a layer by name or use a gradient method")
    return found[-1]


def resolve_layer(module: nn.Module, name: str | None,
                  input_size: tuple[int, int] | None = None) -> tuple[str, nn.Module]:
    """``(name, layer)`` for ``name`` (None: :func:`default_layer`).

    Args:
        module: the network.
        name: a name from ``module.named_modules()``, or None.
        input_size: ``(H, W)``; when given, an unknown name's error lists the spatial layers found by
            one forward pass at this size (:func:`candidate_layers`), else every module name.

    Raises:
        ConfigError: an unknown name, listing the candidates.
    """
    if name is None or name == "":
        name = default_layer(module)
    modules = dict(module.named_modules())
    if name in modules and name != "":
        return name, modules[name]
    if input_size is not None:
        found = [layer.name for layer in _spatial_layers(module, input_size)]
    else:
        found = [n for n in modules if n]
    listed = [n for n in found if n.count(".") < _LISTED_DEPTH]
    more = f" (and {len(found) - len(listed)} deeper ones)" if len(listed) < len(found) else ""
    raise ConfigError(f"unknown layer {name!r} of {type(module).__name__}; layers with a spatial output: "
                      f"{', '.join(listed)}{more}")


def candidate_layers(classifier: Classifier) -> list[LayerInfo]:
    """Every module of ``classifier`` whose output is a ``(B, C, h, w)`` map, in forward order.

    Found by one forward pass of a zero image at ``classifier.input_size`` with a hook on every
    module (a module called twice is listed once, with its first output).
    """
    return _spatial_layers(classifier.module, classifier.input_size)


def layer_listing(classifier: Classifier) -> list[str]:
    """One line per :func:`candidate_layers` entry: ``name  kind  (C, h, w)``, the default marked ``*``
    (what ``perturb models --layers MODEL`` prints)."""
    default = default_layer(classifier.module)
    found = candidate_layers(classifier)
    width = max((len(layer.name) for layer in found), default=0)
    return [f"{'*' if layer.name == default else ' '} {layer.name:{width}s}  {layer.kind:18s} "
            f"{'x'.join(str(n) for n in layer.shape)}" for layer in found]


def _spatial_layers(module: nn.Module, input_size: tuple[int, int]) -> list[LayerInfo]:
    """:func:`candidate_layers` for a bare network."""
    found: dict[str, LayerInfo] = {}

    def hook_for(name: str):
        def hook(layer: nn.Module, inputs: object, output: object) -> None:
            if name not in found and isinstance(output, torch.Tensor) and output.dim() == 4:
                found[name] = LayerInfo(name, type(layer).__name__, tuple(output.shape[1:]))
        return hook

    probe(module, input_size, [(layer, hook_for(name)) for name, layer in module.named_modules() if name])
    # hooks fire in completion order (a block after its children); list in definition order instead
    order = {name: i for i, (name, _) in enumerate(module.named_modules())}
    return sorted(found.values(), key=lambda layer: order[layer.name])
