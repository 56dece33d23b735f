"""Training a mask predictor over a set of images, resumably.

:func:`train_predictor` fits a :class:`~pipeline.amortise.predictor.MaskPredictor` to a folder (or
list) of images, with the classifier frozen, by one of three losses (:class:`TrainConfig`):

``objective``
    Dabkowski & Gal's way: each predicted mask goes through the preset's own perturbation and
    objective (:func:`pipeline.solve.problem.objective`: the modulated blur, the jitter, the L1 and
    TV terms at the preset's weights, the target's probability) and the mean over the batch is
    minimised. The L1 weight is the preset's final one (its warm-up is a device of the per-image
    solver, not part of the objective); the jitter is drawn from each image's random stream at a
    count that changes every epoch. One training step per image costs about one solver iteration.
``regression``
    Binary cross-entropy between the predicted mask parameters and masks solved before
    (``solved``: a mask store of the same images).
``both``
    The objective plus ``regression_weight`` times the regression loss.

Resumable: a checkpoint (weights, Adam's state, the position in the epoch, the losses so far) is
written atomically to ``<out>.partial`` after every epoch and every ``checkpoint_every`` steps; a
rerun with the same arguments continues from it, and since the image order of every epoch is a
function of the seed and the epoch, and every random draw of the objective a function of the
image's seed, the result equals an uninterrupted training bit for bit (at a fixed thread count).
The finished predictor is written to ``out`` with its provenance (:func:`provenance`) and the
checkpoint removed; a rerun then returns at once.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import SolverConfig, override, preset as preset_config, to_dict
from ..data import ImageDataset, ImageRecord, collate, discover
from ..errors import ConfigError, StoreError
from ..models import Classifier
from ..options import Target, choice
from ..solve.problem import Problem, objective
from .predictor import (FORMAT, MaskPredictor, PredictorConfig, atomic_save, capture, head_masks, load_predictor,
                        locate_taps, save_predictor)

__all__ = ["Loss", "TrainConfig", "TrainSummary", "train_predictor", "provenance", "checkpoint_path",
           "check_preset"]

Loss = Literal["auto", "objective", "regression", "both"]

CHECKPOINT_FORMAT = FORMAT + "+checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """How a predictor is trained (everything but the images, the epochs and the preset).

    ``loss``: see the module docstring; ``auto`` is ``regression`` when solved masks are given and
    ``objective`` otherwise (what the measurements in docs/method.md favour). ``target``: the class each training image's mask explains:
    its folder's label (images without one are left out) or the model's top-1 prediction.
    ``seed``: the predictor's initial weights, the image order of every epoch, and the offset of
    each image's random stream (its position in the image list plus ``seed``).
    ``checkpoint_every``: steps between checkpoints besides the one at each epoch's end (0: none).
    """

    batch_size: int = 8
    lr: float = 1e-3
    loss: Loss = "auto"
    regression_weight: float = 1.0
    target: Target = "label"
    seed: int = 0
    checkpoint_every: int = 0
    predictor: PredictorConfig = field(default_factory=PredictorConfig)

    def __post_init__(self) -> None:
        choice("loss", self.loss, Loss)
        choice("target", self.target, Target)
        for name in ("batch_size",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) \
                or self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.regression_weight < 0:
            raise ConfigError(f"lr must be > 0 and regression_weight >= 0, got {self.lr}, {self.regression_weight}")


@dataclass
class TrainSummary:
    """What :func:`train_predictor` did.

    ``image_steps``: predicted masks scored over the whole training (images x epochs), the unit of
    its cost: each is about one solver iteration with ``loss`` objective or both.
    """

    out: Path
    identity: str
    images: int
    epochs: int
    steps: int
    image_steps: int
    resumed_at: int | None  # the step a checkpoint resumed at; None for a fresh or finished run
    history: list[float]
    left_out: dict[str, int]

    def lines(self) -> list[str]:
        text = [f"{self.out}: predictor {self.identity}, {self.images} images x {self.epochs} epochs "
                f"({self.steps} steps)"]
        if self.resumed_at is not None:
            text.append(f"resumed from the checkpoint at step {self.resumed_at}")
        if self.history:
            shown = self.history if len(self.history) <= 6 else [*self.history[:3], *self.history[-3:]]
            cut = "" if len(self.history) <= 6 else f" (epochs 1-3 and {len(self.history) - 2}-{len(self.history)})"
            text.append(f"mean loss per epoch{cut}: " + ", ".join(f"{v:.4f}" for v in shown))
        if self.left_out:
            text.append("left out: " + ", ".join(f"{n} {why}" for why, n in self.left_out.items()))
        return text


def checkpoint_path(out: str | Path) -> Path:
    """Where the training of ``out`` keeps its checkpoint: ``<out>.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def check_preset(solver: SolverConfig) -> None:
    """Refuse objectives a predictor does not serve: one mask per image in the deletion game."""
    if solver.objective.masks_per_image != 1 or solver.objective.game != "delete":
        raise ConfigError("a mask predictor serves presets with one mask per image in the deletion game "
                          "(paper, paper-fast, blur, jacobgil...), not extremal perturbation or the preservation game")


