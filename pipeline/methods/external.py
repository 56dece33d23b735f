"""Registration of the methods from other papers and libraries without importing torch or them.

:func:`register_all` registers ``captum:*``, ``cam:*``, ``rise``, ``excitation_backprop`` and
``contrastive_excitation_backprop`` with resolvers that import their module (and torch, Captum,
pytorch-grad-cam, TorchRay) only when a method is first used, so listing the names stays cheap
(the package and the CLI import without torch). The member names are kept here; each module's
table must list the same (``tests/methods/test_external.py``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .registry import register, register_family

__all__ = ["CAM", "CAPTUM", "EXCITATION", "register_all"]

CAPTUM = ("IntegratedGradients", "Saliency", "InputXGradient", "GuidedBackprop", "Deconvolution", "DeepLift",
          "Occlusion", "FeatureAblation", "LayerGradCam", "GuidedGradCam", "NoiseTunnel")
"""``captum:`` members (:mod:`pipeline.methods.captum_methods`)."""

CAM = ("GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "EigenCAM",
       "EigenGradCAM", "KPCA_CAM", "FEM", "ScoreCAM", "AblationCAM", "ShapleyCAM", "FullGrad")
"""``cam:`` members (:mod:`pipeline.methods.cam`)."""

EXCITATION = ("excitation_backprop", "contrastive_excitation_backprop")
"""TorchRay's excitation methods (:mod:`pipeline.methods.excitation`)."""


def _module(name: str) -> Any:
    return import_module(f"{__package__}.{name}")


def register_all() -> None:
    """Register every external method lazily (nothing heavy is imported here)."""
    register_family("captum", lambda member: _module("captum_methods").captum_method(member), lambda: list(CAPTUM))
    register_family("cam", lambda member: _module("cam").cam_method(member), lambda: list(CAM))
    register("rise", lambda: _module("rise").rise_method())
    for name in EXCITATION:
        register(name, lambda name=name: _module("excitation").excitation_method(name))
