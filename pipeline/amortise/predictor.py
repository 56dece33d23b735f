"""The mask predictor: an image and a target class to the solver's mask parameters, in one pass.

A small head on the explained classifier's **own** intermediate features (Dabkowski & Gal's
design, NeurIPS 2017, with the classifier itself as the encoder), run inside the forward pass the
solver needs anyway for the image's scores:

* **taps**: forward hooks on three modules of the frozen classifier, found once by
  :func:`locate_taps`: for each stride 8, 16 and 32 of the input, the last module (called once)
  whose output has that spatial size. For EfficientNet-Lite0 at 224 px these are the 28x28,
  14x14 and 7x7 maps (240, 672 and 1280 channels; the last is the map the classifier pools);
* **class conditioning** by the classifier's own class weights: the row ``W[c]`` of its last
  linear layer (:func:`locate_taps` finds it) is projected to the head's width and multiplies the
  stride-32 features (Dabkowski & Gal's class selector), and, where ``W[c]`` has as many entries as
  the stride-32 map has channels, the class activation map ``W[c] . F`` (standardised per image)
  is one more input channel. Classes seen once or never in training still get a conditioning
  that means something, which a learned embedding of 1000 classes trained on a few hundred
  images would not give;
* a decoder that upsamples to stride 8 through the stride-16 and stride-8 features and outputs one
  logit per cell; the mask is its sigmoid (1 = keep), resized bilinearly to ``mask.size`` when
  that differs from the stride-8 grid (28 at 224 px, the presets' size).

``arch="pixels"`` is the light encoder-decoder alternative (three stride-2 convolutions of the
image, the same class selector), kept for the comparison in docs/method.md ("Amortised masks").

Files (:func:`save_predictor`, :func:`load_predictor`) hold plain tensors and a JSON string of
metadata, so they load with ``torch.load(weights_only=True)``; :attr:`MaskPredictor.identity` is a
hash of the weights and the architecture, which a store made with the predictor records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models import Classifier
from ..options import choice

__all__ = ["FORMAT", "PredictorConfig", "MaskPredictor", "Taps", "locate_taps", "capture", "predict", "head_masks",
           "save_predictor", "load_predictor", "atomic_save"]

FORMAT = "perturb-mask-predictor/1"
"""The ``format`` entry of a predictor file (and of its training checkpoint)."""

Arch = Literal["features", "pixels"]
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class PredictorConfig:
    """The predictor's architecture.

    ``arch``: ``features`` (a head on the classifier's stride-8/16/32 features) or ``pixels`` (a
    light encoder-decoder of the image itself). ``width``: channels of the head. ``start``: the
    mask value an untrained head predicts everywhere.
    """

    arch: Arch = "features"
    width: int = 64
    start: float = 0.5

    def __post_init__(self) -> None:
        choice("predictor.arch", self.arch, Arch)
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 8 or self.width % 8:
            raise ConfigError(f"predictor.width must be a multiple of 8 (>= 8), got {self.width!r}")
        if not 0 < self.start < 1:
            raise ConfigError(f"predictor.start must lie strictly between 0 and 1, got {self.start!r}")


@dataclass(frozen=True)
class Taps:
    """Where the predictor reads the classifier: module names (``module.get_submodule``) of the
    stride-8/16/32 features, their channels, the last linear layer, and the stride-8 grid side."""

    names: tuple[str, str, str]
    channels: tuple[int, int, int]
    linear: str
    class_dim: int
    grid: int


def locate_taps(classifier: Classifier) -> Taps:
    """Find the taps of ``classifier`` by one forward pass of a blank image (see the module docstring).

    Raises:
        ConfigError: a TorchScript model (no hooks), an input size not divisible by 32, no module
            output at one of the strides, or no linear layer producing the logits.
    """
    module = classifier.module
    if isinstance(module, torch.jit.ScriptModule):
        raise ConfigError("a mask predictor reads the classifier's intermediate features, which a TorchScript "
                          "model does not expose; use an nn.Module classifier (e.g. timm:... or torchvision:...)")
    height, width = classifier.input_size
    if height % 32 or width % 32:
        raise ConfigError(f"a mask predictor needs an input size divisible by 32, got {(height, width)}")
    names = {m: n for n, m in module.named_modules() if n}
    calls: dict[str, int] = {}
    exits: list[tuple[str, tuple[int, ...]]] = []
    linears: list[tuple[str, int, int]] = []

    def hook(mod, inputs, output):
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        if torch.is_tensor(output):
            exits.append((name, tuple(output.shape)))
            if isinstance(mod, nn.Linear):
                linears.append((name, mod.in_features, mod.out_features))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            logits = module(torch.zeros(1, 3, height, width, device=classifier.device))
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for stride in STRIDES:
        size = (height // stride, width // stride)
        candidates = [(n, s) for n, s in exits if len(s) == 4 and s[-2:] == size and calls[n] == 1]
        if not candidates:
            raise ConfigError(f"no module of {classifier.spec!r} outputs a {size[0]}x{size[1]} map (stride {stride}); "
                              "a mask predictor needs features at strides 8, 16 and 32")
        found.append(candidates[-1])
    heads = [(n, i) for n, i, o in linears if o == logits.shape[-1] and calls[n] == 1]
    if not heads:
        raise ConfigError(f"no linear layer of {classifier.spec!r} produces its {logits.shape[-1]} logits; "
                          "a mask predictor conditions on that layer's class weights")
    return Taps(tuple(n for n, _ in found), tuple(s[1] for _, s in found), heads[-1][0], heads[-1][1],
                height // STRIDES[0])


@contextlib.contextmanager
def capture(classifier: Classifier, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward of ``classifier`` stores the outputs of the modules ``names``
    into the yielded dict (the last call's), as float32 contiguous tensors (not detached)."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(mod, inputs, output, name=name):
            store[name] = output.float().contiguous()
        handles.append(classifier.module.get_submodule(name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


class MaskPredictor(nn.Module):
    """The head. ``forward(features, class_weights, x)`` -> mask logits ``(B, 1, g, g)``.

    Args (of forward):
        features: the three tap outputs ``(B, C_s, H/s, W/s)`` for s = 8, 16, 32 (float32).
        class_weights: ``(B, D)``: each image's target row of the classifier's last linear layer.
        x: ``(B, 3, H, W)`` the normalised images (read by ``arch="pixels"`` only).
    """

    def __init__(self, config: PredictorConfig, taps: Taps):
        super().__init__()
        self.config, self.taps = config, taps
        w = config.width
        c8, c16, c32 = taps.channels
        self.cam = config.arch == "features" and taps.class_dim == c32
        self.select = nn.Linear(taps.class_dim, w)
        if config.arch == "features":
            self.proj32, self.proj16, self.proj8 = (nn.Sequential(nn.Conv2d(c, w, 1), nn.GroupNorm(8, w))
                                                    for c in (c32, c16, c8))
            self.mix32 = _block(w + int(self.cam), w)
            self.mix16 = _block(2 * w, w)
            self.mix8 = _block(2 * w, w)
        else:
            self.encoder = nn.Sequential(_block(3, w // 2, stride=2), _block(w // 2, w, stride=2),
                                         _block(w, w, stride=2))
            self.mix8 = _block(w, w)
        self.out = nn.Conv2d(w, 1, 3, padding=1)
        with torch.no_grad():  # start near config.start everywhere
            self.out.weight.mul_(0.1)
            self.out.bias.fill_(math.log(config.start / (1 - config.start)))

    def forward(self, features: Sequence[torch.Tensor], class_weights: torch.Tensor,
                x: torch.Tensor) -> torch.Tensor:
        code = self.select(class_weights)[:, :, None, None]  # (B, w, 1, 1)
        if self.config.arch == "pixels":
            return self.out(self.mix8(self.encoder(x) * code))
        f8, f16, f32 = features
        z = self.proj32(f32) * code
        if self.cam:
            cam = torch.einsum("bchw,bc->bhw", f32, class_weights)[:, None]
            mean, std = cam.mean((2, 3), keepdim=True), cam.std((2, 3), keepdim=True)
            z = torch.cat([z, (cam - mean) / (std + 1e-6)], 1)
        z = self.mix32(z)
        z = self.mix16(torch.cat([_up(z, f16), self.proj16(f16)], 1))
        z = self.mix8(torch.cat([_up(z, f8), self.proj8(f8)], 1))
        return self.out(z)

    def architecture(self) -> dict[str, Any]:
        """The architecture as plain data (rebuilds the module with :func:`from_architecture`)."""
        return {"config": asdict(self.config), "taps": asdict(self.taps)}

    @property
    def identity(self) -> str:
        """16 hex digits: SHA-256 of the architecture and every weight (names, shapes, bytes)."""
        digest = hashlib.sha256(json.dumps(self.architecture(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())


def _up(z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(z, size=like.shape[-2:], mode="bilinear", align_corners=False)


def from_architecture(data: dict[str, Any]) -> MaskPredictor:
    """A fresh :class:`MaskPredictor` of the architecture :meth:`MaskPredictor.architecture` gave."""
    taps = data["taps"]
    return MaskPredictor(PredictorConfig(**data["config"]),
                         Taps(tuple(taps["names"]), tuple(taps["channels"]), taps["linear"], taps["class_dim"],
                              taps["grid"]))


def predict(predictor: MaskPredictor, classifier: Classifier, x: torch.Tensor, targets: torch.Tensor | None,
            size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks of a batch in one forward pass of the classifier, differentiable in the predictor.

    Args:
        x: ``(B, 3, H, W)`` normalised images on the classifier's device.
        targets: ``(B,)`` int64 classes, or None for the top-1 prediction.
        size: the mask side (``config.mask.size``).

    Returns:
        ``(masks, targets, logits)``: ``(B, 1, size, size)`` in (0, 1) (1 = keep), ``(B,)``, and the
        classifier's ``(B, C)`` logits of ``x``.
    """
    with torch.no_grad(), capture(classifier, predictor.taps.names) as features:
        logits = classifier(x.contiguous(memory_format=torch.channels_last)).float()
    targets = logits.argmax(1) if targets is None else targets.to(logits.device)
    return head_masks(predictor, classifier, features, targets, x, size), targets, logits