def provenance(records: Sequence[ImageRecord], data: str | Path, classifier: Classifier, preset: str,
               overrides: Sequence[str], solver: SolverConfig, epochs: int, config: TrainConfig,
               solved: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Everything that determines the trained predictor, as plain data: the images (their count
    and a SHA-256 of their paths and labels in order), the classifier, the preset and its full
    solver configuration, the epochs and the training settings, and the solved store regressed on."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.relpath}\t{record.label}\n".encode())
    return {
        "images": {"count": len(records), "sha256": digest.hexdigest(), "source": str(data)},
        "classifier": classifier.spec, "input_size": list(classifier.input_size),
        "preset": preset, "overrides": list(overrides), "solver": to_dict(solver),
        "epochs": epochs, "training": _plain(dataclasses.asdict(config)), "solved": solved,
    }


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def _key(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def train_predictor(data: str | Path, out: str | Path, classifier: Classifier, preset: str = "paper-fast",
                    epochs: int = 4, *, config: TrainConfig = TrainConfig(), overrides: Sequence[str] = (),
                    solved: str | Path | Sequence[str | Path] | None = None, start: str | Path | None = None, limit: int | None = None,
                    overwrite: bool = False, progress: bool = True) -> TrainSummary:
    """Train a mask predictor on the images under ``data`` and save it to ``out``.

    Args:
        data: an image folder (ImageNet layout gives labels), or a text file listing images.
        out: the predictor file (``.pt``); its checkpoint is :func:`checkpoint_path` ``(out)``.
        classifier: the frozen model whose masks are predicted (its features are the input).
        preset, overrides: the solver configuration whose objective is learnt (:func:`pipeline.config.preset`,
            :func:`pipeline.config.override`).
        epochs: passes over the images.
        config: the training settings.
        solved: a mask store (or several) of (some of) these images, for the ``regression`` and
            ``both`` losses; images none has a mask for are left out.
        start: a predictor file whose weights training starts from (fine-tuning; its architecture
            is kept and ``config.predictor`` ignored); its identity is part of the provenance.
        limit: the first ``limit`` images only.
        overwrite: start afresh even if ``out`` or a checkpoint of other settings exists.
        progress: a tqdm bar over the steps.

    Raises:
        ConfigError: bad settings; ``out`` or its checkpoint belongs to other settings (without
            ``overwrite``); a loss needs ``solved`` and none was given; no image to train on.
        ImageReadError: ``data`` holds no image. StoreError: ``solved`` is unreadable.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
    solver = override(preset_config(preset), list(overrides))
    check_preset(solver)
    if config.loss == "auto":
        config = dataclasses.replace(config, loss="objective" if solved is None else "regression")
    if config.loss != "objective" and solved is None:
        raise ConfigError(f"loss {config.loss!r} regresses onto solved masks: pass solved=<mask store>")
    records, left_out = _training_records(data, classifier, config, limit)
    targets_masks, solved_meta = (None, None) if solved is None else _solved_masks(solved, records, classifier)
    if targets_masks is not None:
        keep = [i for i, r in enumerate(records) if r.relpath in targets_masks]
        if len(keep) < len(records):
            left_out["without a solved mask"] = len(records) - len(keep)
        records = [records[i] for i in keep]
    if not records:
        raise ConfigError(f"no image of {str(data)!r} to train on ({left_out or 'none found'})")
    meta = provenance(records, data, classifier, preset, overrides, solver, epochs, config, solved_meta)
    initial = None
    if start is not None:
        initial = load_predictor(start, classifier)
        meta["start"] = {"predictor": initial.identity, "path": str(Path(start).resolve())}
    out = Path(out)
    finished = _finished(out, meta, overwrite)
    if finished is not None:
        return finished
    return _train(records, out, classifier, solver, epochs, config, meta, targets_masks, left_out, overwrite,
                  progress, initial)


def _training_records(data: str | Path, classifier: Classifier, config: TrainConfig,
                      limit: int | None) -> tuple[list[ImageRecord], dict[str, int]]:
    records = discover(data, classifier.vocabulary, limit=limit)
    left_out: dict[str, int] = {}
    if config.target == "label":
        labelled = [r for r in records if r.label >= 0]
        if len(labelled) < len(records):
            left_out["without a label"] = len(records) - len(labelled)
        records = labelled
    return records, left_out


def _solved_masks(solved: str | Path | Sequence[str | Path], records: Sequence[ImageRecord],
                  classifier: Classifier) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The stored masks ``(1, h, w)`` of the records' images, by relative path (the first store
    holding an image wins), and the stores' identities."""
    from ..store import STATUS_OK, MaskStore

    paths = [solved] if isinstance(solved, (str, Path)) else list(solved)
    by_path: dict[str, torch.Tensor] = {}
    identities = []
    wanted = {r.relpath for r in records}
    for path in paths:
        with MaskStore(path) as store:
            if store.model != classifier.spec:
                raise ConfigError(f"the solved store {str(path)!r} explains {store.model!r}, not {classifier.spec!r}")
            if tuple(store.mask_shape)[0] != 1:
                raise StoreError(f"the solved store {str(path)!r} holds {store.mask_shape[0]} masks per image; "
                                 "regression needs one")
            table = store.table()
            rows = [i for i, (p, status) in enumerate(zip(table["path"], table["status"]))
                    if status == STATUS_OK and p in wanted and p not in by_path]
            masks = store.masks(rows) if rows else torch.empty(0)
            by_path.update({str(table["path"].iat[i]): masks[j] for j, i in enumerate(rows)})
            identities.append({"store": str(Path(path).resolve()), "run_key": store.run_key, "images": len(rows)})
    return by_path, identities


def _read_payload(path: Path, unreadable: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors-only payload of a predictor or checkpoint file and its JSON ``meta``.

    Raises:
        ConfigError: ``unreadable``, when the file is no such payload.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return payload, json.loads(payload["meta"])
    except Exception:
        raise ConfigError(unreadable) from None


def _finished(out: Path, meta: dict[str, Any], overwrite: bool) -> TrainSummary | None:
    """The summary of a finished training of ``meta`` at ``out``; None when there is none to keep."""
    if overwrite or not out.exists():
        return None
    _, saved = _read_payload(out, f"{str(out)!r} exists and is no predictor file; pass overwrite=True to replace it")
    if saved.get("provenance_key") != _key(meta):
        raise ConfigError(f"{str(out)!r} holds a predictor trained with other settings; pass overwrite=True "
                          "(--overwrite) to train a new one there")
    return TrainSummary(out, saved["identity"], meta["images"]["count"], meta["epochs"], saved["steps"],
                        saved["image_steps"], None, saved["history"], saved.get("left_out", {}))


def _train(records: list[ImageRecord], out: Path, classifier: Classifier, solver: SolverConfig, epochs: int,
           config: TrainConfig, meta: dict[str, Any], solved: dict[str, torch.Tensor] | None,
           left_out: dict[str, int], overwrite: bool, progress: bool,
           initial: MaskPredictor | None = None) -> TrainSummary:
    device = classifier.device
    torch.manual_seed(config.seed)  # the initial weights
    predictor = MaskPredictor(config.predictor if initial is None else initial.config, locate_taps(classifier))
    if initial is not None:
        predictor.load_state_dict(initial.state_dict())
    predictor = predictor.to(device).train().requires_grad_(True)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=config.lr)
    key = _key(meta)
    state = _resume(checkpoint_path(out), key, predictor, optimizer, overwrite)
    step, history, resumed_at = state["step"], state["history"], (state["step"] or None)
    per_epoch = math.ceil(len(records) / config.batch_size)
    dataset = ImageDataset(records, classifier.input_size)
    # Regression alone never perturbs the images: the classifier's features are computed once.
    cache = feature_cache(predictor, classifier, dataset, config) if config.loss == "regression" else None
    epoch_losses = [torch.tensor(float(v)) for v in state["epoch_losses"]]
    began, spent = time.perf_counter(), state.get("seconds", 0.0)
    with tqdm(total=epochs * per_epoch, initial=step, unit="step", desc="train predictor", disable=not progress,
              dynamic_ncols=True) as bar:
        while step < epochs * per_epoch:
            epoch, position = divmod(step, per_epoch)
            order = epoch_order(len(records), config.seed, epoch)
            chosen = order[position * config.batch_size:(position + 1) * config.batch_size]
            loss = train_step(predictor, optimizer, classifier, solver, dataset, chosen, config, epoch, solved, cache)
            if loss is not None:  # stays on the device: read once per epoch, not once per step
                epoch_losses.append(loss)
            step += 1
            bar.update(1)
            if step % per_epoch == 0:
                history.append(_mean(epoch_losses))
                epoch_losses = []
                bar.set_postfix(epoch_loss=f"{history[-1]:.4f}")
            if step % per_epoch == 0 or (config.checkpoint_every and step % config.checkpoint_every == 0):
                _save_checkpoint(checkpoint_path(out), key, predictor, optimizer, step, history,
                                 [float(v) for v in epoch_losses], spent + time.perf_counter() - began)
    finished = {**meta, "provenance_key": key, "steps": step, "image_steps": epochs * len(records),
                "history": history, "left_out": left_out, "torch": torch.__version__,
                "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "seconds": spent + time.perf_counter() - began}
    save_predictor(predictor.cpu(), out, finished)
    checkpoint_path(out).unlink(missing_ok=True)
    return TrainSummary(out, predictor.identity, len(records), epochs, step, epochs * len(records), resumed_at,
                        history, left_out)


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``count`` images in ``epoch``: a permutation drawn from (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator).tolist()


def feature_cache(predictor: MaskPredictor, classifier: Classifier, dataset: ImageDataset,
                  config: TrainConfig) -> dict[str, Any]:
    """Every image's tap outputs (float32, about 1.5 MB per image for EfficientNet-Lite0 at 224 px),
    target and readability, computed once in ``config.batch_size`` chunks in image order (so a
    resumed training computes the same numbers); the normalised images too for ``arch="pixels"``."""
    names, rows = predictor.taps.names, []
    device = classifier.device
    for start in range(0, len(dataset), config.batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + config.batch_size, len(dataset)))])
        x = classifier.normalize(batch["image"].to(device))
        with torch.no_grad(), capture(classifier, names) as features:
            logits = classifier(x.contiguous(memory_format=torch.channels_last)).float()
        targets = batch["label"].to(device) if config.target == "label" else logits.argmax(1)
        for j in range(len(x)):
            rows.append({"features": [features[n][j] for n in names], "target": targets[j], "ok": bool(batch["ok"][j]),
                         "x": x[j] if predictor.config.arch == "pixels" else None})
    return {"rows": rows}


