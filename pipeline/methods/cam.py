"""The CAM family of pytorch-grad-cam (PyPI ``grad-cam``) as saliency methods: ``cam:ScoreCAM``, ...

Each member is the library's class of that name, on one target layer (the ``layer`` option, the
same names and default as Captum's layer methods, :mod:`pipeline.methods.layers`), explaining the
target's **logit** (the library's ``ClassifierOutputTarget``) on the normalised input. The library
runs the whole batch through the network at once and computes the maps in NumPy on the CPU (its
design); ScoreCAM and AblationCAM then run their extra forward passes ``batch_size`` at a time (its
option). Its output is already one map per image, ReLU'd, min-max scaled and resized bilinearly
(OpenCV) to the input size, which is the recorded reduction.

Options are the class's constructor keywords (``batch_size``, ``ratio_channels_to_ablate``, ``k``,
``kernel``, ...) and its call's (``aug_smooth``, ``eigen_smooth``), checked by name. Not included:
``RandomCAM`` (unseeded NumPy noise; the ``random`` baseline is the seeded control), and the wrappers
with another calling convention (``FinerCAM``, ``RefineCAM``, ``SESS``, ``DeepFeatureFactorization``).
The library is the optional extra ``methods`` (``pip install 'meaningful-perturbation[methods]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from .layers import resolve_layer
from .library_options import merge_options, signature_defaults
from .registry import SaliencyMethod, register_family

if TYPE_CHECKING:
    from ..models import Classifier

__all__ = ["MEMBERS", "CamMethod", "cam_method", "register_all"]

FAMILY = "cam"
_SUPPLIED = ("model", "target_layers", "reshape_transform", "ablation_layer", "input_tensor", "targets",
             "base_method", "tta_transforms", "detach", "compute_input_gradient", "uses_gradients")

MEMBERS: dict[str, str] = {
    "GradCAM": "Selvaraju et al., Grad-CAM, ICCV 2017",
    "HiResCAM": "Draelos & Carin, Use HiResCAM instead of Grad-CAM, arXiv 2011.08891, 2020",
    "GradCAMElementWise": "Grad-CAM with element-wise gradient-activation products (pytorch-grad-cam)",
    "GradCAMPlusPlus": "Chattopadhyay et al., Grad-CAM++, WACV 2018",
    "XGradCAM": "Fu et al., Axiom-based Grad-CAM, BMVC 2020",
    "LayerCAM": "Jiang et al., LayerCAM, IEEE TIP 2021",
    "EigenCAM": "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020",
    "EigenGradCAM": "Eigen-CAM on gradient-weighted activations (pytorch-grad-cam)",
    "KPCA_CAM": "Karmani et al., KPCA-CAM, arXiv 2410.00267, 2024",
    "FEM": "Ahmed et al., Feature Explanation Method, 2021",
    "ScoreCAM": "Wang et al., Score-CAM, CVPR workshops 2020",
    "AblationCAM": "Desai & Ramaswamy, Ablation-CAM, WACV 2020",
    "ShapleyCAM": "Cai, ShapleyCAM, arXiv 2501.06261, 2025",
    "FullGrad": "Srinivas & Fleuret, Full-Gradient Representation, NeurIPS 2019 (uses every biased conv/BN layer, "
                "not the layer option)",
}
"""Members (pytorch-grad-cam class names) and their papers."""

CALL_DEFAULTS: dict[str, Any] = {"aug_smooth": False, "eigen_smooth": False}
SCORECAM_BATCH = 16
"""ScoreCAM's masked images per forward pass (the library's default, set as an attribute)."""

REDUCTION = ("the library's map: ReLU'd, min-max scaled per image, resized bilinearly (OpenCV) to the input "
             "size")


def _library():
    try:
        import pytorch_grad_cam
    except ImportError as error:
        raise ConfigError("cam: methods need pytorch-grad-cam: pip install 'grad-cam>=1.5' "
                          "(the 'methods' extra)") from error
    return pytorch_grad_cam


def _option_defaults(member: str) -> dict[str, Any]:
    cls = getattr(_library(), member)
    options: dict[str, Any] = {"layer": None}
    options.update(signature_defaults([cls.__init__], skip=_SUPPLIED))
    if member == "ScoreCAM":
        options["batch_size"] = SCORECAM_BATCH
    options.update(CALL_DEFAULTS)
    return options


@dataclass(frozen=True)
class CamMethod:
    """The batched function of one ``cam:`` member (:data:`pipeline.methods.registry.SaliencyFn`)."""

    name: str

    def check(self, classifier: Classifier | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The full options, checked (and the layer, given a classifier).

        Raises:
            ConfigError: an unknown option or layer.
        """
        resolved = merge_options(f"cam:{self.name}", options, _option_defaults(self.name))
        if classifier is not None:
            resolve_layer(classifier.module, resolved["layer"], classifier.input_size)
        return resolved

    def __call__(self, classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
                 seeds: torch.Tensor, **options: Any) -> torch.Tensor:
        """``(B, 1, H, W)`` map in [0, 1] of ``images01`` ``(B, 3, H, W)`` for ``targets`` ``(B,)``."""
        resolved = self.check(classifier, options)
        library = _library()
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(library, self.name)
        _, layer = resolve_layer(classifier.module, resolved["layer"], classifier.input_size)
        ctor = {k: v for k, v in resolved.items() if k in signature_defaults([cls.__init__], skip=_SUPPLIED)}
        if self.name == "FullGrad" and not _has_biased_layers(classifier.module):
            raise ConfigError(f"cam:FullGrad needs nn.Conv2d or nn.BatchNorm2d layers with a bias; "
                              f"{type(classifier.module).__name__} has none (its map would be only |x * grad|)")
        x = classifier.normalize(images01.to(classifier.device, torch.float32)).detach().requires_grad_(True)
        method = cls(model=classifier.module, target_layers=[layer], **ctor)
        if self.name == "ScoreCAM":
            method.batch_size = resolved["batch_size"]
        chosen = [ClassifierOutputTarget(int(t)) for t in targets.tolist()]  # the library takes Python ints
        try:
            with torch.enable_grad():
                maps = method(input_tensor=x, targets=chosen, aug_smooth=bool(resolved["aug_smooth"]),
                              eigen_smooth=bool(resolved["eigen_smooth"]))
        except RuntimeError as error:
            if self.name == "ShapleyCAM" and "does not require grad" in str(error):
                # its Hessian-vector product needs a gradient that depends on the layer's activation
                layer_name = resolved["layer"] or "default"
                raise ConfigError(f"cam:ShapleyCAM needs second derivatives at layer {layer_name!r}, "
                                  "but the network after it is linear there; pick an earlier layer") from error
            raise
        finally:
            method.activations_and_grads.release()
        return torch.as_tensor(maps, dtype=torch.float32, device=classifier.device).unsqueeze(1)


def _has_biased_layers(module: nn.Module) -> bool:
    """Whether FullGrad finds layers (it takes exact ``Conv2d``/``BatchNorm2d`` types with a bias)."""
    return any(type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None for m in module.modules())


def cam_method(member: str) -> SaliencyMethod:
    """The saliency method ``cam:<member>``.

    Raises:
        ConfigError: an unknown member (listing :data:`MEMBERS`), or pytorch-grad-cam not installed.
    """
    if member not in MEMBERS:
        raise ConfigError(f"unknown CAM method {member!r}; known: {', '.join(f'{FAMILY}:{m}' for m in MEMBERS)}")
    return SaliencyMethod(
        name=f"{FAMILY}:{member}", fn=CamMethod(member), options=_option_defaults(member), reduction=REDUCTION,
        description=f"pytorch-grad-cam {member} ({MEMBERS[member]})", layer=True)


def register_all() -> None:
    """Register the ``cam:`` family (pytorch-grad-cam is imported when a member is first resolved)."""
    register_family(FAMILY, cam_method, lambda: list(MEMBERS))
