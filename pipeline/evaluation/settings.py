"""How a store is evaluated (:class:`EvalConfig`), and the names of what an evaluation reports."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from ..errors import ConfigError
from ..identity import run_key
from ..metrics import CALIBRATION_ALPHAS, RISE_STEP, ROAD_FRACTIONS, BoxKind, ImputationConfig, RoadConfig
from ..options import choices


CURVES: tuple[str, ...] = ("deletion_zero", "deletion_blur", "insertion")
"""The three causal curves per image, in ``curves.npz`` and ``curves.png``."""

AUC_COLUMNS: dict[str, str] = {"deletion_zero": "deletion_auc_zero", "deletion_blur": "deletion_auc_blur",
                               "insertion": "insertion_auc"}
"""Curve name -> per-image AUC column."""

CURVE_METRIC: dict[str, str] = {"deletion_zero": "deletion", "deletion_blur": "deletion", "insertion": "insertion"}
"""Curve name -> the metric that selects it (:data:`METRICS`), also its mode of
:func:`pipeline.metrics.causal_curves`."""

METRICS: dict[str, str] = {
    "deletion": "deletion curves onto zeros and onto a blur (RISE), their AUCs",
    "insertion": "insertion curve from a blur (RISE), its AUC",
    "localisation": "box localisation at every threshold (Fong & Vedaldi Table 1); needs boxes",
    "pointing": "pointing game and energy pointing game; needs boxes",
    "road": "ROAD (Rong et al. 2022): MoRF and LeRF curves on noisy-linear-imputed images, their areas "
            "and (LeRF - MoRF) / 2",
    "complexity": "Sparseness (Gini index, Chalasani et al. 2020) and Complexity (entropy, Bhatt et al. 2020)",
}
"""The metrics ``perturb evaluate --metrics`` can select, with what each computes (docs/metrics.md)."""

DEFAULT_METRICS: tuple[str, ...] = ("deletion", "insertion", "localisation", "pointing")
"""What an evaluation computes unless asked otherwise (localisation and pointing only with boxes):
ROAD (18 imputations and forward passes per image) and complexity are opt-in."""

BOX_METRICS: tuple[str, ...] = ("localisation", "pointing")
"""The metrics that need ground-truth boxes."""

SEPARATE_METRICS: dict[str, str] = {
    "randomisation": "the model-randomisation check re-solves every map once per randomised block; run it "
                     "with `perturb randomisation STORE --out FOLDER`",
}
"""Metric names a user may try in ``--metrics`` that are separate commands, with where to find them."""


def parse_metrics(text: str | Any) -> tuple[str, ...]:
    """``"road, complexity"`` (or a sequence of names) as a tuple of :data:`METRICS` names, in
    :data:`METRICS` order, each once.

    Raises:
        ConfigError: an empty list, or a name outside :data:`METRICS` (the message lists them).
    """
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    for name in names:
        if name in SEPARATE_METRICS:
            raise ConfigError(f"metric {name!r} is not part of evaluate: {SEPARATE_METRICS[name]}")
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r}; the metrics are {', '.join(METRICS)} "
                              f"(default: {','.join(DEFAULT_METRICS)})")
    if not names:
        raise ConfigError(f"metrics must name at least one of {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


def road_column(curve: str, fraction: float) -> str:
    """The per-image column of a ROAD curve point: ``road_morf_10`` (probability of the explained
    class with 10% of the pixels removed, most relevant first), ``road_lerf_top1_10`` (whether it is
    still the top-1 with 10% kept, least relevant removed)...; ``curve`` one of ``morf``, ``lerf``,
    ``morf_top1``, ``lerf_top1``."""
    return f"road_{curve}_{100 * fraction:g}"


ROAD_SUMMARY: tuple[str, ...] = ("road_morf_auc", "road_lerf_auc", "road_combined", "road_morf_top1_auc",
                                 "road_lerf_top1_auc", "road_combined_top1")
"""Per-image ROAD areas (means over the fractions), summarised and compared like the AUCs."""

COMPLEXITY_COLUMNS: tuple[str, ...] = ("sparseness", "complexity")
"""Per-image map-complexity columns."""

RANDOMISATION_FILES: dict[str, str] = {"csv": "randomisation.csv", "json": "randomisation.json",
                                       "png": "randomisation.png"}
"""What ``perturb randomisation`` writes into a run folder (the report and ``compare`` read them)."""

RANDOMISATION_COLUMNS: dict[str, str] = {"randomisation_spearman_abs": "spearman_abs", "randomisation_ssim": "ssim",
                                         "randomisation_hog_pearson": "hog_pearson"}
"""Per-image columns ``compare`` and the report add from ``randomisation.csv``: each image's mean
similarity over the randomised steps (step 0, the unmodified model, left out) -> its similarity."""


@dataclass(frozen=True)
class EvalConfig:
    """How a store is evaluated.

    Attributes:
        step: pixels moved per deletion/insertion step (RISE's evaluation: 1792 at 224x224).
        chunk: model inputs per forward call in the curves (memory only, not results).
        batch_size: images read and evaluated together.
        workers: image-decoding processes (0 = in this process).
        blur_kernel, blur_sigma: the blur substrate (RISE: 11, 5).
        value_alphas, energy_alphas, mean_alphas: thresholds per method (docs/metrics.md; the paper's
            0.10 / 0.95 / 0.5 are included by default, with a few more to show sensitivity).
        box_kinds: ``tight`` (the authors' code) and/or ``component`` (largest connected component).
        tolerance: pointing-game tolerance in original-frame pixels (Zhang et al.: 15).
        gallery: images shown per row (best and worst) in each gallery plot; 0 = no galleries.
        plots: write ``curves.png`` and the galleries.
        alpha_split: the paper's protocol (needs boxes): choose each threshold method's alpha on
            the calibration images and report the error on the others
            (:func:`pipeline.metrics.held_out_localization`): a fraction in ``(0, 1)`` (each image
            assigned by a hash of its path and ``alpha_split_seed``) or the calibration images'
            paths or stems. None: off.
        alpha_split_seed: varies the fractional split.
        metrics: the :data:`METRICS` computed (default :data:`DEFAULT_METRICS`; localisation and
            pointing only when boxes are given, and an error when asked for without them).
        road_fractions: ROAD's fractions of pixels (removed for MoRF, kept for LeRF), the
            paper's 0.1 .. 0.9 by default.
        road_noise: standard deviation of ROAD's imputation noise on ``[0, 1]`` pixels (the
            reference's 0.01); ``0`` turns it off.
        road_seed: image ``i``'s noise is drawn from a generator seeded ``road_seed + index``.
        road_tol: the imputation's relative residual tolerance
            (:class:`pipeline.metrics.ImputationConfig`; float64 solve).
        road_chunk: image x mask systems imputed together (0: 8 on a CPU, 256 on a GPU).
        road_precision: the imputation's precision, ``"float64"`` (default; within 1e-7 of the
            reference's direct solve) or ``"float32"`` (about 2.5x faster on a CPU; pass
            ``road_tol=1e-6``: errors up to about 2e-3 on [0, 1] pixels, below the noise's 0.01).
    """

    step: int = RISE_STEP
    chunk: int = 32
    batch_size: int = 8
    workers: int = 2
    blur_kernel: int = 11
    blur_sigma: float = 5.0
    value_alphas: tuple[float, ...] = (0.10, 0.25, 0.5)
    energy_alphas: tuple[float, ...] = (0.5, 0.8, 0.95)
    mean_alphas: tuple[float, ...] = (0.5, 1.0, 1.5)
    box_kinds: tuple[str, ...] = ("tight", "component")
    tolerance: float = 15.0
    gallery: int = 4
    plots: bool = True
    alpha_split: float | tuple[str, ...] | None = None
    alpha_split_seed: int = 0
    metrics: tuple[str, ...] = DEFAULT_METRICS
    road_fractions: tuple[float, ...] = ROAD_FRACTIONS
    road_noise: float = 0.01
    road_seed: int = 0
    road_tol: float = 1e-9
    road_chunk: int = 0
    road_precision: str = "float64"

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", parse_metrics(self.metrics))  # lists from JSON become tuples
        object.__setattr__(self, "road_fractions", tuple(float(f) for f in self.road_fractions))
        self.road_config  # noqa: B018 -- validates the ROAD settings now, not after the first batch
        if isinstance(self.alpha_split, (list, tuple, set, frozenset)):
            object.__setattr__(self, "alpha_split", tuple(str(k) for k in self.alpha_split))
            _require("alpha_split", self.alpha_split, "a non-empty list of image paths", bool(self.alpha_split))
        elif self.alpha_split is not None:
            _require("alpha_split", self.alpha_split, "a fraction strictly between 0 and 1",
                     _is_number(self.alpha_split, 0, False) and self.alpha_split < 1)
        _require("alpha_split_seed", self.alpha_split_seed, "an integer >= 0", _is_int(self.alpha_split_seed, 0))
        for name in ("step", "chunk", "batch_size"):
            _require(name, getattr(self, name), "an integer >= 1", _is_int(getattr(self, name), 1))
        _require("workers", self.workers, "an integer >= 0", _is_int(self.workers, 0))
        _require("gallery", self.gallery, "an integer >= 0", _is_int(self.gallery, 0))
        _require("blur_kernel", self.blur_kernel, "an odd integer >= 1",
                 _is_int(self.blur_kernel, 1) and self.blur_kernel % 2 == 1)
        _require("blur_sigma", self.blur_sigma, "a number > 0", _is_number(self.blur_sigma, 0, False))
        _require("tolerance", self.tolerance, "a number >= 0", _is_number(self.tolerance, 0, True))
        for name, upper in (("value_alphas", 1.0), ("energy_alphas", 1.0), ("mean_alphas", math.inf)):
            alphas = tuple(float(a) for a in getattr(self, name))
            allowed = "numbers in [0, 1]" if upper == 1.0 else "numbers >= 0"
            _require(name, alphas, allowed, all(0 <= a <= upper for a in alphas))
            object.__setattr__(self, name, alphas)  # lists from JSON/CLI become tuples
        kinds = tuple(str(k) for k in self.box_kinds)
        _require("box_kinds", kinds, f"a non-empty subset of {choices(BoxKind)}",
                 bool(kinds) and set(kinds) <= set(choices(BoxKind)))
        object.__setattr__(self, "box_kinds", kinds)

    @classmethod
    def with_alpha_split(cls, alpha_split: float | tuple[str, ...] | None, alpha_split_seed: int = 0,
                         **fields: Any) -> EvalConfig:
        """The settings ``fields`` for the paper's held-out protocol with ``alpha_split`` (None: off,
        just ``EvalConfig(**fields)``): every alpha of the calibration grid
        (:data:`pipeline.metrics.CALIBRATION_ALPHAS`) joins each method's alphas, so that the
        calibration images can choose among them."""
        if alpha_split is None:
            return cls(**fields)
        grid = {f"{kind}_alphas": tuple(sorted(set(fields.pop(f"{kind}_alphas", getattr(cls, f"{kind}_alphas")))
                                               | set(alphas)))
                for kind, alphas in CALIBRATION_ALPHAS.items()}
        return cls(alpha_split=alpha_split, alpha_split_seed=alpha_split_seed, **fields, **grid)

    @property
    def road_config(self) -> RoadConfig:
        """The :class:`pipeline.metrics.RoadConfig` of these settings (its other fields at their defaults)."""
        _require("road_precision", self.road_precision, "'float64' or 'float32'",
                 self.road_precision in ("float64", "float32"))
        dtype = torch.float64 if self.road_precision == "float64" else torch.float32
        return RoadConfig(fractions=self.road_fractions, noise=self.road_noise, noise_seed=self.road_seed,
                          chunk=self.chunk, imputation=ImputationConfig(tol=self.road_tol, chunk=self.road_chunk,
                                                                        dtype=dtype))

    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("chunk", "batch_size", "workers", "road_chunk")
    """The fields that set memory, speed and decoding only, never what an evaluation reports."""

    def result_settings(self) -> dict[str, Any]:
        """Every setting that decides what an evaluation reports: all fields but
        :attr:`RESOURCE_FIELDS`, tuples as lists (JSON-plain)."""
        return {f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
                for f in dataclasses.fields(self) if f.name not in self.RESOURCE_FIELDS}

    def reproduces(self, recorded: Mapping[str, Any]) -> bool:
        """Whether an evaluation made with the settings ``recorded`` (a :meth:`result_settings`,
        perhaps from an older version) reports what these settings would: every result setting
        agrees (``4`` and ``4.0`` alike), and one the record lacks, because it was made before the
        setting existed, counts as the setting's default, which keeps the behaviour from before it."""
        defaults = type(self)().result_settings()
        wanted = self.result_settings()
        had = {name: recorded.get(name, defaults[name]) for name in wanted}
        return run_key(had) == run_key(wanted)

    def wants(self, metric: str) -> bool:
        """Whether ``metric`` (a :data:`METRICS` name) is computed."""
        return metric in self.metrics

    @property
    def thresholds(self) -> list[tuple[str, float]]:
        """Every ``(method, alpha)`` pair, in value, energy, mean order."""
        return ([("value", a) for a in self.value_alphas] + [("energy", a) for a in self.energy_alphas]
                + [("mean", a) for a in self.mean_alphas])

def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low

def _is_number(value: Any, low: float, inclusive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return False
    return math.isfinite(value) and (value >= low if inclusive else value > low)

def _require(name: str, value: Any, allowed: str, ok: bool) -> None:
    if not ok:
        raise ConfigError(f"EvalConfig.{name} must be {allowed}; got {value!r}")

def metric_direction(name: str) -> str:
    """``"lower"`` or ``"higher"``: which way metric column ``name`` is better.

    Deletion AUCs, ROAD's MoRF columns, ``p_final``, ``area`` and ``complexity`` (entropy) are
    better lower (a smaller mask that deletes more, a simpler map), and so are the randomisation
    check's similarities (a map that stays the same when the model is randomised does not explain
    it); insertion, ROAD's LeRF and
    combined columns, ``sparseness``, localisation, pointing games and ``score_drop`` higher. ``p_original``,
    ``p_perturbed`` and ``tv`` are descriptive: reported as ``""``.
    """
    if name.startswith(("deletion_auc", "locerr_", "road_morf", "randomisation_")) or \
            name in ("p_final", "area", "complexity"):
        return "lower"
    if name in ("p_original", "p_perturbed", "tv"):
        return ""
    return "higher"
