"""An amortised dataset run (``perturb masks --amortise K``): solve the first ``K`` images fully,
train a predictor on them, warm-start the rest.

Three stages, each resumable, whose files sit in ``<out>.amortise/``:

1. ``solved.h5``: the first ``K`` images (sorted, as ``--limit K`` takes them) solved with the
   configuration given, by :func:`pipeline.jobs.run.run_masks` (a resumable store);
2. ``predictor.pt``: a predictor regressed onto those masks (:func:`train_predictor`, ``loss
   regression``; its checkpoint ``predictor.pt.partial`` resumes a killed training);
3. ``out``: the first ``K`` rows copied from ``solved.h5``, then every other image warm-started from
   the predictor and refined (:meth:`WarmStart.adapt`) by ``run_masks(init=...)``.

A kill at any point loses at most the batch (or training steps since the last checkpoint) in
flight, and the same command resumes: every stage is a function of its inputs (image order,
per-image seeds, per-epoch orders), so the final store equals an uninterrupted run's at a fixed
thread count. The store records ``K``, the first images' solver and the predictor
(:meth:`WarmStart.record`); resuming with another ``K`` or other settings is refused.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

from ..config import SolverConfig, to_dict
from ..data import discover
from ..errors import ConfigError
from ..models import Classifier
from .train import TrainConfig, check_preset, train_predictor
from .warm import REFINE_ITERATIONS, load_warm_start

__all__ = ["AMORTISE_EPOCHS", "amortise_folder", "run_amortised"]

AMORTISE_EPOCHS = 100
"""Regression epochs over the first ``K`` images: the head alone is trained on features computed
once, so an epoch costs little (192 images x 100 epochs: 543 s on the 2-core CPU,
docs/method.md, "Amortised masks")."""


def amortise_folder(out: str | Path) -> Path:
    """Where an amortised run keeps its first stages: ``<out>.amortise/``."""
    out = Path(out)
    return out.with_name(out.name + ".amortise")


def run_amortised(source: str | Path, out: str | Path, classifier: Classifier, solver: SolverConfig, first: int,
                  run=None, *, iterations: int | None = REFINE_ITERATIONS, epochs: int = AMORTISE_EPOCHS,
                  train: TrainConfig | None = None, overwrite: bool = False, shard=None):
    """Solve the first ``first`` images of ``source`` with ``solver``, train a predictor on them,
    warm-start the others and refine them for ``iterations`` (None: ``solver``'s own); every row in
    the store ``out``.

    Args:
        run: the :class:`pipeline.jobs.settings.RunConfig` (``targets`` files are not supported).
        train: the training settings (``loss`` is always ``regression``; ``target`` is the run's).
        overwrite: start afresh (the store and ``<out>.amortise/``).
        shard: this process's :class:`pipeline.distributed.Shard` under torchrun or Slurm; an
            amortised run works in one process and refuses a sharded one.

    Returns:
        The :class:`pipeline.jobs.run.RunSummary` of the whole run (``solved`` counts both stages).

    Raises:
        ConfigError: ``first`` or ``epochs`` < 1, a preset a predictor does not serve, a targets
            file, early stopping, a configuration without a preset name, a sharded run;
            StoreError: ``out`` was made otherwise.
    """
    from ..jobs.run import RunSummary, run_masks
    from ..jobs.settings import RunConfig, store_config
    from ..store import MaskStore, MaskWriter

    run = RunConfig() if run is None else run
    if shard is not None and shard.sharded:
        raise ConfigError("--amortise runs in one process; it does not shard")
    if isinstance(first, bool) or not isinstance(first, int) or first < 1:
        raise ConfigError(f"--amortise K must be an integer >= 1, got {first!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"--amortise-epochs must be an integer >= 1, got {epochs!r}")
    check_preset(solver)
    if run.targets is not None:
        raise ConfigError("--amortise trains with --target top1 or label; a --targets file is not supported")
    if solver.optim.stop_window:
        raise ConfigError("--amortise does not combine with early stopping (optim.stop_window)")
    if solver.origin is None:
        raise ConfigError("--amortise needs a configuration named by a preset (pipeline.config.resolve)")
    out, folder = Path(out), amortise_folder(out)
    if overwrite:
        Path(out).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    records = discover(source, classifier.vocabulary, limit=run.limit)
    first = min(first, len(records))
    quiet = dataclasses.replace(run, limit=first)
    solved = run_masks(source, folder / "solved.h5", classifier, solver, quiet)
    train = dataclasses.replace(train or TrainConfig(), loss="regression", target=run.target)
    predictor = folder / "predictor.pt"
    origin = solver.origin
    trained = train_predictor(source, predictor, classifier, origin.preset, epochs, config=train,
                              overrides=origin.overrides, solved=folder / "solved.h5", limit=first,
                              progress=run.progress)
    warm = load_warm_start(predictor, classifier)
    warm = dataclasses.replace(warm, amortise=first, first=to_dict(solver))
    refine = warm.adapt(solver, iterations)
    config = warm.configure(store_config(refine, run, classifier))
    mask_shape = (1, solver.mask.size, solver.mask.size)
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    # The store is created here, with the attributes run_masks would give it (a writer writes them
    # only into a new file): the predictor's path, outside the store's identity.
    with MaskWriter(out, config, classifier.spec, os.path.abspath(root), mask_shape,
                    input_size=classifier.input_size, attrs=warm.attrs()) as writer, MaskStore(folder / "solved.h5") as store:
        done = writer.done_indices()
        table = store.table()
        rows = np.flatnonzero(~table["index"].isin(list(done)).to_numpy())
        if len(rows):  # the first images, copied as solved (an interrupted copy appended nothing)
            columns = {name: table[name].to_numpy()[rows] for name in store.columns}
            for name in ("path", "status", "reason"):
                columns[name] = [str(v) for v in columns[name]]
            writer.append(columns, store.read_masks(rows))
    rest = run_masks(source, out, classifier, refine, run, init=warm)
    skipped = solved.skipped + rest.skipped
    now = solved.solved + rest.solved
    summary = RunSummary(rest.out, rest.total, solved=now, resumed=rest.total - now - sum(skipped.values()),
                         skipped=skipped)
    summary.notes.append(f"amortised: the first {first} images solved fully ({solver.optim.iterations} "
                         f"iterations), predictor {trained.identity} trained on them "
                         f"({trained.images} images x {trained.epochs} epochs), the others warm-started "
                         f"and refined for {refine.optim.iterations} iterations")
    return summary