def head_masks(predictor: MaskPredictor, classifier: Classifier, features: dict[str, torch.Tensor],
               targets: torch.Tensor, x: torch.Tensor, size: int) -> torch.Tensor:
    """The masks ``(B, 1, size, size)`` from tap outputs already captured (:func:`capture`) during a
    forward of the normalised images ``x`` ``(B, 3, H, W)``, for ``targets`` ``(B,)``."""
    taps = predictor.taps
    weights = classifier.module.get_submodule(taps.linear).weight.float()[targets]
    out = predictor([features[n] for n in taps.names], weights, x)
    if out.shape[-1] != size:
        out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
    return torch.sigmoid(out)


def atomic_save(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it:
    a kill leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_predictor(predictor: MaskPredictor, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``predictor`` and its JSON-able ``meta`` (provenance) atomically to ``path``."""
    state = {name: tensor.detach().cpu().clone() for name, tensor in predictor.state_dict().items()}
    meta = {**meta, "architecture": predictor.architecture(), "identity": predictor.identity}
    atomic_save({"format": FORMAT, "state": state, "meta": json.dumps(meta, sort_keys=True)}, path)


def load_predictor(path: str | os.PathLike[str], classifier: Classifier | None = None) -> MaskPredictor:
    """The predictor saved at ``path`` (``torch.load(weights_only=True)``), in eval mode, on the
    classifier's device, with its provenance as ``.meta`` (a dict).

    Raises:
        ConfigError: the file is missing or no predictor, or it was trained for another classifier
            (spec or input size) than ``classifier``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"predictor file {str(path)!r} does not exist; make one with train_predictor "
                          "(perturb train-predictor)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean: not a predictor file
        raise ConfigError(f"{str(path)!r} is not a predictor file ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
        raise ConfigError(f"{str(path)!r} is not a finished predictor file (format {FORMAT!r}); a training "
                          "checkpoint resumes with train_predictor")
    meta = json.loads(payload["meta"])
    predictor = from_architecture(meta["architecture"])
    predictor.load_state_dict(payload["state"])
    if classifier is not None:
        check_classifier(meta, classifier, path)
        predictor.to(classifier.device)
    predictor.meta = meta
    return predictor.eval().requires_grad_(False)


def check_classifier(meta: dict[str, Any], classifier: Classifier, path: str | os.PathLike[str]) -> None:
    """Refuse a predictor trained on another classifier (spec or input size)."""
    spec, size = meta.get("classifier"), meta.get("input_size")
    if spec != classifier.spec or list(size or []) != list(classifier.input_size):
        raise ConfigError(f"the predictor {str(path)!r} was trained for model {spec!r} at {size}, not "
                          f"{classifier.spec!r} at {list(classifier.input_size)}; train one for this model")
