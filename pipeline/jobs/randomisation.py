"""The model-randomisation sanity check of a store (``perturb randomisation``).

Adebayo et al.'s cascading test (:mod:`pipeline.metrics.randomisation`) run on what a store
explains: the first ``limit`` ok rows of the store, their images re-read at the store's input size,
and their maps recomputed the way the store made them, on a copy of the store's model whose blocks
are re-initialised one after another from the logits down (:func:`pipeline.metrics.randomisation_blocks`):

* a **method store** (``perturb baseline``): the method and options the store records re-run
  (:func:`pipeline.jobs.baselines.baseline_saliency`, min-max normalised as stored), with the
  stored per-image seeds;
* a **solver store** (``perturb masks``): the masks re-solved with the stored solver configuration
  and per-image seeds (:func:`pipeline.solve.solve`, on the BatchNorm-folded copy as ``perturb
  masks`` solves), turned into saliency as ``evaluate`` does;
* an imported store cannot be re-made, and is refused.

The class explained at every step is the store's ``target`` (the class explained before
randomisation), not the randomised model's prediction. Step 0 (``original``) re-makes the maps on
the unmodified model; its row is their similarity to the stored maps (near 1: the store keeps
masks in half precision, and a solver's re-solve may differ by rounding), and every later step is
compared with these re-made maps, so that only the model differs. Cost: ``(1 + steps)`` times the store's own saliency cost.

Outputs in ``out``: ``randomisation.csv`` (one row per image and step), ``randomisation.json``
(settings, mean and standard error per step, seconds per step) and ``randomisation.png``.
Written into the store's evaluation folder, the report and ``compare`` show it beside the other
metrics.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..config import from_dict
from ..errors import ConfigError
from ..evaluation import RANDOMISATION_FILES, check_images_present, stored_pictures
from ..identity import run_key
from ..metrics import map_similarity, randomisation_blocks, randomised_models
from ..models import Classifier
from ..solve import masks as masklib
from ..solve import solve
from ..store import STATUS_OK, MaskStore
from .baselines import baseline_saliency

__all__ = ["RandomisationConfig", "RandomisationRun", "SIMILARITIES", "randomise_store", "RANDOMISATION_FILES"]

SIMILARITIES: tuple[str, ...] = ("spearman_abs", "spearman", "ssim", "hog_pearson")
"""The similarities of each re-made map to the stored one (:func:`pipeline.metrics.map_similarity`)."""


ORIGINAL_STEP = "original"
"""Step 0: the maps re-made on the unmodified model."""


@dataclass(frozen=True)
class RandomisationConfig:
    """How the randomisation check runs.

    Attributes:
        limit: the first ``limit`` ok rows of the store (store order); None = every ok row.
        seed: the re-initialisation seed (each module reset after ``torch.manual_seed(seed + 1)``,
            as Quantus' ``MPRT``; 42 is its default).
        steps: run only the first ``steps`` blocks of the model's list; None = all.
        batch_size: images whose maps are re-made together.
        workers: image-decoding processes (0 = in this process).
    """

    limit: int | None = 16
    seed: int = 42
    steps: int | None = None
    batch_size: int = 8
    workers: int = 0

    def __post_init__(self) -> None:
        for name, low in (("limit", 1), ("steps", 1), ("batch_size", 1), ("workers", 0), ("seed", 0)):
            value = getattr(self, name)
            if value is None and name in ("limit", "steps"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"RandomisationConfig.{name} must be an integer >= {low}; got {value!r}")


@dataclass(frozen=True)
class RandomisationRun:
    """What :func:`randomise_store` did: the per-image table, the ``randomisation.json`` content,
    and the files written."""

    table: pd.DataFrame
    summary: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The mean Spearman (absolute maps), SSIM and HOG correlation per step, for printing."""
        means = self.summary["mean"]
        rows = [f"{'step':24s} {'spearman_abs':>12s} {'ssim':>8s} {'hog':>8s} {'seconds':>8s}"]
        for i, step in enumerate(self.summary["steps"]):
            rows.append(f"{step:24s} {means['spearman_abs'][i]:12.4f} {means['ssim'][i]:8.4f} "
                        f"{means['hog_pearson'][i]:8.4f} {self.summary['seconds'][i]:8.1f}")
        skipped = self.summary.get("skipped") or {}
        if skipped:
            path, reason = next(iter(skipped.items()))
            rows.append(f"skipped {len(skipped)} image(s) that could not be read, e.g. {path} ({reason})")
        return rows


SaliencyFn = Callable[[Classifier, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(classifier, images01 (B, 3, H, W), targets (B,), seeds (B,)) -> (B, 1, H, W)`` saliency."""


def store_method(store: MaskStore) -> tuple[str, SaliencyFn]:
    """The store's method (its name) and a function that re-makes its maps for any classifier.

    Raises:
        ConfigError: an imported store (its maps came from another tool and cannot be re-made).
    """
    config = store.config
    if "solver" in config:
        solver = from_dict(config["solver"])
        size = tuple(store.input_size)

        def solved(classifier: Classifier, images: torch.Tensor, targets: torch.Tensor,
                   seeds: torch.Tensor) -> torch.Tensor:
            result = solve(classifier.folded(), images, solver, targets=targets, seeds=seeds)
            return masklib.saliency(result.masks.detach().cpu(), solver.objective.game, size, solver.mask)

        return str(store.attrs.get("preset", "masks")), solved
    if "baseline" in config:
        name, options = str(config["baseline"]), dict(config.get("options") or {})

        def method(classifier: Classifier, images: torch.Tensor, targets: torch.Tensor,
                   seeds: torch.Tensor) -> torch.Tensor:
            return baseline_saliency(name, classifier, images, targets, seeds, options).cpu()

        return name, method
    raise ConfigError(f"the store {str(store.path)!r} holds imported maps (method {config.get('method', '?')!r}); "
                      "the randomisation check re-makes maps, so it needs a store of `perturb masks` or "
                      "`perturb baseline`")


def randomise_store(store_path: str | Path, out: str | Path, classifier: Classifier,
                    data_root: str | Path | None = None, config: RandomisationConfig = RandomisationConfig(),
                    notify: Callable[[str], None] | None = None) -> RandomisationRun:
    """Run the cascading randomisation check on a store's first ``config.limit`` ok rows.

    Args:
        store_path: a store of ``perturb masks`` or ``perturb baseline``.
        out: folder for :data:`RANDOMISATION_FILES` (created; the store's evaluation folder puts
            the curves in its report).
        classifier: the store's model (spec and input size checked).
        data_root: the image root; None = the store's recorded source.
        config: :class:`RandomisationConfig`.
        notify: called with a line after each step (progress).

    Images are read batch by batch; one missing or unreadable is skipped and named in the
    summary's ``skipped``. The files in ``out`` are written after every batch, and a check stopped
    there resumes: the same store, method, seed and blocks go on from the images it finished (a
    larger ``limit`` extends it; other settings replace it).

    Raises:
        StoreError: the store cannot be read. ConfigError: an imported store, another model, a
            store without ok rows, or no image readable. ImageReadError: most images missing under
            the image root (a wrong folder; said before any work).
    """
    with MaskStore(store_path) as store:
        if store.model != classifier.spec or tuple(store.input_size) != tuple(classifier.input_size):
            raise ConfigError(f"the store explains {store.model!r} at {tuple(store.input_size)}; load that model")
        name, remake = store_method(store)
        table = store.table()
        rows = np.flatnonzero(table["status"].to_numpy() == STATUS_OK)[: config.limit]
        if not len(rows):
            raise ConfigError(f"the store {str(store_path)!r} has no ok row to check")
        root = Path(data_root) if data_root is not None else store.image_root()
        # A wrong image folder is said before any work (file existence only); an image missing or
        # broken among present ones is skipped and recorded when its batch is read.
        check_images_present(store, root, table["index"].to_numpy()[rows])
        seed_offset = int(store.config.get("seed", 0))
        facts = {"store": str(Path(store_path).resolve()), "store_config": store.config, "model": store.model,
                 "data_root": str(root)}
        blocks = randomisation_blocks(classifier)
        blocks = blocks[: config.steps] if config.steps else blocks
        steps = [ORIGINAL_STEP, *(step for step, _ in blocks)]
        resume_key = run_key({"store": store.run_key, "method": name, "seed": config.seed,
                              "blocks": [[step, list(modules)] for step, modules in blocks]})
        earlier = _earlier(Path(out), resume_key, table, steps, rows)  # a stopped check of the same settings goes on
        columns = {k: [earlier.values[k]] if earlier.rows.size else [] for k in SIMILARITIES}
        seconds, skipped = earlier.seconds.copy(), {}  # images skipped before are tried again
        checked: list[np.ndarray] = [earlier.rows] if earlier.rows.size else []
        per_image, summary, paths = pd.DataFrame(), {}, {}
        todo = rows[~np.isin(rows, earlier.rows)]
        if earlier.rows.size and notify is not None:
            notify(f"randomisation: resuming after {earlier.rows.size} of {len(rows)} images" if todo.size
                   else f"randomisation: all {len(rows)} images were checked before; nothing to do")
        for batch in stored_pictures(store, todo, root, batch_size=config.batch_size, workers=config.workers):
            skipped.update({p: r or "unreadable" for p, r, ok in zip(batch.paths, batch.reasons, batch.ok) if not ok})
            keep = np.flatnonzero(batch.ok)
            if len(keep):
                similarities = _check_batch(classifier, remake, blocks, config.seed, batch.images[keep],
                                            batch.saliency[keep], table, batch.rows[keep], seed_offset, seconds)
                for key in SIMILARITIES:
                    columns[key].append(np.stack([s[key] for s in similarities], 1))
                checked.append(batch.rows[keep])
            if not checked:
                continue
            # written after every batch: a run stopped early keeps the images it finished
            values = {key: np.concatenate(columns[key]) for key in SIMILARITIES}  # (n, S)
            done = np.concatenate(checked)
            per_image = _table(table, done, steps, values)
            summary = _summary(name, steps, blocks, values, seconds, config, facts, len(done), len(rows), skipped)
            summary["resume_key"] = resume_key
            paths = _write(Path(out), per_image, summary)
            if notify is not None:
                notify(f"randomisation: {len(done)} of {len(rows)} images"
                       + (f" ({len(skipped)} unreadable, skipped)" if skipped else "") + f", {seconds.sum():.0f} s")
    if not todo.size and checked:  # finished before: the files stay as they are
        return _finished(Path(out))
    if not checked:
        raise ConfigError(f"none of the {len(rows)} images could be read under {str(root)!r}, e.g. "
                          f"{next(iter(skipped))!r} ({next(iter(skipped.values()))}); pass the image root with --data")
    return RandomisationRun(per_image, summary, paths)


def _check_batch(classifier: Classifier, remake: SaliencyFn, blocks: tuple, seed: int, images: torch.Tensor,
                 stored: torch.Tensor, table: pd.DataFrame, rows: np.ndarray, seed_offset: int,
                 seconds: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The similarities of one batch's maps at every step: images ``(b, 3, H, W)`` in [0, 1], their
    stored maps ``(b, 1, H, W)``; step 0's re-made maps against the stored ones, each later step's
    against step 0's. Adds each step's seconds to ``seconds``."""
    device = classifier.device
    targets = torch.from_numpy(table["target"].to_numpy()[rows].astype(np.int64)).to(device)
    seeds = (torch.from_numpy(table["index"].to_numpy()[rows].astype(np.int64)) + seed_offset).to(device)
    images = images.to(device)
    similarities, original = [], None
    # lazily: randomised_models changes one copy step after step, so each is used before the next
    models = itertools.chain([(ORIGINAL_STEP, classifier)], randomised_models(classifier, blocks, seed))
    for i, (step, model) in enumerate(models):
        start = time.perf_counter()
        # A fresh copy per step: methods cache views of a network by object (captum's ReLU
        # view, TorchRay's network), which would keep the first randomised step's weights.
        model = model if i == 0 else copy.deepcopy(model)
        maps = remake(model, images, targets, seeds)
        seconds[i] += time.perf_counter() - start
        # step 0 against the stored maps (stored in half precision); later steps against step 0's
        similarities.append(map_similarity(stored if original is None else original, maps))
        original = maps if original is None else original
    return similarities


@dataclass(frozen=True)
class _Earlier:
    """What a stopped check of the same settings left in the output folder: its store rows ``(n,)``
    and their similarities ``(n, S)`` per key, and the seconds per step."""

    rows: np.ndarray
    values: dict[str, np.ndarray]
    seconds: np.ndarray


def _earlier(out: Path, key: str, table: pd.DataFrame, steps: list[str], rows: np.ndarray) -> _Earlier:
    """The check already in ``out`` when its ``resume_key`` is ``key`` (the same store, method, seed
    and blocks) and its images are among ``rows`` (a larger ``limit`` extends it); else nothing,
    and a check with other settings is replaced."""
    none = _Earlier(np.zeros(0, np.int64), {}, np.zeros(len(steps)))
    try:
        paths = _paths(out)
        summary = json.loads(paths["json"].read_text())
        if summary.get("resume_key") != key:
            return none
        frame = pd.read_csv(paths["csv"])
    except (OSError, ValueError):  # absent, unreadable, or written by a version without the key
        return none
    position = pd.Series(np.arange(len(table)), index=table["index"].to_numpy())
    indices = frame["index"].to_numpy()[:: len(steps)]
    if len(frame) != len(indices) * len(steps) or not set(indices) <= set(position.index):
        return none
    done = position[indices].to_numpy()
    if not np.isin(done, rows).all():
        return none
    values = {k: frame[k].to_numpy(np.float64).reshape(len(indices), len(steps)) for k in SIMILARITIES}
    return _Earlier(done, values, np.asarray(summary["seconds"], np.float64))


def _paths(out: Path) -> dict[str, Path]:
    """The check's files in ``out``: :data:`RANDOMISATION_FILES` kind -> path."""
    return {kind: out / name for kind, name in RANDOMISATION_FILES.items()}


def _finished(out: Path) -> RandomisationRun:
    """The run of a check already complete in ``out`` (nothing re-made)."""
    paths = _paths(out)
    return RandomisationRun(pd.read_csv(paths["csv"]), json.loads(paths["json"].read_text()), paths)


def _table(store_table: pd.DataFrame, rows: np.ndarray, steps: list[str], values: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (image, step): ``index, path, target, step, block`` and the similarities."""
    n, s = len(rows), len(steps)
    frame = pd.DataFrame({"index": np.repeat(store_table["index"].to_numpy()[rows], s),
                          "path": np.repeat(store_table["path"].to_numpy()[rows].astype(str), s),
                          "target": np.repeat(store_table["target"].to_numpy()[rows], s),
                          "step": np.tile(np.arange(s), n), "block": np.tile(np.asarray(steps, dtype=object), n)})
    for key in SIMILARITIES:
        frame[key] = values[key].reshape(-1)
    return frame


def _summary(name: str, steps: list[str], blocks: tuple, values: dict[str, np.ndarray], seconds: np.ndarray,
             config: RandomisationConfig, facts: dict[str, Any], n: int, planned: int,
             skipped: dict[str, str]) -> dict[str, Any]:
    def sem(column: np.ndarray) -> float:
        finite = column[np.isfinite(column)]
        return float(finite.std(ddof=1) / np.sqrt(finite.size)) if finite.size > 1 else float("nan")

    return {
        "method": name, "images": n, "steps": steps,
        "mean": {key: np.nanmean(v, 0).tolist() for key, v in values.items()},
        "sem": {key: [sem(v[:, j]) for j in range(v.shape[1])] for key, v in values.items()},
        # a constant re-made map (a solver deleting nothing on a random model) has no rank correlation
        "undefined_share": np.isnan(values["spearman_abs"]).mean(0).tolist(),
        "seconds": seconds.tolist(), "seconds_per_image_step": (seconds / n).tolist(),
        "images_planned": planned, "skipped": dict(skipped),
        "settings": {
            **facts,
            "blocks": [[step, list(modules)] for step, modules in blocks],
            "cascading": "top-down: step k re-initialises blocks 1..k (the earlier steps' stay random)",
            "seed": config.seed,
            "reinitialisation": "each module with reset_parameters (conv, linear, batch norm and its running "
                                "statistics) reset after torch.manual_seed(seed + 1), as Quantus MPRT; "
                                "PyTorch's default initialisation",
            "class_explained": "the store's target (the class explained before randomisation) at every step, "
                               "not the randomised model's top-1",
            "maps": "re-made as the store made them (same method and options, or the same solver configuration "
                    "and per-image seeds) at the store's input size; step "
                    f"{ORIGINAL_STEP!r} re-makes them on the unmodified model and is compared with the stored maps, "
                    "every later step with step {ORIGINAL_STEP!r}'s maps",
            "similarity": {"spearman_abs": "Spearman rank correlation of |maps| (average ranks for ties)",
                           "spearman": "Spearman rank correlation of the signed maps",
                           "ssim": "scikit-image structural_similarity of |maps| / max, 7x7 window, data range "
                                   "of the pair",
                           "hog_pearson": "Pearson correlation of scikit-image hog() features of |maps| / max"},
            "limit": config.limit, "steps_limit": config.steps,
        },
    }


def _finite(value: Any) -> Any:
    """NaN (an undefined correlation) as None: strict JSON readers reject NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write(out: Path, per_image: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Path]:
    from ..pictures import png_bytes
    from ..report.figures import randomisation_figure

    out.mkdir(parents=True, exist_ok=True)
    paths = _paths(out)
    per_image.to_csv(paths["csv"], index=False)
    paths["json"].write_text(json.dumps(_finite(summary), indent=2, default=str) + "\n")
    paths["png"].write_bytes(png_bytes(randomisation_figure({summary["method"]: summary})))
    return paths
