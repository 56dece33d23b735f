"""Solving helpers shared by the modes that judge masks: variants of a preset, one solve cut at
several iteration counts, and the deletion/insertion AUCs of masks.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import torch

VARIANT_HELP = ("NAME=PRESET[:KEY=VALUE,...]: a preset with --set overrides, e.g. "
                "fast=paper:optim.iterations=75,optim.lr=0.3; repeatable, the first is the reference")


def parse_variant(text: str):
    """``NAME=PRESET[:KEY=VALUE,...]`` -> ``(name, SolverConfig)``."""
    from pipeline import override, preset

    name, _, rest = text.partition("=")
    if not name or not rest:
        raise argparse.ArgumentTypeError(f"a variant is NAME=PRESET[:KEY=VALUE,...], got {text!r}")
    preset_name, _, sets = rest.partition(":")
    return name, override(preset(preset_name), [s for s in sets.split(",") if s])


def digest(config, offset: int, device: torch.device) -> str:
    """A short key of what makes a per-image row: the full configuration, seed offset and device type."""
    from pipeline import to_dict

    text = json.dumps({"config": to_dict(config), "seed_offset": offset, "device": device.type}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def solve_with_snapshots(classifier, images: torch.Tensor, config, checkpoints: list[int], seeds: torch.Tensor):
    """Solve once for ``max(checkpoints)`` iterations; return the :class:`SolveResult` and, per
    checkpoint, ``{"masks": (B, K, h, w) clamped, "loss": (B,), "seconds": since the solve began}``.

    Without a learning-rate schedule or early stopping the first ``t`` iterations of a longer solve
    are a ``t``-iteration solve: every random draw is keyed by image seed and iteration (an L1
    warm-up counts its own ``l1_decay`` iterations, whatever the length of the solve).
    """
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from benchmarks.common import clock
    from pipeline import override
    from pipeline.solve import solve

    holder: dict = {}
    snapshots: dict[int, dict] = {}
    device = classifier.device
    wanted = set(checkpoints)

    def step_hook(optimizer, args, kwargs) -> None:  # find the mask tensor the solver optimises
        holder.setdefault("masks", optimizer.param_groups[0]["params"][0])

    def callback(iteration: int, loss: torch.Tensor) -> None:
        done = iteration + 1
        if done in wanted:  # the solver clamps to [0, 1] before calling back
            snapshots[done] = {"masks": holder["masks"].detach().clone(), "loss": loss.detach().clone(),
                               "seconds": clock(device) - start}

    handle = register_optimizer_step_post_hook(step_hook)
    try:
        start = clock(device)
        result = solve(classifier, images, override(config, [f"optim.iterations={max(checkpoints)}"]),
                       seeds=seeds, callback=callback)
    finally:
        handle.remove()
    return result, snapshots


def mask_aucs(classifier, images01: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, config,
              eval_config=None) -> dict[str, torch.Tensor]:
    """Per-image AUCs ``(B,)`` on the CPU of the saliency of ``masks`` ``(B, K, h, w)``, computed as
    ``perturb evaluate`` does (:func:`pipeline.evaluation.causal_batch`, fp32 model): ``deletion_zero``,
    ``deletion_blur`` and ``insertion``."""
    from pipeline.evaluation import EvalConfig, causal_batch
    from pipeline.metrics import auc
    from pipeline.solve import masks as masklib

    heat = masklib.saliency(masks, config.objective.game, tuple(images01.shape[-2:]), config.mask)
    with torch.no_grad():
        curves = causal_batch(classifier, images01, heat, targets, eval_config or EvalConfig())
    return {name: auc(values.double()).cpu() for name, values in curves.items()}
