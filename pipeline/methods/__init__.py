"""Named saliency methods behind one registry (:mod:`.registry`): what ``perturb baseline``
computes and a store of saliency maps records.

Every method is registered here, in one place, by a function that imports it on first use, so
importing this package (and listing the names in ``perturb baseline --help``) does not import torch.
:mod:`.simple` holds ``centre``, ``random``, ``gradient`` and ``gradcam`` (and ``center``, an alias);
:mod:`.external` registers ``captum:*``, ``cam:*``, ``rise`` and TorchRay's excitation methods.
"""

from __future__ import annotations

from typing import Callable

from .external import register_all as _register_external
from .registry import ALIASES, SaliencyFn, SaliencyMethod, get_method, method_names, register, register_family

__all__ = ["ALIASES", "SaliencyFn", "SaliencyMethod", "get_method", "method_names", "register", "register_family"]


def _from_simple(name: str) -> Callable[[], SaliencyMethod]:
    def build() -> SaliencyMethod:
        from .simple import METHODS

        return METHODS[name]

    return build


for _name in ("centre", "random", "gradient", "gradcam"):
    register(_name, _from_simple(_name))
_register_external()
