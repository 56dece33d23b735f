"""Solver configuration: one small frozen dataclass per concern, and presets as data.

A preset is a :class:`SolverConfig` value; variants are made with :func:`override`
(``"objective.tv_coeff=0.05"``, or ``"tv_coeff=0.05"`` when the field name is unambiguous), and
:func:`resolve` is the one way from a preset's name, overrides and an iteration count to a
configuration. Every field holds its declared type, whatever it was given (``l1_start=4`` is
stored as ``4.0``): values are normalised once, when a configuration is made. The resolved
configuration is stored with every output (:func:`to_dict`), and the preset and overrides that
named it (:class:`Origin`) beside it, outside its identity (:mod:`pipeline.identity`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from .errors import ConfigError
from .identity import PROVENANCE, flatten
from .options import choice

# The option sets, each written once: the dataclasses type their fields with these, check values
# with pipeline.options.choice, and the CLI lists them.
MaskUpsample = Literal["bilinear", "nearest-blur", "smooth-max"]
MaskInit = Literal["ones", "uniform", "circle"]
Game = Literal["delete", "preserve"]
Score = Literal["prob", "logit", "top5"]
Reduction = Literal["mean", "sum"]
Optimizer = Literal["adam", "sgd"]
Schedule = Literal["constant", "cosine"]
Precision = Literal["fp32", "bf16"]
Constant = Literal["mean", "zero"]
Padding = Literal["reflect", "zero"]
Interpolation = Literal["hat", "floor"]

PerturbationKind = Literal["blur", "median", "jacobgil-average", "constant", "noise", "modulated-blur"]
"""``blur``: Gaussian blur (``sigma``); ``median``: median filter (``median_size``);
``jacobgil-average``: mean of jacobgil's 11/sigma-5 Gaussian and 11 median blur (its README);
``constant``: the image's mean colour, or zero (= mean grey after normalisation);
``noise``: i.i.d. Gaussian noise of std ``noise_std`` around the image;
``modulated-blur``: the paper's per-pixel blur ``sigma0 * (1 - m)`` through a ``levels``-level pyramid."""


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _typed(config: Any, group: str) -> None:
    """Give every number, bool and tuple field of a config dataclass its declared type, in place
    (the one normalisation of values: ``4`` for a float field becomes ``4.0``, a whole ``75.0``
    for an int field ``75``, a JSON list for a tuple field a tuple), and check every option-set
    field (a ``Literal``) with :func:`pipeline.options.choice`.

    Raises:
        ConfigError: a value that is not of the field's kind or not one of its options, naming
            ``group.field``.
    """
    for name, kind in _field_types(type(config)).items():
        value = getattr(config, name)
        where = f"{group}.{name}" if group else name
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            value = float(value)
        elif kind is int:
            whole = isinstance(value, float) and value.is_integer()
            if isinstance(value, bool) or not (isinstance(value, int) or whole):
                raise ConfigError(f"{where} must be a whole number, got {value!r}")
            value = int(value)
        elif kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif typing.get_origin(kind) is tuple:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
                raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
            value = tuple(float(v) for v in value)
        elif typing.get_origin(kind) is Literal:
            value = choice(where, value, kind)
        else:
            continue  # sub-configurations are checked by their own class
        object.__setattr__(config, name, value)


@dataclass(frozen=True)
class PerturbationConfig:
    """How pixels are perturbed. Sigmas and sizes are in pixels of the model input (224 px)."""

    kind: PerturbationKind = "blur"
    sigma: float = 10.0
    kernel_size: int = 0  # 0: 2 * ceil(3 sigma) + 1, capped to fit the image
    median_size: int = 11
    constant: Constant = "mean"
    noise_std: float = 0.2
    levels: int = 8
    # TorchRay's blur (extremal perturbation's reference): kernel radius ceil(4 sigma), zero borders
    # (zero is the mean colour of a normalised image), and its pyramid interpolation. The defaults
    # are jacobgil's and the paper's: radius ceil(3 sigma), reflect borders, hat weights.
    truncate: float = 3.0
    padding: Padding = "reflect"
    interpolation: Interpolation = "hat"

    def __post_init__(self) -> None:
        _typed(self, "perturbation")
        if self.sigma <= 0 or self.levels < 2 or self.median_size < 1 or self.median_size % 2 == 0:
            raise ConfigError("perturbation needs sigma > 0, levels >= 2 and an odd median_size >= 1")
        if self.truncate <= 0:
            raise ConfigError(f"perturbation.truncate must be > 0, got {self.truncate}")