def train_step(predictor: MaskPredictor, optimizer: torch.optim.Optimizer, classifier: Classifier,
               solver: SolverConfig, dataset: ImageDataset, chosen: Sequence[int], config: TrainConfig, epoch: int,
               solved: dict[str, torch.Tensor] | None, cache: dict[str, Any] | None = None) -> torch.Tensor | None:
    """One Adam step on the images ``chosen`` (positions in ``dataset``); returns the batch's mean loss
    as a 0-dim tensor on the device (no host read), None when no image of the batch is readable
    (then nothing is stepped). Unreadable images are left out of the batch. With a ``cache``
    (:func:`feature_cache`; regression only) the images are not read again."""
    device = classifier.device
    if cache is not None:
        rows = [cache["rows"][i] for i in chosen if cache["rows"][i]["ok"]]
        if not rows:
            return None
        index = torch.tensor([i for i in chosen if cache["rows"][i]["ok"]])
        features = {n: torch.stack([r["features"][k] for r in rows]) for k, n in enumerate(predictor.taps.names)}
        targets = torch.stack([r["target"] for r in rows])
        x = torch.stack([r["x"] for r in rows]) if rows[0]["x"] is not None else None
        masks = head_masks(predictor, classifier, features, targets, x, solver.mask.size)
        problem = None
    else:
        batch = collate([dataset[i] for i in chosen])
        ok = batch["ok"]
        if not bool(ok.any()):
            return None
        images = batch["image"][ok].to(device)
        index = batch["index"][ok]
        targets = batch["label"][ok].to(device) if config.target == "label" else None
        seeds = (index + config.seed).to(device)
        with capture(classifier, predictor.taps.names) as features:
            problem = Problem(classifier, images, targets, solver, seeds)  # its forward fills the taps
        masks = head_masks(predictor, classifier, features, problem.targets, problem.x, solver.mask.size)
    loss = torch.zeros((), device=device)
    if config.loss != "regression":
        # The preset's final L1 weight (past any warm-up), jitter drawn anew each epoch.
        loss = loss + objective(problem, masks, solver.objective.l1_decay + epoch).mean()
    if config.loss != "objective":
        wanted = torch.stack([solved[dataset.records[int(i)].relpath] for i in index]).to(device)
        wanted = F.interpolate(wanted, size=masks.shape[-2:], mode="bilinear", align_corners=False) \
            if wanted.shape[-1] != masks.shape[-1] else wanted
        regression = F.binary_cross_entropy(masks.clamp(1e-6, 1 - 1e-6), wanted.clamp(0, 1))
        loss = loss + (config.regression_weight if config.loss == "both" else 1.0) * regression
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _mean(losses: list[torch.Tensor]) -> float:
    """The mean of an epoch's batch losses (one host read); NaN for an epoch without a readable image."""
    if not losses:
        return float("nan")
    device = losses[-1].device  # the ones restored from a checkpoint are on the CPU
    return float(torch.stack([v.to(device, torch.float32) for v in losses]).mean())


