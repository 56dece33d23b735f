"""ROAD: remove and debias (Rong et al., ICML 2022; reference code ``tleemann/road_evaluation``).

Removing pixels with a constant lets the shape of the removed region tell the model the class;
ROAD fills removed pixels by noisy linear imputation (:mod:`pipeline.metrics.imputation`) instead,
and scores the model on the imputed images, without retraining.

The protocol, as the reference's ``ImputedDataset`` and ``road_eval`` do it:

* **ranking** (:func:`road_ranks`): the map is min-max normalised per image,
  ``(s - min) / (max - min + 1e-5)``, a fixed offset ``tie_jitter * z`` is added (``z`` a standard
  normal ``(H, W)`` map drawn once from ``tie_seed``, the same for every image: the reference draws
  ``1e-4 * np.random.randn(H, W)`` once per dataset "for attribution maps with many equal values"),
  and pixels are sorted by the result, largest first (a stable sort: with ``tie_jitter=0`` equal
  values keep raster order);
* **removal** at a fraction ``p``, with ``k = int(H * W * p)`` (the reference's expression, float
  rounding included): MoRF removes the ``k`` highest-ranked pixels, LeRF removes all pixels except
  those ``k`` (the reference's two meanings of ``th_p``: ``remove=True`` / ``remove=False``);
* **imputation** of the removed pixels (all channels), Gaussian noise of ``noise`` in the units of
  the images passed in;
* **score**: the softmax probability of the explained class and whether it is still the top-1;
* **area**: the mean of a curve over the configured fractions (:func:`road_auc`); the combined
  score is ``(LeRF area - MoRF area) / 2`` (higher is better: removing the least relevant pixels
  should hurt little, removing the most relevant a lot). With fractions 0.1 .. 0.9 this equals
  pytorch-grad-cam's ``ROADCombined`` (whose ``percentile`` for MoRF is the share *kept*).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from pipeline.errors import ConfigError
from pipeline.metrics.imputation import ImputationConfig, linear_impute, seeded_noise

__all__ = ["ROAD_FRACTIONS", "RoadConfig", "RoadResult", "road_ranks", "road_removed", "road_auc", "road_curves", "road_settings"]

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The paper's fractions of pixels (removed for MoRF, kept for LeRF), as pytorch-grad-cam's
``ROADCombined`` averages them. Quantus' ``ROAD`` uses 1, 3, ..., 99 % (MoRF only)."""

Forward = Callable[[Tensor], Tensor]
"""Maps a batch ``(N, C, H, W)`` in the units of the images given to :func:`road_curves` to logits ``(N, K)``."""


@dataclass(frozen=True)
class RoadConfig:
    """Settings of :func:`road_curves` (every field is recorded with results).

    Attributes:
        fractions: increasing values in ``(0, 1)``: share of pixels removed (MoRF) or kept (LeRF).
        noise: standard deviation of the imputation noise, in the units of the images (the
            reference: 0.01 on ``[0, 1]`` pixels, before normalisation). ``0`` turns it off.
        noise_seed: image ``b``'s noise comes from a generator seeded ``noise_seed + seeds[b]``.
        tie_jitter: scale of the fixed tie-breaking offset added to the normalised map (the
            reference: ``1e-4``); ``0`` breaks ties by raster order only.
        tie_seed: seed of that offset's ``(H, W)`` standard-normal map.
        chunk: model inputs per forward call.
        imputation: the batched solver's settings (its ``chunk``: systems solved together).
    """

    fractions: tuple[float, ...] = ROAD_FRACTIONS
    noise: float = 0.01
    noise_seed: int = 0
    tie_jitter: float = 1e-4
    tie_seed: int = 0
    chunk: int = 64
    imputation: ImputationConfig = ImputationConfig()

    def __post_init__(self) -> None:
        fractions = tuple(float(f) for f in self.fractions)
        if not fractions or any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(set(fractions)):
            raise ConfigError(f"fractions must be distinct increasing values in (0, 1); got {self.fractions!r}")
        object.__setattr__(self, "fractions", fractions)
        if not self.noise >= 0:
            raise ConfigError(f"noise must be >= 0; got {self.noise!r}")
        if not self.tie_jitter >= 0:
            raise ConfigError(f"tie_jitter must be >= 0; got {self.tie_jitter!r}")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise ConfigError(f"chunk must be an integer >= 1; got {self.chunk!r}")


