"""Captum's attributions as saliency methods: ``captum:IntegratedGradients``, ``captum:Occlusion``, ...

Every member runs Captum's class on the whole batch at once (``attribute(x, target=targets)`` with
a ``(B,)`` target tensor) on the **normalised** input, and reduces its ``(B, 3, H, W)`` attribution to
one map ``(B, 1, H, W)`` as its paper (or TorchRay's benchmark) does; the sentence is in
:data:`MEMBERS` and recorded as the method's ``reduction``. Options are Captum's own names, read from
the class's constructor and ``attribute()`` signatures (an unknown name is a ConfigError listing
them), plus ``score`` (``"logit"``, or ``"probability"``: the softmax, for the perturbation methods
that measure a drop in the class's probability), ``layer`` for the layer methods, the SLIC settings
of ``FeatureAblation`` and ``base`` of ``NoiseTunnel``. Where this module's default differs from
Captum's, :data:`MEMBERS` says so (e.g. Grad-CAM's ReLU, as in the paper). ``NoiseTunnel``
(SmoothGrad) runs Captum's algorithm over a Captum base method with the noise drawn per image from
its seed, so a map does not depend on the batch (Captum's class draws from the global generator).

Models with ``nn.ReLU6`` or in-place ReLUs (EfficientNet-Lite0): Captum's guided backprop,
deconvolution and DeepLift find activations by ``isinstance(module, nn.ReLU)`` and attach backward
hooks, which in-place modules break. Those methods run on a copy of the network whose ReLU/ReLU6
modules are out-of-place ``nn.ReLU`` subclasses computing the same function (the copy is cached
per network), with the ReLU6 registered for DeepLift's rescale rule.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import resolve_layer
from .library_options import merge_options, signature_defaults
from .registry import SaliencyMethod, register_family

if TYPE_CHECKING:
    from ..models import Classifier

__all__ = ["MEMBERS", "CaptumMethod", "captum_method", "register_all", "relu_view"]

FAMILY = "captum"
_SUPPLIED = ("forward_func", "model", "layer", "device_ids", "inputs", "target", "additional_forward_args",
             "return_convergence_delta", "custom_attribution_func", "feature_mask", "show_progress", "grad_kwargs",
             "attribution_method")
"""Signature parameters the method supplies itself (tensors, the network), never user options."""

_REDUCTIONS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "max_abs": ("maximum over the 3 channels of the absolute attribution",
                lambda a: a.abs().amax(1, keepdim=True)),
    "sum_abs": ("absolute attribution summed over the 3 channels",
                lambda a: a.abs().sum(1, keepdim=True)),
    "mean": ("the signed score drop, equal in the 3 channels (their mean)",
             lambda a: a.mean(1, keepdim=True)),
}


@dataclass(frozen=True)
class _Member:
    """How one Captum class becomes a saliency method."""

    reduction: str  # a key of _REDUCTIONS, or "cam" (ReLU'd layer map, bilinearly upsampled)
    score: str = "logit"
    layer: bool = False
    relu_rule: bool = False  # uses Captum's nn.ReLU rules (needs the ReLU view)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # ours where they differ from Captum's
    reference: str = ""


MEMBERS: dict[str, _Member] = {
    "IntegratedGradients": _Member(
        "sum_abs", defaults={"internal_batch_size": 128},
        reference="Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017"),
    "Saliency": _Member(
        "max_abs", reference="Simonyan et al., Deep Inside Convolutional Networks, ICLR workshop 2014"),
    "InputXGradient": _Member(
        "sum_abs", reference="Shrikumar et al., Not Just a Black Box, arXiv 1605.01713, 2016"),
    "GuidedBackprop": _Member(
        "max_abs", relu_rule=True,
        reference="Springenberg et al., Striving for Simplicity, ICLR workshop 2015"),
    "Deconvolution": _Member(
        "max_abs", relu_rule=True,
        reference="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014"),
    "DeepLift": _Member(
        "sum_abs", relu_rule=True,
        reference="Shrikumar et al., Learning Important Features Through Propagating Activation "
                  "Differences, ICML 2017"),
    "Occlusion": _Member(
        "mean", score="probability",
        defaults={"sliding_window_shapes": (3, 32, 32), "strides": (3, 16, 16), "perturbations_per_eval": 16},
        reference="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014"),
    "FeatureAblation": _Member(
        "mean", score="probability",
        defaults={"perturbations_per_eval": 16, "n_segments": 50, "compactness": 10.0, "sigma": 1.0},
        reference="superpixel ablation (as in LIME, Ribeiro et al., KDD 2016) on SLIC superpixels "
                  "(Achanta et al., TPAMI 2012)"),
    "LayerGradCam": _Member(
        "cam", layer=True, defaults={"relu_attributions": True},
        reference="Selvaraju et al., Grad-CAM, ICCV 2017"),
    "GuidedGradCam": _Member(
        "max_abs", layer=True, relu_rule=True, defaults={"interpolate_mode": "bilinear"},
        reference="Selvaraju et al., Grad-CAM, ICCV 2017 (guided backprop times upsampled Grad-CAM)"),
    "NoiseTunnel": _Member(
        "base", defaults={"nt_type": "smoothgrad", "nt_samples": 50, "nt_samples_batch_size": 10, "stdevs": None,
                          "base": "Saliency"},
        reference="Smilkov et al., SmoothGrad, arXiv 1706.03825, 2017"),
}
"""The family's members and how each is run (names are Captum's class names)."""

NOISE_TUNNEL_BASES = ("Saliency", "IntegratedGradients", "InputXGradient", "GuidedBackprop", "Deconvolution",
                      "DeepLift")
"""The methods ``captum:NoiseTunnel``'s ``base`` option may name."""

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
"""NoiseTunnel's aggregations (Captum's names)."""

