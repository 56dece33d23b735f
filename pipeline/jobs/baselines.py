"""Saliency baselines written in the mask-store format, so every metric runs on them unchanged.

Four baselines (:data:`BASELINES`), each a saliency map ``(B, 1, H, W)`` at the model's input size:

``centre``
    A centred isotropic Gaussian, ``sigma = side / 4`` along each axis (``H / 4`` rows,
    ``W / 4`` columns), the same for every image: the "objects are in the middle" prior.
``random``
    Uniform random numbers, a pure function of the image's seed (its dataset index plus
    ``RunConfig.seed``), so an image gets the same map alone or in any batch, and on a resume.
``gradient``
    The plain gradient (Simonyan et al. 2014): ``|d p_target / d x|`` of the softmax probability
    with respect to the **normalised** input, maximum over the 3 colour channels.
``gradcam``
    Grad-CAM (Selvaraju et al. 2017) with captum's ``LayerGradCam`` on the model's last
    convolutional feature layer (:func:`gradcam_layer`), on the target's **logit** (Grad-CAM's
    ``y^c`` before the softmax), ReLU'd, upsampled bilinearly (``align_corners=False``) to the
    input size.

Every map is then min-max normalised per image to ``[0, 1]`` (a constant map becomes all zeros).
Stores hold ``mask = 1 - saliency`` (1 = keep, 0 = perturbed, the solver's convention) as
``(1, H, W)`` at the input size, so reading back ``1 - mask`` needs no resampling. The store's
configuration is ``{"baseline", "model", "target", "seed", "input_size"}`` (no ``"solver"`` key:
that is how :func:`pipeline.evaluation.store_saliency` tells a baseline store from a solver store).
Rows follow :mod:`pipeline.jobs.run`: ``p_original`` is the probability of the target,
``p_perturbed``, ``p_final``, ``loss`` and ``tv`` are NaN (nothing is optimised), ``area`` is the
mean of ``1 - mask``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import Shard
from ..errors import ConfigError
from ..options import BASELINE_ALIASES, BaselineName, choice, choices
from ..models import Classifier
from .run import RunConfig, RunSummary, batch_rows, run_store
from ..solve import counter_uniform

__all__ = [
    "BASELINES",
    "BaselineName",
    "baseline_saliency",
    "baseline_config",
    "centre_gaussian",
    "gradcam_layer",
    "run_baseline",
]

BASELINES: tuple[str, ...] = choices(BaselineName)
"""The baseline names :func:`baseline_saliency` and :func:`run_baseline` accept (and the aliases
of :data:`pipeline.options.BASELINE_ALIASES`, e.g. ``center``)."""

_RANDOM_STREAM = 3000  # counter stream of the random baseline, apart from the solver's streams


def _check_name(name: str) -> str:
    """The baseline's canonical name (``center`` -> ``centre``); ConfigError for an unknown one."""
    return choice("baseline", BASELINE_ALIASES.get(name, name), BaselineName)


def baseline_saliency(name: str, classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
                      seeds: torch.Tensor) -> torch.Tensor:
    """The saliency of baseline ``name`` for a batch.

    Args:
        name: one of :data:`BASELINES`.
        classifier: the model explained (used by ``gradient`` and ``gradcam``).
        images01: ``(B, 3, H, W)`` float RGB in ``[0, 1]``, **not** normalised, on any device
            (moved to the classifier's).
        targets: ``(B,)`` int64 class explained per image.
        seeds: ``(B,)`` int64 per-image seeds (only ``random`` uses them).

    Returns:
        ``(B, 1, H, W)`` float32 in ``[0, 1]`` on the classifier's device, min-max normalised per
        image; larger = more salient. A constant map (e.g. Grad-CAM all zero after the ReLU)
        becomes all zeros.
    """
    name = _check_name(name)
    if images01.dim() != 4 or images01.shape[1] != 3:
        raise ConfigError(f"images01 must have shape (B, 3, H, W); got {tuple(images01.shape)}")
    batch = images01.shape[0]
    if tuple(targets.shape) != (batch,) or tuple(seeds.shape) != (batch,):
        raise ConfigError(f"targets and seeds must have shape ({batch},); got {tuple(targets.shape)} "
                          f"and {tuple(seeds.shape)}")
    device = classifier.device
    images01 = images01.to(device, torch.float32)
    size = tuple(images01.shape[-2:])
    if name == "centre":
        raw = centre_gaussian(size, device).expand(batch, 1, *size)
    elif name == "random":
        raw = counter_uniform(seeds.to(device, torch.int64), _RANDOM_STREAM, (1, *size))
    elif name == "gradient":
        raw = _gradient(classifier, images01, targets.to(device, torch.int64))
    else:
        raw = _gradcam(classifier, images01, targets.to(device, torch.int64))
    return _minmax(raw.float())