@dataclass(frozen=True)
class RoadResult:
    """ROAD scores of a batch of ``B`` images at ``P`` fractions (tensors on the images' device).

    Attributes:
        fractions: ``(P,)`` float64, the configuration's fractions.
        original: ``(B,)`` probability of the explained class on the unmodified image.
        morf, lerf: ``(B, P)`` probability of the explained class after MoRF / LeRF removal.
        morf_top1, lerf_top1: ``(B, P)`` bool, whether the explained class is still the top-1.
    """

    fractions: Tensor
    original: Tensor
    morf: Tensor
    lerf: Tensor
    morf_top1: Tensor
    lerf_top1: Tensor

    @property
    def morf_auc(self) -> Tensor:
        """``(B,)`` :func:`road_auc` of the MoRF curve (lower: better map)."""
        return road_auc(self.morf)

    @property
    def lerf_auc(self) -> Tensor:
        """``(B,)`` :func:`road_auc` of the LeRF curve (higher: better map)."""
        return road_auc(self.lerf)

    @property
    def combined(self) -> Tensor:
        """``(B,)`` ``(lerf_auc - morf_auc) / 2`` (higher: better map)."""
        return (self.lerf_auc - self.morf_auc) / 2


def road_auc(curves: Tensor) -> Tensor:
    """Area of ROAD curves ``(B, P)``: their mean over the ``P`` fractions, ``(B,)``.

    With evenly spaced fractions this is the area under the step curve through them (the curve's
    average level); it is what pytorch-grad-cam's ``ROAD*Average`` classes compute. The curve at
    ``p = 0`` (the unmodified image) is not part of it.
    """
    if curves.dim() != 2 or curves.shape[1] < 1:
        raise ConfigError(f"curves must have shape (B, P) with P >= 1; got {tuple(curves.shape)}")
    return curves.mean(1)


def _as_bhw(saliency: Tensor) -> Tensor:
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        return saliency[:, 0]
    if saliency.dim() == 3:
        return saliency
    raise ConfigError(f"saliency must have shape (B, 1, H, W) or (B, H, W); got {tuple(saliency.shape)}")


def road_ranks(saliency: Tensor, tie_jitter: float = 1e-4, tie_seed: int = 0) -> Tensor:
    """Each pixel's rank in ROAD's order (0 = most relevant), as the reference ranks.

    Args:
        saliency: ``(B, 1, H, W)`` or ``(B, H, W)``, finite; larger = more relevant.
        tie_jitter, tie_seed: the fixed offset (see the module docstring).

    Returns:
        ``(B, H, W)`` ``torch.long`` on ``saliency``'s device.
    """
    maps = _as_bhw(saliency).to(torch.float64)
    if not torch.isfinite(maps).all():
        raise ConfigError("saliency contains NaN or infinite values; allowed: finite numbers")
    b, h, w = maps.shape
    flat = maps.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    flat = (flat - low) / (high - low + 1e-5)  # the reference's normalize_map
    if tie_jitter > 0:
        offset = torch.randn((h * w,), generator=torch.Generator().manual_seed(int(tie_seed)), dtype=torch.float64)
        flat = flat + tie_jitter * offset.to(flat.device)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(h * w, device=flat.device).expand(b, -1)
    return torch.empty_like(order).scatter_(1, order, positions).view(b, h, w)


def road_removed(ranks: Tensor, fractions: Sequence[float]) -> tuple[Tensor, Tensor]:
    """The removed pixels of every fraction, for MoRF and for LeRF.

    Args:
        ranks: ``(B, H, W)`` from :func:`road_ranks`.
        fractions: ``P`` values in ``(0, 1)``.

    Returns:
        ``(morf, lerf)``, each ``(B, P, H, W)`` bool, ``True`` = removed. With ``k = int(H * W * p)``,
        MoRF removes ranks ``< k`` and LeRF removes ranks ``>= k``.
    """
    b, h, w = ranks.shape
    counts = torch.tensor([int(h * w * p) for p in fractions], device=ranks.device).view(1, -1, 1, 1)
    top = ranks[:, None] < counts
    return top, ~top


