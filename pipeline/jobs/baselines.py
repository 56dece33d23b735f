"""Saliency maps of a named method (:mod:`pipeline.methods`) for a whole dataset, written in the
mask-store format, so every metric runs on them unchanged.

:func:`baseline_saliency` computes a batch's maps: the method's raw map ``(B, 1, H, W)`` at the
model's input size, min-max normalised per image to ``[0, 1]`` (:func:`pipeline.methods.simple.minmax`;
a constant map becomes all zeros). Stores hold ``mask = 1 - saliency`` (1 = keep, 0 = perturbed,
the solver's convention) as ``(1, H, W)`` at the input size, so reading back ``1 - mask`` needs no
resampling. The store's configuration is ``{"baseline", "model", "target", "seed", "input_size"}``
(no ``"solver"`` key: that is how :func:`pipeline.evaluation.store_saliency` tells a baseline store
from a solver store). Rows follow :mod:`pipeline.jobs.run`: ``p_original`` is the probability of
the target, ``p_perturbed``, ``p_final``, ``loss`` and ``tv`` are NaN (nothing is optimised),
``area`` is the mean of ``1 - mask``; each image's seed (for ``random``) is its dataset index plus
``RunConfig.seed``, so it gets the same map alone or in any batch, and on a resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..distributed import Shard
from ..errors import ConfigError
from ..methods import get_method
from ..methods.simple import minmax
from ..models import Classifier
from .run import RunConfig, RunSummary, batch_rows, batch_targets, run_store, target_config

__all__ = ["baseline_saliency", "baseline_config", "run_baseline"]


def baseline_saliency(name: str, classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
                      seeds: torch.Tensor) -> torch.Tensor:
    """The saliency of method ``name`` for a batch.

    Args:
        name: a name :func:`pipeline.methods.get_method` knows (``centre``, ``gradcam``...).
        classifier: the model explained.
        images01: ``(B, 3, H, W)`` float RGB in ``[0, 1]``, **not** normalised, on any device
            (moved to the classifier's).
        targets: ``(B,)`` int64 class explained per image.
        seeds: ``(B,)`` int64 per-image seeds (only ``random`` uses them).

    Returns:
        ``(B, 1, H, W)`` float32 in ``[0, 1]`` on the classifier's device, min-max normalised per
        image; larger = more salient.

    Raises:
        ConfigError: an unknown name, or inputs of the wrong shape.
    """
    method = get_method(name)
    if images01.dim() != 4 or images01.shape[1] != 3:
        raise ConfigError(f"images01 must have shape (B, 3, H, W); got {tuple(images01.shape)}")
    batch = images01.shape[0]
    if tuple(targets.shape) != (batch,) or tuple(seeds.shape) != (batch,):
        raise ConfigError(f"targets and seeds must have shape ({batch},); got {tuple(targets.shape)} "
                          f"and {tuple(seeds.shape)}")
    device = classifier.device
    raw = method.fn(classifier, images01.to(device, torch.float32), targets.to(device, torch.int64),
                    seeds.to(device, torch.int64), **method.options)
    return minmax(raw.float())


def baseline_config(name: str, classifier: Classifier, run: RunConfig) -> dict[str, Any]:
    """The configuration recorded in (and identifying) a baseline store."""
    return {"baseline": get_method(name).name, "model": classifier.spec, **target_config(run),
            "seed": run.seed, "input_size": list(classifier.input_size)}


def run_baseline(name: str, source: str | Path, out: str | Path, classifier: Classifier,
                 run: RunConfig = RunConfig(), overwrite: bool = False, shard: Shard | None = None) -> RunSummary:
    """Write method ``name``'s saliency for every image under ``source`` into the store ``out``.

    Same discovery, batching, skipping, resuming and sharding (``shard``) as
    :func:`pipeline.jobs.run.run_masks`; masks are ``1 - saliency`` of shape ``(1, H, W)`` at the
    classifier's input size.

    Raises:
        ConfigError: unknown ``name``.
        ImageReadError: ``source`` is missing or holds no image.
        StoreError: ``out`` exists with another configuration (pass ``overwrite=True``).
    """
    name = get_method(name).name  # the canonical name (center -> centre); ConfigError when unknown
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
    given = batch_targets(batch, records, run)
    targets = probs.argmax(1) if given is None else given[chosen].to(device)
    seeds = batch["index"][chosen].to(device) + run.seed
    heat = baseline_saliency(name, classifier, images, targets, seeds)
    rows["target"][chosen] = targets.cpu()
    rows["p_original"][chosen] = probs.gather(1, targets[:, None])[:, 0].cpu()
    rows["area"][chosen] = heat.flatten(1).mean(1).cpu()  # mean of 1 - mask
    masks[chosen] = (1 - heat).cpu()
    return rows, masks
