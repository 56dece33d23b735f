"""Explain one image: solve its mask and write jacobgil's four pictures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..solve import masks as masklib
from ..config import SolverConfig
from ..data import read_input
from ..models import Classifier
from ..pictures import explain_pictures, save_pictures
from ..solve import Perturber, SolveResult, solve


@dataclass(frozen=True)
class Explanation:
    """One image's result: the solver's output for a batch of one, and the pictures written."""

    result: SolveResult
    class_name: str
    files: list[Path]


def explain_image(path: str | Path, classifier: Classifier, config: SolverConfig, out_dir: str | Path,
                  target: int | None = None) -> Explanation:
    """Solve the mask of the image at ``path`` and write heatmap/mask/cam/perturbated PNGs to ``out_dir``.

    Raises:
        ImageReadError: when the file is missing or not a readable image.
    """
    image = read_input(path, tuple(classifier.input_size))[0][None].to(classifier.device)
    targets = None if target is None else torch.tensor([target])
    result = solve(classifier, image, config, targets=targets)
    size = classifier.input_size
    mask_up = masklib.upsample(result.masks, size, config.mask).mean(1, keepdim=True)
    heat = masklib.saliency(result.masks, config.objective.game, size, config.mask)
    blurred = _perturbed_rgb(classifier, image, mask_up, config)
    pics = explain_pictures(image[0], mask_up[0], heat[0], blurred[0])
    files = save_pictures(pics, out_dir)
    name = classifier.vocabulary.names[int(result.targets[0])]
    return Explanation(result, name, files)


def _perturbed_rgb(classifier: Classifier, image: torch.Tensor, mask_up: torch.Tensor, config: SolverConfig) -> torch.Tensor:
    """The perturbed image in [0, 1] RGB, as the model saw it (without noise)."""
    seeds = torch.zeros(len(image), dtype=torch.long, device=image.device)
    with torch.no_grad():
        seen = Perturber(classifier.normalize(image), config, seeds)(mask_up)
    std = torch.tensor(classifier.std, device=image.device).view(1, 3, 1, 1)
    mean = torch.tensor(classifier.mean, device=image.device).view(1, 3, 1, 1)
    return (seen * std + mean).clamp(0, 1)