def _scores(forward: Forward, inputs: Tensor, targets: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Softmax probability of ``targets`` ``(N,)`` and whether it is the argmax, for ``inputs`` ``(N, ...)``."""
    probs, top1 = [], []
    for start in range(0, inputs.shape[0], chunk):
        logits = forward(inputs[start:start + chunk]).float()
        wanted = targets[start:start + chunk, None]
        probs.append(torch.softmax(logits, 1).gather(1, wanted)[:, 0])
        top1.append(logits.argmax(1) == wanted[:, 0])
    return torch.cat(probs), torch.cat(top1)


def road_curves(
    forward: Forward,
    images: Tensor,
    saliency: Tensor,
    targets: Tensor,
    config: RoadConfig = RoadConfig(),
    seeds: Sequence[int] | None = None,
) -> RoadResult:
    """MoRF and LeRF ROAD curves of a batch, batched over images and fractions.

    All ``B x 2P`` removals are imputed together (in chunks of ``config.imputation.chunk``) and
    scored together (in chunks of ``config.chunk``); there is no per-image loop.

    Args:
        forward: maps a batch in the units of ``images`` to logits; called under ``torch.no_grad()``
            (put the model in ``eval()``). To impute in pixel units as the reference does, pass
            ``[0, 1]`` images and ``forward = lambda x: classifier(classifier.normalize(x))``.
        images: ``(B, C, H, W)`` float.
        saliency: ``(B, 1, H, W)`` or ``(B, H, W)``, the maps at the images' resolution.
        targets: ``(B,)`` integer, the explained class of each image.
        config: :class:`RoadConfig`.
        seeds: ``B`` integers, one per image (e.g. its index in the dataset), so that an image's
            noise does not depend on its batch; ``None``: ``0 .. B-1``.

    Returns:
        :class:`RoadResult`.
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ConfigError(f"images must be a float tensor of shape (B, C, H, W); got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if tuple(_as_bhw(saliency).shape) != (b, h, w):
        raise ConfigError(f"saliency shape {tuple(saliency.shape)} does not match images {tuple(images.shape)}")
    if targets.shape != (b,) or targets.dtype not in (torch.int32, torch.int64):
        raise ConfigError(f"targets must be an integer tensor of shape ({b},); got {tuple(targets.shape)} {targets.dtype}")
    seeds = list(range(b)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != b:
        raise ConfigError(f"seeds must give one integer per image ({b}); got {len(seeds)}")
    n_fractions = len(config.fractions)
    device = images.device
    with torch.no_grad():
        targets = targets.to(device=device, dtype=torch.long)
        ranks = road_ranks(saliency.to(device), config.tie_jitter, config.tie_seed)
        morf, lerf = road_removed(ranks, config.fractions)
        removed = torch.cat([morf, lerf], 1).reshape(b * 2 * n_fractions, 1, h, w)  # image-major
        repeated = images.repeat_interleave(2 * n_fractions, 0)
        imputed = linear_impute(repeated, removed, config.imputation)
        if config.noise > 0:
            draws = seeded_noise([config.noise_seed + s for s in seeds], (2 * n_fractions, c, h, w), device, images.dtype)
            imputed = torch.where(removed, imputed + config.noise * draws.flatten(0, 1), imputed)
        probs, top1 = _scores(forward, imputed, targets.repeat_interleave(2 * n_fractions), config.chunk)
        original, _ = _scores(forward, images, targets, config.chunk)
    probs, top1 = probs.view(b, 2, n_fractions), top1.view(b, 2, n_fractions)
    return RoadResult(
        fractions=torch.tensor(config.fractions, dtype=torch.float64),
        original=original,
        morf=probs[:, 0], lerf=probs[:, 1], morf_top1=top1[:, 0], lerf_top1=top1[:, 1],
    )


def road_settings(config: RoadConfig) -> dict:
    """``config`` as plain JSON-ready values (for ``summary.json``)."""
    values = dataclasses.asdict(config)
    values["imputation"]["dtype"] = str(config.imputation.dtype).removeprefix("torch.")
    values["fractions"] = list(config.fractions)
    return values
