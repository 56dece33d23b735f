"""Meaningful perturbation as an attribution method in Captum's conventions.

::

    import pipeline as pp

    explainer = pp.MeaningfulPerturbation(model)          # any eval-mode nn.Module on normalised images
    saliency = explainer.attribute(x, target=285)        # x (N, 3, H, W) -> (N, 1, H, W), larger = more salient

``model`` is what torchvision and timm build: an ``nn.Module`` mapping a normalised batch
``(N, 3, H, W)`` to logits ``(N, C)``; ``x`` is normalised as that model expects (Captum's
convention: the input is what the model takes). A model spec string (``"efficientnet_lite0"``,
``"torchvision:resnet50"``) is loaded with :func:`pipeline.load_model`, and its normalisation is
then known: :meth:`MeaningfulPerturbation.normalize` turns ``[0, 1]`` RGB images into its inputs.

The solver works on the normalised input anyway (it normalises ``[0, 1]`` images before anything
else), so the inputs are handed to it as they are. Image ``i`` of a call gets the seed ``seed + i``
(or ``seeds[i]``), as image ``i`` of a folder gets ``i + --seed`` in ``perturb masks``: the same
images with the same seeds and the same batch size give the masks ``perturb masks`` stores.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .config import SolverConfig, override
from .config import preset as preset_config
from .errors import InputError
from .folding import fold_batchnorm
from .imagenet import ClassVocabulary
from .models import IMAGENET_MEAN, IMAGENET_STD, Classifier, load_model
from .solve import SolveResult, solve
from .solve import masks as masklib

__all__ = ["MeaningfulPerturbation", "PerturbationResult"]

_IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean, std: the inputs are normalised already


@dataclass(frozen=True, kw_only=True)
class PerturbationResult(SolveResult):
    """Everything one :meth:`MeaningfulPerturbation.attribute` call found, batch first, on the
    model's device: the solver's :class:`~pipeline.solve.SolveResult` for the ``N`` inputs
    (``masks`` ``(N, K, h, w)`` float32 in [0, 1], the keep masks at the solver's resolution,
    1 = keep, ``K`` one mask per area of ``areas`` or 1; ``targets`` ``(N,)`` int64, the class
    explained; ``p_original``, ``p_perturbed``, ``p_final``, ``loss``, ``area``, ``tv``,
    ``iterations``, each ``(N,)``), and what the call adds:

    Attributes:
        attributions: ``(N, 1, H, W)`` float32 in [0, 1] at the input's size, larger = more
            salient: ``1 - m`` upsampled for the deletion game, ``m`` for the preservation game
            (extremal perturbation), the mean over the ``K`` masks
            (:func:`pipeline.solve.masks.saliency`, as :func:`pipeline.store_saliency` reads a store).
        areas: extremal perturbation's target areas (fractions of the image), one per mask; ``()``
            for the other presets.
        seeds: ``(N,)`` int64, each image's seed.
        config: the solver configuration used.
    """

    attributions: torch.Tensor
    areas: tuple[float, ...]
    seeds: torch.Tensor
    config: SolverConfig

    def keep_masks(self) -> torch.Tensor:
        """The keep masks on the input, ``(N, K, H, W)`` float32 in [0, 1], upsampled as the solver
        upsampled them while optimising."""
        return masklib.upsample(self.masks, tuple(self.attributions.shape[-2:]), self.config.mask)


class MeaningfulPerturbation:
    """Meaningful perturbation (Fong & Vedaldi 2017) and extremal perturbation (Fong, Patrick &
    Vedaldi 2019) over a classifier, with Captum's ``attribute(inputs, target=...)``.

    Args:
        model: an ``nn.Module`` in eval mode mapping a normalised batch ``(N, 3, H, W)`` to logits
            ``(N, C)``; or a model spec string for :func:`pipeline.load_model`; or a
            :class:`pipeline.Classifier`. The model is never changed: its ``requires_grad`` flags
            are restored after each call, and BatchNorm folding works on a copy.
        preset: a preset name (:data:`pipeline.PRESETS`: ``"paper-fast"``, ``"paper"``,
            ``"extremal"``...) or a :class:`pipeline.SolverConfig`.
        mean, std: the model's per-channel normalisation of ``[0, 1]`` RGB, used by
            :meth:`normalize` (the solver itself works on the normalised inputs it is given).
            Default: the spec's for a spec string, else ImageNet's.
        device: where a spec string's model is loaded (default ``"cpu"``). A module stays where
            it is (passing ``device`` with one is refused: move the module instead).
        seed: image ``i`` of a call gets seed ``seed + i`` unless ``seeds`` are passed; the seed
            keys its random initial mask, jitter and noise.
        fold: solve with a copy of the model whose eval-mode BatchNorms are folded into the
            convolutions before them, as ``perturb masks`` does (the same function, faster; the
            copy is remade when the model's weights change). Making it checks the copy against
            the model once in float64, which takes seconds on a CPU for an EfficientNet; for a
            few images on a CPU, ``fold=False`` can be quicker (masks then differ from
            ``perturb masks``'s by float rounding).
        set: ``key=value`` assignments as ``perturb masks --set`` takes them.
        **overrides: configuration fields, by name when unambiguous (``iterations=50``,
            ``tv_coeff=0.05``) or dotted (``**{"optim.iterations": 50}``).

    Raises:
        InputError: ``model`` is none of the above, or ``device`` is given with a module.
        ConfigError: an unknown preset or field, or a value out of range.
        ModelUnavailableError: a spec string that cannot be loaded.
    """

    def __init__(self, model: nn.Module | Classifier | str, preset: str | SolverConfig = "paper-fast", *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 device: str | torch.device | None = None, seed: int = 0, fold: bool = True,
                 set: Sequence[str] = (), **overrides: Any):
        self.config = _configure(preset, set, overrides)
        self.seed = _integer("seed", seed)
        self.fold = bool(fold)
        if isinstance(model, str):
            model = load_model(model, device=device or "cpu")
        elif device is not None:
            raise InputError(f"device={device!r} is for a model spec string; move the module itself "
                             "(model.to(device)) and the inputs with it")
        if isinstance(model, Classifier):
            self.spec, self.module = model.spec, model.module
            default_mean, default_std = model.mean, model.std
        elif isinstance(model, nn.Module):
            self.spec, self.module = type(model).__name__, model
            default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
        else:
            raise InputError(f"model must be a torch.nn.Module, a pipeline.Classifier or a model spec string; "
                             f"got {type(model).__name__}")
        self.mean = _triple("mean", default_mean if mean is None else mean)
        self.std = _triple("std", default_std if std is None else std)
        if min(self.std) <= 0:
            raise InputError(f"std must be positive, got {self.std}")
        self._solver_model: tuple[Any, nn.Module] | None = None  # (weights' fingerprint, model solved with)

    def __repr__(self) -> str:
        return f"MeaningfulPerturbation({self.spec}, iterations={self.config.optim.iterations})"

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` RGB ``(N, 3, H, W)`` -> the model's normalised input ``(N, 3, H, W)``:
        ``(images - mean) / std`` per channel (the same arithmetic as :meth:`pipeline.Classifier.normalize`)."""
        images = _check_images(images, "images")
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def attribute(self, inputs: torch.Tensor, target: Any = None, *, seeds: Any = None,
                  batch_size: int | None = None, return_result: bool = False
                  ) -> torch.Tensor | PerturbationResult:
        """Solve one mask per input (``K`` for extremal perturbation) and return the saliency.

        Args:
            inputs: ``(N, 3, H, W)`` floating point, normalised as the model expects, on the
                model's device (solved in float32; gradients of ``inputs`` are not used).
            target: the class explained: None (each input's top-1 prediction), an int for every
                input, or ``N`` ints (a sequence, or an ``(N,)`` integer tensor or array).
            seeds: ``N`` ints (default ``seed + arange(N)``).
            batch_size: solve this many inputs at a time (default: all). On a CPU a shorter last
                batch is padded with blank inputs to this size, as ``perturb masks -b`` pads, so
                the masks equal that command's bit for bit (:data:`pipeline.jobs.run.CPU_PADDING`).
            return_result: return a :class:`PerturbationResult` (masks, probabilities, areas...)
                instead of the attributions alone.

        Returns:
            ``(N, 1, H, W)`` float32 in [0, 1] on the inputs' device, larger = more salient (see
            :attr:`PerturbationResult.attributions`), or the :class:`PerturbationResult`.

        Raises:
            InputError: inputs not a floating ``(N, 3, H, W)`` tensor with finite values, or on
                another device than the model; a target out of range, of the wrong length or
                type; bad seeds or batch size; a model in training mode or not returning
                ``(N, C)`` logits.
        """
        module = _eval_module(self.module)
        device = _module_device(module)
        x = _check_images(inputs, "inputs")
        if x.device != device:
            raise InputError(f"inputs are on {x.device} but the model is on {device}; move them with "
                             f"inputs.to({str(device)!r})")
        classes = _class_count(module, x[:1])
        targets = _targets(target, len(x), classes, device)
        seeds = _seeds(seeds, self.seed, len(x), device)
        chunk = len(x) if batch_size is None else _integer("batch_size", batch_size, minimum=1)
        classifier = Classifier(self._solver_module(module, tuple(x.shape[-2:])), self.spec,
                                tuple(x.shape[-2:]), *_IDENTITY, _vocabulary(classes))
        with _frozen_weights(classifier.module), torch.enable_grad():
            parts = [_solve_padded(classifier, x[s:s + chunk], None if targets is None else targets[s:s + chunk],
                                   seeds[s:s + chunk], self.config, batch_size)
                     for s in range(0, len(x), chunk)]
        solved = SolveResult(*(torch.cat([getattr(p, f.name) for p in parts])
                               for f in dataclasses.fields(SolveResult)))
        saliency = masklib.saliency(solved.masks, self.config.objective.game, tuple(x.shape[-2:]), self.config.mask)
        if not return_result:
            return saliency
        solver_fields = {f.name: getattr(solved, f.name) for f in dataclasses.fields(solved)}
        return PerturbationResult(**solver_fields, attributions=saliency, areas=self.config.objective.areas,
                                  seeds=seeds, config=self.config)

    def _solver_module(self, module: nn.Module, size: tuple[int, int]) -> nn.Module:
        """The module the solver runs: with ``fold``, a copy with BatchNorm folded, made again when
        the module's weights or structure changed since the last call."""
        if not self.fold:
            return module
        fingerprint = (id(module), tuple((id(t), t._version) for t in chain(module.parameters(), module.buffers())))
        if self._solver_model is None or self._solver_model[0] != fingerprint:
            folded, _ = fold_batchnorm(module, size)
            self._solver_model = (fingerprint, folded)
        return self._solver_model[1]


def _configure(preset: str | SolverConfig, assignments: Sequence[str], overrides: dict[str, Any]) -> SolverConfig:
    """The preset with ``overrides`` (keyword fields) and ``assignments`` (``key=value``) applied."""
    if isinstance(preset, str):
        config = preset_config(preset)
    elif isinstance(preset, SolverConfig):
        config = preset
    else:
        raise InputError(f"preset must be a preset name or a pipeline.SolverConfig, got {type(preset).__name__}")
    if isinstance(assignments, str) or not all(isinstance(a, str) for a in assignments):
        raise InputError(f"set must be a list of 'key=value' strings, got {assignments!r}")
    try:
        keyed = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    except TypeError:
        raise InputError(f"configuration overrides must be numbers, strings, booleans or lists; got "
                         f"{ {k: type(v).__name__ for k, v in overrides.items()} }") from None
    return override(config, keyed + list(assignments))


def _integer(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise InputError(f"{name} must be an int{bound}, got {value!r}")
    return int(value)


def _triple(name: str, value: Sequence[float]) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3:
        raise InputError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}")
    return triple  # type: ignore[return-value]


def _check_images(images: Any, name: str) -> torch.Tensor:
    """``images`` as a detached float32 ``(N, 3, H, W)`` tensor of finite values (a copy outside
    inference mode, so that autograd may use it)."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or min(images.shape) < 1:
        raise InputError(f"{name} must have shape (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"{name} must be floating point (normalised images), got {images.dtype}")
    if images.device.type != "meta" and not bool(torch.isfinite(images).all()):
        raise InputError(f"{name} hold NaN or infinite values")
    with torch.inference_mode(False):
        return images.detach().to(torch.float32).clone()


def _eval_module(module: nn.Module) -> nn.Module:
    training = [name or type(module).__name__ for name, sub in module.named_modules() if sub.training]
    if training:
        raise InputError(f"the model is in training mode ({', '.join(training[:3])}); BatchNorm and Dropout "
                         "would then change it and its output on every call: call model.eval() first")
    return module


def _module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    if parameter is None:
        raise InputError(f"the model ({type(module).__name__}) has no parameters; pass the trained classifier")
    return parameter.device


def _class_count(module: nn.Module, probe: torch.Tensor) -> int:
    """``C``, from the model's output on one input; the output must be logits ``(1, C)``."""
    try:
        with torch.no_grad():
            output = module(probe)
    except Exception as error:  # the model's own error, for an input it cannot take
        first = (str(error).splitlines() or [""])[0][:200]
        raise InputError(f"the model fails on an input of shape {tuple(probe.shape)} "
                         f"({type(error).__name__}: {first}); pass inputs the model takes") from None
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 1 or output.shape[1] < 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(f"the model must return logits (N, C) as a tensor; it returned {shape} for one input "
                         "(wrap it in a module that returns the logits)")
    return int(output.shape[1])


def _targets(target: Any, count: int, classes: int, device: torch.device) -> torch.Tensor | None:
    """``(N,)`` int64 on ``device``, or None for the top-1 prediction."""
    if target is None:
        return None
    if isinstance(target, torch.Tensor) and target.dim() == 0:
        target = target.item() if not target.is_floating_point() and target.dtype != torch.bool else target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        values = torch.full((count,), int(target), dtype=torch.int64)
    else:
        values = _int_vector("target", target, count)
    bad = ((values < 0) | (values >= classes)).nonzero()[:, 0].tolist()
    if bad:
        raise InputError(f"target {values[bad[0]].item()} (input {bad[0]}) is out of range: the model has "
                         f"{classes} classes, 0..{classes - 1}")
    return values.to(device)


def _seeds(seeds: Any, seed: int, count: int, device: torch.device) -> torch.Tensor:
    values = torch.arange(count, dtype=torch.int64) + seed if seeds is None else _int_vector("seeds", seeds, count)
    return values.to(device)


def _int_vector(name: str, value: Any, count: int) -> torch.Tensor:
    """``count`` integers from a sequence, array or tensor, as a CPU int64 tensor ``(count,)``."""
    if isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be an int or {count} ints, got {value!r}")
    try:
        array = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an int or {count} ints, got {type(value).__name__}") from None
    if array.dtype == torch.bool or array.is_floating_point() or array.is_complex():
        raise InputError(f"{name} must hold integers, got {array.dtype}")
    if array.dim() != 1 or len(array) != count:
        raise InputError(f"{name} must be one int per input: shape ({count},), got {tuple(array.shape)}")
    return array.to(torch.int64)


def _vocabulary(classes: int) -> ClassVocabulary:
    return ClassVocabulary(wnids=("",) * classes, names=tuple(f"class {i}" for i in range(classes)))


@contextmanager
def _frozen_weights(module: nn.Module) -> Iterator[None]:
    """No weight gradients while solving (only the mask is optimised); the flags come back after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _solve_padded(classifier: Classifier, x: torch.Tensor, targets: torch.Tensor | None, seeds: torch.Tensor,
                  config: SolverConfig, batch_size: int | None) -> SolveResult:
    """:func:`pipeline.solve` of one batch, padded on a CPU to ``batch_size`` as ``perturb masks``
    pads its batches (the padding's results are dropped)."""
    from .jobs.run import CPU_PADDING

    pad = batch_size - len(x) if CPU_PADDING and batch_size and x.device.type == "cpu" else 0
    if pad > 0:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
        seeds = torch.cat([seeds, seeds.new_zeros(pad)])
        targets = None if targets is None else torch.cat([targets, targets.new_zeros(pad)])
    result = solve(classifier, x, config, targets=targets, seeds=seeds)
    if pad > 0:
        result = SolveResult(*(getattr(result, f.name)[: len(x) - pad] for f in dataclasses.fields(SolveResult)))
    return result