_NOISE_STREAM = 5000  # counter streams of NoiseTunnel's samples (5000 + j), apart from the solver's

SMOOTHGRAD_NOISE = 0.15
"""SmoothGrad's noise standard deviation as a fraction of the input's range (the paper's 10-20%):
with ``stdevs`` unset, ``0.15 / mean(std)`` in normalised units (0.66 for ImageNet's std)."""


def _reduction_text(name: str, member: _Member) -> str:
    if member.reduction == "cam":
        return "Grad-CAM layer map (channel-weighted sum), ReLU'd, upsampled bilinearly to the input size"
    if member.reduction == "base":
        return "the base method's reduction of the noise-averaged attribution"
    return _REDUCTIONS[member.reduction][0]


def _captum_class(name: str) -> type:
    import captum.attr

    return getattr(captum.attr, name)


def _option_defaults(name: str, base: str | None = None) -> dict[str, Any]:
    """Every option of member ``name`` with its default (NoiseTunnel: with ``base``'s options)."""
    member = MEMBERS[name]
    cls = _captum_class(name)
    options: dict[str, Any] = {"score": member.score}
    if member.layer:
        options["layer"] = None
    if name != "NoiseTunnel":  # its options are the algorithm's (see _noise_tunnel), not a Captum call's
        options.update(signature_defaults([cls.__init__, cls.attribute], skip=_SUPPLIED))
    options.update(member.defaults)
    if base is not None:
        for key, value in _option_defaults(base).items():
            options.setdefault(key, value)
    return options