@dataclass(frozen=True)
class MaskConfig:
    """The optimised mask: a ``size x size`` grid of parameters mapped to the input.

    ``upsample``: ``bilinear`` (jacobgil's, align_corners=True), ``nearest-blur`` (the paper:
    nearest-neighbour upsampling then a Gaussian of ``smooth_sigma`` input pixels), or
    ``smooth-max`` (extremal perturbation's smooth masks, TorchRay's ``MaskGenerator``): one
    parameter every ``step`` input pixels, each output pixel the smooth maximum (softmax pooling
    of ``coldness``) of the parameters within ``1 + ceil(smooth_sigma / step)`` cells, each weighted
    by ``exp(-2 max(d / smooth_sigma - 1/2, 0)^2)`` of its distance ``d``; the mask has a margin of
    ``smooth_sigma`` pixels beyond the image, which the area constraint counts
    (:func:`pipeline.solve.masks.generate`). ``size * step`` must cover the input; TorchRay's grid is
    ``ceil(H / step)``.
    ``init``: ``ones`` (keep everything; jacobgil's, TorchRay's), ``uniform`` (random in [0, 1]; the
    paper), ``circle`` (the paper's smallest centred blurred circle that deletes the score).
    ``jitter``: largest random shift tau of the input, in pixels, drawn each iteration (paper: 4).
    ``flip``: flip the model's input horizontally on even iterations (TorchRay's jitter).
    """

    size: int = 28
    # how the grid maps to the input
    upsample: MaskUpsample = "bilinear"
    smooth_sigma: float = 5.0
    step: int = 7
    coldness: float = 20.0
    # where the optimisation starts, and the input's random shifts
    init: MaskInit = "ones"
    jitter: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        _typed(self, "mask")
        if self.size < 2 or self.jitter < 0:
            raise ConfigError(f"mask.size must be >= 2 and mask.jitter >= 0, got {self.size} and {self.jitter}")
        if self.step < 1 or self.coldness <= 0 or self.smooth_sigma <= 0:
            raise ConfigError(f"mask.step must be >= 1, mask.coldness and mask.smooth_sigma > 0, got "
                              f"{self.step}, {self.coldness}, {self.smooth_sigma}")