def _save_checkpoint(path: Path, key: str, predictor: MaskPredictor, optimizer: torch.optim.Optimizer, step: int,
                     history: list[float], epoch_losses: list[float], seconds: float) -> None:
    state = {name: t.detach().cpu().clone() for name, t in predictor.state_dict().items()}
    progress = {"provenance_key": key, "step": step, "history": history, "epoch_losses": epoch_losses,
                "seconds": seconds}
    atomic_save({"format": CHECKPOINT_FORMAT, "state": state, "optimizer": _cpu(optimizer.state_dict()),
                 "meta": json.dumps(progress)}, path)


def _cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


def _resume(path: Path, key: str, predictor: MaskPredictor, optimizer: torch.optim.Optimizer,
            overwrite: bool) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into the predictor and the optimiser; its progress, or a fresh
    start's when there is none (or ``overwrite``)."""
    fresh = {"step": 0, "history": [], "epoch_losses": []}
    if overwrite or not path.exists():
        path.unlink(missing_ok=True)
        return fresh
    payload, progress = _read_payload(path, f"the checkpoint {str(path)!r} is unreadable; delete it or pass "
                                            "overwrite=True")
    if payload.get("format") != CHECKPOINT_FORMAT or progress.get("provenance_key") != key:
        raise ConfigError(f"the checkpoint {str(path)!r} belongs to a training with other settings; pass "
                          "overwrite=True (--overwrite) to start afresh")
    device = next(predictor.parameters()).device
    predictor.load_state_dict(payload["state"])
    optimizer.load_state_dict(payload["optimizer"])
    for state in optimizer.state.values():  # load_state_dict keeps the saved device for the step counts
        for name, value in state.items():
            if torch.is_tensor(value) and value.dim():
                state[name] = value.to(device)
    return progress