@dataclass(frozen=True)
class CaptumMethod:
    """The batched function of one ``captum:`` member (:data:`pipeline.methods.registry.SaliencyFn`).

    Call it as ``fn(classifier, images01, targets, seeds, **options)``; :meth:`check` resolves and
    validates the options (and the layer) without touching an image.
    """

    name: str

    def check(self, classifier: Classifier | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The full options (defaults updated with ``options``), checked.

        Raises:
            ConfigError: an unknown option, a bad ``score`` or ``base``, an unknown layer.
        """
        member = MEMBERS[self.name]
        base = None
        if self.name == "NoiseTunnel":
            base = options.get("base", member.defaults["base"])
            if base not in NOISE_TUNNEL_BASES:
                raise ConfigError(f"captum:NoiseTunnel base must be one of {', '.join(NOISE_TUNNEL_BASES)}; "
                                  f"got {base!r}")
        resolved = merge_options(f"captum:{self.name}", options, _option_defaults(self.name, base))
        if self.name == "NoiseTunnel" and resolved["nt_type"] not in NT_TYPES:
            raise ConfigError(f"captum:NoiseTunnel nt_type must be one of {', '.join(NT_TYPES)}; "
                              f"got {resolved['nt_type']!r}")
        if resolved["score"] not in ("logit", "probability"):
            raise ConfigError(f"score must be 'logit' or 'probability'; got {resolved['score']!r}")
        if member.layer and classifier is not None:
            resolve_layer(classifier.module, resolved["layer"], classifier.input_size)
        return resolved

    def __call__(self, classifier: Classifier, images01: torch.Tensor, targets: torch.Tensor,
                 seeds: torch.Tensor, **options: Any) -> torch.Tensor:
        """``(B, 1, H, W)`` saliency of ``images01`` ``(B, 3, H, W)`` in [0, 1] for ``targets`` ``(B,)``.

        One Captum ``attribute`` call on the whole batch (NoiseTunnel: one per chunk of noisy copies);
        ``seeds`` ``(B,)`` seed NoiseTunnel's noise per image (the other members are deterministic).
        """
        resolved = self.check(classifier, options)
        member = MEMBERS[self.name]
        # requires_grad on the input: Captum's gradient methods need it (and warn when they set it)
        x = classifier.normalize(images01.to(classifier.device, torch.float32)).detach().requires_grad_(True)
        targets = targets.to(x.device, torch.int64)
        if self.name == "NoiseTunnel":
            attribution = _noise_tunnel(classifier, x, targets, seeds, resolved)
            return _reduce(MEMBERS[resolved["base"]], attribution, x.shape[-2:], resolved)
        network = relu_view(classifier.module) if member.relu_rule else classifier.module
        attribution = _attribute(self.name, network, x, targets, resolved, classifier)
        return _reduce(member, attribution, x.shape[-2:], resolved)


def _scored(network: nn.Module, score: str) -> nn.Module:
    """The network whose output Captum attributes: logits, or softmax probabilities."""
    return nn.Sequential(network, nn.Softmax(dim=1)) if score == "probability" else network


def _split(cls: type, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` split into Captum constructor and ``attribute()`` keywords."""
    ctor = signature_defaults([cls.__init__], skip=_SUPPLIED)
    call = signature_defaults([cls.attribute], skip=_SUPPLIED)
    return ({k: v for k, v in options.items() if k in ctor}, {k: v for k, v in options.items() if k in call})


def _attribute(name: str, network: nn.Module, x: torch.Tensor, targets: torch.Tensor, options: Mapping[str, Any],
               classifier: Classifier) -> torch.Tensor:
    """Captum's ``(B, 3, H, W)`` (or layer ``(B, 1, h, w)``) attribution of member ``name``."""
    cls = _captum_class(name)
    ctor, call = _split(cls, options)
    scored = _scored(network, options["score"])
    if MEMBERS[name].layer:
        _, layer = resolve_layer(network, options["layer"], classifier.input_size)
        method = cls(scored, layer, **ctor)
    else:
        method = cls(scored, **ctor)
    if name == "Occlusion":
        call["sliding_window_shapes"] = _window(call["sliding_window_shapes"], x.shape[1])
        call["strides"] = _window(call["strides"], x.shape[1]) if call["strides"] is not None else None
    if name == "FeatureAblation":
        call["feature_mask"] = superpixels(x, classifier, options)
    with torch.enable_grad():
        attribution = method.attribute(x, target=targets, **call)
    if MEMBERS[name].layer and attribution.dim() != 4:
        raise ConfigError(f"layer {options['layer']!r} outputs shape {tuple(attribution.shape)}, not a spatial "
                          "map; pick another layer (perturb models --layers MODEL)")
    return attribution.detach()


def _window(shape: Any, channels: int) -> tuple[int, ...]:
    """An occlusion window or stride: ``k`` or ``(k,)`` means ``(channels, k, k)``, ``(h, w)`` means
    ``(channels, h, w)``; a full ``(c, h, w)`` passes unchanged."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if len(shape) == 1:
        return (channels, shape[0], shape[0])
    if len(shape) == 2:
        return (channels, *shape)
    return shape


def superpixels(x: torch.Tensor, classifier: Classifier, options: Mapping[str, Any]) -> torch.Tensor:
    """SLIC superpixel labels ``(B, 1, H, W)`` int64 on ``x``'s device, computed on the CPU from the
    ``[0, 1]`` images (scikit-image's ``slic``: ``n_segments``, ``compactness``, ``sigma``; labels
    start at 0 in every image)."""
    from skimage.segmentation import slic

    mean = torch.tensor(classifier.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(classifier.std, device=x.device).view(1, 3, 1, 1)
    images = (x.detach() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().double().numpy()
    labels = [slic(image, n_segments=int(options["n_segments"]), compactness=float(options["compactness"]),
                   sigma=float(options["sigma"]), start_label=0, channel_axis=-1) for image in images]
    return torch.from_numpy(np.stack(labels)).to(x.device, torch.int64).unsqueeze(1)


def _noise_tunnel(classifier: Classifier, x: torch.Tensor, targets: torch.Tensor, seeds: torch.Tensor,
                  options: Mapping[str, Any]) -> torch.Tensor:
    """Captum's NoiseTunnel over the ``base`` method, ``(B, 3, H, W)``: the base attribution of
    ``nt_samples`` noisy copies of each image (``x + stdevs * N(0, 1)``), ``nt_samples_batch_size``
    copies of every image per base call, aggregated by ``nt_type`` (``smoothgrad``: the mean;
    ``smoothgrad_sq``: the mean square; ``vargrad``: the variance). The noise of sample ``j`` of an
    image is a pure function of its seed and ``j`` (:func:`pipeline.solve.counter_normal`), so an
    image gets the same map alone or in any batch and on a resume; Captum's own class would draw from
    torch's global generator."""
    from ..solve import counter_normal

    base = options["base"]
    base_cls = _captum_class(base)
    network = relu_view(classifier.module) if MEMBERS[base].relu_rule else classifier.module
    base_ctor, base_call = _split(base_cls, options)
    method = base_cls(_scored(network, options["score"]), **base_ctor)
    stdev = options["stdevs"]
    if stdev is None:
        stdev = SMOOTHGRAD_NOISE / (sum(classifier.std) / 3)
    samples, per_call = int(options["nt_samples"]), int(options["nt_samples_batch_size"] or options["nt_samples"])
    batch, shape = x.shape[0], tuple(x.shape[1:])
    seeds = seeds.to(x.device, torch.int64)
    total = torch.zeros_like(x)
    squares = torch.zeros_like(x)
    for start in range(0, samples, per_call):
        count = min(per_call, samples - start)
        noise = torch.stack([counter_normal(seeds, _NOISE_STREAM + j, shape) for j in range(start, start + count)], 1)
        noisy = (x.detach()[:, None] + float(stdev) * noise).flatten(0, 1).requires_grad_(True)  # (B * count, ...)
        with torch.enable_grad():
            attribution = method.attribute(noisy, target=targets.repeat_interleave(count), **base_call)
        attribution = attribution.detach().view(batch, count, *shape)
        total += attribution.sum(1)
        squares += attribution.square().sum(1)
    mean, mean_square = total / samples, squares / samples
    aggregates = {"smoothgrad": mean, "smoothgrad_sq": mean_square, "vargrad": mean_square - mean.square()}
    return aggregates[options["nt_type"]]


def _reduce(member: _Member, attribution: torch.Tensor, size: torch.Size, options: Mapping[str, Any]) -> torch.Tensor:
    """One ``(B, 1, H, W)`` float map from Captum's attribution."""
    attribution = attribution.float()
    if member.reduction == "cam":
        cam = F.interpolate(attribution, size=tuple(size), mode="bilinear", align_corners=False)
        return cam.clamp_min(0) if options.get("relu_attributions") else cam
    return _REDUCTIONS[member.reduction][1](attribution)


class _ReLU6(nn.ReLU):
    """``min(max(x, 0), 6)`` as an ``nn.ReLU`` subclass, out of place, so that Captum's ReLU rules
    (guided backprop, deconvolution; DeepLift once registered) apply to it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


def _register_deeplift_relu6() -> bool:
    """Give :class:`_ReLU6` DeepLift's rescale rule for elementwise nonlinearities (Captum keys its
    table by exact type). False where this Captum version has no such table."""
    try:
        from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR, nonlinear
    except ImportError:
        return False
    SUPPORTED_NON_LINEAR.setdefault(_ReLU6, nonlinear)
    return True


_VIEWS: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def relu_view(network: nn.Module) -> nn.Module:
    """``network``, or a cached copy of it whose ``nn.ReLU6`` and in-place ``nn.ReLU`` modules are
    out-of-place ``nn.ReLU`` modules computing the same function (for Captum's ReLU rules).

    Raises:
        ConfigError: the network has no ReLU module at all (e.g. SiLU or functional activations):
            guided backprop and deconvolution would silently be the plain gradient.
    """
    activations = [m for m in network.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if not activations:
        raise ConfigError(f"{type(network).__name__} has no nn.ReLU or nn.ReLU6 modules, so Captum's guided "
                          "backprop, deconvolution and DeepLift cannot apply their ReLU rules; use a gradient "
                          "method")
    if all(type(m) is nn.ReLU and not m.inplace for m in activations):
        return network
    device = next(network.parameters()).device
    view = _VIEWS.get(network)
    if view is None or next(view.parameters()).device != device:
        view = copy.deepcopy(network)
        for parent in view.modules():
            for child_name, child in parent.named_children():
                if isinstance(child, nn.ReLU6):
                    setattr(parent, child_name, _ReLU6())
                elif type(child) is nn.ReLU and child.inplace:
                    setattr(parent, child_name, nn.ReLU())
        _register_deeplift_relu6()
        _VIEWS[network] = view
    return view


def captum_method(member: str) -> SaliencyMethod:
    """The saliency method ``captum:<member>``.

    Raises:
        ConfigError: an unknown member (listing :data:`MEMBERS`), or Captum not installed.
    """
    if member not in MEMBERS:
        raise ConfigError(f"unknown Captum method {member!r}; known: "
                          f"{', '.join(f'{FAMILY}:{m}' for m in MEMBERS)}")
    try:
        import captum.attr  # noqa: F401
    except ImportError as error:
        raise ConfigError("captum methods need the captum package: pip install captum") from error
    spec = MEMBERS[member]
    return SaliencyMethod(
        name=f"{FAMILY}:{member}", fn=CaptumMethod(member), options=_option_defaults(member),
        reduction=_reduction_text(member, spec), description=f"Captum {member} ({spec.reference})",
        layer=spec.layer, open_options=member == "NoiseTunnel")


def register_all() -> None:
    """Register the ``captum:`` family (Captum is imported when a member is first resolved)."""
    register_family(FAMILY, captum_method, lambda: list(MEMBERS))
