"""Explain one image: solve its mask and write jacobgil's four pictures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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
                  target: int | None = None, progress: bool = False) -> Explanation:
    """Solve the mask of the image at ``path`` and write heatmap/mask/cam/perturbated PNGs to ``out_dir``.

    The pictures have the image's aspect ratio, the model input's shorter side on their shorter
    side (:func:`picture_size`): the mask, saliency and perturbed image solved at the model's
    (square) input size are resized to it, and the image is read again at that size.

    Args:
        progress: show a tqdm bar over the solver's iterations (on stderr).

    Raises:
        ImageReadError: when the file is missing or not a readable image.
    """
    model_input, original = read_input(path, tuple(classifier.input_size))
    image = model_input[None].to(classifier.device)
    targets = None if target is None else torch.tensor([target])
    with tqdm(total=config.optim.iterations, unit="it", desc="solve", disable=not progress,
              dynamic_ncols=True) as bar:
        result = solve(classifier, image, config, targets=targets, callback=lambda *_: bar.update(1))
    size = classifier.input_size
    mask_up = masklib.upsample(result.masks, size, config.mask).mean(1, keepdim=True)
    heat = masklib.saliency(result.masks, config.objective.game, size, config.mask)
    blurred = _perturbed_rgb(classifier, image, mask_up, config)
    shown = picture_size(original, size)
    picture = read_input(path, shown)[0]

    def unsquash(x: torch.Tensor) -> torch.Tensor:  # (1, C, H, W) at input size -> (C, h, w) shown
        return F.interpolate(x.float().cpu(), size=shown, mode="bilinear", align_corners=False)[0]

    pics = explain_pictures(picture, unsquash(mask_up), unsquash(heat), unsquash(blurred).clamp(0, 1))
    files = save_pictures(pics, out_dir)
    name = classifier.vocabulary.names[int(result.targets[0])]
    return Explanation(result, name, files)


def picture_size(original: tuple[int, int], input_size: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of the pictures of an image of ``original`` ``(height, width)``: its
    aspect ratio, with the shorter side as long as the model input's shorter side."""
    height, width = original
    scale = min(input_size) / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _perturbed_rgb(classifier: Classifier, image: torch.Tensor, mask_up: torch.Tensor, config: SolverConfig) -> torch.Tensor:
    """The perturbed image in [0, 1] RGB, as the model saw it (without noise)."""
    seeds = torch.zeros(len(image), dtype=torch.long, device=image.device)
    with torch.no_grad():
        seen = Perturber(classifier.normalize(image), config, seeds)(mask_up)
    std = torch.tensor(classifier.std, device=image.device).view(1, 3, 1, 1)
    mean = torch.tensor(classifier.mean, device=image.device).view(1, 3, 1, 1)
    return (seen * std + mean).clamp(0, 1)
