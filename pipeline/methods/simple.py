"""Four reference saliency methods: two priors that ignore the model and two gradient methods.

Each is a :data:`pipeline.methods.registry.SaliencyFn`: ``(classifier, images01, targets, seeds)``
to a raw ``(B, 1, H, W)`` map at the model's input size, larger = more salient, on the classifier's
device; :func:`minmax` then normalises every map to ``[0, 1]``.

``centre``
    A centred isotropic Gaussian, ``sigma = side / 4`` along each axis (``H / 4`` rows,
    ``W / 4`` columns), the same for every image: the "objects are in the middle" prior.
``random``
    Uniform random numbers, a pure function of the image's seed, so an image gets the same map
    alone or in any batch, and on a resume.
``gradient``
    The plain gradient (Simonyan et al. 2014): ``|d p_target / d x|`` of the softmax probability
    with respect to the **normalised** input, maximum over the 3 colour channels.
``gradcam``
    Grad-CAM (Selvaraju et al. 2017) with captum's ``LayerGradCam`` on the model's last
    convolutional feature layer (:func:`gradcam_layer`), on the target's **logit** (Grad-CAM's
    ``y^c`` before the softmax), ReLU'd, upsampled bilinearly (``align_corners=False``) to the
    input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models import Classifier
from ..solve import counter_uniform
from .registry import SaliencyMethod

__all__ = ["METHODS", "centre", "centre_gaussian", "gradcam", "gradcam_layer", "gradient", "minmax", "uniform"]

RANDOM_STREAM = 3000  # counter stream of the random method, apart from the solver's streams


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation of ``(B, 1, H, W)`` to ``[0, 1]``; a constant map becomes
    all zeros (e.g. Grad-CAM all zero after its ReLU)."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).view(-1, 1, 1, 1)
    scaled = (maps - low.view(-1, 1, 1, 1)) / span.clamp_min(torch.finfo(maps.dtype).tiny)
    return torch.where(span > 0, scaled, torch.zeros_like(maps))


def centre_gaussian(size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(1, 1, H, W)`` float32: ``exp(-(dy^2 / 2 sy^2 + dx^2 / 2 sx^2))`` about the centre pixel
    ``((H - 1) / 2, (W - 1) / 2)``, ``sy = H / 4``, ``sx = W / 4``; peak 1 at the centre."""
    height, width = size
    dy = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
    dx = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
    gy = torch.exp(-(dy**2) / (2 * (height / 4) ** 2))
    gx = torch.exp(-(dx**2) / (2 * (width / 4) ** 2))
    return (gy[:, None] * gx[None, :]).view(1, 1, height, width)


def centre(classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
           seeds: torch.Tensor) -> torch.Tensor:
    """:func:`centre_gaussian` at the input size for every image: ``(B, 1, H, W)``."""
    size = tuple(images01.shape[-2:])
    return centre_gaussian(size, images01.device).expand(images01.shape[0], 1, *size)


def uniform(classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
            seeds: torch.Tensor) -> torch.Tensor:
    """Uniform noise in ``[0, 1)`` drawn from each image's counter stream (its seed): ``(B, 1, H, W)``."""
    return counter_uniform(seeds.to(images01.device, torch.int64), RANDOM_STREAM, (1, *images01.shape[-2:]))


def gradient(classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
             seeds: torch.Tensor) -> torch.Tensor:
    """``|d p_target / d x|`` on the normalised input, max over channels: ``(B, 1, H, W)``.

    Images never interact (eval mode), so the gradient of the batch's summed probability gives
    every image its own gradient in one backward pass.
    """
    with torch.enable_grad():
        x = classifier.normalize(images01).detach().requires_grad_(True)
        probs = classifier(x).float().softmax(1)
        chosen = probs.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(chosen, x)
    return grad.abs().amax(dim=1, keepdim=True)


def gradcam_layer(module: nn.Module) -> tuple[str, nn.Module]:
    """The layer Grad-CAM attributes to by default: ``(name, layer)``.

    timm EfficientNet-style models (with ``conv_head`` and ``bn2``): ``bn2``, the head's
    normalisation and activation after the last 1x1 convolution (the last spatial map before
    pooling). Otherwise the last direct child of ``module`` that contains an ``nn.Conv2d``
    (``layer4`` of a ResNet, ``features`` of VGG/DenseNet/MobileNet); its output must be a
    ``(B, C, h, w)`` map, which :func:`gradcam` checks.

    Raises:
        ConfigError: no child contains a convolution (e.g. a TorchScript or transformer model).
    """
    children = dict(module.named_children())
    if "conv_head" in children and "bn2" in children:
        return "bn2", children["bn2"]
    found = [(name, child) for name, child in children.items()
             if any(isinstance(m, nn.Conv2d) for m in child.modules())]
    if not found:
        raise ConfigError(f"gradcam needs a convolutional feature layer; {type(module).__name__} has no "
                          "child block containing nn.Conv2d (use the gradient method instead)")
    return found[-1]


def _named_layer(module: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    if layer is None:
        return gradcam_layer(module)
    layers = dict(module.named_modules())
    if layer not in layers:
        raise ConfigError(f"layer {layer!r} is not a module of {type(module).__name__}; "
                          f"e.g. {', '.join(list(layers)[1:6])}")
    return layer, layers[layer]


def gradcam(classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor, seeds: torch.Tensor,
            layer: str | None = None) -> torch.Tensor:
    """Grad-CAM ``(B, 1, H, W)`` with captum's ``LayerGradCam`` on ``layer`` (a module name; None:
    :func:`gradcam_layer`), ReLU'd, bilinearly upsampled to the input size."""
    from captum.attr import LayerGradCam

    name, module = _named_layer(classifier.module, layer)
    x = classifier.normalize(images01).detach().requires_grad_(True)
    with torch.enable_grad():
        cam = LayerGradCam(classifier.module, module).attribute(x, target=targets, relu_attributions=True)
    if cam.dim() != 4:
        raise ConfigError(f"gradcam layer {name!r} outputs shape {tuple(cam.shape)}, not a (B, 1, h, w) "
                          "spatial map; this model needs another method")
    cam = F.interpolate(cam.detach().float(), size=tuple(images01.shape[-2:]), mode="bilinear",
                        align_corners=False)
    return cam.clamp_min(0)  # bilinear interpolation keeps the ReLU's sign; clamp rounding only


METHODS: dict[str, SaliencyMethod] = {
    "centre": SaliencyMethod("centre", centre, description="centred Gaussian, sigma = side / 4: the "
                             "'objects are in the middle' prior (ignores the model)"),
    "random": SaliencyMethod("random", uniform, description="uniform noise from each image's seed "
                             "(ignores the model)"),
    "gradient": SaliencyMethod("gradient", gradient, reduction="absolute value, maximum over the 3 colour "
                               "channels", description="plain gradient of the target's probability "
                               "(Simonyan et al. 2014)"),
    "gradcam": SaliencyMethod("gradcam", gradcam, reduction="Grad-CAM's ReLU of the channel-weighted sum of "
                              "the layer's maps, upsampled bilinearly", description="Grad-CAM on the target's "
                              "logit at the last convolutional layer (Selvaraju et al. 2017)", layer=True),
}
"""The methods of this module by name (registered by :mod:`pipeline.methods`)."""
