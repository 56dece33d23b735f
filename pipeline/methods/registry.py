"""The registry of named saliency methods: what `perturb baseline`, the Python API and `perturb sweep`
look a method up in.

A method is data (:class:`SaliencyMethod`): a name, a batched function, its default options and the
one sentence saying how a multi-channel attribution became one map. Fixed names (``gradcam``,
``rise``) are registered with :func:`register`; families whose members are named after another
library's classes (``captum:IntegratedGradients``, ``cam:ScoreCAM``) register a resolver for their
prefix with :func:`register_family`, so the registry lists and checks them without importing the
library until a method is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import ConfigError

if TYPE_CHECKING:  # torch is imported by the methods, not by the registry
    import torch

SaliencyFn = Callable[..., "torch.Tensor"]
"""``fn(classifier, images01, targets, seeds, **options) -> (B, 1, H, W)`` float saliency.

``images01`` is ``(B, 3, H, W)`` RGB in ``[0, 1]`` on the classifier's device (the method normalises
with ``classifier.normalize``); ``targets`` ``(B,)`` int64 and ``seeds`` ``(B,)`` int64 are on the same
device. The result is the raw map at the input size, larger = more salient, before the registry's
per-image min-max normalisation."""


@dataclass(frozen=True)
class SaliencyMethod:
    """One named saliency method.

    Attributes:
        name: the name users type (``"gradcam"``, ``"captum:IntegratedGradients"``).
        fn: the batched function (:data:`SaliencyFn`).
        options: default options, passed to ``fn`` as keywords; a user's ``--opt`` may override any
            of them (and only them, unless ``open_options``), and the resolved options are recorded.
        reduction: how the method's output became one ``(1, H, W)`` map (recorded and documented).
        description: one line for listings.
        layer: whether the method attributes to a layer (``--layer``; None picks the default layer).
        open_options: accept options not in ``options`` (passed through to a library's call).
    """

    name: str
    fn: SaliencyFn
    options: Mapping[str, Any] = field(default_factory=dict)
    reduction: str = ""
    description: str = ""
    layer: bool = False
    open_options: bool = False


_METHODS: dict[str, SaliencyMethod | Callable[[], SaliencyMethod]] = {}
_FAMILIES: dict[str, tuple[Callable[[str], SaliencyMethod], Callable[[], list[str]]]] = {}
ALIASES: dict[str, str] = {"center": "centre"}
"""Other spellings accepted for a method name."""


def register(name: str, method: SaliencyMethod | Callable[[], SaliencyMethod]) -> None:
    """Register a fixed name: the method, or a function that builds it on first use (lazy imports)."""
    _METHODS[name] = method


def register_family(prefix: str, resolve: Callable[[str], SaliencyMethod], names: Callable[[], list[str]]) -> None:
    """Register ``prefix:Member`` names: ``resolve(member)`` builds the method (raising ConfigError
    for an unknown member); ``names()`` lists the members."""
    _FAMILIES[prefix] = (resolve, names)


def method_names() -> list[str]:
    """Every name that :func:`get_method` accepts (family members listed in full)."""
    names = list(_METHODS)
    for prefix, (_, members) in _FAMILIES.items():
        names.extend(f"{prefix}:{member}" for member in members())
    return names


def get_method(name: str) -> SaliencyMethod:
    """The method called ``name``.

    Raises:
        ConfigError: an unknown name, listing what exists.
    """
    name = ALIASES.get(name, name)
    if name in _METHODS:
        method = _METHODS[name]
        return method if isinstance(method, SaliencyMethod) else method()
    prefix, _, member = name.partition(":")
    if member and prefix in _FAMILIES:
        return _FAMILIES[prefix][0](member)
    raise ConfigError(f"unknown saliency method {name!r}; known: {', '.join(method_names())}")