def centre_gaussian(size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(1, 1, H, W)`` float32: ``exp(-(dy^2 / 2 sy^2 + dx^2 / 2 sx^2))`` about the centre pixel
    ``((H - 1) / 2, (W - 1) / 2)``, ``sy = H / 4``, ``sx = W / 4``; peak 1 at the centre."""
    height, width = size
    dy = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
    dx = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
    gy = torch.exp(-(dy**2) / (2 * (height / 4) ** 2))
    gx = torch.exp(-(dx**2) / (2 * (width / 4) ** 2))
    return (gy[:, None] * gx[None, :]).view(1, 1, height, width)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalisation of ``(B, 1, H, W)`` to ``[0, 1]``; constant maps -> 0."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).view(-1, 1, 1, 1)
    scaled = (maps - low.view(-1, 1, 1, 1)) / span.clamp_min(torch.finfo(maps.dtype).tiny)
    return torch.where(span > 0, scaled, torch.zeros_like(maps))


def _gradient(classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
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
    """The layer Grad-CAM attributes to: ``(name, layer)``.

    timm EfficientNet-style models (with ``conv_head`` and ``bn2``): ``bn2``, the head's
    normalisation and activation after the last 1x1 convolution (the last spatial map before
    pooling). Otherwise the last direct child of ``module`` that contains an ``nn.Conv2d``
    (``layer4`` of a ResNet, ``features`` of VGG/DenseNet/MobileNet); its output must be a
    ``(B, C, h, w)`` map, which :func:`baseline_saliency` checks.

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
                          "child block containing nn.Conv2d (use the gradient baseline instead)")
    return found[-1]


def _gradcam(classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM ``(B, 1, H, W)`` with captum's ``LayerGradCam``, ReLU'd, bilinearly upsampled."""
    from captum.attr import LayerGradCam

    name, layer = gradcam_layer(classifier.module)
    x = classifier.normalize(images01).detach().requires_grad_(True)
    with torch.enable_grad():
        cam = LayerGradCam(classifier.module, layer).attribute(x, target=targets, relu_attributions=True)
    if cam.dim() != 4:
        raise ConfigError(f"gradcam layer {name!r} outputs shape {tuple(cam.shape)}, not a (B, 1, h, w) "
                          "spatial map; this model needs another baseline")
    cam = F.interpolate(cam.detach().float(), size=tuple(images01.shape[-2:]), mode="bilinear",
                        align_corners=False)
    return cam.clamp_min(0)  # bilinear interpolation keeps the ReLU's sign; clamp rounding only


def baseline_config(name: str, classifier: Classifier, run: RunConfig) -> dict[str, Any]:
    """The configuration recorded in (and identifying) a baseline store."""
    return {"baseline": _check_name(name), "model": classifier.spec, "target": run.target,
            "seed": run.seed, "input_size": list(classifier.input_size)}


def run_baseline(name: str, source: str | Path, out: str | Path, classifier: Classifier,
                 run: RunConfig = RunConfig(), overwrite: bool = False, shard: Shard | None = None) -> RunSummary:
    """Write baseline ``name``'s saliency for every image under ``source`` into the store ``out``.

    Same discovery, batching, skipping, resuming and sharding (``shard``) as
    :func:`pipeline.jobs.run.run_masks`; masks are ``1 - saliency`` of shape ``(1, H, W)`` at the
    classifier's input size.

    Raises:
        ConfigError: unknown ``name``.
        ImageReadError: ``source`` is missing or holds no image.
        StoreError: ``out`` exists with another configuration (pass ``overwrite=True``).
    """
    name = _check_name(name)
    config = baseline_config(name, classifier, run)
    mask_shape = (1, *classifier.input_size)

    def batch_fn(batch: dict[str, Any], records: list) -> tuple[dict[str, Any], torch.Tensor]:
        return _baseline_batch(name, batch, records, classifier, run)

    return run_store(source, out, classifier, config, mask_shape, run, batch_fn,
                     overwrite=overwrite, desc=name, shard=shard)


def _baseline_batch(name: str, batch: dict[str, Any], records: list, classifier: Classifier,
                    run: RunConfig) -> tuple[dict[str, Any], torch.Tensor]:
    """Store rows and masks ``(b, 1, H, W)`` of one loader batch (skipped rows stay NaN)."""
    rows, ok = batch_rows(batch, records, run)
    masks = torch.full((len(ok), 1, *classifier.input_size), float("nan"))
    chosen = ok.nonzero()[:, 0]
    if len(chosen) == 0:
        return rows, masks
    device = classifier.device
    images = batch["image"][chosen].to(device)
    with torch.no_grad():
        probs = classifier(classifier.normalize(images)).float().softmax(1)
    if run.target == "label":
        targets = batch["label"][chosen].to(device)
    else:
        targets = probs.argmax(1)
    seeds = batch["index"][chosen].to(device) + run.seed
    heat = baseline_saliency(name, classifier, images, targets, seeds)
    rows["target"][chosen] = targets.cpu()
    rows["p_original"][chosen] = probs.gather(1, targets[:, None])[:, 0].cpu()
    rows["area"][chosen] = heat.flatten(1).mean(1).cpu()  # mean of 1 - mask
    masks[chosen] = (1 - heat).cpu()
    return rows, masks
