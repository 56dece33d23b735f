"""How a dataset run is executed (:class:`RunConfig`) and the configuration a store records
(:func:`store_config`): torch-free, so a command checks its options and its store before any
model is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from ..config import SolverConfig, store_provenance, to_dict
from ..data import MAX_DECODED_PIXELS
from ..errors import ConfigError
from ..options import Target, choice

__all__ = ["RunConfig", "store_config", "target_config"]


@dataclass(frozen=True)
class RunConfig:
    """How a dataset run is executed.

    ``batch_size``: images solved together, or ``"auto"``: the largest batch (up to
    :data:`AUTO_BATCH_CAP`) that fits the GPU's free memory, measured by :func:`auto_batch_size`;
    :data:`CPU_BATCH` on a CPU.
    ``target``: ``top1`` explains the model's prediction, ``label`` the ground-truth class (images
    without a label are then skipped). ``targets``: a per-image class table
    (:func:`pipeline.data.targets.read_targets`, ``--targets FILE.csv``) that, when given, is explained
    instead of ``top1`` (with ``target="label"`` it is refused: both choose the class). ``seed`` offsets each image's random stream (its dataset
    index), so results do not depend on the batch size or the order of resumed runs.
    ``compile``: solve through :meth:`pipeline.models.Classifier.compiled` (worth it on a GPU).
    ``max_pixels``: images that would decode to more pixels are skipped as "too large"
    (:func:`pipeline.data.decode_image`); recorded in the store's configuration when it is not the
    default (so stores made before the option existed still resume).
    Only ``target``, ``seed`` and ``max_pixels`` change the stored rows; the rest may differ
    between a run and its resume.
    """

    batch_size: int | Literal["auto"] = 8
    workers: int = 2
    limit: int | None = None
    target: Target = "top1"
    seed: int = 0
    progress: bool = True
    compile: bool = False
    max_pixels: int = MAX_DECODED_PIXELS
    targets: Any = None  # a pipeline.data.targets.TargetTable (that module imports torch)

    def __post_init__(self) -> None:
        choice("target", self.target, Target)
        if self.targets is not None:
            from ..data.targets import TargetTable

            if not isinstance(self.targets, TargetTable):
                raise ConfigError(f"targets must be a TargetTable (pipeline.data.targets.read_targets), got "
                                  f"{type(self.targets).__name__}")
            if self.target == "label":
                raise ConfigError("--targets and --target label both choose the class explained; give one of them")
        batch_ok = self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1)
        if not batch_ok or self.workers < 0 or (self.limit is not None and self.limit < 1):
            raise ConfigError(f"--batch-size must be 'auto' or >= 1 (got {self.batch_size!r}), --workers >= 0 "
                              "and --limit >= 1")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ConfigError(f"--max-pixels must be a positive number of pixels, got {self.max_pixels!r}")


def store_config(solver: SolverConfig, run: RunConfig, model: Any,
                 input_size: Sequence[int] | None = None) -> dict[str, Any]:
    """The configuration recorded in (and identifying) a store: everything that changes a mask,
    and the preset and overrides that named it (outside its identity, :mod:`pipeline.identity`).

    Args:
        model: the classifier (its ``spec`` and ``input_size`` are read), or its spec string with
            ``input_size`` ``(H, W)`` given (before the model is loaded).
    """
    spec = model if isinstance(model, str) else model.spec
    size = input_size if input_size is not None else model.input_size
    config = {"solver": to_dict(solver), "model": spec, **target_config(run), "seed": run.seed,
              "input_size": list(size), **store_provenance(solver)}
    if run.max_pixels != MAX_DECODED_PIXELS:  # only when set: the default keeps older stores' run_key
        config["max_pixels"] = run.max_pixels
    return config


def target_config(run: RunConfig) -> dict[str, Any]:
    """How a run chooses the class explained, as recorded in (and identifying) its store:
    ``{"target": "top1"|"label"}``, or with a targets table ``{"target": "file", "targets":
    {"sha256": digest, "classes": n}}`` (another table is another run)."""
    if run.targets is None:
        return {"target": run.target}
    return {"target": "file", "targets": {"sha256": run.targets.digest, "classes": len(run.targets.classes)}}

