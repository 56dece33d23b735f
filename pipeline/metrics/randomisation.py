"""Cascading model-parameter randomisation (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018).

The classifier's blocks are re-initialised one after another from the logits downward (each step
keeps the earlier steps' randomisation: *cascading*), the saliency is recomputed after every step,
and each new map is compared with the original one. A method whose maps barely change while the
model turns to noise does not explain the model.

* **Blocks** (:data:`BLOCK_LISTS`, :func:`randomisation_blocks`): a documented list per model
  family, top-down, at most 8 steps; other models fall back to their parameterised top-level
  children (descending through single wrappers), grouped into at most ``max_steps`` steps.
* **Re-initialisation**: every module of the block that has ``reset_parameters`` (convolutions,
  linear layers, batch norms, whose running statistics reset to 0 / 1 as well) calls it right
  after ``torch.manual_seed(seed + 1)``, as Quantus' ``MPRT`` does, so a module's new weights
  depend only on the seed and its shape. The global random state is restored afterwards. These
  are PyTorch's default initialisations, not the original training's (Adebayo et al. used
  truncated normals).
* **Which class**: the saliency callable decides. The pipeline explains the *original* target
  (the class explained before randomisation) at every step, as Quantus (``y_batch``) does; Fong's
  TorchRay fork explains the randomised model's top-1 instead.
* **Similarity** (:func:`map_similarity`), per image, of the original and the new map:
  Spearman rank correlation of the absolute maps (ties get average ranks, as scipy's), and of the
  signed maps; SSIM (scikit-image's ``structural_similarity``, 7x7 window) and the Pearson
  correlation of HOG features (scikit-image's ``hog`` with its defaults: 9 orientations, 8x8
  cells, 3x3 blocks) of the absolute maps scaled to a maximum of 1, SSIM's data range being
  the pair's joint range (as Quantus' ``ssim``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError

__all__ = [
    "BLOCK_LISTS",
    "Block",
    "RandomisationResult",
    "randomisation_blocks",
    "randomised_models",
    "map_similarity",
    "randomisation_check",
]

Block = tuple[str, tuple[str, ...]]
"""A step: its name and the qualified names of the modules it re-initialises (with their children)."""

BLOCK_LISTS: dict[str, tuple[Block, ...]] = {
    # timm tf_efficientnet_lite0 (pipeline.load_model("efficientnet_lite0")) and other timm
    # EfficientNets: 7 stages in `blocks`; the two smallest stages go with the stem.
    "efficientnet": (
        ("classifier", ("classifier",)),
        ("head", ("conv_head", "bn2")),
        ("blocks.6", ("blocks.6",)),
        ("blocks.5", ("blocks.5",)),
        ("blocks.4", ("blocks.4",)),
        ("blocks.3", ("blocks.3",)),
        ("blocks.2", ("blocks.2",)),
        ("stem+blocks.0-1", ("blocks.1", "blocks.0", "bn1", "conv_stem")),
    ),
    # torchvision and timm ResNets (resnet50 ...): the four stages and the stem.
    "resnet": (
        ("fc", ("fc",)),
        ("layer4", ("layer4",)),
        ("layer3", ("layer3",)),
        ("layer2", ("layer2",)),
        ("layer1", ("layer1",)),
        ("stem", ("bn1", "conv1")),
    ),
}
"""Top-down randomisation steps of the model families the tool knows, by family."""

_FAMILY_MARKERS = {
    "efficientnet": {"conv_stem", "bn1", "blocks", "conv_head", "bn2", "classifier"},
    "resnet": {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"},
}


def _module(model: Any) -> nn.Module:
    """The ``nn.Module`` of a :class:`pipeline.models.Classifier` or of a module itself."""
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model must be an nn.Module or a Classifier; got {type(model).__name__}")
    return module


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _generic_blocks(module: nn.Module, max_steps: int) -> tuple[Block, ...]:
    prefix = ""
    children = [(name, child) for name, child in module.named_children() if _has_parameters(child)]
    while len(children) == 1:  # a wrapper (e.g. normalisation + network): look inside
        name, only = children[0]
        prefix += name + "."
        children = [(n, c) for n, c in only.named_children() if _has_parameters(c)]
    if not children:
        raise ConfigError("the model has no parameterised submodules to randomise; pass blocks explicitly")
    names = [prefix + name for name, _ in reversed(children)]
    groups = [list(g) for g in np.array_split(np.array(names, dtype=object), min(max_steps, len(names)))]
    return tuple(("+".join(g), tuple(g)) for g in groups)


def randomisation_blocks(model: Any, max_steps: int = 8) -> tuple[Block, ...]:
    """The randomisation steps for ``model``, top-down.

    A model whose top-level children include those of a family in :data:`BLOCK_LISTS` gets that
    family's list. Otherwise its parameterised top-level children (looking inside a single-child
    wrapper) are taken from the last to the first, split into at most ``max_steps`` consecutive
    groups (``numpy.array_split``: the first groups are one larger when it does not divide).

    Args:
        model: an ``nn.Module`` or a :class:`pipeline.models.Classifier`.
        max_steps: at most this many steps for the fallback, ``>= 1``.

    Returns:
        A tuple of ``(step name, module names)``.
    """
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(f"max_steps must be an integer >= 1; got {max_steps!r}")
    module = _module(model)
    children = {name for name, _ in module.named_children()}
    for family, markers in _FAMILY_MARKERS.items():
        if markers <= children:
            return BLOCK_LISTS[family]
    return _generic_blocks(module, max_steps)


def _resettable(module: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    """Modules with ``reset_parameters`` under each named module, in reverse definition order."""
    found = []
    for name in names:
        try:
            root = module.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"the model has no submodule {name!r} to randomise") from None
        found.extend(m for _, m in reversed(list(root.named_modules())) if hasattr(m, "reset_parameters"))
    return found


def randomised_models(model: Any, blocks: tuple[Block, ...], seed: int = 42) -> Iterator[tuple[str, Any]]:
    """Cascading randomisation: after step ``k``, blocks ``0..k`` of a copy are re-initialised.

    Args:
        model: an ``nn.Module`` or a :class:`pipeline.models.Classifier`; never modified.
        blocks: the steps, top-down (:func:`randomisation_blocks`).
        seed: each module is reset right after ``torch.manual_seed(seed + 1)`` (Quantus' rule).

    Yields:
        ``(step name, randomised model)`` of the same kind as ``model`` (a Classifier with its
        module replaced), in eval mode with frozen weights. The same copy is modified step after
        step: use it before advancing the iterator.
    """
    module = _module(model)
    if isinstance(module, torch.jit.ScriptModule):
        raise ConfigError("a TorchScript model cannot be re-initialised block by block (its modules have no "
                          "reset_parameters); run the randomisation check on the model's Python definition")
    randomised = copy.deepcopy(module).eval()
    for parameter in randomised.parameters():
        parameter.requires_grad_(False)
    device = next(randomised.parameters()).device
    wrapped = dataclasses.replace(model, module=randomised) if dataclasses.is_dataclass(model) else randomised
    for name, names in blocks:
        targets = _resettable(randomised, names)
        if not targets:  # nothing would change: a silent step would report a perfect similarity
            raise ConfigError(f"step {name!r} has no module with reset_parameters to re-initialise (a TorchScript "
                              "model's modules have none); run the check on the model's Python definition")
        # fork_rng restores the global generators, so the caller's random state is untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            for target in targets:
                torch.manual_seed(seed + 1)
                target.reset_parameters()
        yield name, wrapped


@dataclass(frozen=True)
class RandomisationResult:
    """Similarity of each image's map after each step to its original map.

    Attributes:
        steps: step names, top-down (cumulative: step ``k`` has blocks ``0..k`` randomised).
        spearman_abs, spearman, ssim, hog_pearson: ``(B, S)`` float64 numpy arrays, one column per
            step (see :func:`map_similarity`).
    """

    steps: tuple[str, ...]
    spearman_abs: np.ndarray
    spearman: np.ndarray
    ssim: np.ndarray
    hog_pearson: np.ndarray

    def means(self) -> dict[str, list[float]]:
        """Each similarity's mean over images, per step (NaN-ignoring), for curves and summaries."""
        return {name: np.nanmean(getattr(self, name), 0).tolist()
                for name in ("spearman_abs", "spearman", "ssim", "hog_pearson")}


def _rows_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of corresponding rows of ``(B, n)`` arrays (NaN for a constant row)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _scaled_abs(maps: np.ndarray) -> np.ndarray:
    flat = np.abs(maps.reshape(maps.shape[0], -1))
    top = flat.max(1, keepdims=True)
    return (np.divide(flat, top, out=np.zeros_like(flat), where=top > 0)).reshape(maps.shape)


def map_similarity(original: Tensor | np.ndarray, other: Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Per-image similarities of two batches of maps.

    Args:
        original, other: ``(B, 1, H, W)`` or ``(B, H, W)``; ``H, W >= 24`` (HOG's 3x3 blocks of
            8x8 cells).

    Returns:
        ``{"spearman_abs", "spearman", "ssim", "hog_pearson"}``, each ``(B,)`` float64 (NaN where a
        map is constant: a correlation is undefined there).
    """
    from scipy.stats import rankdata
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    a = np.asarray(original.detach().cpu() if isinstance(original, Tensor) else original, dtype=np.float64)
    b = np.asarray(other.detach().cpu() if isinstance(other, Tensor) else other, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[1] != 1):
        raise ConfigError(f"maps must both have shape (B, 1, H, W) or (B, H, W); got {a.shape} and {b.shape}")
    a, b = a.reshape(a.shape[0], *a.shape[-2:]), b.reshape(b.shape[0], *b.shape[-2:])
    if min(a.shape[-2:]) < 24:
        raise ConfigError(f"maps must be at least 24x24 for HOG's 3x3 blocks of 8x8 cells; got {a.shape[-2:]}")
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    result = {
        "spearman_abs": _rows_pearson(rankdata(np.abs(flat_a), axis=1), rankdata(np.abs(flat_b), axis=1)),
        "spearman": _rows_pearson(rankdata(flat_a, axis=1), rankdata(flat_b, axis=1)),
    }
    sa, sb = _scaled_abs(a), _scaled_abs(b)
    ssim, hogs = [], []
    for x, y in zip(sa, sb):  # scikit-image works one image at a time, on the CPU
        joint = np.concatenate([x, y])
        ssim.append(structural_similarity(x, y, data_range=float(joint.max() - joint.min()) or 1.0))
        hogs.append((hog(x), hog(y)))
    result["ssim"] = np.array(ssim)
    result["hog_pearson"] = _rows_pearson(np.stack([h[0] for h in hogs]), np.stack([h[1] for h in hogs]))
    return result


def randomisation_check(
    model: Any,
    saliency_fn: Callable[[Any], Tensor],
    blocks: tuple[Block, ...] | None = None,
    seed: int = 42,
    original: Tensor | None = None,
) -> RandomisationResult:
    """Run the cascading randomisation test.

    Args:
        model: an ``nn.Module`` or a :class:`pipeline.models.Classifier` (not modified).
        saliency_fn: ``saliency_fn(model) -> (B, 1, H, W)``: the maps of a fixed batch of images
            for the model it is given (of the same kind as ``model``). It must explain the same
            classes at every step (the pipeline: the original targets) and re-seed any randomness
            of its own (e.g. a mask solver's), so that only the model changes between steps.
        blocks: the steps; ``None``: :func:`randomisation_blocks` of ``model``.
        seed: the re-initialisation seed (Quantus' default 42).
        original: the maps of the unmodified model, if already computed (else ``saliency_fn(model)``).

    Returns:
        :class:`RandomisationResult` with one column per step.
    """
    blocks = randomisation_blocks(model) if blocks is None else tuple(blocks)
    original = saliency_fn(model) if original is None else original
    columns: dict[str, list[np.ndarray]] = {"spearman_abs": [], "spearman": [], "ssim": [], "hog_pearson": []}
    steps = []
    for name, randomised in randomised_models(model, blocks, seed):
        similarity = map_similarity(original, saliency_fn(randomised))
        for key in columns:
            columns[key].append(similarity[key])
        steps.append(name)
    return RandomisationResult(tuple(steps), **{k: np.stack(v, 1) for k, v in columns.items()})