@dataclass(frozen=True)
class ObjectiveConfig:
    """What is minimised.

    ``game``: ``delete`` minimises ``l1 * |1 - m| + tv * TV(m) + score(x_m)`` (the smallest deletion
    that destroys the score); ``preserve`` minimises ``l1 * |m| + tv * TV(m) - score(x_m)`` (the
    smallest region that keeps it).
    ``score``: ``prob`` (softmax probability of the target), ``logit``, or ``top5`` (sum of the
    probabilities of the original image's top-5 classes; the paper's localisation setting).
    ``l1_reduction``: ``mean`` over the mask cells (jacobgil's) or ``sum`` (the paper's code).
    ``noise_std``: std of fresh Gaussian noise added to the perturbed input every iteration (jacobgil's: 0.2).
    ``l1_start``, ``l1_decay``: the L1 weight starts at ``l1_start * l1_coeff`` and falls linearly to
    ``l1_coeff`` over the first ``l1_decay`` iterations (``l1_start`` 1: the weight is constant).
    ``areas``: non-empty for extremal perturbation: one mask per area ``a`` (fraction of the image),
    the L1 term replaced by ``area_coeff * area_growth**t * mean (sort(m) - r_a)^2``; in the deletion
    game the model sees the image with the region ``m`` perturbed (``1 - m`` kept).
    """

    game: Game = "delete"
    score: Score = "prob"
    l1_coeff: float = 0.01
    l1_reduction: Reduction = "mean"
    tv_coeff: float = 0.2
    tv_beta: float = 3.0
    noise_std: float = 0.0
    l1_start: float = 1.0
    l1_decay: int = 50
    areas: tuple[float, ...] = ()
    area_coeff: float = 300.0
    area_growth: float = 1.0035

    @property
    def masks_per_image(self) -> int:
        """``K``: one mask per area for extremal perturbation, else one."""
        return max(1, len(self.areas))

    def __post_init__(self) -> None:
        _typed(self, "objective")  # JSON gives lists for areas
        if any(not 0 < a < 1 for a in self.areas):
            raise ConfigError(f"objective.areas must lie strictly between 0 and 1, got {self.areas}")
        if min(self.l1_coeff, self.tv_coeff, self.noise_std) < 0 or self.tv_beta <= 0:
            raise ConfigError("objective coefficients and noise_std must be >= 0 and tv_beta > 0")
        if self.l1_start < 1 or self.l1_decay < 1:
            raise ConfigError(f"objective.l1_start must be >= 1 and objective.l1_decay >= 1, got "
                              f"{self.l1_start}, {self.l1_decay}")


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser on the mask (clamped to [0, 1] after every step): Adam (jacobgil's, the paper's) or SGD
    with momentum (extremal perturbation; TorchRay also damps it: ``dampening`` = momentum, so each
    gradient enters the velocity at a tenth of its size after the first step).

    ``schedule``: ``constant`` (``lr`` throughout) or ``cosine``: iteration ``t`` of ``T =
    iterations`` steps with ``lr * (1 + cos(pi t / T)) / 2``, large first steps that shrink to
    nothing by the last (:func:`pipeline.solve.solver.lr_scale`).

    Early stopping, per image (off when ``stop_window`` is 0): the objective is averaged over
    windows of ``stop_window`` iterations, and an image stops at the end of a window whose mean
    improved on the previous window's by at most ``stop_tol * max(|previous mean|, 1e-3)``; it
    keeps the mask it had then. ``iterations`` is then a maximum. Windows count from each image's
    own first iteration, so an image stops at the same iteration alone or in any batch.
    :func:`pipeline.solve.solver.solve` lets stopped images leave its batch once the rest fit a smaller
    power of two; dataset runs give a stopped image's slot to the next image (:mod:`pipeline.solve.stream`).
    """

    iterations: int = 500
    lr: float = 0.1
    optimizer: Optimizer = "adam"
    momentum: float = 0.9
    stop_window: int = 0
    stop_tol: float = 0.01
    dampening: float = 0.0
    schedule: Schedule = "constant"

    def __post_init__(self) -> None:
        _typed(self, "optim")
        if not 0 <= self.dampening < 1:
            raise ConfigError(f"optim.dampening must lie in [0, 1), got {self.dampening}")
        if self.iterations < 1 or self.lr <= 0:
            raise ConfigError(f"optim.iterations must be >= 1 and optim.lr > 0, got {self.iterations}, {self.lr}")
        if self.stop_window < 0 or self.stop_tol < 0:
            raise ConfigError(f"optim.stop_window and optim.stop_tol must be >= 0, got {self.stop_window}, "
                              f"{self.stop_tol}")


@dataclass(frozen=True)
class Origin:
    """How a configuration was named: a preset and the overrides applied to it, in order
    (``"objective.l1_start=4"``, the key written in full, the value as given). Recorded with the
    outputs (a store's ``preset`` and ``overrides`` attributes); never part of the configuration's
    identity."""

    preset: str
    overrides: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """``{"preset", "overrides"}``, the :data:`pipeline.identity.PROVENANCE` entry of a
        configuration mapping."""
        return {"preset": self.preset, "overrides": list(self.overrides)}


@dataclass(frozen=True)
class SolverConfig:
    """Everything that determines a mask, except the model and the image.

    ``origin``: the preset and overrides this configuration was made from (:func:`resolve`,
    :func:`preset`, :func:`override`), None when built directly. It names the configuration and
    takes no part in it: configurations equal in every other field are equal (and hash and
    serialise the same, :func:`to_dict`) whatever their origin.
    """

    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    precision: Precision = "fp32"
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _typed(self, "")
        if self.optim.stop_window and self.objective.areas and self.objective.area_growth != 1:
            raise ConfigError("optim.stop_window (early stopping) needs a fixed objective, but extremal "
                              "perturbation's area weight grows every iteration (objective.area_growth); "
                              "set optim.stop_window=0 or objective.area_growth=1")


# The presets; each comment says where the numbers come from (docs/method.md compares them item by
# item with the reference code).
# Fong & Vedaldi section 4 / ruthcfong/perturb_explanations defaults (the `paper` preset).
_PAPER = SolverConfig(
    perturbation=PerturbationConfig(kind="modulated-blur", sigma=10.0, levels=8),
    mask=MaskConfig(size=28, upsample="nearest-blur", smooth_sigma=5.0, init="uniform", jitter=4),
    objective=ObjectiveConfig(l1_coeff=1e-4, l1_reduction="sum", tv_coeff=1e-2, tv_beta=3.0),
    optim=OptimConfig(iterations=300, lr=0.1),
)

PRESETS: dict[str, SolverConfig] = {
    # jacobgil explain.py as its README describes it: average of Gaussian 11/5 and median 11 blur.
    "jacobgil": SolverConfig(
        perturbation=PerturbationConfig(kind="jacobgil-average"),
        objective=ObjectiveConfig(l1_coeff=0.01, tv_coeff=0.2, tv_beta=3.0, noise_std=0.2),
        optim=OptimConfig(iterations=500, lr=0.1),
    ),
    # What explain.py's code actually optimises against: the median blur alone.
    "jacobgil-code": SolverConfig(
        perturbation=PerturbationConfig(kind="median", median_size=11),
        objective=ObjectiveConfig(l1_coeff=0.01, tv_coeff=0.2, tv_beta=3.0, noise_std=0.2),
        optim=OptimConfig(iterations=500, lr=0.1),
    ),
    "paper": _PAPER,
    # The paper's objective in a quarter of its iterations: the L1 weight starts at 4x and falls
    # to the paper's over the 75 iterations (docs/method.md, "Fewer iterations").
    "paper-fast": dataclasses.replace(
        _PAPER, objective=dataclasses.replace(_PAPER.objective, l1_start=4.0, l1_decay=75),
        optim=dataclasses.replace(_PAPER.optim, iterations=75)),
    # The paper's localisation runs (Table 1): lambda1 1e-3, beta 2, top-5 probability sum.
    "paper-loc": SolverConfig(
        perturbation=PerturbationConfig(kind="modulated-blur", sigma=10.0, levels=8),
        mask=MaskConfig(size=28, upsample="nearest-blur", smooth_sigma=5.0, init="uniform", jitter=4),
        objective=ObjectiveConfig(score="top5", l1_coeff=1e-3, l1_reduction="sum", tv_coeff=1e-2, tv_beta=2.0),
        optim=OptimConfig(iterations=300, lr=0.1),
    ),
    # Extremal perturbation (Fong, Patrick & Vedaldi 2019) as TorchRay's extremal_perturbation runs
    # it (docs/extremal.md lists each setting against the reference): fixed areas solved together,
    # preservation game on the logit, smooth-max masks (step 7, sigma 21) on a 32x32 grid
    # (ceil(224 / 7)) started at all ones, an 8-level blur pyramid to sigma 20 (radius 4 sigma, zero
    # borders), a horizontal flip on even iterations, damped SGD with momentum, 800 iterations.
    "extremal": SolverConfig(
        perturbation=PerturbationConfig(kind="modulated-blur", sigma=20.0, levels=8, truncate=4.0, padding="zero",
                                        interpolation="floor"),
        mask=MaskConfig(size=32, upsample="smooth-max", smooth_sigma=21.0, step=7, coldness=20.0, init="ones",
                        flip=True),
        objective=ObjectiveConfig(game="preserve", score="logit", l1_coeff=0.0, tv_coeff=0.0,
                                  areas=(0.05, 0.1, 0.2), area_coeff=300.0, area_growth=1.0035),
        optim=OptimConfig(iterations=800, lr=0.01, optimizer="sgd", momentum=0.9, dampening=0.9),
    ),
    # jacobgil's objective against a blur strong enough for modern models (docs/method.md), no noise.
    "blur": SolverConfig(
        perturbation=PerturbationConfig(kind="blur", sigma=10.0),
        objective=ObjectiveConfig(l1_coeff=0.01, tv_coeff=0.2, tv_beta=3.0, noise_std=0.0),
        optim=OptimConfig(iterations=300, lr=0.1),
    ),
}

DEFAULT_PRESET = "paper-fast"
_RENAMED_PRESETS = {"seed": "jacobgil", "seed-code": "jacobgil-code"}


def preset(name: str) -> SolverConfig:
    """The preset called ``name`` (its :class:`Origin` says so); raises ConfigError with close
    matches for an unknown one."""
    if name in _RENAMED_PRESETS:
        raise ConfigError(f"preset {name!r} is now called {_RENAMED_PRESETS[name]!r}")
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], origin=Origin(name))


def override(config: SolverConfig, assignments: Sequence[str]) -> SolverConfig:
    """Apply ``key=value`` assignments (``optim.iterations=50``, ``tv_coeff=0.05``) to ``config``.

    Values are parsed as JSON when possible (numbers, booleans, lists), else taken as strings,
    then given the field's type (``objective.l1_start=4`` sets ``4.0``). A configuration with an
    :class:`Origin` keeps it, with the assignments appended (each key written in full).

    Raises:
        ConfigError: an assignment without ``=``, a key that names no field (or several), or a
            value the field refuses.
    """
    applied = []
    for assignment in assignments:
        key, eq, text = assignment.partition("=")
        if not eq:
            raise ConfigError(f"override {assignment!r} must look like key=value, e.g. objective.tv_coeff=0.05")
        group, name = _locate(config, key.strip())
        config = _assign(config, group, name, _parse_value(text.strip()))
        applied.append(f"{group}.{name}={text.strip()}" if group else f"{name}={text.strip()}")
    return _named(config, applied)


def resolve(preset_name: str, overrides: Sequence[str] = (), iterations: int | None = None) -> SolverConfig:
    """The configuration of a run: preset ``preset_name``, then ``overrides`` (as :func:`override`),
    then ``iterations`` when given (``optim.iterations``; an L1 warm-up that no override sets is
    scaled with it, so it lasts the same share of the run: ``paper-fast`` with 20 iterations warms
    up over 20). Its :attr:`SolverConfig.origin` records
    the three, so ``resolve("paper-fast")`` and ``resolve("paper", ["objective.l1_start=4",
    "objective.l1_decay=75"], 75)`` are equal configurations with different names.

    Raises:
        ConfigError: an unknown preset, a bad override, or ``iterations`` that is not a whole number >= 1.
    """
    config = override(preset(preset_name), overrides)
    if iterations is None:
        return config
    applied = [f"optim.iterations={iterations}"]
    before = config.optim.iterations
    config = _assign(config, "optim", "iterations", iterations)
    decay = config.objective.l1_decay
    given = any(o.split("=", 1)[0].strip().endswith("l1_decay") for o in overrides)
    if config.objective.l1_start > 1 and not given and iterations != before:
        # The L1 warm-up lasts the same share of the run at any length (paper-fast: the whole run);
        # kept at the preset's 75 iterations, a 20-iteration run would never reach the paper's weight.
        scaled = max(1, round(decay * iterations / before))
        config = _assign(config, "objective", "l1_decay", scaled)
        applied.append(f"objective.l1_decay={scaled}")
    return _named(config, applied)


def _assign(config: SolverConfig, group: str | None, name: str, value: Any) -> SolverConfig:
    """``config`` with field ``group.name`` (``name`` of the top level when ``group`` is None) set."""
    if group is None:
        return dataclasses.replace(config, **{name: value})
    return dataclasses.replace(config, **{group: dataclasses.replace(getattr(config, group), **{name: value})})


def _named(config: SolverConfig, applied: list[str]) -> SolverConfig:
    """``config`` with ``applied`` appended to the overrides of its origin (when it has one)."""
    if config.origin is None or not applied:
        return config
    return dataclasses.replace(config, origin=Origin(config.origin.preset, (*config.origin.overrides, *applied)))


def _locate(config: SolverConfig, key: str) -> tuple[str | None, str]:
    groups = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    group, dot, name = key.rpartition(".")
    if dot:
        if group in groups and dataclasses.is_dataclass(groups[group]) and name in _field_names(groups[group]):
            return group, name
    else:
        owners = [g for g, v in groups.items() if dataclasses.is_dataclass(v) and key in _field_names(v)]
        if key in groups and not dataclasses.is_dataclass(groups[key]):
            return None, key
        if len(owners) == 1:
            return owners[0], key
        if len(owners) > 1:
            raise ConfigError(f"override {key!r} is ambiguous; write one of {', '.join(f'{o}.{key}' for o in owners)}")
    every = [f"{g}.{n}" for g, v in groups.items() if dataclasses.is_dataclass(v) for n in _field_names(v)]
    close = difflib.get_close_matches(key, every + [n.split('.')[-1] for n in every], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"override {key!r} names no configuration field{hint}")


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def to_dict(config: SolverConfig) -> dict[str, Any]:
    """The full configuration as nested plain data (what outputs record).

    The early-stopping fields are left out while early stopping is off (they change nothing
    then), so a configuration records, and a store's run key hashes, exactly what it did before
    the option existed: older stores still resume.
    """
    data = dataclasses.asdict(config)
    data.pop("origin")  # a name, not a setting: see store_provenance
    if not config.optim.stop_window:
        for name in ("stop_window", "stop_tol"):
            data["optim"].pop(name)
    # Likewise the options of extremal perturbation's reference (TorchRay) where they are off.
    for group, defaults in _QUIET_DEFAULTS.items():
        for name, value in defaults.items():
            if data[group][name] == value:
                data[group].pop(name)
    if config.mask.upsample != "smooth-max":
        for name in ("step", "coldness"):
            data["mask"].pop(name)
    return data


# Fields recorded only when they differ from these values (they came after stores were written).
_QUIET_DEFAULTS: dict[str, dict[str, Any]] = {
    "perturbation": {"truncate": 3.0, "padding": "reflect", "interpolation": "hat"},
    "mask": {"flip": False},
    "objective": {"l1_start": 1.0, "l1_decay": 50},
    "optim": {"dampening": 0.0, "schedule": "constant"},
}


# Option values renamed since stores were written: read under their current names.
_RENAMED = {("perturbation", "kind"): {"seed-average": "jacobgil-average"}}


def from_dict(data: dict[str, Any]) -> SolverConfig:
    """Inverse of :func:`to_dict` (also for configurations recorded under earlier option names)."""
    data = {group: dict(values) if isinstance(values, dict) else values for group, values in data.items()}
    for (group, name), renamed in _RENAMED.items():
        value = data[group].get(name)
        data[group][name] = renamed.get(value, value) if isinstance(value, str) else value
    return SolverConfig(
        perturbation=PerturbationConfig(**data["perturbation"]),
        mask=MaskConfig(**data["mask"]),
        objective=ObjectiveConfig(**data["objective"]),
        optim=OptimConfig(**data["optim"]),
        precision=data["precision"],
    )


def store_provenance(config: SolverConfig) -> dict[str, Any]:
    """The :data:`pipeline.identity.PROVENANCE` entry of a configuration mapping that records
    ``config`` (``{PROVENANCE: {"preset", "overrides"}}``, to merge into it), or ``{}`` when its
    origin is unknown."""
    return {} if config.origin is None else {PROVENANCE: config.origin.record()}


def guess_preset(solver: Mapping[str, Any]) -> str:
    """A name for a recorded solver configuration (:func:`to_dict`'s form) that does not say which
    preset it came from (stores made before :class:`Origin` was recorded): the preset whose
    configuration it is, else the closest preset ``with`` the fields that differ."""
    stored = flatten(json.loads(json.dumps(dict(solver))))
    best, best_diff = "", None
    for name, config in PRESETS.items():
        candidate = flatten(json.loads(json.dumps(to_dict(config))))
        diff = sorted(k for k in stored.keys() | candidate.keys() if stored.get(k) != candidate.get(k))
        if best_diff is None or len(diff) < len(best_diff):
            best, best_diff = name, diff
    if not best_diff:
        return best
    changed = ", ".join(f"{k}={json.dumps(stored.get(k))}" for k in best_diff[:6])
    more = f" and {len(best_diff) - 6} more" if len(best_diff) > 6 else ""
    return f"{best} with {changed}{more}"


def preset_rows() -> list[dict[str, str]]:
    """One row per preset for ``perturb presets``: its main settings as short strings (the default
    preset's name marked with ``*``)."""
    rows = []
    for name, config in PRESETS.items():
        p, o, m, opt = config.perturbation, config.objective, config.mask, config.optim
        warm = (f"x{o.l1_start:g} over {o.l1_decay}" if o.l1_start > 1 else "-")
        rows.append({"preset": name + (" *" if name == DEFAULT_PRESET else ""), "perturbation": p.kind,
                     "game": o.game, "score": o.score, "l1": f"{o.l1_coeff:g} ({o.l1_reduction})",
                     "l1 warm-up": warm, "tv": f"{o.tv_coeff:g}^{o.tv_beta:g}", "noise": f"{o.noise_std:g}",
                     "mask": f"{m.size}/{m.upsample}/{m.init}", "jitter": f"{m.jitter:g}",
                     "optimiser": f"{opt.optimizer} lr {opt.lr:g}", "iterations": str(opt.iterations),
                     "areas": ",".join(f"{a:g}" for a in o.areas) if o.areas else "-"})
    return rows

