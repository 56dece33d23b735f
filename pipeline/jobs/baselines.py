"""Saliency maps of a named method (:mod:`pipeline.methods`) for a whole dataset, written in the
mask-store format, so every metric runs on them unchanged.

:func:`baseline_saliency` computes a batch's maps: the method's raw map ``(B, 1, H, W)`` at the
model's input size, min-max normalised per image to ``[0, 1]`` (:func:`pipeline.methods.simple.minmax`;
a constant map becomes all zeros). Stores hold ``mask = 1 - saliency`` (1 = keep, 0 = perturbed,
the solver's convention) as ``(1, H, W)`` at the input size, so reading back ``1 - mask`` needs no
resampling. The store's configuration is ``{"baseline", "model", "target", "seed", "input_size"}``
plus, for a method with options (``rise``, ``captum:*``, ``cam:*``...), ``"options"`` (every option
as checked: defaults filled in, the layer by name, RISE's ``num_masks``) and ``"reduction"`` (how
the attribution became one map); a method without options (``centre``, ``random``, ``gradient``,
``gradcam``) records neither, so its stores keep their identity (no ``"solver"`` key: that is how :func:`pipeline.evaluation.store_saliency` tells a baseline store
from a solver store). Rows follow :mod:`pipeline.jobs.run`: ``p_original`` is the probability of
the target, ``p_perturbed``, ``p_final``, ``loss`` and ``tv`` are NaN (nothing is optimised),
``area`` is the mean of ``1 - mask``; each image's seed (for ``random``) is its dataset index plus
``RunConfig.seed``, so it gets the same map alone or in any batch, and on a resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..distributed import Shard
from ..errors import ConfigError
from ..methods import SaliencyMethod, get_method
from ..methods.layers import resolve_layer
from ..methods.library_options import merge_options
from ..methods.simple import minmax
from ..models import Classifier
from .run import RunConfig, RunSummary, batch_rows, batch_targets, run_store
from .settings import target_config

__all__ = ["baseline_saliency", "baseline_config", "checked_method", "run_baseline"]


def checked_method(name: str, classifier: Classifier | None,
                   options: Mapping[str, Any] = {}) -> tuple[SaliencyMethod, dict[str, Any]]:
    """The method called ``name`` and its full options, checked without touching an image.

    ``options`` (values as typed on the command line, ``"32"``, or as Python values) update the
    method's defaults: through the method's own ``fn.check(classifier, options)`` where it has one
    (which also resolves the layer by name and RISE's ``num_masks``), else merged with
    ``method.options`` (an unknown name refused unless the method has ``open_options``).

    Raises:
        ConfigError: an unknown method, option or layer (listing what exists), or a model the
            method does not support.
    """
    method = get_method(name)
    check = getattr(method.fn, "check", None)
    if check is not None:
        checked = dict(check(classifier, dict(options)))
        if "layer" in checked and checked["layer"] in (None, "") and classifier is not None:
            # record the default layer by name, so the store says which layer was explained
            checked["layer"] = resolve_layer(classifier.module, None)[0]
        return method, checked
    if method.open_options:
        return method, {**method.options, **options}
    return method, merge_options(method.name, options, method.options)


def baseline_saliency(name: str, classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
                      seeds: torch.Tensor, options: Mapping[str, Any] = {}) -> torch.Tensor:
    """The saliency of method ``name`` for a batch.

    Args:
        name: a name :func:`pipeline.methods.get_method` knows (``centre``, ``gradcam``...).
        classifier: the model explained.
        images01: ``(B, 3, H, W)`` float RGB in ``[0, 1]``, **not** normalised, on any device
            (moved to the classifier's).
        targets: ``(B,)`` int64 class explained per image.
        seeds: ``(B,)`` int64 per-image seeds (``random`` and ``captum:NoiseTunnel`` use them).
        options: the method's options (:func:`checked_method`); unset ones keep their defaults.

    Returns:
        ``(B, 1, H, W)`` float32 in ``[0, 1]`` on the classifier's device, min-max normalised per
        image; larger = more salient.

    Raises:
        ConfigError: an unknown name, option or layer, or inputs of the wrong shape.
    """
    method, checked = checked_method(name, classifier, options)
    if images01.dim() != 4 or images01.shape[1] != 3:
        raise ConfigError(f"images01 must have shape (B, 3, H, W); got {tuple(images01.shape)}")
    batch = images01.shape[0]
    if tuple(targets.shape) != (batch,) or tuple(seeds.shape) != (batch,):
        raise ConfigError(f"targets and seeds must have shape ({batch},); got {tuple(targets.shape)} "
                          f"and {tuple(seeds.shape)}")
    device = classifier.device
    raw = method.fn(classifier, images01.to(device, torch.float32), targets.to(device, torch.int64),
                    seeds.to(device, torch.int64), **checked)
    return minmax(raw.float())


def baseline_config(name: str, classifier: Classifier, run: RunConfig,
                    options: Mapping[str, Any] = {}) -> dict[str, Any]:
    """The configuration recorded in (and identifying) a baseline store: the method, model, target,
    seed and input size, and where the method has options, those checked (:func:`checked_method`)
    and its ``reduction``.

    Raises:
        ConfigError: an unknown method, option or layer.
    """
    method, checked = checked_method(name, classifier, options)
    config = {"baseline": method.name, "model": classifier.spec, **target_config(run),
              "seed": run.seed, "input_size": list(classifier.input_size)}
    if checked:  # methods without options keep the configuration (and run key) they always had
        config["options"] = checked
        config["reduction"] = method.reduction
    return config


def run_baseline(name: str, source: str | Path, out: str | Path, classifier: Classifier,
                 run: RunConfig = RunConfig(), overwrite: bool = False, shard: Shard | None = None,
                 options: Mapping[str, Any] = {}) -> RunSummary:
    """Write method ``name``'s saliency for every image under ``source`` into the store ``out``.

    Same discovery, batching, skipping, resuming and sharding (``shard``) as
    :func:`pipeline.jobs.run.run_masks`; masks are ``1 - saliency`` of shape ``(1, H, W)`` at the
    classifier's input size. ``options`` (``{"n_steps": "16", "layer": "bn2"}``) are checked
    before any image is read (:func:`checked_method`) and recorded in the store's configuration.

    Raises:
        ConfigError: unknown ``name``, option or layer.
        ImageReadError: ``source`` is missing or holds no image.
        StoreError: ``out`` exists with another configuration (pass ``overwrite=True``).
    """
    # the canonical name (center -> centre) and every option checked: ConfigError before any image
    method, checked = checked_method(name, classifier, options)
    config = baseline_config(method.name, classifier, run, checked)
    mask_shape = (1, *classifier.input_size)

    def batch_fn(batch: dict[str, Any], records: list) -> tuple[dict[str, Any], torch.Tensor]:
        return _baseline_batch(method.name, batch, records, classifier, run, checked)

    return run_store(source, out, classifier, config, mask_shape, run, batch_fn,
                     overwrite=overwrite, desc=method.name, shard=shard)


def _baseline_batch(name: str, batch: dict[str, Any], records: list, classifier: Classifier,
                    run: RunConfig, options: Mapping[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
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
    given = batch_targets(batch, records, run)
    targets = probs.argmax(1) if given is None else given[chosen].to(device)
    seeds = batch["index"][chosen].to(device) + run.seed
    heat = baseline_saliency(name, classifier, images, targets, seeds, options)
    rows["target"][chosen] = targets.cpu()
    rows["p_original"][chosen] = probs.gather(1, targets[:, None])[:, 0].cpu()
    rows["area"][chosen] = heat.flatten(1).mean(1).cpu()  # mean of 1 - mask
    masks[chosen] = (1 - heat).cpu()
    return rows, masks
